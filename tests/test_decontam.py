import pytest

from agentflan.decontam import check, enforce
from agentflan.io import DataError


def _rec(rid, text):
    return {"id": rid, "turns": [{"role": "system", "content": "shared tool list " * 20},
                                 {"role": "user", "content": text}]}


def test_overlap_found_and_system_prompts_ignored():
    train = {"src": [_rec("a", "one two three four five six seven eight nine ten eleven twelve thirteen")]}
    items = {"bench": [
        {"id": "hit", "messages": [{"role": "system", "content": "shared tool list " * 20},
                                   {"role": "user", "content": "so one two three four five six seven eight nine ten eleven twelve thirteen"}]},
        {"id": "miss", "messages": [{"role": "user", "content": "shared tool list " * 20}]}]}
    rep = check(train, items, n=13)
    b = rep["benchmarks"]["bench"]
    assert b["contaminated"] == 1 and b["examples"] == [{"item": "hit", "train": "src:a"}]
    assert enforce(rep, "warn", 0.0, "x") and not enforce(rep, "warn", 0.6, "x")
    with pytest.raises(DataError, match="overlap"):
        enforce(rep, "fail", 0.0, "report.md")
