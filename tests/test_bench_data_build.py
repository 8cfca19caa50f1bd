"""bench/data_build.py's --release-bytes corpus: records lengthened, structure kept."""
import copy
import sys
from pathlib import Path

from agentflan.io import dumps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import data_build  # noqa: E402


def _records():
    def rec(i, system, query, reply):
        return {"id": f"r{i}", "source": "s", "turns": [
            {"role": "system", "content": system, "train": False, "capability": None},
            {"role": "user", "content": query, "train": False, "capability": None},
            {"role": "assistant", "content": reply, "train": True, "capability": "reasoning"}]}
    out = [rec(i, f"tools: t{i % 3}", f"question {i}", f"Thought: answer {i}") for i in range(30)]
    out.append(copy.deepcopy(out[4]) | {"id": "dup"})   # same turns as r4, another id
    return out


def _size(records):
    return sum(len(dumps(r).encode("utf-8")) + 1 for r in records)


def test_lengthen_reaches_the_target_and_keeps_structure_and_trained_turns():
    records = _records()
    before = copy.deepcopy(records)
    target = 4 * _size(records)
    out = data_build.lengthen(records, target)
    assert records == before                      # the input is not changed
    assert target <= _size(out) < 1.3 * target
    for a, b in zip(before, out):
        assert a["id"] == b["id"] and len(a["turns"]) == len(b["turns"])
        for ta, tb in zip(a["turns"], b["turns"]):
            assert {k: v for k, v in ta.items() if k != "content"} == {k: v for k, v in tb.items() if k != "content"}
            if ta["train"]:
                assert ta["content"] == tb["content"]
            else:
                assert tb["content"].startswith(ta["content"]) and len(tb["content"]) > len(ta["content"])
    assert out[-1]["turns"] == out[4]["turns"]   # the same turns stay the same
    assert data_build.lengthen(out, target) is out                         # long enough: as it is
    assert data_build.lengthen(records, _size(records) // 2) is records   # already big enough
    assert data_build.lengthen(records, target) == out                     # deterministic
