"""Registry dispatch, id checks, shared text helpers, and the item contract for every benchmark."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agentflan.evaluation import registry
from agentflan.evaluation.text import (bow_cosine, first_json_object, keyword_pattern, parse_jsonish,
                                       similarity_fn, word_tokens, ParseError)
from agentflan.io import dumps

RAW = Path(__file__).parent / "fixtures" / "eval" / "raw"


@pytest.mark.parametrize("bench", registry.BENCHMARKS)
def test_item_contract(bench):
    items = registry.load_items(bench, RAW, {})
    assert items
    for it in items:
        assert set(it) == {"id", "benchmark", "subset", "messages", "reference", "meta"}
        assert it["id"].startswith(bench + "/") and it["benchmark"] == bench
        assert it["messages"] and it["messages"][-1]["role"] in ("user", "system")
        assert all(m["role"] in ("system", "user", "assistant") and isinstance(m["content"], str)
                   for m in it["messages"])
        dumps(it)   # JSON-serialisable
    assert registry.load_items(bench, RAW, {}) == items   # deterministic


def test_score_id_checks():
    items = registry.load_items("mmlu", RAW, {})
    with pytest.raises(ValueError, match="missing"):
        registry.score("mmlu", items, [{"id": "mmlu/0", "prediction": "A"}], {})
    preds = [{"id": it["id"], "prediction": "A"} for it in items]
    with pytest.raises(ValueError, match="unknown"):
        registry.score("mmlu", items, preds + [{"id": "mmlu/99", "prediction": "A"}], {})
    with pytest.raises(ValueError, match="duplicate"):
        registry.score("mmlu", items, preds + preds[:1], {})
    with pytest.raises(ValueError, match="unknown benchmark"):
        registry.score("webarena", items, preds, {})


def test_is_episodic():
    assert registry.is_episodic("hotpotqa") and not registry.is_episodic("teval")


def test_bow_cosine():
    assert bow_cosine("a b", "a b") == 1.0
    assert bow_cosine("A.b_c", "a b c") == 1.0                  # punctuation/underscores split words
    assert bow_cosine("x y", "x z") == pytest.approx(0.5)
    assert bow_cosine("aa aa b", "aa") == pytest.approx(2 / math.sqrt(5))
    assert bow_cosine("", "x") == 0.0 and bow_cosine("...", "!!!") == 0.0
    assert word_tokens("Hello, World_2") == ["hello", "world", "2"]
    assert similarity_fn("bow") is bow_cosine
    with pytest.raises(ValueError, match="sbert"):
        similarity_fn("sbert")


def test_parse_jsonish():
    assert parse_jsonish("{'a': 1}") == {"a": 1}                  # Python literal
    assert parse_jsonish('{"a": true}') == {"a": True}            # JSON
    assert parse_jsonish("```json\n{\"a\": 1}\n```") == {"a": 1}  # fence
    assert parse_jsonish("x [1, 2] y", "[", "]") == [1, 2]
    assert parse_jsonish({"already": 1}) == {"already": 1}
    with pytest.raises(ParseError):
        parse_jsonish("nope {")
    assert first_json_object('text {"a": {"b": "}"}} more') == {"a": {"b": "}"}}
    assert first_json_object("none") is None


def test_keyword_pattern():
    p = keyword_pattern(["Action:", "<functioncall>", "call the"], case_sensitive=True)
    assert p.search("Action: x") and p.search("x<functioncall>y") and p.search("I call the api")
    assert not p.search("Transaction: x") and not p.search("recall thermal")
    assert keyword_pattern([]) is None


def test_every_benchmark_records_how_it_was_scored():
    """registry.scoring_info: one record per benchmark (score files' ``scoring``), naming the
    protocol, and for Agent-H the prompt variant and selection seed, for the general benchmarks
    that they are our zero-shot protocol, not the harness's."""
    from agentflan.evaluation import registry
    infos = {b: registry.scoring_info(b, {}) for b in registry.BENCHMARKS}
    assert all(isinstance(i, dict) and i.get("protocol") for i in infos.values()), infos
    assert infos["agenth"]["prompt"] == "react" and infos["agenth"]["seed"] == 0
    assert registry.scoring_info("agenth", {"prompt": "glaive", "seed": 3})["prompt"] == "glaive"
    for b in ("mmlu", "gsm8k", "humaneval"):
        assert infos[b]["protocol"] == "zero-shot chat (ours)" and infos[b]["shots"] == 0
    assert infos["humaneval"]["execute"] is True
    assert registry.scoring_info("humaneval", {"execute": False})["execute"] is False
    with pytest.raises(ValueError, match="unknown benchmark"):
        registry.scoring_info("webarena", {})
    with pytest.raises(ValueError, match="unknown Agent-H option"):
        registry.scoring_info("agenth", {"promt": "react"})


def test_table_notes_name_the_agenth_prompt_and_the_general_protocol(tmp_path):
    from agentflan.evaluation import registry
    from agentflan.reporting import tables
    scoring = {b: {"agentflan-xs": registry.scoring_info(b, {}), "general-xs": registry.scoring_info(b, {})}
               for b in ("agenth", "mmlu", "gsm8k", "humaneval")}
    scoring["agenth"]["general-xs"] = registry.scoring_info("agenth", {"prompt": "tools"})
    (tmp_path / "scoring.json").write_text(json.dumps(scoring))
    (tmp_path / "experiments.json").write_text(json.dumps({"general_protocol": "chat"}))
    s = tables.Summary(tmp_path)
    notes = tables._scoring_notes(s, "agenth", "Agent-H", tables._agenth_text)
    assert len(notes) == 2 and "prompt variant 'react'" in notes[0] and "[agentflan-xs]" in notes[0]
    assert "prompt variant 'tools'" in notes[1] and "[general-xs]" in notes[1]
    general = tables._general_notes(s)
    assert [n.split(":")[0] for n in general[:3]] == ["MMLU", "GSM8K", "HumanEval"]
    assert all("zero-shot chat (ours), 0 shots" in n for n in general[:3])
    assert "not lm-evaluation-harness" in general[-1]
