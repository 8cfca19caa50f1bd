"""Evaluation: benchmark loaders (real source formats -> evaluation items), the multi-step
HotpotQA ReAct harness, and scorers.

Entry points live in :mod:`agentflan.evaluation.registry`::

    load_items(benchmark, raw_dir, options) -> list[item]
    run_episodes(items, generate, options, benchmark=...) -> list[prediction row]  (HotpotQA, ScienceWorld)
    score(benchmark, items, predictions, options) -> (metrics %, per-sample rows)

Modules: ``teval``, ``agenth``, ``hotpotqa``, ``sciworld``, ``general`` (MMLU, GSM8K, HumanEval), ``harness``
(MMLU, GSM8K, HumanEval through lm-evaluation-harness, Table 4) and ``text``
(normalisation, bag-of-words cosine, JSON-ish parsing).
"""
from .registry import BENCHMARKS, HEADLINE, SOURCES, GenerateFn, is_episodic, load_items, run_episodes, score

__all__ = ["BENCHMARKS", "HEADLINE", "SOURCES", "GenerateFn", "is_episodic", "load_items",
           "run_episodes", "score"]
