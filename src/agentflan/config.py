"""Configuration: schema validation with defaults, and the expansion of the paper's experiments
into datasets, model ids and table/figure row specs.

Model ids are ``<dataset>-<size>`` (a fine-tuned model) or ``base-<size>`` (the untuned base:
Llama-2 in the paper preset, the pretrained tiny model in the miniature).

Training seeds (``training.seeds``, issue 11 item 3): the first seed's fine-tune of a data set
keeps the plain id ``<dataset>-<size>``; every further seed ``s`` trains ``<dataset>_s<s>-<size>``
(the seed on the data set part, so the id stays a ``model`` wildcard ``[a-z0-9_]+-[a-z0-9]+``).
Data set names ending in ``_s<digits>`` are refused so the scheme is unambiguous. Base models
(pretraining included) and external/API models are not seeded. :func:`split_seed` maps a seed's
id back to the table's model id and the seed.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from .io import DataError
from .records import CAPABILITIES

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"

# run for every evaluated model (agentflan.evaluation.registry.BENCHMARKS)
BENCHMARKS = ("teval", "agenth", "hotpotqa", "mmlu", "gsm8k", "humaneval")
# run only for the models of the tables that show them (extra_benchmark_models)
EXTRA_BENCHMARKS = ("sciworld",)
# Table 4's general benchmarks through lm-evaluation-harness (agentflan.evaluation.harness), one
# harness job per model of Table 4 (harness_models); their score files are named lmeval_<benchmark>
HARNESS_PREFIX = "lmeval_"
HARNESS_BENCHMARKS = tuple(HARNESS_PREFIX + b for b in ("mmlu", "gsm8k", "humaneval"))


def harness_source(benchmark: str) -> str:
    """The benchmark a harness score file's name stands for (``lmeval_mmlu`` -> ``mmlu``); any
    other name unchanged."""
    return benchmark[len(HARNESS_PREFIX):] if benchmark.startswith(HARNESS_PREFIX) else benchmark


def uses_harness(experiments: dict | None) -> bool:
    """Whether Table 4 is scored by lm-evaluation-harness (``experiments.json``
    ``general_protocol: lmeval``) rather than the package's own chat protocol."""
    return (experiments or {}).get("general_protocol") == "lmeval"


def _validator():
    import jsonschema

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


class ConfigError(DataError):
    """A config value outside the schema: one line naming the config file (and line, when the
    file is known), the key path and what is wrong."""


def _yaml_line(source: Path, keys: list) -> int | None:
    """1-based line of the deepest node of ``keys`` that exists in the YAML file ``source``."""
    try:
        node = yaml.compose(source.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(key)]
            if not match:
                break
            line = match[-1][0].start_mark.line + 1  # the last one wins, as in yaml.safe_load
            node = match[-1][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _fail(source, keys: list, message: str):
    where = ".".join(str(k) for k in keys) or "(top level)"
    src = Path(source) if source is not None else None
    line = _yaml_line(src, keys) if src is not None and src.is_file() else None
    raise ConfigError(source if source is not None else "config", f"{where}: {message}", line=line)


def validate(config: dict, source: str | Path | None = None) -> dict:
    """Validate ``config`` in place against the schema, filling defaults; returns it.

    Every violation raises :class:`ConfigError` (a :class:`~agentflan.io.DataError`, so also a
    ``ValueError``) with one line: ``<source>[:line]: <key.path>: <what is wrong>``; ``source``
    is the YAML file the config came from, if known. Beyond the schema: ablation data sets need
    a known ``format``, capability weights in [0, 1] and names usable as Snakemake wildcards;
    ``evaluation.benchmarks`` may only name known benchmarks."""
    import jsonschema

    if not isinstance(config, dict):
        _fail(source, [], f"expected a mapping, got {type(config).__name__}")
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    error = jsonschema.exceptions.best_match(_validator()(schema).iter_errors(config))
    if error is not None:
        message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        keys = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            keys += extra[:1]  # point at the unexpected key's line
        _fail(source, keys, message)
    if config.get("data_mirror"):
        config["data"]["mirror"] = config["data_mirror"]
    sizes = config["models"]["sizes"]
    if config["models"]["main_size"] not in sizes:
        _fail(source, ["models", "main_size"],
              f"{config['models']['main_size']!r} is not in models.sizes {sorted(sizes)}")
    for name, spec in sizes.items():
        if not re.fullmatch(r"[a-z0-9]+", str(name)):
            _fail(source, ["models", "sizes", name], "size names must match [a-z0-9]+")
        if not spec.get("arch") and not spec.get("name_or_path"):
            _fail(source, ["models", "sizes", name],
                  "needs 'arch' (tiny model) or 'name_or_path' (checkpoint)")
    for name, spec in config["ablations"]["datasets"].items():
        keys = ["ablations", "datasets", name]
        if not re.fullmatch(r"[a-z0-9_]+", str(name)) or name == "base":
            _fail(source, keys, "data set names must match [a-z0-9_]+ and not be 'base'")
        if SEED_SUFFIX.search(str(name)):
            _fail(source, keys, "data set names must not end in _s<digits> (the training seeds' "
                                "model ids are <dataset>_s<seed>-<size>)")
        if spec.get("format") not in ("react", "chat", "none"):
            _fail(source, keys + ["format"], f"unknown format {spec.get('format')!r}; "
                                             "known: react, chat, none")
        for cap, w in (spec.get("weights") or {}).items():
            if cap not in CAPABILITIES:
                _fail(source, keys + ["weights", cap],
                      f"unknown capability {cap!r}; known: {', '.join(CAPABILITIES)}")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 1:
                _fail(source, keys + ["weights", cap], f"weight {w!r} is not a number in [0, 1]")
    _validate_seeds(config, source)
    for bench in config["evaluation"]["benchmarks"]:
        if bench not in BENCHMARKS + EXTRA_BENCHMARKS:
            _fail(source, ["evaluation", "benchmarks", bench],
                  f"unknown benchmark {bench!r}; known: {', '.join(BENCHMARKS + EXTRA_BENCHMARKS)}")
    _validate_evaluated_only(config, source)
    return config


def _validate_seeds(config: dict, source) -> None:
    """``training.seeds``: distinct integers >= 0, at least one; absent, it is
    ``[training.default.seed]`` (so a config without it trains exactly as before)."""
    tr = config["training"]
    if "seeds" not in tr:   # not written into the config: a config without it is unchanged
        return
    seeds = tr["seeds"]
    if not isinstance(seeds, list) or not seeds:
        _fail(source, ["training", "seeds"], f"expected a non-empty list of integers, got {seeds!r}")
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            _fail(source, ["training", "seeds", i], f"a seed is an integer >= 0, got {s!r}")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        _fail(source, ["training", "seeds"], f"seeds must be distinct, {dup[0]} appears twice")


def _validate_evaluated_only(config: dict, source) -> None:
    """External and API model ids: usable as the ``model`` wildcard, distinct from the trained and
    base ids and from each other; an external model has exactly one of source/path/standin_of, its
    source is a data.sources model repo, system_prompt only with llama2-chat, standin_of names a
    model the run has."""
    ev = config["evaluation"]
    own = set(_own_model_ids(config)) | set(seed_model_ids(config))
    seen: dict[str, str] = {}
    for section in ("external_models", "api_models"):
        for mid in ev.get(section) or {}:
            keys = ["evaluation", section, mid]
            if not re.fullmatch(r"[a-z0-9_]+-[a-z0-9]+", str(mid)) or str(mid).startswith(("base-", "init-")):
                _fail(source, keys, "model ids must match [a-z0-9_]+-[a-z0-9]+ and not start with base- or init-")
            if mid in own:
                _fail(source, keys, f"model id {mid!r} is also a model this run trains or uses as base")
            if mid in seen:
                _fail(source, keys, f"model id {mid!r} is also in evaluation.{seen[mid]}")
            seen[mid] = section
    labels: dict[str, list] = {}
    for section in ("external_models", "api_models"):
        for mid, spec in (ev.get(section) or {}).items():
            if spec.get("label"):
                if spec["label"] in labels:
                    _fail(source, ["evaluation", section, mid, "label"],
                          f"label {spec['label']!r} is also the label of {'.'.join(labels[spec['label']])}")
                labels[spec["label"]] = ["evaluation", section, mid]
    sources = config["data"].get("sources") or {}
    for mid, spec in (ev.get("external_models") or {}).items():
        keys = ["evaluation", "external_models", mid]
        given = [k for k in ("source", "path", "standin_of") if spec.get(k) is not None]
        if len(given) != 1:
            _fail(source, keys, "needs exactly one of 'source' (a data.sources model repo), 'path' (a local "
                                f"directory) or 'standin_of' (miniature stand-in), got {given or 'none'}")
        if "source" in spec:
            src = sources.get(spec["source"])
            if src is None:
                _fail(source, keys + ["source"], f"no data.sources.{spec['source']} (sources: {sorted(sources)})")
            if src.get("repo_type") != "model":
                _fail(source, keys + ["source"], f"data.sources.{spec['source']} is not a model repo (repo_type: model)")
            if config["data"]["source"] != "hub":
                _fail(source, keys + ["source"], "a downloaded checkpoint needs data.source: hub (use 'path' otherwise)")
        if spec.get("system_prompt") is not None and spec["chat_format"] != "llama2-chat":
            _fail(source, keys + ["system_prompt"], f"only chat_format llama2-chat takes a system_prompt, "
                                                    f"not {spec['chat_format']}")
        if spec.get("standin_of") is not None:
            if spec["standin_of"] not in own:
                _fail(source, keys + ["standin_of"], f"{spec['standin_of']!r} is not a model of this run")


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    config = yaml.safe_load(Path(path).read_text()) or {}
    for key, value in (overrides or {}).items():
        config[key] = value
    return validate(config, source=path)


SEED_SUFFIX = re.compile(r"_s([0-9]+)$")


def fraction_id(fraction: float) -> str:
    return f"agentflan_f{round(fraction * 100):02d}"


def datasets(config: dict) -> dict[str, dict]:
    """All ablation datasets: the configured ones plus the Figure 7 fractions of ``agentflan``."""
    out = {k: dict(v) for k, v in config["ablations"]["datasets"].items()}
    if "agentflan" in out:
        for f in config["ablations"]["fractions"]:
            if f < 1:
                out[fraction_id(f)] = {**out["agentflan"], "fraction": f}
    return out


def sizes(config: dict) -> list[str]:
    return list(config["models"]["sizes"])


def main_size(config: dict) -> str:
    return config["models"]["main_size"]


def external_models(config: dict) -> dict[str, dict]:
    """``evaluation.external_models``: published checkpoints, evaluated but never trained."""
    return dict(config["evaluation"].get("external_models") or {})


def api_models(config: dict) -> dict[str, dict]:
    """``evaluation.api_models``: models answered by an OpenAI-compatible endpoint."""
    return dict(config["evaluation"].get("api_models") or {})


def evaluated_only_ids(config: dict) -> list[str]:
    """Model ids that are evaluated but never trained here (external checkpoints, API models)."""
    return sorted([*external_models(config), *api_models(config)])


def model_ids(config: dict) -> list[str]:
    """Every model the experiments need: the trained ones (every training seed's,
    :func:`seed_model_ids`), the base models, and the evaluated-only ones (:func:`evaluated_only_ids`)."""
    return sorted(set(_own_model_ids(config)) | set(seed_model_ids(config)) | set(evaluated_only_ids(config)))


def _with_seeds(config: dict, ids) -> list[str]:
    """``ids`` and, for the trained ones, their further training seeds' ids (sorted, unique)."""
    own = set(_own_model_ids(config))
    out = set(ids)
    for m in ids:
        if m in own and not m.startswith("base-"):
            out.update(seeded_model_id(m, s, config) for s in seeds(config))
    return sorted(out)


def extra_benchmark_models(config: dict) -> dict[str, list[str]]:
    """``{benchmark: model ids}`` of the benchmarks run only where a table shows them: ScienceWorld
    for the rows of Table 1 and the series of Figure 1 (with every training seed), unless
    ``evaluation.benchmarks.sciworld.enabled`` is false."""
    out: dict[str, list[str]] = {}
    if (config["evaluation"]["benchmarks"].get("sciworld") or {}).get("enabled", True):
        ex = experiments(config)
        ids = [e["model_id"] for e in ex["tables"]["table1"]] + \
              [e["model_id"] for e in ex["figures"]["fig1"]["series"]]
        out["sciworld"] = _with_seeds(config, ids)
    return out


def harness_enabled(config: dict) -> bool:
    """Whether lm-evaluation-harness scores Table 4 (``evaluation.harness.enabled``, default true)."""
    return bool((config["evaluation"].get("harness") or {}).get("enabled", True))


def harness_models(config: dict) -> list[str]:
    """The models of Table 4 (general data only, general + Agent-FLAN data, every size and training
    seed) that lm-evaluation-harness scores, unless ``evaluation.harness.enabled`` is false."""
    if not harness_enabled(config):
        return []
    rows = experiments(config)["tables"]["table4"]
    return _with_seeds(config, [e[k] for e in rows for k in ("general_model_id", "agent_model_id")])


def score_files(config: dict) -> list[tuple[str, str]]:
    """Every ``(model id, benchmark)`` with a score file ``results/<run>/eval/<model>/<benchmark>.scores.json``:
    :data:`BENCHMARKS` for every model, the extra benchmarks for their models, the harness
    benchmarks for Table 4's models."""
    pairs = [(m, b) for m in model_ids(config) for b in BENCHMARKS]
    pairs += [(m, b) for b, ms in extra_benchmark_models(config).items() for m in ms]
    pairs += [(m, b) for m in harness_models(config) for b in HARNESS_BENCHMARKS]
    return sorted(pairs)


def seeds(config: dict) -> list[int]:
    """``training.seeds`` (default ``[training.default.seed]``): the first is the plain ids' seed."""
    tr = config["training"]
    return list(tr.get("seeds") or [tr["default"]["seed"]])


def seeded_model_id(model_id: str, seed: int, config: dict) -> str:
    """The id of ``model_id`` (a fine-tune, ``<dataset>-<size>``) trained with ``seed``: the plain
    id for the first of ``training.seeds``, else ``<dataset>_s<seed>-<size>``."""
    if seed == seeds(config)[0]:
        return model_id
    dataset, size = split_model_id(model_id)
    return f"{dataset}_s{seed}-{size}"


def seed_model_ids(config: dict) -> list[str]:
    """The fine-tunes of every training seed after the first (``<dataset>_s<seed>-<size>``)."""
    trained = [m for m in _own_model_ids(config) if not m.startswith("base-")]
    return sorted(seeded_model_id(m, s, config) for m in trained for s in seeds(config)[1:])


def split_seed(config: dict, model_id: str) -> tuple[str, int | None]:
    """``(table model id, training seed)`` of a model id: ``agentflan_s1-xs`` -> ``("agentflan-xs", 1)``;
    a fine-tune's plain id has the first seed; base, external and API models have ``None``."""
    dataset, size = split_model_id(model_id)
    m = SEED_SUFFIX.search(dataset)
    if m and model_id in seed_model_ids(config):
        return f"{dataset[:m.start()]}-{size}", int(m.group(1))
    if model_id in _own_model_ids(config) and dataset != "base":
        return model_id, seeds(config)[0]
    return model_id, None


def _own_model_ids(config: dict) -> list[str]:
    """The models of this run (each one is trained unless it is a base model)."""
    m = main_size(config)
    ds = datasets(config)
    ids = [f"base-{s}" for s in sizes(config)]
    ids += [f"{d}-{m}" for d in ds]
    for s in sizes(config):
        if s == m:
            continue
        for d in ("agentflan", "general"):
            if d in ds:
                ids.append(f"{d}-{s}")
    return sorted(set(ids))


def split_model_id(model_id: str) -> tuple[str, str]:
    dataset, _, size = model_id.rpartition("-")
    return dataset, size


def training_recipe(config: dict, size: str, pretrain: bool = False, seed: int | None = None) -> dict:
    """The effective recipe of one training job. Paths in it (``deepspeed``) stay as configured,
    relative to the repository root, so rule params do not change when the checkout moves.
    ``seed``: a fine-tune's training seed (``training.seeds``), which replaces the recipe's
    ``seed``; pretraining is not seeded per training seed."""
    recipe = copy.deepcopy(config["training"]["default"])
    if pretrain:
        recipe.update(config["models"]["pretrain"].get("recipe", {}))
    else:
        recipe.update(config["training"]["per_size"].get(size, {}))
        if seed is not None:
            recipe["seed"] = seed
    recipe["max_length"] = config["data"]["max_length"]
    if not recipe.get("per_device_batch_size"):
        recipe["per_device_batch_size"] = recipe["batch_size"]
    return recipe


def experiments(config: dict) -> dict:
    """Row specs of every paper table and figure (written to summary/experiments.json)."""
    m = main_size(config)
    label = {s: v["label"] for s, v in config["models"]["sizes"].items()}
    paper = config["preset"] == "paper"
    table2 = [("ReAct (AgentTuning* baseline)", "react"), ("Align-Chat All (equal weights)", "chat_all"),
              ("Reasoning halved", "chat_half_reasoning"), ("Retrieval halved", "chat_half_retrieval"),
              ("Understanding halved", "chat_half_understanding"),
              ("Instruction-following halved", "chat_half_instruction"),
              ("All (Weighted) 1:0.25:0.75", "agentflan_wo_ns")]
    fig7 = [{"fraction": f, "model_id": f"{fraction_id(f)}-{m}"} for f in config["ablations"]["fractions"] if f < 1]
    fig7.append({"fraction": 1.0, "model_id": f"agentflan-{m}"})
    # evaluated-only models with a label: a Table 1 row and a Figure 1 series each (external
    # checkpoints first, then API models, each in id order)
    extra = [{"label": spec["label"], "model_id": mid}
             for models in (external_models(config), api_models(config))
             for mid, spec in sorted(models.items()) if spec.get("label")]
    harness = harness_enabled(config)
    return {
        "run": config["run"],
        "preset": config["preset"],
        "main_size": m,
        # how Table 4's MMLU/GSM8K/HumanEval were scored: lm-evaluation-harness (score files
        # lmeval_<benchmark>) or the package's own zero-shot chat protocol (<benchmark>)
        "general_protocol": "lmeval" if harness else "chat",   # read by uses_harness
        "size_labels": label,
        # paired bootstrap of the ablation comparisons (agentflan.reporting.bootstrap)
        "bootstrap": dict((config.get("reporting") or {}).get("bootstrap") or {}),
        "tables": {
            "table1": [{"label": label[m], "model_id": f"base-{m}"},
                       {"label": "AgentTuning*", "model_id": f"react-{m}"},
                       {"label": "Agent-FLAN", "model_id": f"agentflan-{m}"}, *extra],
            "table2": [{"label": lab, "model_id": f"{d}-{m}", "dataset_id": d} for lab, d in table2],
            "table3": [{"label": label[m], "model_id": f"base-{m}"},
                       {"label": "AgentTuning", "model_id": f"react-{m}"},
                       {"label": "Agent-FLAN w/o NS", "model_id": f"agentflan_wo_ns-{m}"},
                       {"label": "Agent-FLAN", "model_id": f"agentflan-{m}"}],
            "table4": [{"label": label[s], "size": s, "general_model_id": f"general-{s}",
                        "agent_model_id": f"agentflan-{s}"} for s in sizes(config)],
            "table5": [{"label": label[s], "model_id": f"agentflan-{s}"} for s in sizes(config)],
            "table6": {},
        },
        "figures": {
            "fig1": {"series": [{"label": label[m], "model_id": f"base-{m}"},
                                {"label": "AgentTuning*", "model_id": f"react-{m}"},
                                {"label": "Agent-FLAN", "model_id": f"agentflan-{m}"}, *extra],
                     "reference": "paper:GPT-4" if paper else "best"},
            "fig2": {"model_id": f"react-{m}"},
            "fig3": {"model_id": f"chat_all-{m}"},
            "fig4": {"models": [{"label": label[m], "model_id": f"base-{m}"},
                                {"label": "AgentTuning", "model_id": f"react-{m}"},
                                {"label": "Agent-FLAN w/o NS", "model_id": f"agentflan_wo_ns-{m}"},
                                {"label": "Agent-FLAN", "model_id": f"agentflan-{m}"}]},
            "fig5": {},
            "fig6": {"dataset_id": "agentflan"},
            "fig7": {"points": fig7},
            "fig8": {"series": [
                {"label": "Llama2 (base)", "points": [{"size": label[s], "model_id": f"base-{s}"} for s in sizes(config)]},
                {"label": "Agent-FLAN", "points": [{"size": label[s], "model_id": f"agentflan-{s}"} for s in sizes(config)]}]},
        },
    }
