# Shared helpers: the validated config, its expansion into datasets/models, and param plumbing.
import json
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from agentflan import config as cfg  # noqa: E402
from agentflan import launch  # noqa: E402
from agentflan.download import AGENTFLAN_STEMS  # noqa: E402
from agentflan.determinism import env_from_config  # noqa: E402
from agentflan import warm  # noqa: E402

cfg.validate(config)
# Every job inherits the determinism pins of the config (agentflan.determinism reads them in the cli).
os.environ.update(env_from_config(config["determinism"]))

launch.check_resources(config)
RUN = config["run"]
PRESET = config["preset"]
DATA = f"data/{RUN}"
RESULTS = f"results/{RUN}"
LOGS = f"logs/{RUN}"
BENCH = f"benchmarks/{RUN}"
# a rebuild of the tables from a bundle of summaries (report.smk): no model-facing job runs
FROM_BUNDLE = config.get("from_bundle")
TABLES = config["tables_dir"]
FIGURES = config["figures_dir"]
DATASETS = cfg.datasets(config)
SIZES = cfg.sizes(config)
MODEL_IDS = cfg.model_ids(config)
# evaluated but never trained (agentflan.external): published checkpoints and API models
EXTERNAL = cfg.external_models(config)
API_MODELS = cfg.api_models(config)
EVALUATED_ONLY = cfg.evaluated_only_ids(config)
OWN_IDS = [m for m in MODEL_IDS if m not in EVALUATED_ONLY]
TRAINED_IDS = [m for m in OWN_IDS if not m.startswith("base-")]
# training.seeds: the first seed's fine-tunes keep <dataset>-<size>, a further seed s trains
# <dataset>_s<s>-<size> (agentflan.config.split_seed); base, external and API models are not seeded
SEEDS = cfg.seeds(config)
BENCHMARKS = list(cfg.BENCHMARKS)
# benchmarks run only for the models of the tables that show them ({benchmark: model ids}):
# ScienceWorld for Table 1 / Figure 1 (generate_extra, score_extra)
EXTRA_MODELS = cfg.extra_benchmark_models(config)
EXTRA_BENCHMARKS = sorted(EXTRA_MODELS)

# Table 4's models, scored by lm-evaluation-harness (the harness job): score files lmeval_<benchmark>
HARNESS_MODELS = cfg.harness_models(config)
HARNESS_BENCHMARKS = list(cfg.HARNESS_BENCHMARKS)
# every (model, benchmark) with a score file, and those with a predictions file (not the harness's)
SCORE_FILES = cfg.score_files(config)
PREDICTED = [(m, b) for m, b in SCORE_FILES if b not in HARNESS_BENCHMARKS]
SOURCES = ["agentflan", "sharegpt", "teval", "glaive", "hotpotqa", "mmlu", "gsm8k", "humaneval"]
if PRESET == "miniature":
    SOURCES.append("pretrain")
THREADS = config["threads_per_job"]


# The warm interpreter (agentflan.warm) for the model-facing and report jobs of a local run; its log
# is logs/<run>/warm.log. Started once Snakemake knows there is work to do, stopped when it ends.
onstart:
    if config["warm_interpreter"] and workflow.local_exec and not FROM_BUNDLE:
        warm.start(f"{LOGS}/warm.log", threads=THREADS)


onsuccess:
    warm.stop()


onerror:
    warm.stop()


def extra_model(wc):
    """The model of an extra benchmark's job, refused if that benchmark is not run for it."""
    if wc.model not in EXTRA_MODELS.get(wc.benchmark, []):
        raise ValueError(f"{wc.benchmark} is not run for {wc.model} (agentflan.config.extra_benchmark_models)")
    return wc.model


wildcard_constraints:
    dataset="[a-z0-9_]+",
    size="[a-z0-9]+",
    model="[a-z0-9_]+-[a-z0-9]+",
    benchmark="|".join(BENCHMARKS + EXTRA_BENCHMARKS),
    source="[a-z0-9]+",


def as_params(**kwargs):
    """Quote a stage's keyword arguments for `python -m agentflan.cli <stage> --params ...`."""
    return shlex.quote(json.dumps(kwargs, sort_keys=True))


def stage(name):
    return f"{sys.executable} -m agentflan.cli {name} --params {{params.args}} > {{log}} 2>&1"


def size_of(model_id):
    return cfg.split_model_id(model_id)[1]


def of_seed(model_id):
    """(the table's model id, training seed or None) of a model id (agentflan.config.split_seed)."""
    return cfg.split_seed(config, model_id)


def score_seed(model_id):
    """The seed a score file records (bootstrap pools a model's seeds by it): only with several
    training seeds, and only for trained models."""
    return of_seed(model_id)[1] if len(SEEDS) > 1 else None


def finetune_dataset(wc):
    """The ablation data set a fine-tune trains on: ``agentflan_s1`` (seed 1) trains on agentflan."""
    return cfg.split_model_id(of_seed(f"{wc.dataset}-{wc.size}")[0])[0]


def hub_or_mirror(name):
    """A hub repo id, or its copy under data.mirror (<mirror>/<repo_id>) when there is one."""
    mirror = config["data"]["mirror"]
    if mirror and (Path(mirror) / name).is_dir():
        return str(Path(mirror) / name)
    return name


def base_model(size):
    """Path or hub name of the base model a fine-tune starts from."""
    spec = config["models"]["sizes"][size]
    if spec.get("arch"):
        return f"{RESULTS}/models/base-{size}"
    return hub_or_mirror(spec["name_or_path"])


def model_path(model_id):
    if model_id in API_MODELS:
        return model_id     # only a label: the API backend answers
    if model_id in EXTERNAL:
        spec = EXTERNAL[model_id]
        if spec.get("source"):    # the downloaded snapshot (rule fetch), as data.sources.sbert
            return f"{DATA}/raw/{config['data']['sources'][spec['source']]['repo_id']}"
        if spec.get("standin_of"):    # the miniature's stand-in (rule standin_checkpoint)
            return f"{DATA}/external/{model_id}"
        return spec["path"]
    dataset, size = cfg.split_model_id(model_id)
    if dataset == "base":
        return base_model(size)
    return f"{RESULTS}/models/{model_id}"


def local_model_input(model_id):
    """What the generate job of a model needs built first: a model of this run, the manifest of a
    downloaded external checkpoint, or a local external checkpoint (a stand-in is built by the rule
    standin_checkpoint; any other path must exist)."""
    if model_id in API_MODELS:
        return []
    if model_id in EXTERNAL:
        spec = EXTERNAL[model_id]
        return [f"{DATA}/raw/{spec['source']}.manifest.json"] if spec.get("source") else [model_path(model_id)]
    path = model_path(model_id)
    return [path] if path.startswith(RESULTS) else []


def chat_format(model_id):
    """The chat format of a model (agentflan.chat_formats): an external checkpoint's own, else None
    (the Agent-FLAN template)."""
    spec = EXTERNAL.get(model_id)
    if spec is None:
        return None
    return {"name": spec["chat_format"], "system_prompt": spec.get("system_prompt")}


def api_backend(model_id):
    """stages.generate's backend of an API model: {kind: api, model, max_tokens, ...}."""
    spec = {k: v for k, v in API_MODELS[model_id].items() if k != "label"}
    return {"kind": "api", **spec}


def _size_resource(section, key, size_of_job):
    def resource(wc):
        spec = launch.size_resources(config, section, size_of_job(wc))
        return launch.job_resources(spec, THREADS)[key]

    return resource


def train_resource(key):
    """One Snakemake resource of `finetune` from training.resources.<size> (agentflan.launch):
    nodes, tasks (one per node), gres (gpu:N per node; absent without GPUs), tasks_per_gpu, mpi,
    cpus_per_task, mem_mb, runtime, in the keys of snakemake-executor-plugin-slurm."""
    return _size_resource("training", key, lambda wc: wc.size)


def generate_resource(key):
    """The same for `generate`, from evaluation.resources.<size of the model>."""
    return _size_resource("evaluation", key, lambda wc: size_of(wc.model))


def train_launcher(wc):
    """What starts `-m agentflan.cli train` for this size: python, torchrun, or srun + torchrun."""
    return launch.train_launcher(config, wc.size, sys.executable)


def launcher_stage(name):
    """The stage command, started by the rule's params.launcher (see train_launcher)."""
    return f"{{params.launcher}} -m agentflan.cli {name} --params {{params.args}} > {{log}} 2>&1"


def _eval_paths(model, kind, benchmarks=None):
    return {b: f"{RESULTS}/eval/{model}/{b}.{kind}" for b in (BENCHMARKS if benchmarks is None else benchmarks)}


def eval_files(kind, pairs=None):
    """``results/<run>/eval/<model>/<benchmark>.<kind>`` of every (model, benchmark) in ``pairs``
    (default :data:`SCORE_FILES`)."""
    return [f"{RESULTS}/eval/{m}/{b}.{kind}" for m, b in (SCORE_FILES if pairs is None else pairs)]


def _models_meta():
    meta = {}
    for m in MODEL_IDS:
        dataset, size = cfg.split_model_id(m)
        if m in EXTERNAL or m in API_MODELS:
            spec = EXTERNAL.get(m) or API_MODELS[m]
            sizes = config["models"]["sizes"]
            meta[m] = {"size": size if size in sizes else "", "size_label": sizes[size]["label"] if size in sizes else "",
                       "dataset_id": "", "base": "", "trained": False,
                       "kind": "external" if m in EXTERNAL else "api", "label": spec.get("label") or ""}
            if m in EXTERNAL:
                meta[m]["chat_format"] = spec["chat_format"]
                meta[m]["checkpoint"] = (config["data"]["sources"][spec["source"]]["repo_id"] if spec.get("source")
                                         else f"stand-in: copy of {spec['standin_of']}" if spec.get("standin_of")
                                         else spec["path"])
                meta[m]["doc"] = spec["doc"]
            else:
                meta[m]["requested_model"] = spec["model"]
            continue
        table_id, seed = of_seed(m)
        meta[m] = {"size": size, "size_label": config["models"]["sizes"][size]["label"],
                   "dataset_id": "" if dataset == "base" else cfg.split_model_id(table_id)[0],
                   "base": base_model(size),
                   "trained": dataset != "base", "kind": "base" if dataset == "base" else "trained"}
        if len(SEEDS) > 1 and seed is not None:     # with several seeds: which model and seed it is
            meta[m].update({"seed": seed, "table_model_id": table_id})
    return meta


def _teval_model_source():
    """The data.sources name of T-Eval's sentence-embedding model ({source: NAME}), else None."""
    spec = config["evaluation"]["benchmarks"].get("teval", {}).get("similarity_model")
    return spec["source"] if isinstance(spec, dict) and "source" in spec else None


def _hotpot_wiki_source():
    """The data.sources name of HotpotQA's local Wikipedia (protocol agenttuning, store local), else
    None (the distractor protocol/store needs no wiki)."""
    o = config["evaluation"]["benchmarks"].get("hotpotqa", {})
    if o.get("protocol", "distractor") != "agenttuning" or o.get("store", "local") != "local":
        return None
    source = (o.get("wiki") or {}).get("source")
    if not source or source not in config["data"]["sources"]:
        raise ValueError("evaluation.benchmarks.hotpotqa: protocol agenttuning with store local needs "
                         "wiki.source naming a data.sources entry (the page corpus)")
    return source


HOTPOT_WIKI_DB = f"{DATA}/eval/hotpotqa_wiki.sqlite"


def _generate_options():
    """evaluation.benchmarks, with HotpotQA's built wiki store (rule hotpotqa_wiki) as wiki_db."""
    opts = json.loads(json.dumps(config["evaluation"]["benchmarks"]))
    if _hotpot_wiki_source() is not None:
        opts["hotpotqa"]["wiki_db"] = HOTPOT_WIKI_DB
    return opts


def _score_options():
    """evaluation.benchmarks, with a T-Eval similarity model given as a data source resolved to
    its local snapshot (path) and the lock holding the sha256 of its weights."""
    opts = json.loads(json.dumps(config["evaluation"]["benchmarks"]))
    source = _teval_model_source()
    if source is not None:
        spec = config["data"]["sources"].get(source)
        if spec is None:
            raise ValueError(f"evaluation.benchmarks.teval.similarity_model: no data.sources.{source}")
        opts["teval"]["similarity_model"] = {"source": source, "name": spec["repo_id"],
                                             "path": f"{DATA}/raw/{spec['repo_id']}",
                                             "lock": f"{DATA}/sources.lock.json"}
    return opts
