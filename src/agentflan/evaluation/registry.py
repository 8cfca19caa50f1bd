"""One entry point per stage for every benchmark: load items, run HotpotQA episodes, score.

``options`` is the benchmark's own option dict (see each module's ``DEFAULTS``); unknown keys are
ignored by the loaders/scorers, so one config block per benchmark can serve both.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable

from . import agenth, general, hotpotqa, teval

BENCHMARKS = ("teval", "agenth", "hotpotqa", "mmlu", "gsm8k", "humaneval")
GenerateFn = Callable[[list[list[dict]]], list[str]]

# raw source (HF repo id under data/<run>/raw/) of each benchmark
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
}


def _check(benchmark: str) -> None:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")


def load_items(benchmark: str, raw_dir: Path, options: dict | None = None) -> list[dict]:
    """Evaluation items (docs/CONTRACTS.md "Evaluation items") from ``raw_dir`` = data/<run>/raw."""
    _check(benchmark)
    raw_dir = Path(raw_dir)
    if benchmark == "teval":
        items = teval.load_items(raw_dir, options)
    elif benchmark == "agenth":
        items = agenth.load_items(raw_dir, options)
    elif benchmark == "hotpotqa":
        items = hotpotqa.load_items(raw_dir, options)
    else:
        items = general.load_items(benchmark, raw_dir, options)
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
    pred = _by_id(benchmark, items, predictions)
    if benchmark == "teval":
        return teval.score(items, pred, options)
    if benchmark == "agenth":
        return agenth.score(items, pred, options)
    if benchmark == "hotpotqa":
        return hotpotqa.score(items, pred, options)
    return general.score(benchmark, items, pred, options)


def scoring_info(benchmark: str, options: dict | None = None) -> dict:
    """What ``benchmark``'s scores depend on besides the predictions (protocol, prompt variant,
    similarity model and its hash, document store...): recorded in every score file and printed in
    the notes of every table that shows the benchmark."""
    _check(benchmark)
    if benchmark == "teval":
        return teval.scoring_info(options)
    if benchmark == "agenth":
        return agenth.scoring_info(options)
    if benchmark == "hotpotqa":
        return hotpotqa.scoring_info(options)
    return general.scoring_info(benchmark, options)


def run_episodes(items: list[dict], generate: Callable[..., list[str]], options: dict | None = None, *,
                 step_ids: bool = False) -> list[dict]:
    """HotpotQA ReAct episodes; rows ``{"id", "prediction", "trajectory", "stop_reason"}``.

    With ``step_ids=True``, ``generate`` is called as ``generate(messages, ids)`` where ``ids[i]``
    is ``"<item id>#<step>"`` (1-based step of that episode): a stable name for every reply, which
    :mod:`agentflan.generate` uses to resume a killed job step by step."""
    if step_ids:
        generate = _StepIds(items, generate)
    return hotpotqa.run_episodes(items, generate, options)


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
    return benchmark == "hotpotqa"
