"""One entry point per stage for every benchmark: load items, run HotpotQA episodes, score.

``options`` is the benchmark's own option dict (see each module's ``DEFAULTS``); unknown keys are
ignored by the loaders/scorers, so one config block per benchmark can serve both.
"""
from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from . import agenth, general, hotpotqa, sciworld, teval

# run for every evaluated model, in one generate and one score job per model
BENCHMARKS = ("teval", "agenth", "hotpotqa", "mmlu", "gsm8k", "humaneval")
# run for the models of the tables that show them only (agentflan.config.extra_benchmark_models),
# in a generate and a score job per model and benchmark: ScienceWorld (Table 1, Figure 1)
EXTRA = ("sciworld",)
ALL = BENCHMARKS + EXTRA
GenerateFn = Callable[[list[list[dict]]], list[str]]


class _Module:
    """One benchmark's entry points: ``load_items(raw_dir, options)``, ``score(items, pred,
    options)``, ``scoring_info(options)`` and, for an episodic benchmark, ``run_episodes(items,
    generate, options)``. A new benchmark is a module with these functions and one line below."""

    def __init__(self, module, name: str | None = None):
        self.module, self.name = module, name

    def _call(self, fn: str, *args):
        f = getattr(self.module, fn)
        return f(self.name, *args) if self.name else f(*args)

    def load_items(self, raw_dir, options):
        return self._call("load_items", raw_dir, options)

    def score(self, items, pred, options):
        return self._call("score", items, pred, options)

    def scoring_info(self, options):
        return self._call("scoring_info", options)

    @property
    def episodic(self) -> bool:
        return hasattr(self.module, "run_episodes") and not self.name


MODULES = {"teval": _Module(teval), "agenth": _Module(agenth), "hotpotqa": _Module(hotpotqa),
           "mmlu": _Module(general, "mmlu"), "gsm8k": _Module(general, "gsm8k"),
           "humaneval": _Module(general, "humaneval"), "sciworld": _Module(sciworld)}

# raw source (HF repo id under data/<run>/raw/) of each benchmark; ScienceWorld's tasks ship in
# the scienceworld package (no download)
SOURCES = {
    "teval": teval.REPO,
    "agenth": agenth.REPO,
    "hotpotqa": hotpotqa.REPO,
    "mmlu": general.SOURCES["mmlu"][0],
    "gsm8k": general.SOURCES["gsm8k"][0],
    "humaneval": general.SOURCES["humaneval"][0],
}
# headline metric(s) of each benchmark, as named in results/<run>/summary/scores.csv
HEADLINE = {
    "teval": ("overall", "instruct", "plan", "reason", "retrieve", "understand", "review"),
    "agenth": ("h_react", "h_general", "h_score"),
    "hotpotqa": ("reward", "em"),
    "mmlu": ("accuracy",),
    "gsm8k": ("accuracy",),
    "humaneval": ("pass@1",),
    "sciworld": ("score",),
}


def _opts(options: dict | None) -> dict:
    """A benchmark's options without the workflow's own key ``enabled`` (whether its jobs run)."""
    return {k: v for k, v in (options or {}).items() if k != "enabled"}


def _check(benchmark: str) -> None:
    if benchmark not in MODULES:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {ALL}")


def load_items(benchmark: str, raw_dir: Path | None, options: dict | None = None) -> list[dict]:
    """Evaluation items (docs/CONTRACTS.md "Evaluation items") from ``raw_dir`` = data/<run>/raw."""
    _check(benchmark)
    items = MODULES[benchmark].load_items(Path(raw_dir) if raw_dir is not None else None, _opts(options))
    dup = [k for k, v in Counter(it["id"] for it in items).items() if v > 1]
    if dup:
        raise ValueError(f"{benchmark}: duplicate item ids {dup[:5]}")
    return items


def _by_id(benchmark: str, items: list[dict], predictions: list[dict]) -> dict[str, Any]:
    pred: dict[str, Any] = {}
    for i, row in enumerate(predictions):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise ValueError(f"{benchmark}: prediction row {i} has no string 'id'")
        if row["id"] in pred:
            raise ValueError(f"{benchmark}: duplicate prediction id {row['id']!r}")
        pred[row["id"]] = row
    item_ids = {it["id"] for it in items}
    missing = sorted(item_ids - set(pred))
    extra = sorted(set(pred) - item_ids)
    if missing or extra:
        raise ValueError(f"{benchmark}: prediction ids do not match the items "
                         f"({len(missing)} missing, e.g. {missing[:3]}; {len(extra)} unknown, e.g. {extra[:3]})")
    return pred


def score(benchmark: str, items: list[dict], predictions: list[dict], options: dict | None = None
          ) -> tuple[dict, list[dict]]:
    """``(metrics in percent, per-sample rows)``. Raises ValueError if the ids do not match."""
    _check(benchmark)
    return MODULES[benchmark].score(items, _by_id(benchmark, items, predictions), _opts(options))


def scoring_info(benchmark: str, options: dict | None = None) -> dict:
    """What ``benchmark``'s scores depend on besides the predictions (protocol, prompt variant,
    similarity model and its hash, document store...): recorded in every score file and printed in
    the notes of every table that shows the benchmark."""
    _check(benchmark)
    return MODULES[benchmark].scoring_info(_opts(options))


def run_episodes(items: list[dict], generate: Callable[..., list[str]], options: dict | None = None, *,
                 step_ids: bool = False, benchmark: str = "hotpotqa") -> list[dict]:
    """An episodic benchmark's episodes (HotpotQA ReAct, ScienceWorld); rows ``{"id",
    "prediction", "trajectory", "stop_reason", ...}``.

    With ``step_ids=True``, ``generate`` is called as ``generate(messages, ids)`` where ``ids[i]``
    is ``"<item id>#<step>"`` (1-based step of that episode): a stable name for every reply, which
    :mod:`agentflan.generate` uses to resume a killed job step by step."""
    if not is_episodic(benchmark):
        raise ValueError(f"{benchmark!r} is not an episodic benchmark")
    run = MODULES[benchmark].module.run_episodes
    if "step_ids" in inspect.signature(run).parameters:
        # the module names its replies itself (ScienceWorld: its context cap deletes old turns, so
        # a prompt need not extend the episode's previous one)
        return run(items, generate, _opts(options), step_ids=step_ids)
    if step_ids:
        generate = _StepIds(items, generate)
    return run(items, generate, _opts(options))


class _StepIds:
    """Names each prompt of an episode step call by its episode and step.

    The harness calls ``generate`` once per step with the messages of the unfinished episodes, in
    item order, each extending the same episode's messages of the previous call. So each call's
    lists are matched, in order, to the episodes of the previous call whose previous messages they
    extend. Episodes with identical histories are told apart by order only; the names stay a
    deterministic function of the calls, which is all a resume key needs."""

    def __init__(self, items: list[dict], generate: Callable[[list[list[dict]], list[str]], list[str]]):
        self.ids = [it["id"] for it in items]
        self.generate = generate
        # (episode index, messages of its last call, steps so far)
        self.running: list[tuple[int, list[dict], int]] = [(j, list(it["messages"]), 0)
                                                           for j, it in enumerate(items)]

    def __call__(self, batch: list[list[dict]]) -> list[str]:
        nxt, names, p = [], [], 0
        for messages in batch:
            while p < len(self.running) and not _extends(messages, self.running[p][1]):
                p += 1
            if p == len(self.running):
                raise RuntimeError("episode harness: a prompt does not continue any running episode")
            j, _, step = self.running[p]
            nxt.append((j, messages, step + 1))
            names.append(f"{self.ids[j]}#{step + 1}")
            p += 1
        self.running = nxt
        return self.generate(batch, names)


def _extends(messages: list[dict], base: list[dict]) -> bool:
    return len(messages) >= len(base) and messages[:len(base)] == base


def is_episodic(benchmark: str) -> bool:
    """True for benchmarks generated with :func:`run_episodes` instead of one reply per item."""
    return benchmark in MODULES and MODULES[benchmark].episodic
