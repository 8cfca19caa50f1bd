"""ShareGPT loader on a small synthetic fixture (tests/fixtures/hub/...)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflan.io import DataError
from agentflan.records import validate_canonical
from agentflan.sharegpt import ascii_letter_share, load_sharegpt, load_sharegpt_with_stats

FIXTURE = (Path(__file__).parent / "fixtures" / "hub" / "anon8231489123"
           / "ShareGPT_Vicuna_unfiltered" / "ShareGPT_V3_unfiltered_cleaned_split.json")


def _write(tmp_path, obj, name="sg.json") -> Path:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return p


def test_fixture_end_to_end():
    recs, stats = load_sharegpt_with_stats(FIXTURE)
    ids = [r["id"] for r in recs]
    assert ids == ["en_plain_0", "chopped_1", "mixed_3", "trailing_human_7", "digits_8", "en_plain_0#2"]
    assert stats == {
        "file": str(FIXTURE), "records_in": 11, "kept": 6,
        "dropped_unknown_role": 1, "unknown_roles": {"system": 1},
        "leading_gpt_turns_dropped": 3,  # 2 in chopped_1, 1 in only_gpt_6
        "trailing_human_turns_dropped": 1,
        "dropped_empty": 2,  # empty_5, only_gpt_6
        "dropped_non_english": 2,  # zh_2, ru_9
        "duplicate_ids": 1, "subsampled_out": 0,
    }
    for r in recs:
        validate_canonical(r)
        assert r["source"] == "sharegpt"


def test_role_mapping_and_loss():
    recs = load_sharegpt(FIXTURE)
    r = recs[0]
    assert [(t["role"], t["train"], t["capability"]) for t in r["turns"]] == [
        ("user", False, None), ("assistant", True, None),
        ("user", False, None), ("assistant", True, None)]
    assert r["turns"][0]["content"] == "Hello, can you help me plan a trip?"


def test_leading_gpt_dropped_and_trailing_human_dropped():
    recs = {r["id"]: r for r in load_sharegpt(FIXTURE)}
    chopped = recs["chopped_1"]["turns"]
    assert chopped[0]["role"] == "user" and chopped[0]["content"].startswith("Yes, explain")
    assert len(chopped) == 2
    assert recs["trailing_human_7"]["turns"][-1]["role"] == "assistant"


def test_non_english_filter_and_switch():
    ids = [r["id"] for r in load_sharegpt(FIXTURE, english_only=False)]
    assert "zh_2" in ids and "ru_9" in ids
    assert ascii_letter_share("hello") == 1.0
    assert ascii_letter_share("1234 + 5678") is None
    assert ascii_letter_share("春天") == 0.0
    assert ascii_letter_share("Café au lait") == pytest.approx(9 / 10)


def test_unknown_role_reported(tmp_path):
    p = _write(tmp_path, [
        {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "hi"}, {"from": "bing", "value": "yo"}]},
        {"id": "c", "conversations": [{"from": "chatgpt", "value": "x"}, {"from": "bing", "value": "yo"}]},
    ])
    recs, stats = load_sharegpt_with_stats(p)
    assert [r["id"] for r in recs] == ["a"]
    assert stats["dropped_unknown_role"] == 2
    assert stats["unknown_roles"] == {"bing": 2, "chatgpt": 1}


def test_subset_deterministic_and_order_preserving(tmp_path):
    data = [{"id": f"r{i:03d}", "conversations": [{"from": "human", "value": f"question {i}"},
                                                    {"from": "gpt", "value": f"answer {i}"}]}
            for i in range(100)]
    p = _write(tmp_path, data)
    a = load_sharegpt(p, max_conversations=10, seed=1)
    b = load_sharegpt(p, max_conversations=10, seed=1)
    c = load_sharegpt(p, max_conversations=10, seed=2)
    assert a == b and len(a) == 10
    assert [r["id"] for r in a] != [r["id"] for r in c]
    assert [r["id"] for r in a] == sorted(r["id"] for r in a)  # original order kept
    _, stats = load_sharegpt_with_stats(p, max_conversations=10, seed=1)
    assert stats["subsampled_out"] == 90 and stats["kept"] == 10
    assert len(load_sharegpt(p, max_conversations=1000)) == 100
    assert load_sharegpt(p, max_conversations=0) == []


@pytest.mark.parametrize("content, match", [
    ('[{"id": "a", "conversations": [', "invalid JSON"),
    ("", "empty"),
    ('{"id": "a"}', "expected a JSON array"),
    ('[{"id": "a", "conversations": []}, 5]', "record index 1"),
    ('[{"conversations": []}]', "record index 0 has no string 'id'"),
    ('[{"id": "a", "conversations": {}}]', "record index 0 has no 'conversations'"),
    ('[{"id": "ok", "conversations": []}, {"id": "a", "conversations": [{"from": "human"}]}]',
     "record index 1, turn 0"),
])
def test_malformed_names_file_and_record(tmp_path, content, match):
    p = _write(tmp_path, content, name="broken_sharegpt.json")
    with pytest.raises(DataError, match=match) as ei:
        load_sharegpt(p)
    assert "broken_sharegpt.json" in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_sharegpt(tmp_path / "nope.json")
