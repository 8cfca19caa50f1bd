"""Benchmarks run only where a table shows them (ScienceWorld: Table 1 / Figure 1) and Table 4
through lm-evaluation-harness: which models get which score files, and how the bootstrap reads
their per-sample rows."""
from __future__ import annotations

import copy

import pytest

from agentflan import config as cfg
from agentflan.reporting import bootstrap as boot

ROOT = cfg.ROOT


@pytest.fixture(scope="module")
def mini():
    return cfg.load_config(ROOT / "config" / "config.yaml")


def test_sciworld_runs_for_table1_and_figure1_models_only(mini):
    ex = cfg.experiments(mini)
    want = sorted({e["model_id"] for e in ex["tables"]["table1"]} |
                  {e["model_id"] for e in ex["figures"]["fig1"]["series"]})
    assert cfg.extra_benchmark_models(mini) == {"sciworld": want}
    assert "general-xs" not in want and "agentflan-xs" in want
    off = copy.deepcopy(mini)
    off["evaluation"]["benchmarks"]["sciworld"] = {"enabled": False}
    assert cfg.extra_benchmark_models(off) == {}
    assert not any(b == "sciworld" for _, b in cfg.score_files(off))


def test_harness_runs_for_table4_models_with_every_seed(mini):
    sizes = cfg.sizes(mini)
    assert cfg.harness_models(mini) == sorted(f"{d}-{s}" for d in ("general", "agentflan") for s in sizes)
    seeded = copy.deepcopy(mini)
    seeded["training"]["seeds"] = [0, 1]
    hm = cfg.harness_models(seeded)
    assert "agentflan_s1-xs" in hm and "general_s1-m" in hm and not any(m.startswith("base") for m in hm)
    off = copy.deepcopy(mini)
    off["evaluation"]["harness"] = {"enabled": False}
    assert cfg.harness_models(off) == []
    assert cfg.experiments(off)["general_protocol"] == "chat"
    assert cfg.experiments(mini)["general_protocol"] == "lmeval"


def test_score_files_cover_every_benchmark_once(mini):
    pairs = cfg.score_files(mini)
    assert len(pairs) == len(set(pairs))
    per_model = {}
    for m, b in pairs:
        per_model.setdefault(m, set()).add(b)
    assert per_model["agentflan-xs"] == set(cfg.BENCHMARKS) | {"sciworld"} | set(cfg.HARNESS_BENCHMARKS)
    assert per_model["general-s"] == set(cfg.BENCHMARKS) | set(cfg.HARNESS_BENCHMARKS)
    assert per_model["chat_all-xs"] == set(cfg.BENCHMARKS)


def test_unknown_benchmark_options_are_refused(mini):
    bad = copy.deepcopy(mini)
    bad["evaluation"]["benchmarks"]["webarena"] = {}
    with pytest.raises(cfg.ConfigError, match="unknown benchmark 'webarena'"):
        cfg.validate(bad)


def test_bootstrap_sciworld_is_the_mean_of_task_means():
    rows = [{"id": "a/0", "task": "boil", "score": 100.0}, {"id": "a/1", "task": "boil", "score": 0.0},
            {"id": "b/0", "task": "melt", "score": 20.0}]
    items = boot.items_from_rows("sciworld", rows)
    assert set(items.strata) == {"boil", "melt"}
    assert boot.point(items) == {"score": pytest.approx((50.0 + 20.0) / 2)}   # not the episode mean 40
    with pytest.raises(ValueError, match="needs a task"):
        boot.items_from_rows("sciworld", [{"id": "x", "score": 1.0}])


def test_bootstrap_reads_lmeval_rows_like_their_benchmark():
    rows = [{"id": f"mmlu/{i}", "correct": i % 4 == 0} for i in range(8)]
    assert boot.point(boot.items_from_rows("lmeval_mmlu", rows)) == {"accuracy": pytest.approx(25.0)}
    he = [{"id": "humaneval/HumanEval/0", "passed": True}, {"id": "humaneval/HumanEval/1", "passed": False}]
    assert boot.point(boot.items_from_rows("lmeval_humaneval", he)) == {"pass@1": pytest.approx(50.0)}


def test_table4_comparisons_follow_the_general_protocol(mini):
    ex = cfg.experiments(mini)
    t4 = [c for c in boot.comparisons(ex) if c.table == "table4"]
    assert t4 and all(c.benchmarks == boot.HARNESS_BENCHMARKS for c in t4)
    ex["general_protocol"] = "chat"
    assert all(c.benchmarks == ("mmlu", "gsm8k", "humaneval") for c in boot.comparisons(ex) if c.table == "table4")


def test_registry_lets_sciworld_name_its_own_replies():
    """registry.run_episodes: ScienceWorld names each reply "<item id>#<turn>" itself (its context
    cap drops old turns, so _StepIds' prefix matching does not apply), and the enabled key of the
    config never reaches the module."""
    from agentflan.evaluation import registry
    opts = {"tasks": ["find-non-living-thing"], "variations_per_task": 1, "step_limit": 3, "max_turns": 2,
            "progress": False, "enabled": True}
    items = registry.load_items("sciworld", None, opts)
    seen = []

    def gen(batch, ids):
        seen.append(list(ids))
        return ["Think: look around."] * len(batch)
    rows = registry.run_episodes(items, gen, opts, step_ids=True, benchmark="sciworld")
    assert seen == [[f"{items[0]['id']}#1"], [f"{items[0]['id']}#2"]]
    assert rows[0]["stop_reason"] == "max_turns" and rows[0]["prediction"] == 0.0
    assert registry.is_episodic("sciworld") and registry.is_episodic("hotpotqa") and not registry.is_episodic("mmlu")
