"""MMLU / GSM8K / HumanEval loaders and scorers on hand-made fixtures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflan.evaluation import general, registry
from agentflan.io import DataError

RAW = Path(__file__).parent / "fixtures" / "eval" / "raw"


def _preds(items, texts):
    return [{"id": it["id"], "prediction": t} for it, t in zip(items, texts)]


def test_mmlu_load_and_score():
    items = registry.load_items("mmlu", RAW, {})
    assert [i["id"] for i in items] == ["mmlu/0", "mmlu/1", "mmlu/2"]
    content = items[0]["messages"][0]["content"]
    assert "elementary mathematics" in content and "\nB. 4\n" in content and content.endswith("Answer:")
    assert [i["reference"]["answer"] for i in items] == ["B", "A", "C"]
    m, rows = registry.score("mmlu", items, _preds(items, ["Answer: B", " A. Mars", "I think D"]), {})
    assert [r["parsed"] for r in rows] == ["B", "A", "D"]
    assert m["accuracy"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("text,letter", [
    ("B", "B"), ("Answer: C", "C"), ("The answer is (D).", "D"), ("Answer:A", "A"),
    ("A is wrong.\nAnswer: C", "C"), ("no idea", None), ("answer: b", None),
])
def test_mmlu_letter(text, letter):
    assert general.mmlu_letter(text) == letter


def test_gsm8k_load_and_score():
    items = registry.load_items("gsm8k", RAW, {})
    assert [i["reference"]["answer"] for i in items] == ["7", "2400", "2.5"]
    preds = ["3 + 4 = 7. The answer is 7.", "So 2,400 pens. The answer is 2,400", "The answer is 3"]
    m, rows = registry.score("gsm8k", items, _preds(items, preds), {})
    assert [r["correct"] for r in rows] == [True, True, False]
    assert m["accuracy"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("text,num", [
    ("The answer is 42.", "42"), ("-3 and then 1,234.5", "1234.5"), ("none", None), ("x = 7.0", "7.0"),
])
def test_last_number(text, num):
    assert general.last_number(text) == num


def test_numbers_equal():
    assert general.numbers_equal("7.0", "7") and not general.numbers_equal("7", "8")
    assert not general.numbers_equal(None, "1")


def test_gsm8k_gold_missing(tmp_path):
    d = tmp_path / "openai" / "gsm8k" / "main"
    d.mkdir(parents=True)
    (d / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl:1.*####"):
        registry.load_items("gsm8k", tmp_path, {})


def test_mmlu_malformed(tmp_path):
    d = tmp_path / "cais" / "mmlu" / "all"
    d.mkdir(parents=True)
    (d / "test.jsonl").write_text(json.dumps({"question": "q", "choices": ["a"], "answer": 0}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl:1.*4 choices"):
        registry.load_items("mmlu", tmp_path, {})


def test_max_samples_seeded():
    a = registry.load_items("mmlu", RAW, {"max_samples": 2, "seed": 5})
    assert len(a) == 2 and a == registry.load_items("mmlu", RAW, {"max_samples": 2, "seed": 5})


def test_humaneval_pass_fail_timeout():
    items = registry.load_items("humaneval", RAW, {})
    assert [i["id"] for i in items] == ["humaneval/HumanEval/0", "humaneval/HumanEval/1", "humaneval/HumanEval/2"]
    assert items[0]["messages"][0]["content"] == items[0]["reference"]["prompt"]
    preds = [
        "    return a + b\n",                                     # pass (body continuation)
        "```python\ndef is_even(n):\n    return n % 2 == 1\n```",  # fenced full function, wrong -> fail
        "    while True:\n        pass\n",                        # timeout
    ]
    m, rows = registry.score("humaneval", items, _preds(items, preds), {"timeout": 1.0, "workers": 3})
    status = {r["id"]: r["status"] for r in rows}
    assert status["humaneval/HumanEval/0"] == "passed"
    assert status["humaneval/HumanEval/1"].startswith("failed")
    assert "AssertionError" in rows[1]["stderr"]
    assert status["humaneval/HumanEval/2"] == "timeout"
    assert m["pass@1"] == pytest.approx(100 / 3)


def test_humaneval_fenced_full_function_passes():
    items = registry.load_items("humaneval", RAW, {})[1:2]
    pred = "Here you go:\n```python\ndef is_even(n):\n    return n % 2 == 0\n```\nDone."
    m, _ = registry.score("humaneval", items, _preds(items, [pred]), {})
    assert m["pass@1"] == 100.0


def test_humaneval_isolation_and_memory_limit():
    ref = {"prompt": "def f():\n    \"\"\"x\"\"\"\n", "test": "def check(c):\n    assert c()\n", "entry_point": "f"}
    # empty environment, temporary cwd
    code = "    import os\n    return os.environ.get('HOME') is None and os.getcwd().split('/')[-1].startswith('he_')\n"
    assert general.run_program(general.build_program(ref, code))["passed"]
    # RLIMIT_AS: allocating 2 GiB under a 256 MiB limit fails
    hog = "    x = bytearray(2 * 1024 ** 3)\n    return True\n"
    res = general.run_program(general.build_program(ref, hog), timeout=5, memory_mb=256)
    assert not res["passed"] and "MemoryError" in res["stderr"]


def test_humaneval_execute_false():
    items = registry.load_items("humaneval", RAW, {})
    m, rows = registry.score("humaneval", items, _preds(items, ["", "", ""]), {"execute": False})
    assert m["pass@1"] is None and all(r["passed"] is None for r in rows)
