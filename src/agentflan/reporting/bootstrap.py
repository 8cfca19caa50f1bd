"""Paired bootstrap of the paper's ablation comparisons over per-item scores (issue 11, item 3).

The summarize job (:func:`agentflan.stages.summarize`) reads every ``<benchmark>.per_sample.jsonl``
next to its ``.scores.json``, and writes ``summary/bootstrap.csv``; the tables and figures read
only that file.

What is resampled
-----------------
A benchmark's metric is recomputed on every resample exactly as its scorer computes it, from
sums over **strata** of items that are resampled separately (each keeps its size):

* **T-Eval**: a stratum per run (``instruct``, ``plan_json``, ``reason_str``, ...) and set of
  per-item fields (the instruct run: JSON-format and string-format items apart). Each resample
  gives the run means, then the dimension scores and ``overall`` with the formula of
  :func:`agentflan.evaluation.teval.score` (mean over the dimensions present of the mean of
  their runs). The runs' sizes are fixed by T-Eval's files, so they are not resampled.
* **Agent-H**: the general (no-tool ground truth) items and the tool items apart. H_ReAct and
  H_General are rates over the general items; H_Score = 0.5·((100−H_ReAct)+(100−H_General)).
* **HotpotQA** (``reward``, ``em``), **MMLU**, **GSM8K** (``accuracy``), **HumanEval**
  (``pass@1``): one stratum, the plain mean over items.

Within a stratum items are ordered by id; a resample draws ``n`` items with replacement
(numpy ``Generator.integers``). Each stratum has its own generator, seeded from the configured
seed and a key naming the comparison and stratum (``SeedSequence([seed, *sha256(key)[:4 words]])``),
so a comparison's numbers do not depend on which other comparisons are computed, or in what order.

* **Paired** (``kind=paired``): both models are scored on the same resampled items; the delta of
  every resample is ``metric(model) - metric(reference)``. The estimate is the delta on all items.
* **Cell** (``kind=cell``): one model's metric on each resample.
* **Seeds**: a cell with several training seeds (score files with the same ``model_id`` and a
  ``seed`` key) takes the mean over seeds as its estimate; each resample draws the items (shared
  by all seeds and both models) and, independently per model, ``S`` seeds with replacement, and
  takes the mean of the metric over the drawn seeds.

The interval is the percentile interval of the resampled values (``numpy.quantile``, linear
interpolation) at the configured level; a paired interval that does not contain 0 is marked.
Every number is written with 6 decimals, so the file has the same bytes on every run.
"""
from __future__ import annotations

import csv
import hashlib
import io as _io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..config import HARNESS_BENCHMARKS, harness_source, uses_harness

import numpy as np

from ..io import DataError

FILE = "bootstrap.csv"
DEFAULTS = {"resamples": 2000, "seed": 0, "level": 0.95}
COLUMNS = ("kind", "model_id", "ref_model_id", "benchmark", "metric", "estimate", "lo", "hi",
           "excludes_0", "n_items", "n_seeds", "n_seeds_ref", "resamples", "level", "seed")
# Elements of one drawn index block (rows of resamples x items of a stratum): bounds the memory.
CHUNK_ELEMENTS = 1 << 21

# The comparisons the paper draws (tables.py prints them; summarize computes them).
T2_REFERENCE = "All (Weighted) 1:0.25:0.75"
T3_PAIRS = (("Agent-FLAN", "Agent-FLAN w/o NS"),)
T4_REFERENCE = "general data only"
TABLE_BENCHMARKS = {"table2": ("teval", "hotpotqa"), "table3": ("teval", "agenth"),
                    "table4": ("mmlu", "gsm8k", "humaneval")}

# How each benchmark's items are resampled (printed in the tables' notes).
UNITS = {
    "teval": "T-Eval items resampled within each run and response format, overall recomputed "
             "from the run means as T-Eval does",
    "agenth": "Agent-H general and tool items resampled apart, H_ReAct/H_General/H_Score "
              "recomputed",
    "hotpotqa": "HotpotQA questions",
    "mmlu": "MMLU questions",
    "gsm8k": "GSM8K problems",
    "humaneval": "HumanEval problems",
    "lmeval_mmlu": "MMLU questions",
    "lmeval_gsm8k": "GSM8K problems",
    "lmeval_humaneval": "HumanEval problems",
    "sciworld": "ScienceWorld episodes resampled within each task, score recomputed as the mean of the task means",
}


def _kind(benchmark: str) -> str:
    """The per-sample layout of a benchmark: lm-eval's score files share their benchmark's."""
    return harness_source(benchmark)


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------

def settings(experiments: Mapping | None) -> dict:
    """The bootstrap settings of ``experiments.json`` (key ``bootstrap``) over :data:`DEFAULTS`."""
    raw = (experiments or {}).get("bootstrap") or {}
    if not isinstance(raw, Mapping):
        raise DataError("experiments", f"bootstrap must be an object, got {raw!r}")
    out = {**DEFAULTS, **{k: raw[k] for k in DEFAULTS if k in raw}}
    if isinstance(out["resamples"], bool) or not isinstance(out["resamples"], int) or out["resamples"] < 1:
        raise DataError("experiments", f"bootstrap.resamples must be an integer >= 1, got {out['resamples']!r}")
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], int) or out["seed"] < 0:
        raise DataError("experiments", f"bootstrap.seed must be an integer >= 0, got {out['seed']!r}")
    if not isinstance(out["level"], (int, float)) or not 0.0 < float(out["level"]) < 1.0:
        raise DataError("experiments", f"bootstrap.level must be in (0, 1), got {out['level']!r}")
    out["level"] = float(out["level"])
    return out


# --------------------------------------------------------------------------------------------
# Per-item scores
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stratum:
    ids: tuple[str, ...]          # item ids, sorted
    keys: tuple[str, ...]         # per-item fields, sorted
    values: np.ndarray            # (n items, n keys) float64


@dataclass(frozen=True)
class Items:
    """Per-item scores of one model (one training seed) on one benchmark, by stratum."""
    benchmark: str
    strata: dict[str, Stratum]

    @property
    def n(self) -> int:
        return sum(len(s.ids) for s in self.strata.values())

    def layout(self) -> dict[str, tuple[str, ...]]:
        return {name: s.ids for name, s in self.strata.items()}


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None


# The per-item fields of T-Eval that enter a dimension score (parse rates, plan precision and
# recall do not).
TEVAL_FIELDS = frozenset({"json_format", "json_args_em", "string_format", "string_args_em", "f1_score",
                          "thought", "name", "args", "review_quality"})


def _units(benchmark: str, rows: list[dict]) -> Iterable[tuple[str, str, dict[str, float]]] | None:
    """``(stratum, item id, {field: value})`` per row; None when the metric cannot be computed
    (HumanEval not executed)."""
    out = []
    kind = _kind(benchmark)
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not isinstance(r.get("id"), str):
            raise ValueError(f"{benchmark}: per-sample row {i} has no string 'id'")
        rid = r["id"]
        if kind == "sciworld":
            v = _num(r.get("score"))
            if v is None or not isinstance(r.get("task"), str):
                raise ValueError(f"sciworld: per-sample row {rid!r} needs a task and a numeric score")
            out.append((r["task"], rid, {"score": v}))
        elif kind == "teval":
            vals = {k: _num(v) for k, v in r.items() if k not in ("id", "subset")}
            bad = [k for k, v in vals.items() if v is None]
            if bad or not isinstance(r.get("subset"), str):
                raise ValueError(f"teval: per-sample row {rid!r}: no subset, or fields {bad} are not numbers")
            # stratum: the run and its set of fields; kept: the fields a dimension score uses
            out.append((f"{r['subset']}:{','.join(sorted(vals))}", rid,
                        {k: v for k, v in vals.items() if k in TEVAL_FIELDS}))
        elif kind == "agenth":
            if r.get("type") == "general":
                keys = ("react_hallucination", "general_hallucination")
            elif r.get("type") == "tool":
                keys = ("tool_call_detected",)
            else:
                raise ValueError(f"agenth: per-sample row {rid!r} has type {r.get('type')!r}")
            vals = {k: _num(r.get(k)) for k in keys}
            if None in vals.values():
                raise ValueError(f"agenth: per-sample row {rid!r} lacks {list(keys)}")
            out.append((r["type"], rid, vals))
        else:
            keys = {"hotpotqa": ("reward", "em"), "mmlu": ("correct",), "gsm8k": ("correct",),
                    "humaneval": ("passed",)}[kind]
            vals = {k: _num(r.get(k)) for k in keys}
            if None in vals.values():
                if kind == "humaneval":
                    return None         # not executed: no pass@1
                raise ValueError(f"{benchmark}: per-sample row {rid!r} lacks {list(keys)}")
            out.append(("all", rid, vals))
    return out


def items_from_rows(benchmark: str, rows: list[dict]) -> Items | None:
    """The per-sample rows of a score job (``<benchmark>.per_sample.jsonl``) as :class:`Items`;
    None where the benchmark's metric was not computed (HumanEval without execution)."""
    if benchmark not in UNITS:
        raise ValueError(f"no bootstrap unit for benchmark {benchmark!r}")
    units = _units(benchmark, rows)
    if units is None or not units:
        return None
    by: dict[str, list[tuple[str, dict]]] = {}
    for stratum, rid, vals in units:
        by.setdefault(stratum, []).append((rid, vals))
    strata = {}
    for name in sorted(by):
        entries = sorted(by[name], key=lambda e: e[0])
        ids = tuple(e[0] for e in entries)
        if len(set(ids)) != len(ids):
            raise ValueError(f"{benchmark}: duplicate item ids in stratum {name!r}")
        keys = tuple(sorted(entries[0][1]))
        values = np.array([[e[1][k] for k in keys] for e in entries], dtype=np.float64).reshape(len(ids), len(keys))
        strata[name] = Stratum(ids, keys, values)
    return Items(benchmark, strata)


# --------------------------------------------------------------------------------------------
# Metrics from per-stratum sums (vectorised over resamples)
# --------------------------------------------------------------------------------------------

Sums = dict[tuple[str, str], np.ndarray]


def _mean(xs: list) -> Any:
    return sum(xs) / len(xs) if xs else None


def _teval_metrics(sizes: dict[str, int], sums: Sums) -> dict[str, np.ndarray]:
    acc: dict[str, dict[str, list]] = {}
    for (stratum, key), s in sums.items():
        run = stratum.split(":", 1)[0]
        a = acc.setdefault(run, {}).setdefault(key, [0.0, 0])
        a[0] = a[0] + s
        a[1] += sizes[stratum]
    run = {r: {k: tot / n for k, (tot, n) in d.items()} for r, d in acc.items()}

    def present(*pairs: tuple[str, str]) -> list:
        return [run[s][k] for s, k in pairs if s in run and k in run[s]]

    ins = run.get("instruct", {})
    dims = {
        "instruct": _mean([(ins[f"{f}_format"] + ins[f"{f}_args_em"]) / 2
                           for f in ("json", "string") if f"{f}_format" in ins]),
        "plan": _mean(present(("plan_str", "f1_score"), ("plan_json", "f1_score"))),
        "reason": _mean(present(("reason_str", "thought"), ("rru_json", "thought"))),
        "retrieve": _mean(present(("retrieve_str", "name"), ("rru_json", "name"))),
        "understand": _mean(present(("understand_str", "args"), ("rru_json", "args"))),
        "review": _mean(present(("review_str", "review_quality"))),
    }
    entered = {k: v for k, v in dims.items() if v is not None}
    out = {k: 100.0 * v for k, v in entered.items()}
    if entered:
        out["overall"] = 100.0 * _mean(list(entered.values()))
    return out


def _agenth_metrics(sizes: dict[str, int], sums: Sums) -> dict[str, np.ndarray]:
    n = sizes.get("general", 0)
    if not n:
        return {}
    hr = 100.0 * sums[("general", "react_hallucination")] / n
    hg = 100.0 * sums[("general", "general_hallucination")] / n
    return {"h_react": hr, "h_general": hg, "h_score": 0.5 * ((100.0 - hr) + (100.0 - hg))}


def metrics_from_sums(benchmark: str, sizes: dict[str, int], sums: Sums) -> dict[str, np.ndarray]:
    """The benchmark's headline metrics (percent) from per-stratum sums of the per-item fields."""
    benchmark = _kind(benchmark)
    if benchmark == "sciworld":     # the rows hold scores 0-100; the mean of the task means
        means = [sums[(task, "score")] / n for task, n in sorted(sizes.items())]
        return {"score": sum(means) / len(means)} if means else {}
    if benchmark == "teval":
        return _teval_metrics(sizes, sums)
    if benchmark == "agenth":
        return _agenth_metrics(sizes, sums)
    n = sizes["all"]
    if benchmark == "hotpotqa":    # the rows hold reward and em in percent already
        return {"reward": sums[("all", "reward")] / n, "em": sums[("all", "em")] / n}
    if benchmark in ("mmlu", "gsm8k"):
        return {"accuracy": 100.0 * sums[("all", "correct")] / n}
    if benchmark == "humaneval":
        return {"pass@1": 100.0 * sums[("all", "passed")] / n}
    raise ValueError(f"no bootstrap metric for benchmark {benchmark!r}")


def point(items: Items) -> dict[str, float]:
    """The metrics on all items (equal to the score file's, up to float rounding)."""
    sizes = {name: len(s.ids) for name, s in items.strata.items()}
    sums = {(name, k): np.float64(s.values[:, j].sum()) for name, s in items.strata.items()
            for j, k in enumerate(s.keys)}
    return {k: float(v) for k, v in metrics_from_sums(items.benchmark, sizes, sums).items()}


# --------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------

def rng_for(seed: int, *key: str) -> np.random.Generator:
    """A generator determined by the seed and a text key (independent of any other draw)."""
    digest = hashlib.sha256("\x1f".join(key).encode("utf-8")).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


def _check_aligned(groups: list[list[Items]], what: str) -> tuple[str, dict[str, tuple[str, ...]]]:
    first = groups[0][0]
    layout = first.layout()
    for g in groups:
        for it in g:
            if it.benchmark != first.benchmark or it.layout() != layout:
                raise DataError(what, "the per-item scores do not cover the same items in the same "
                                      "strata (a paired bootstrap needs the same evaluation items)")
    return first.benchmark, layout


def resampled_metrics(groups: list[list[Items]], resamples: int, seed: int, key: tuple[str, ...],
                      what: str = "bootstrap") -> list[dict[str, np.ndarray]]:
    """For each group (a model: one :class:`Items` per training seed), each metric as an array of
    ``resamples`` values: the mean over the group's drawn seeds of the metric on the drawn items.

    Every group and seed is scored on the same item draws (stratum by stratum, generator
    ``rng_for(seed, *key, "items", stratum)``); the seeds of group ``g`` are drawn with
    ``rng_for(seed, *key, "seeds", str(g))`` (not drawn when the group has one seed)."""
    benchmark, layout = _check_aligned(groups, what)
    sizes = {name: len(ids) for name, ids in layout.items()}
    sums: list[list[Sums]] = [[{} for _ in g] for g in groups]
    for name, ids in layout.items():
        n = len(ids)
        gen = rng_for(seed, *key, "items", name)
        cols = [[[(k, it.strata[name].values[:, j]) for j, k in enumerate(it.strata[name].keys)]
                 for it in g] for g in groups]
        for gi, g in enumerate(groups):
            for si in range(len(g)):
                for k, _ in cols[gi][si]:
                    sums[gi][si][(name, k)] = np.empty(resamples, dtype=np.float64)
        step = max(1, min(resamples, CHUNK_ELEMENTS // max(n, 1)))
        for start in range(0, resamples, step):
            r = min(step, resamples - start)
            idx = gen.integers(0, n, size=(r, n))
            for gi, g in enumerate(groups):
                for si in range(len(g)):
                    for k, col in cols[gi][si]:
                        sums[gi][si][(name, k)][start:start + r] = col[idx].sum(axis=1)
    out = []
    for gi, g in enumerate(groups):
        per_seed = [metrics_from_sums(benchmark, sizes, s) for s in sums[gi]]
        metrics = sorted(set.intersection(*(set(m) for m in per_seed)))
        if len(g) == 1:
            out.append({m: np.asarray(per_seed[0][m], dtype=np.float64) for m in metrics})
            continue
        draw = rng_for(seed, *key, "seeds", str(gi)).integers(0, len(g), size=(resamples, len(g)))
        res = {}
        for m in metrics:
            mat = np.stack([np.asarray(p[m], dtype=np.float64) for p in per_seed], axis=1)   # (R, S)
            res[m] = np.take_along_axis(mat, draw, axis=1).mean(axis=1)
        out.append(res)
    return out


def _estimate(group: list[Items]) -> dict[str, float]:
    points = [point(it) for it in group]
    metrics = sorted(set.intersection(*(set(p) for p in points)))
    return {m: float(np.mean([p[m] for p in points])) for m in metrics}


def interval(values: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0])
    return float(lo), float(hi)


def paired(model: list[Items], ref: list[Items], *, resamples: int, seed: int, level: float,
           key: tuple[str, ...] = (), what: str = "paired bootstrap") -> dict[str, dict]:
    """``{metric: {"estimate", "lo", "hi", "excludes_0"}}``: model minus reference."""
    a, b = resampled_metrics([model, ref], resamples, seed, ("paired", *key), what)
    est_a, est_b = _estimate(model), _estimate(ref)
    out = {}
    for m in sorted(set(a) & set(b) & set(est_a) & set(est_b)):
        lo, hi = interval(a[m] - b[m], level)
        out[m] = {"estimate": est_a[m] - est_b[m], "lo": lo, "hi": hi, "excludes_0": lo > 0 or hi < 0}
    return out


def cell(model: list[Items], *, resamples: int, seed: int, level: float,
         key: tuple[str, ...] = (), what: str = "bootstrap") -> dict[str, dict]:
    """``{metric: {"estimate", "lo", "hi"}}`` of one model (mean over its seeds)."""
    (a,) = resampled_metrics([model], resamples, seed, ("cell", *key), what)
    est = _estimate(model)
    out = {}
    for m in sorted(set(a) & set(est)):
        lo, hi = interval(a[m], level)
        out[m] = {"estimate": est[m], "lo": lo, "hi": hi}
    return out


# --------------------------------------------------------------------------------------------
# The comparisons of the paper
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    table: str
    row: str                  # the table row (label) that shows the delta
    vs: str                   # the reference, as printed
    model_id: str
    ref_model_id: str
    benchmarks: tuple[str, ...]


def comparisons(experiments: Mapping | None) -> list[Comparison]:
    """Every ablation comparison the paper draws, for the rows configured in ``experiments``:
    Table 2 rows against "All (Weighted)", Table 3 Agent-FLAN against Agent-FLAN w/o NS (negative
    samples), Table 4 general + Agent-FLAN data against general data only, per size."""
    tables = (experiments or {}).get("tables") or {}
    out: list[Comparison] = []
    t2 = [e for e in tables.get("table2") or [] if isinstance(e, dict) and "label" in e and "model_id" in e]
    ref = next((e for e in t2 if e["label"] == T2_REFERENCE), None)
    if ref is not None:
        out += [Comparison("table2", e["label"], ref["label"], e["model_id"], ref["model_id"],
                           TABLE_BENCHMARKS["table2"]) for e in t2 if e is not ref]
    t3 = {e["label"]: e["model_id"] for e in tables.get("table3") or []
          if isinstance(e, dict) and "label" in e and "model_id" in e}
    out += [Comparison("table3", row, vs, t3[row], t3[vs], TABLE_BENCHMARKS["table3"])
            for row, vs in T3_PAIRS if row in t3 and vs in t3]
    # Table 4 scored by lm-evaluation-harness (experiments.json general_protocol "lmeval")
    t4 = HARNESS_BENCHMARKS if uses_harness(experiments) else TABLE_BENCHMARKS["table4"]
    out += [Comparison("table4", e["label"], T4_REFERENCE, e["agent_model_id"], e["general_model_id"], t4)
            for e in tables.get("table4") or []
            if isinstance(e, dict) and {"label", "agent_model_id", "general_model_id"} <= set(e)]
    return out


# --------------------------------------------------------------------------------------------
# bootstrap.csv
# --------------------------------------------------------------------------------------------

def _f(x: float) -> str:
    s = f"{x:.6f}"
    return "0.000000" if float(s) == 0.0 else s


def compute(per_item: Mapping[tuple[str, str], Mapping[int, Items]], experiments: Mapping | None,
            what: str = "summary") -> list[dict[str, str]]:
    """The rows of ``bootstrap.csv``: a cell row per model, benchmark and metric, and paired rows
    for :func:`comparisons`. ``per_item``: ``{(model_id, benchmark): {training seed: Items}}``."""
    st = settings(experiments)
    common = {"resamples": str(st["resamples"]), "level": f"{st['level']:g}", "seed": str(st["seed"])}
    run = {k: st[k] for k in ("resamples", "seed", "level")}
    rows: list[dict[str, str]] = []
    groups = {k: [v[s] for s in sorted(v)] for k, v in per_item.items() if v}
    for (mid, bench), group in sorted(groups.items()):
        res = cell(group, key=(bench, mid), what=f"{what}: {mid} on {bench}", **run)
        for m, r in res.items():
            rows.append({"kind": "cell", "model_id": mid, "ref_model_id": "", "benchmark": bench, "metric": m,
                         "estimate": _f(r["estimate"]), "lo": _f(r["lo"]), "hi": _f(r["hi"]),
                         "excludes_0": "", "n_items": str(group[0].n), "n_seeds": str(len(group)),
                         "n_seeds_ref": "", **common})
    pairs = sorted({(c.model_id, c.ref_model_id, b) for c in comparisons(experiments) for b in c.benchmarks})
    for mid, ref, bench in pairs:
        if (mid, bench) not in groups or (ref, bench) not in groups:
            continue    # a model or benchmark without per-item scores (HumanEval not executed)
        a, b = groups[(mid, bench)], groups[(ref, bench)]
        res = paired(a, b, key=(bench, mid, ref), what=f"{what}: {mid} vs {ref} on {bench}", **run)
        for m, r in res.items():
            rows.append({"kind": "paired", "model_id": mid, "ref_model_id": ref, "benchmark": bench, "metric": m,
                         "estimate": _f(r["estimate"]), "lo": _f(r["lo"]), "hi": _f(r["hi"]),
                         "excludes_0": "true" if r["excludes_0"] else "false", "n_items": str(a[0].n),
                         "n_seeds": str(len(a)), "n_seeds_ref": str(len(b)), **common})
    return rows


def per_sample_path(scores_path: str | Path) -> Path:
    """``<benchmark>.per_sample.jsonl``, written by the score job next to ``<benchmark>.scores.json``."""
    p = Path(scores_path)
    if not p.name.endswith(".scores.json"):
        raise DataError(p, "a score file's name ends in .scores.json")
    return p.with_name(p.name[:-len(".scores.json")] + ".per_sample.jsonl")


def from_score_files(scores: Iterable[str], per_sample: Iterable[str] | None = None,
                     experiments: Mapping | None = None) -> tuple[list[dict[str, str]], list[str]]:
    """``(rows of bootstrap.csv, the per-sample files read)`` from the score files.

    Each score file's per-sample file is the one next to it (``per_sample``, if given, must list
    it: the rule's declared inputs). A score file's optional ``"seed"`` (default 0) is its
    training seed: files with the same ``model_id`` and benchmark are one cell's seeds. The
    metrics recomputed from the per-item scores must equal the score file's (else DataError)."""
    from ..io import read_json, read_jsonl
    declared = None if per_sample is None else {Path(p).as_posix() for p in per_sample}
    per_item: dict[tuple[str, str], dict[int, Items]] = {}
    inputs: list[str] = []
    for path in sorted(scores):
        s = read_json(path)
        mid, bench, seed = s.get("model_id"), s.get("benchmark"), s.get("seed", 0)
        if not isinstance(mid, str) or not isinstance(bench, str) or isinstance(seed, bool) \
                or not isinstance(seed, int):
            raise DataError(path, "a score file needs a string model_id and benchmark (and an integer seed)")
        if bench not in UNITS:
            continue
        ps = per_sample_path(path)
        if declared is not None and ps.as_posix() not in declared:
            raise DataError(path, f"its per-sample file {ps} is not among the per_sample inputs")
        if not ps.is_file():
            raise DataError(ps, "per-sample scores not found (the score job writes them next to the .scores.json)")
        try:
            items = items_from_rows(bench, read_jsonl(ps))
        except DataError:
            raise
        except ValueError as exc:
            raise DataError(ps, str(exc)) from None
        inputs.append(str(ps))
        if items is None:
            continue
        for m, v in point(items).items():
            want = (s.get("metrics") or {}).get(m)
            if isinstance(want, (int, float)) and abs(v - want) > 1e-6 * max(1.0, abs(want)):
                raise DataError(ps, f"the per-item scores give {bench} {m} = {v!r}, {path} has {want!r}")
        group = per_item.setdefault((mid, bench), {})
        if seed in group:
            raise DataError(path, f"a second score file for {mid} / {bench} / seed {seed}")
        group[seed] = items
    return compute(per_item, experiments), inputs


def to_csv(rows: list[dict[str, str]]) -> str:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


class Bootstrap:
    """``bootstrap.csv`` as read by the tables and figures."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.cells: dict[tuple[str, str, str], dict] = {}
        self.pairs: dict[tuple[str, str, str, str], dict] = {}
        with open(self.path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(self.path, f"missing columns {missing}")
            settings_seen = set()
            for line, r in enumerate(reader, start=2):
                try:
                    rec = {"estimate": float(r["estimate"]), "lo": float(r["lo"]), "hi": float(r["hi"]),
                           "n_items": int(r["n_items"]), "n_seeds": int(r["n_seeds"]),
                           "n_seeds_ref": int(r["n_seeds_ref"]) if r["n_seeds_ref"] else None,
                           "excludes_0": r["excludes_0"] == "true"}
                except ValueError as exc:
                    raise DataError(self.path, f"bad number: {exc}", line=line) from None
                settings_seen.add((int(r["resamples"]), float(r["level"]), int(r["seed"])))
                if r["kind"] == "cell":
                    self.cells[(r["model_id"], r["benchmark"], r["metric"])] = rec
                elif r["kind"] == "paired":
                    self.pairs[(r["model_id"], r["ref_model_id"], r["benchmark"], r["metric"])] = rec
                else:
                    raise DataError(self.path, f"kind {r['kind']!r} is not cell or paired", line=line)
        if len(settings_seen) > 1:
            raise DataError(self.path, f"rows with different settings {sorted(settings_seen)}")
        self.resamples, self.level, self.seed = next(iter(settings_seen)) if settings_seen \
            else (DEFAULTS["resamples"], DEFAULTS["level"], DEFAULTS["seed"])

    def cell(self, model_id: str, benchmark: str, metric: str) -> dict | None:
        return self.cells.get((model_id, benchmark, metric))

    def paired(self, model_id: str, ref_model_id: str, benchmark: str, metric: str) -> dict | None:
        return self.pairs.get((model_id, ref_model_id, benchmark, metric))
