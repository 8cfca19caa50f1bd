"""Table 4's general benchmarks through EleutherAI's lm-evaluation-harness, called as a library.

MMLU (5-shot log-likelihood), GSM8K (8-shot chain of thought) and HumanEval (pass@1) are scored by
``lm_eval.simple_evaluate`` with lm-eval's **own task definitions** (its YAML files, loaded with
``lm_eval.tasks._yaml_loader.load_yaml``: prompts, shots, few-shot sampler, stop sequences,
filters, metrics and aggregation), on the **locked local files** (``dataset_path: json`` /
``parquet`` with ``data_files``; the hub is never contacted: ``HF_HUB_OFFLINE`` and
``HF_DATASETS_OFFLINE`` are set for the call), with the model's **own chat template**. What we
change, and why, is listed per benchmark in :func:`scoring_info` ("deviations"):

* **MMLU**: ``tasks/mmlu/default/_default_template_yaml`` + the per-subject YAML
  (``mmlu_<subject>.yaml``: its description), one task per subject present in the test file,
  5 shots from that subject's ``dev`` rows (sampler ``first_n``), accuracy ``acc`` over the
  letters A-D by log-likelihood. The subject tasks form one lm-eval group with lm-eval's own
  aggregation (``aggregate_metric_list: acc, weight_by_size``, as ``tasks/mmlu/default/_mmlu.yaml``),
  so the reported accuracy is the group's ``acc``: the mean over all test rows. A subject without
  a YAML of lm-eval (not one of the 57) gets the description lm-eval's generator writes.
* **GSM8K**: ``tasks/gsm8k/gsm8k-cot.yaml`` (its 8 fixed exemplars, ``until``, regex filters
  ``strict-match`` and ``flexible-extract``, ``exact_match``). The reported accuracy is
  ``exact_match`` of ``strict-match`` (``"The answer is N."``, the exemplars' answer format; the
  first filter of the YAML), ``flexible-extract`` is in the record.
* **HumanEval**: ``tasks/humaneval/humaneval.yaml`` (prompt, ``until``, ``max_gen_toks``, greedy,
  its ``build_predictions`` filter taken verbatim from its ``utils.py``), but the metric
  ``utils.pass_at_k`` calls ``evaluate.load("code_eval")``, which fetches a metric script from the
  hub and runs the programs unconfined. Here the metric is our ``pass_at_k`` (:class:`_Executor`):
  the same program (``prediction + "\\n" + test + "check(entry_point)"``, code_eval's composition;
  its default timeout, 3 s) run by our confined runner
  :func:`agentflan.evaluation.general.run_program` (own process, resource limits, no network;
  SECURITY.md): "lm-eval's task, our confined executor for code_eval". With one greedy
  sample per task pass@1 is the share of tasks whose program exits 0. ``execute: false`` runs
  nothing and reports ``pass@1`` as not computed (None).

Chat template (``apply_chat_template``, default on, with lm-eval's ``fewshot_as_multiturn``):
``chat_format`` says which one. ``agentflan`` (default; every model this package trains): the
Agent-FLAN template of training (:func:`agentflan.template.render`, BOS first), which the
checkpoints do not store as a Hugging Face ``chat_template``: the model adapter's
``apply_chat_template`` (lm-eval's extension point, ``LM.apply_chat_template``) renders it, and
generation also stops at the assistant end tag (:data:`agentflan.template.ASSISTANT_STOP`, added
to each generate task's ``until``; lm-eval adds EOS itself). ``tokenizer``: the checkpoint's own
Hugging Face ``chat_template`` through lm-eval's unchanged path; a tokenizer without one falls back
to plain prompts, recorded as ``chat_template: "none (tokenizer has none)"``. ``llama2-chat``:
:class:`agentflan.chat_formats.Llama2ChatFormat`'s text (``system_prompt`` option).
``apply_chat_template: false``: lm-eval's plain few-shot prompts.

Returns, per benchmark, ``(metrics, per_sample_rows, record)``: metrics in percent with the
package's names (MMLU/GSM8K ``accuracy``, HumanEval ``pass@1``) read from lm-eval's results
object, rows with the ids of :func:`agentflan.evaluation.general.load_items` (``mmlu/<row>``,
``gsm8k/<row>``, ``humaneval/<task_id>``) whose mean equals the metric (checked), and a JSON-safe
subset of lm-eval's results object without times, paths, hosts or git hashes (same inputs give the
same bytes on one machine; standard errors are not computed: ``bootstrap_iters=0``). Seeds: lm-eval's
four seeds 0 (``simple_evaluate`` seeds ``random``, numpy and torch of the process).
"""
from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

BENCHMARKS = ("mmlu", "gsm8k", "humaneval")
LM_EVAL_VERSION = "0.4.13"
LETTERS = "ABCD"

# Task YAML files of lm-eval used per benchmark (relative to lm_eval/tasks)
TASK_YAML = {
    "mmlu": "mmlu/default/_default_template_yaml",
    "gsm8k": "gsm8k/gsm8k-cot.yaml",
    "humaneval": "humaneval/humaneval.yaml",
}
MMLU_SUBJECT_YAML = "mmlu/default/mmlu_{subject}.yaml"
# values of those YAMLs that scoring_info reports without importing lm-eval (checked by run())
YAML_VALUES = {("gsm8k", "num_fewshot"): 8, ("humaneval", "max_gen_toks"): 1024}
HFLM_MAX_GEN_TOKS = 256   # lm-eval's HFLM.max_gen_toks: GSM8K's YAML sets none
MMLU_GROUP = "agentflan_mmlu"
# lm-eval's task names for ours (MMLU: group MMLU_GROUP of tasks "mmlu_<subject>", lm-eval's names)
TASK_NAMES = {"gsm8k": "agentflan_gsm8k_cot", "humaneval": "agentflan_humaneval"}
#: the chat formats this module can apply (``chat_format``)
CHAT_FORMATS = ("agentflan", "tokenizer", "llama2-chat")

DEFAULTS: dict[str, Any] = {
    # per benchmark; None = lm-eval's own value from the task YAML. lm-eval's MMLU YAML leaves the
    # shots to --num_fewshot (0 if unset); MMLU's standard 5-shot protocol (the paper's) is explicit
    "mmlu": {"num_fewshot": 5},
    "gsm8k": {"num_fewshot": None, "max_gen_toks": None,
              # the filter whose exact_match is reported as accuracy (the YAML's first)
              "filter": "strict-match"},
    "humaneval": {"max_gen_toks": None,
                  # our confined runner (agentflan.evaluation.general.run_program); timeout in
                  # seconds per program: code_eval's default (3 s)
                  "execute": True, "timeout": 3.0, "memory_mb": 1024},
    "batch_size": 16,
    # context length in tokens given to lm-eval's HFLM; None = the model config's
    "max_length": None,
    "apply_chat_template": True,
    "fewshot_as_multiturn": True,
    "chat_format": "agentflan",
    "system_prompt": None,          # llama2-chat only
    "dtype": "auto",                # auto: float32 on CPU, bfloat16 on a GPU
    "device": "auto",               # auto: cuda if available, else cpu
}

# The miniature's models were trained on at most 448 tokens and generate with a 512-token window
# (config.yaml evaluation.generation.max_prompt_length), so the harness gets max_length 512.
# lm-eval's GSM8K prompt with all 8 exemplars is about 1,020 tokens of the miniature's 1,536-token
# BPE in the Agent-FLAN template (4 exemplars: 516), so the miniature uses the first 3 (at most
# 387 tokens) and at most 64 new tokens (its replies are one line, at most 35 tokens):
# 387 + 64 <= 512. HumanEval's 1,024 new tokens exceed the window; the miniature's completions
# are at most 21 tokens: 64. MMLU's 5 shots fit (at most 238 tokens). Every such value is
# recorded as a deviation by scoring_info.
MINIATURE: dict[str, Any] = {
    "gsm8k": {"num_fewshot": 3, "max_gen_toks": 64},
    "humaneval": {"max_gen_toks": 64},
    "batch_size": 32,
    "max_length": 512,
}

_BENCH_KEYS = {b: set(DEFAULTS[b]) for b in BENCHMARKS}
_TOP_KEYS = set(DEFAULTS) - set(BENCHMARKS)


class HarnessError(ValueError):
    """A bad option, file or result (one line)."""


# ============================================================================================
# Options
# ============================================================================================


def options_with_defaults(options: dict | None) -> dict:
    """:data:`DEFAULTS` updated by ``options`` (per-benchmark dicts merged key by key); unknown
    keys are an error."""
    o = copy.deepcopy(DEFAULTS)
    for k, v in (options or {}).items():
        if k in BENCHMARKS:
            if not isinstance(v, dict):
                raise HarnessError(f"harness option {k!r} must be a mapping, got {v!r}")
            unknown = set(v) - _BENCH_KEYS[k]
            if unknown:
                raise HarnessError(f"unknown harness option(s) {k}.{sorted(unknown)}; known: {sorted(_BENCH_KEYS[k])}")
            o[k].update(v)
        elif k in _TOP_KEYS:
            o[k] = v
        else:
            raise HarnessError(f"unknown harness option {k!r}; known: {sorted(DEFAULTS)}")
    _check(o)
    return o


def _check(o: dict) -> None:
    def pos_int(name, v, none_ok=True):
        if v is None and none_ok:
            return
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise HarnessError(f"harness option {name} must be a positive integer"
                               f"{' or null' if none_ok else ''}, got {v!r}")
    for b in ("mmlu", "gsm8k"):
        v = o[b]["num_fewshot"]
        if v is None and b == "mmlu":
            raise HarnessError("harness option mmlu.num_fewshot must be a non-negative integer, got null")
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise HarnessError(f"harness option {b}.num_fewshot must be a non-negative integer or null, got {v!r}")
    pos_int("gsm8k.max_gen_toks", o["gsm8k"]["max_gen_toks"])
    pos_int("humaneval.max_gen_toks", o["humaneval"]["max_gen_toks"])
    pos_int("batch_size", o["batch_size"], none_ok=False)
    pos_int("max_length", o["max_length"])
    pos_int("humaneval.memory_mb", o["humaneval"]["memory_mb"], none_ok=False)
    if o["gsm8k"]["filter"] not in ("strict-match", "flexible-extract"):
        raise HarnessError("harness option gsm8k.filter must be strict-match or flexible-extract, "
                           f"got {o['gsm8k']['filter']!r}")
    t = o["humaneval"]["timeout"]
    if not isinstance(t, (int, float)) or isinstance(t, bool) or t <= 0:
        raise HarnessError(f"harness option humaneval.timeout must be a positive number, got {t!r}")
    for name in ("apply_chat_template", "fewshot_as_multiturn"):
        if not isinstance(o[name], bool):
            raise HarnessError(f"harness option {name} must be true or false, got {o[name]!r}")
    if not isinstance(o["humaneval"]["execute"], bool):
        raise HarnessError(f"harness option humaneval.execute must be true or false, got {o['humaneval']['execute']!r}")
    if o["chat_format"] not in CHAT_FORMATS:
        raise HarnessError(f"harness option chat_format must be one of {', '.join(CHAT_FORMATS)}, "
                           f"got {o['chat_format']!r}")
    sp = o["system_prompt"]
    if sp is not None and (o["chat_format"] != "llama2-chat" or not isinstance(sp, str)):
        raise HarnessError("harness option system_prompt is a string for chat_format llama2-chat only")
    if o["dtype"] not in ("auto", "float32", "bfloat16", "float16"):
        raise HarnessError(f"harness option dtype must be auto, float32, bfloat16 or float16, got {o['dtype']!r}")
    if o["device"] not in ("auto", "cpu", "cuda"):
        raise HarnessError(f"harness option device must be auto, cpu or cuda, got {o['device']!r}")


# ============================================================================================
# lm-eval's task YAMLs
# ============================================================================================


def _tasks_dir() -> Path:
    import lm_eval
    return Path(lm_eval.__file__).parent / "tasks"


def _load_task_yaml(rel: str) -> dict:
    """lm-eval's task YAML as a dict, ``!function`` references left as paths (never imported:
    HumanEval's utils.py loads the hub's code_eval at import), ``tag``/``group`` dropped."""
    from lm_eval.tasks._yaml_loader import load_yaml
    cfg = load_yaml(_tasks_dir() / rel, resolve_func=False)
    return {k: v for k, v in cfg.items() if k not in ("tag", "group")}


def _lm_eval_function(rel: str, name: str):
    """Function ``name`` of lm-eval's ``tasks/<rel>``, compiled from its source alone (the module
    top level is not run), with the file's sha256."""
    path = _tasks_dir() / rel
    src = path.read_text(encoding="utf-8")
    tree = ast.parse(src)
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if len(nodes) != 1:
        raise HarnessError(f"lm-eval's {rel} has no function {name!r}")
    ns: dict = {"__name__": "lm_eval.tasks." + rel[:-len(".py")].replace("/", ".")}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), ns)  # lm-eval's own code
    return ns[name], hashlib.sha256(src.encode("utf-8")).hexdigest()


def _yaml_value(bench: str, key: str):
    """A value of lm-eval's task YAML as installed."""
    cfg = _load_task_yaml(TASK_YAML[bench])
    if key == "max_gen_toks":
        return (cfg.get("generation_kwargs") or {}).get("max_gen_toks")
    return cfg.get(key)


def _check_lm_eval() -> None:
    """The pinned lm-eval (the protocol string and :data:`YAML_VALUES` are its)."""
    version = _lm_eval_version()
    if version != LM_EVAL_VERSION:
        raise HarnessError(f"harness: lm-evaluation-harness {version} is installed, the protocol is "
                           f"{LM_EVAL_VERSION} (pip install lm_eval=={LM_EVAL_VERSION})")
    for (bench, key), want in YAML_VALUES.items():
        got = _yaml_value(bench, key)
        if got != want:
            raise HarnessError(f"harness: lm-eval's {TASK_YAML[bench]} has {key} {got!r}, expected {want!r}")
    from lm_eval.models.huggingface import HFLM
    if HFLM.max_gen_toks.fget(None) != HFLM_MAX_GEN_TOKS:
        raise HarnessError(f"harness: lm-eval's HFLM generates up to {HFLM.max_gen_toks.fget(None)} tokens by default, "
                           f"expected {HFLM_MAX_GEN_TOKS}")


def _kind(paths: list[str]) -> str:
    """lm-eval's ``dataset_path`` (a datasets builder) for local files: parquet or json (JSONL)."""
    kinds = {"parquet" if p.endswith(".parquet") else "json" for p in paths}
    if len(kinds) != 1:
        raise HarnessError(f"harness: mixed parquet and JSONL files {paths}")
    return kinds.pop()


def _paths(spec) -> list[str]:
    if isinstance(spec, (str, os.PathLike)):
        return [str(spec)]
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(p, (str, os.PathLike)) for p in spec):
        return [str(p) for p in spec]
    raise HarnessError(f"harness: a split's files must be a path or a non-empty list of paths, got {spec!r}")


def _read_rows(paths: list[str]) -> list[dict]:
    from .text import iter_rows
    rows = []
    for p in paths:
        if not Path(p).is_file():
            raise HarnessError(f"harness: no file {p}")
        rows += [rec for _, rec in iter_rows(p)]
    return rows


def _local(cfg: dict, name: str, paths_by_split: dict[str, list[str]], cache_dir: str) -> dict:
    kinds = {_kind(p) for p in paths_by_split.values()}
    if len(kinds) != 1:
        raise HarnessError(f"harness: mixed parquet and JSONL files {paths_by_split}")
    cfg = dict(cfg)
    cfg.update(task=name, dataset_path=kinds.pop(), dataset_name=None,
               dataset_kwargs={"data_files": {s: list(p) for s, p in sorted(paths_by_split.items())},
                               "cache_dir": cache_dir})
    return cfg


def _mmlu_description(subject: str) -> str:
    # lm-eval's tasks/mmlu/_generate_configs.py
    return f"The following are multiple choice questions (with answers) about {' '.join(subject.split('_'))}.\n\n"


def _mmlu_tasks(files: dict, o: dict, work: Path, cache_dir: str) -> tuple[dict, dict, dict]:
    """lm-eval's MMLU group (a Group object of ConfigurableTasks), ``{task name: [test row index,
    ...]}`` and facts for the record.
    Per subject present in the test rows: its test rows and its dev rows, written as JSONL under
    ``work/mmlu/<subject>/``."""
    from ..io import write_jsonl
    test = _read_rows(_paths(files["test"]))
    if "dev" not in files:
        raise HarnessError("harness: MMLU needs its dev split (5 shots per subject)")
    dev = _read_rows(_paths(files["dev"]))
    by_subject: dict[str, list[int]] = {}
    for n, r in enumerate(test):
        if not isinstance(r, dict) or not isinstance(r.get("subject"), str) or not r["subject"]:
            raise HarnessError(f"harness: MMLU test row {n} has no subject")
        by_subject.setdefault(r["subject"], []).append(n)
    dev_by: dict[str, list[dict]] = {}
    for r in dev:
        dev_by.setdefault(str(r.get("subject")), []).append(r)
    shots_eff = o["mmlu"]["num_fewshot"]
    base = _load_task_yaml(TASK_YAML["mmlu"])
    tasks, index, own_description = [], {}, []
    for subject in sorted(by_subject):
        if len(dev_by.get(subject, [])) < shots_eff:
            raise HarnessError(f"harness: MMLU subject {subject!r} has {len(dev_by.get(subject, []))} dev rows, "
                               f"needs {shots_eff} shots")
        d = work / "mmlu" / subject
        write_jsonl(d / "test.jsonl", [test[n] for n in by_subject[subject]])
        write_jsonl(d / "dev.jsonl", dev_by[subject])
        subj_yaml = _tasks_dir() / MMLU_SUBJECT_YAML.format(subject=subject)
        if subj_yaml.is_file():
            cfg = _load_task_yaml(MMLU_SUBJECT_YAML.format(subject=subject))
        else:
            cfg = dict(base, description=_mmlu_description(subject), task_alias=subject.replace("_", " "))
            own_description.append(subject)
        cfg.pop("dataset_name", None)
        cfg = _local(cfg, f"mmlu_{subject}", {"test": [str(d / "test.jsonl")], "dev": [str(d / "dev.jsonl")]},
                     cache_dir)
        cfg["num_fewshot"] = shots_eff
        tasks.append(cfg)
        index[f"mmlu_{subject}"] = by_subject[subject]
    # the group as tasks/mmlu/default/_mmlu.yaml aggregates it, built as an object (a group dict
    # would pass its own keys down to the inline tasks)
    from lm_eval.api.group import Group
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.config.group import GroupConfig
    group = Group.from_config(GroupConfig(group=MMLU_GROUP, metadata={"version": 2},
                                          aggregate_metric_list=[{"metric": "acc", "weight_by_size": True}]))
    for cfg in tasks:
        group.add(ConfigurableTask(config=cfg))
    return group, index, {"subjects": {s: len(v) for s, v in sorted(by_subject.items())},
                          "subjects_without_lm_eval_yaml": own_description, "test_rows": len(test)}


def _gsm8k_task(files: dict, o: dict, stops: list[str], cache_dir: str) -> tuple[dict, int]:
    paths = _paths(files["test"])
    n = len(_read_rows(paths))
    cfg = _load_task_yaml(TASK_YAML["gsm8k"])
    cfg = _local(cfg, TASK_NAMES["gsm8k"], {"test": paths}, cache_dir)
    if o["gsm8k"]["num_fewshot"] is not None:
        cfg["num_fewshot"] = o["gsm8k"]["num_fewshot"]
    gk = dict(cfg.get("generation_kwargs") or {})
    gk["until"] = list(gk.get("until") or []) + [s for s in stops if s not in (gk.get("until") or [])]
    if o["gsm8k"]["max_gen_toks"] is not None:
        gk["max_gen_toks"] = o["gsm8k"]["max_gen_toks"]
    cfg["generation_kwargs"] = gk
    return cfg, n


# ---- HumanEval: lm-eval's task, our confined executor for code_eval

class _Executor:
    """The metric callable of the HumanEval task: code_eval's program, our confined runner.
    Remembers each program's outcome (for the per-sample rows)."""

    def __init__(self, timeout: float, memory_mb: int):
        self.timeout, self.memory_mb = float(timeout), int(memory_mb)
        self.outcomes: dict[str, dict] = {}

    @staticmethod
    def program(prediction: str, reference: str) -> str:
        # evaluate's code_eval (metrics/code_eval/code_eval.py): candidate + "\n" + test_case
        return prediction + "\n" + reference

    @staticmethod
    def key(program: str) -> str:
        """The key of a program's outcome in ``outcomes``."""
        return hashlib.sha256(program.encode("utf-8")).hexdigest()

    def __call__(self, references: list[str], predictions: list[list[str]], k: list[int] | None = None) -> dict:
        from .general import run_program
        ks = [1] if k is None else ([k] if isinstance(k, int) else list(k))
        if ks != [1]:
            raise HarnessError(f"harness: HumanEval with one greedy sample per task gives pass@1 only, got k={ks}")
        passed = []
        for ref, cands in zip(references, predictions):
            if len(cands) != 1:
                raise HarnessError(f"harness: expected one completion per HumanEval task, got {len(cands)}")
            prog = self.program(cands[0], ref)
            key = self.key(prog)
            if key not in self.outcomes:
                self.outcomes[key] = run_program(prog, self.timeout, self.memory_mb)
            passed.append(1.0 if self.outcomes[key]["passed"] else 0.0)
        return {"pass@1": sum(passed) / len(passed)}


def _pass_at_k_for(executor: _Executor):
    def pass_at_k(references, predictions, k=None):
        return executor(references, predictions, k)
    return pass_at_k


def _humaneval_task(files: dict, o: dict, stops: list[str], cache_dir: str, executor: _Executor | None
                    ) -> tuple[dict, int, str]:
    paths = _paths(files["test"])
    n = len(_read_rows(paths))
    cfg = _load_task_yaml(TASK_YAML["humaneval"])
    cfg = _local(cfg, TASK_NAMES["humaneval"], {"test": paths}, cache_dir)
    build_predictions, sha = _lm_eval_function("humaneval/utils.py", "build_predictions")
    (flt,) = cfg["filter_list"]
    cfg["filter_list"] = [{"name": flt["name"], "filter": [{"function": "custom", "filter_fn": build_predictions}]}]
    (metric,) = cfg["metric_list"]
    if executor is not None:
        cfg["metric_list"] = [{"metric": _pass_at_k_for(executor), "aggregation": metric["aggregation"],
                               "higher_is_better": metric["higher_is_better"], "k": list(metric["k"])}]
    else:
        cfg["metric_list"] = [{"metric": "bypass", "aggregation": "bypass", "higher_is_better": True}]
    gk = dict(cfg.get("generation_kwargs") or {})
    gk["until"] = list(gk.get("until") or []) + [s for s in stops if s not in (gk.get("until") or [])]
    if o["humaneval"]["max_gen_toks"] is not None:
        gk["max_gen_toks"] = o["humaneval"]["max_gen_toks"]
    cfg["generation_kwargs"] = gk
    return cfg, n, sha


# ============================================================================================
# The model
# ============================================================================================


def _make_lm(model_dir: str, o: dict, threads: int):
    """lm-eval's HFLM for ``model_dir`` with the chat template of ``chat_format``; returns ``(lm,
    chat template description, extra stop strings for generate tasks, whether a chat template is
    applied, {device, dtype})``."""
    import torch
    from lm_eval.models.huggingface import HFLM

    torch.set_num_threads(max(1, int(threads)))
    device = o["device"] if o["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = o["dtype"] if o["dtype"] != "auto" else ("bfloat16" if device == "cuda" else "float32")
    fmt = o["chat_format"] if o["apply_chat_template"] else None

    class AgentFlanHFLM(HFLM):
        """HFLM whose ``apply_chat_template`` renders the model's chat format (see the module
        docstring); ``tokenizer``: lm-eval's own path."""

        def apply_chat_template(self, chat_history, add_generation_prompt=True):
            if fmt == "agentflan":
                from ..template import ASSISTANT_BEGIN, render
                turns = [{"role": m["role"], "content": m["content"]} for m in chat_history]
                if not add_generation_prompt and turns and turns[-1]["role"] == "assistant":
                    # continue the final assistant message (lm-eval's gen_prefix)
                    return ((self.tokenizer.bos_token or "") + render(turns[:-1]) + ASSISTANT_BEGIN
                            + turns[-1]["content"])
                return (self.tokenizer.bos_token or "") + render(turns, add_generation_prompt=True)
            if fmt == "llama2-chat":
                from ..chat_formats import Llama2ChatFormat
                return Llama2ChatFormat(self.tokenizer, o["system_prompt"]).render(chat_history)
            return super().apply_chat_template(chat_history, add_generation_prompt)

        def chat_template(self, chat_template=False):
            if fmt in ("agentflan", "llama2-chat"):
                return f"agentflan.chat_formats:{fmt}"
            return super().chat_template(chat_template)

    lm = AgentFlanHFLM(pretrained=str(model_dir), device=device, batch_size=int(o["batch_size"]), dtype=dtype,
                       max_length=o["max_length"], trust_remote_code=False)
    stops: list[str] = []
    if fmt == "agentflan":
        from ..template import ASSISTANT_STOP
        stops = [ASSISTANT_STOP]
        chat = "agentflan (the Agent-FLAN template of training, agentflan.template)"
    elif fmt == "llama2-chat":
        chat = "llama2-chat (agentflan.chat_formats.Llama2ChatFormat)"
    elif fmt == "tokenizer":
        if getattr(lm.tokenizer, "chat_template", None):
            chat = "tokenizer (the checkpoint's own Hugging Face chat_template)"
        else:
            fmt = None
            chat = "none (tokenizer has none)"
    else:
        chat = "none (apply_chat_template false)"
    return lm, chat, stops, fmt is not None, {"device": device, "dtype": dtype}


# ============================================================================================
# Offline, determinism, JSON-safe records
# ============================================================================================


@contextlib.contextmanager
def _offline():
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE for the call (environment and the already imported
    libraries' constants), restored afterwards."""
    env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    patched = []
    try:
        for k in env:
            os.environ[k] = "1"
        import datasets.config as dcfg
        import huggingface_hub.constants as hcon
        for mod, name in ((hcon, "HF_HUB_OFFLINE"), (dcfg, "HF_HUB_OFFLINE"), (dcfg, "HF_DATASETS_OFFLINE")):
            if hasattr(mod, name):
                patched.append((mod, name, getattr(mod, name)))
                setattr(mod, name, True)
        yield
    finally:
        for mod, name, old in reversed(patched):
            setattr(mod, name, old)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _plain(x: Any, subs: list[tuple[str, str]]) -> Any:
    """JSON-safe copy: callables by name, NaN/inf as None, tuples as lists, numpy scalars as
    Python numbers, paths in strings replaced by placeholders; dict keys sorted."""
    if isinstance(x, dict):
        return {str(_plain(k, subs)): _plain(v, subs) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [_plain(v, subs) for v in x]
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, str):
        for old, new in subs:
            if old and old in x:
                x = x.replace(old, new)
        return x
    if hasattr(x, "item") and callable(x.item):   # numpy scalar
        return _plain(x.item(), subs)
    if callable(x):
        return f"<function {getattr(x, '__module__', '?')}.{getattr(x, '__qualname__', getattr(x, '__name__', '?'))}>"
    return _plain(str(x), subs)


def _config_for_record(cfg: dict, subs) -> dict:
    cfg = dict(cfg)
    dk = cfg.get("dataset_kwargs") or {}
    if dk:
        cfg["dataset_kwargs"] = {"data_files": dk.get("data_files")}
    md = dict(cfg.get("metadata") or {})
    md.pop("config_source", None)
    cfg["metadata"] = md
    return _plain(cfg, subs)


def _record(res: dict, keep: list[str], subs) -> dict:
    out = {"lm_eval_version": _lm_eval_version()}
    for key in ("results", "groups", "group_subtasks", "versions", "n-shot", "higher_is_better", "n-samples"):
        if key in res:
            d = res[key]
            out[key] = _plain({k: v for k, v in d.items() if k in keep} if isinstance(d, dict) else d, subs)
    out["configs"] = {k: _config_for_record(v, subs) for k, v in sorted((res.get("configs") or {}).items())
                      if k in keep}
    return out


def _lm_eval_version() -> str:
    import lm_eval
    return lm_eval.__version__


def _mean_pct(values: list[bool]) -> float | None:
    return 100.0 * sum(1.0 for v in values if v) / len(values) if values else None


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=0, abs_tol=1e-9)


def _metric(res: dict, name: str, key: str) -> float | None:
    """``key`` of task/group ``name`` in lm-eval's results (a fraction) in percent."""
    for part in ("results", "groups"):
        d = (res.get(part) or {}).get(name)
        if d and key in d:
            v = d[key]
            return None if v is None or v == "N/A" else 100.0 * float(v)
    raise HarnessError(f"harness: lm-eval's results have no {key!r} for {name!r}")


def _prompt(sample: dict) -> str:
    arg = sample["arguments"][0]
    return arg[0] if isinstance(arg, (list, tuple)) else str(arg)


def _example(samples: list[dict]) -> str:
    """The prompt lm-eval logged for the first document (context as the model reads it)."""
    return _prompt(min(samples, key=lambda s: s["doc_id"]))


def _prompt_stats(lm, samples: list[dict], limit: int) -> dict:
    lengths = [len(lm.tok_encode(_prompt(s))) for s in samples]
    return {"prompt_tokens_max": max(lengths) if lengths else 0,
            "prompts_over_context": sum(1 for n in lengths if n > limit)}


# ============================================================================================
# Running
# ============================================================================================


def _check_room(lm, bench: str, gen: dict) -> None:
    toks = int(gen.get("max_gen_toks") or lm.max_gen_toks)
    if toks >= lm.max_length:
        raise HarnessError(f"harness: {bench} generates up to {toks} tokens but the context is {lm.max_length} tokens; "
                           f"set {bench}.max_gen_toks (and max_length)")


def _evaluate(lm, task, o: dict, chat: bool) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager
    return lm_eval.simple_evaluate(
        model=lm, tasks=[task], task_manager=TaskManager(include_defaults=False), random_seed=0, numpy_random_seed=0,
        torch_random_seed=0, fewshot_random_seed=0, log_samples=True, confirm_run_unsafe_code=True,
        apply_chat_template=chat, fewshot_as_multiturn=bool(o["fewshot_as_multiturn"]) if chat else False,
        bootstrap_iters=0)


def _run_mmlu(lm, files, o, work: Path, cache_dir: str, chat: bool, subs) -> tuple[dict, list, dict]:
    group, index, facts = _mmlu_tasks(files, o, work, cache_dir)
    res = _evaluate(lm, group, o, chat)
    rows: list[dict] = []
    for task, row_idx in index.items():
        samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
        if [s["doc_id"] for s in samples] != list(range(len(row_idx))):
            raise HarnessError(f"harness: lm-eval's samples of {task} do not cover its {len(row_idx)} rows")
        for s in samples:
            lls = [float(r[0]) for r in s["filtered_resps"]]
            chosen = max(range(len(lls)), key=lambda i: (lls[i], -i))   # numpy argmax: first maximum
            gold = int(s["target"])
            correct = bool(s["acc"] == 1.0)
            if correct != (chosen == gold):
                raise HarnessError(f"harness: lm-eval's acc disagrees with its log-likelihoods "
                                   f"({task} doc {s['doc_id']})")
            rows.append({"id": f"mmlu/{row_idx[s['doc_id']]}", "correct": correct, "subject": s["doc"]["subject"],
                         "answer": LETTERS[gold], "chosen": LETTERS[chosen],
                         "loglikelihoods": [round(v, 4) for v in lls]})
    rows.sort(key=lambda r: int(r["id"].split("/")[1]))
    if [r["id"] for r in rows] != [f"mmlu/{n}" for n in range(facts["test_rows"])]:
        raise HarnessError("harness: MMLU rows do not cover the test file")
    acc = _metric(res, MMLU_GROUP, "acc,none")
    if not _same(acc, _mean_pct([r["correct"] for r in rows])):
        raise HarnessError(f"harness: MMLU accuracy {acc} is not the mean of the per-sample rows")
    keep = [MMLU_GROUP, *index]
    record = _record(res, keep, subs)
    record["facts"] = {**facts, **_prompt_stats(lm, [s for t in index for s in res["samples"][t]], lm.max_length)}
    record["metric_key"] = f"{MMLU_GROUP}: acc,none (lm-eval's group aggregation, weight_by_size)"
    record["example_prompts"] = {t: _example(res["samples"][t]) for t in index}
    return {"accuracy": acc}, rows, record


def _run_gsm8k(lm, files, o, cache_dir: str, chat: bool, stops, subs) -> tuple[dict, list, dict]:
    task, n = _gsm8k_task(files, o, stops, cache_dir)
    _check_room(lm, "gsm8k", task["generation_kwargs"])
    res = _evaluate(lm, task, o, chat)
    name, flt = TASK_NAMES["gsm8k"], o["gsm8k"]["filter"]
    by_filter: dict[str, dict[int, dict]] = {}
    for s in res["samples"][name]:
        by_filter.setdefault(s["filter"], {})[s["doc_id"]] = s
    if sorted(by_filter.get(flt, {})) != list(range(n)):
        raise HarnessError(f"harness: lm-eval's GSM8K samples ({flt}) do not cover the {n} test rows")
    other = "flexible-extract" if flt == "strict-match" else "strict-match"
    rows = []
    for i in range(n):
        s = by_filter[flt][i]
        t = by_filter.get(other, {}).get(i)
        row = {"id": f"gsm8k/{i}", "correct": bool(s["exact_match"] == 1.0), "target": s["target"],
               "extracted": s["filtered_resps"][0], "response": s["resps"][0][0]}
        if t is not None:
            row[f"{other}_extracted"] = t["filtered_resps"][0]
            row[f"{other}_correct"] = bool(t["exact_match"] == 1.0)
        rows.append(row)
    acc = _metric(res, name, f"exact_match,{flt}")
    if not _same(acc, _mean_pct([r["correct"] for r in rows])):
        raise HarnessError(f"harness: GSM8K accuracy {acc} is not the mean of the per-sample rows")
    record = _record(res, [name], subs)
    room = lm.max_length - int(task["generation_kwargs"].get("max_gen_toks") or lm.max_gen_toks)
    record["facts"] = {"test_rows": n, **_prompt_stats(lm, list(by_filter[flt].values()), room)}
    record["metric_key"] = f"{name}: exact_match,{flt}"
    record["example_prompts"] = {name: _example(res["samples"][name])}
    return {"accuracy": acc}, rows, record


def _run_humaneval(lm, files, o, cache_dir: str, chat: bool, stops, subs) -> tuple[dict, list, dict]:
    h = o["humaneval"]
    executor = _Executor(h["timeout"], h["memory_mb"]) if h["execute"] else None
    task, n, utils_sha = _humaneval_task(files, o, stops, cache_dir, executor)
    _check_room(lm, "humaneval", task["generation_kwargs"])
    res = _evaluate(lm, task, o, chat)
    name = TASK_NAMES["humaneval"]
    samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
    if [s["doc_id"] for s in samples] != list(range(n)):
        raise HarnessError(f"harness: lm-eval's HumanEval samples do not cover the {n} test rows")
    rows = []
    for s in samples:
        completion, program_head = s["resps"][0][0], s["filtered_resps"][0][0]
        row = {"id": f"humaneval/{s['doc']['task_id']}", "completion": completion}
        if executor is None:
            row.update(passed=None, status="not executed")
        else:
            prog = _Executor.program(program_head, s["target"])
            out = executor.outcomes[_Executor.key(prog)]
            if bool(out["passed"]) != (s["pass@1"] == 1.0):
                raise HarnessError(f"harness: HumanEval outcome of {row['id']} disagrees with lm-eval's pass@1")
            row.update(passed=bool(out["passed"]), status=out["status"], stderr=out.get("stderr", ""))
        rows.append(row)
    if executor is None:
        p1 = None
    else:
        p1 = _metric(res, name, "pass@1,create_test")
        if not _same(p1, _mean_pct([r["passed"] for r in rows])):
            raise HarnessError(f"harness: HumanEval pass@1 {p1} is not the mean of the per-sample rows")
    record = _record(res, [name], subs)
    room = lm.max_length - int(task["generation_kwargs"].get("max_gen_toks") or lm.max_gen_toks)
    record["facts"] = {"test_rows": n, "build_predictions_source_sha256": utils_sha,
                       "executed": executor is not None, **_prompt_stats(lm, samples, room)}
    for cfg in record["configs"].values():   # name the functions (lm-eval writes a callable's source)
        for f in cfg.get("filter_list") or []:
            for step in f.get("filter") or []:
                if "filter_fn" in step:
                    step["filter_fn"] = "lm_eval/tasks/humaneval/utils.py:build_predictions"
        for m in cfg.get("metric_list") or []:
            if executor is not None:
                m["metric"] = "agentflan.evaluation.harness pass_at_k (code_eval's program, confined runner)"
    record["metric_key"] = f"{name}: pass@1,create_test" if executor else "not computed (execute: false)"
    record["example_prompts"] = {name: _example(res["samples"][name])}
    return {"pass@1": p1}, rows, record


def run(model_dir: str, files: dict[str, dict[str, str]], options: dict | None, work_dir: str, threads: int = 1
        ) -> dict[str, tuple[dict, list[dict], dict]]:
    """Score ``model_dir`` on the benchmarks of ``files`` (``{"mmlu": {"test": .., "dev": ..},
    "gsm8k": {"test": ..}, "humaneval": {"test": ..}}``, JSONL or parquet, a path or a list of
    paths per split) with lm-evaluation-harness; ``{benchmark: (metrics, rows, record)}`` (see the
    module docstring). ``work_dir`` holds the per-subject MMLU files and the datasets cache."""
    o = options_with_defaults(options)
    _check_lm_eval()
    unknown = set(files) - set(BENCHMARKS)
    if unknown or not files:
        raise HarnessError(f"harness: benchmarks must be among {BENCHMARKS}, got {sorted(files)}")
    for b, spec in files.items():
        if not isinstance(spec, dict) or "test" not in spec:
            raise HarnessError(f"harness: files[{b!r}] needs a 'test' split")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cache_dir = str(work / "hf_datasets_cache")
    subs = [(str(work.resolve()), "<work>"), (str(work), "<work>"),
            (str(Path(model_dir).resolve()), "<model>"), (str(model_dir), "<model>")]
    for spec in files.values():
        for split in spec.values():
            for p in _paths(split):
                subs += [(str(Path(p).resolve()), Path(p).name), (p, Path(p).name)]
    subs.sort(key=lambda s: -len(s[0]))
    out: dict[str, tuple[dict, list[dict], dict]] = {}
    with _offline():
        lm, chat_desc, stops, chat, runtime = _make_lm(model_dir, o, threads)
        for b in BENCHMARKS:
            if b not in files:
                continue
            t0 = time.perf_counter()
            if b == "mmlu":
                metrics, rows, record = _run_mmlu(lm, files[b], o, work, cache_dir, chat, subs)
            elif b == "gsm8k":
                metrics, rows, record = _run_gsm8k(lm, files[b], o, cache_dir, chat, stops, subs)
            else:
                metrics, rows, record = _run_humaneval(lm, files[b], o, cache_dir, chat, stops, subs)
            record["chat_template"] = chat_desc
            record["fewshot_as_multiturn"] = bool(o["fewshot_as_multiturn"]) if chat else False
            record["model"] = {"max_length": lm.max_length, "batch_size": int(o["batch_size"]), **runtime}
            record["scoring"] = scoring_info(b, options)
            out[b] = (metrics, rows, record)
            # wall time for the caller's log only (never part of the returned values)
            _LAST_TIMINGS[b] = time.perf_counter() - t0
    return out


#: seconds per benchmark of the last :func:`run` in this process (for logs and benchmarks)
_LAST_TIMINGS: dict[str, float] = {}


def last_timings() -> dict[str, float]:
    return dict(_LAST_TIMINGS)


# ============================================================================================
# Scoring notes
# ============================================================================================


def scoring_info(benchmark: str, options: dict | None = None) -> dict:
    """How a benchmark's score was produced (for the score files and Table 4's notes)."""
    if benchmark not in BENCHMARKS:
        raise HarnessError(f"unknown harness benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    o = options_with_defaults(options)
    chat = o["chat_format"] if o["apply_chat_template"] else "none"
    info: dict[str, Any] = {
        "protocol": f"lm-evaluation-harness {LM_EVAL_VERSION}",
        "task_yaml": f"lm_eval/tasks/{TASK_YAML[benchmark]}",
        "chat_template": chat,
        "fewshot_as_multiturn": bool(o["fewshot_as_multiturn"]) if o["apply_chat_template"] else False,
        "data": "locked local files (dataset_path json/parquet, offline)",
    }
    dev: list[str] = []
    if chat == "agentflan":
        dev.append("chat template: the Agent-FLAN template of training (BOS + agentflan.template.render); "
                   "generation also stops at its assistant end tag")
    elif chat == "llama2-chat":
        dev.append("chat template: Llama-2-chat as agentflan.chat_formats renders it")
    if o["max_length"] is not None:
        dev.append(f"context length {o['max_length']} tokens")
    if benchmark == "mmlu":
        shots = o["mmlu"]["num_fewshot"]
        info.update(task_yaml=f"lm_eval/tasks/{TASK_YAML['mmlu']} + {MMLU_SUBJECT_YAML}",
                    shots=shots, shots_note="lm-eval's MMLU YAML sets no shots (--num_fewshot); 5 is MMLU's standard",
                    fewshot="first_n of the subject's dev split", output_type="multiple_choice",
                    metric="acc (argmax log-likelihood of A-D)",
                    aggregation=("one task per subject present, one lm-eval group over them aggregating acc "
                                 "weight_by_size (= the mean over all rows, as lm-eval's mmlu group)"))
        if shots != 5:
            dev.append(f"{shots} shots instead of 5")
    elif benchmark == "gsm8k":
        yaml_shots = YAML_VALUES[("gsm8k", "num_fewshot")]
        shots = yaml_shots if o["gsm8k"]["num_fewshot"] is None else o["gsm8k"]["num_fewshot"]
        info.update(shots=shots, fewshot="the YAML's fixed chain-of-thought exemplars (first_n)",
                    output_type="generate_until", filter=o["gsm8k"]["filter"],
                    metric=f"exact_match of filter {o['gsm8k']['filter']}",
                    max_gen_toks=o["gsm8k"]["max_gen_toks"] or HFLM_MAX_GEN_TOKS)
        if shots != yaml_shots:
            dev.append(f"{shots} of the YAML's {yaml_shots} exemplars")
        if o["gsm8k"]["max_gen_toks"] is not None:
            dev.append(f"at most {o['gsm8k']['max_gen_toks']} new tokens (HFLM's default {HFLM_MAX_GEN_TOKS})")
    else:
        yaml_toks = YAML_VALUES[("humaneval", "max_gen_toks")]
        h = o["humaneval"]
        info.update(shots=0, output_type="generate_until", filter="create_test (lm-eval's build_predictions)",
                    metric="pass@1 (one greedy completion)", max_gen_toks=h["max_gen_toks"] or yaml_toks,
                    execute=bool(h["execute"]),
                    executor=("lm-eval's task, our confined executor for code_eval "
                              "(agentflan.evaluation.general.run_program)") if h["execute"] else "not executed",
                    execution_confined=bool(h["execute"]), timeout_s=float(h["timeout"]),
                    memory_mb=int(h["memory_mb"]))
        dev.append("code_eval replaced by our confined runner (same program: prediction + newline + test + check)")
        if h["max_gen_toks"] is not None and h["max_gen_toks"] != yaml_toks:
            dev.append(f"at most {h['max_gen_toks']} new tokens (the YAML's {yaml_toks})")
        if not h["execute"]:
            dev.append("not executed: pass@1 not computed")
    info["deviations"] = dev
    return info
