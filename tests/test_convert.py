"""Conversion of the released files: every real shape, the loss policy, and clean failures."""
import json
from pathlib import Path

import pytest

from agentflan.convert import convert_file, infer_task
from agentflan.download import agentflan_files
from agentflan.io import DataError, read_jsonl

RELEASE = Path(__file__).parent / "fixtures" / "release" / "internlm" / "Agent-FLAN"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv")
    files = agentflan_files(RELEASE)
    stats = {stem: convert_file(path, out / f"{stem}.jsonl", stem) for stem, path in files.items()}
    return {stem: read_jsonl(out / f"{stem}.jsonl") for stem in files}, stats


def test_prefixed_names_map_to_stems(converted):
    recs, _ = converted
    assert set(recs) == {"agent_instruct_react", "agent_instruct_tflan", "toolbench_instruct_j1s1_3k",
                         "toolbench_negative", "toolbench_react_10p", "toolbench_tflan_60p_r10r5u7",
                         "toolbench_tflan_cot_30p"}


def test_loss_policy_on_every_variant(converted):
    recs, _ = converted
    db = recs["agent_instruct_react"][1]["turns"]
    # "Ok." (loss false) is context; loss null and a missing key train; user turns never do
    assert [(t["role"], t["train"]) for t in db] == [
        ("user", False), ("assistant", False), ("user", False), ("assistant", True), ("user", False),
        ("assistant", True)]
    last = recs["toolbench_tflan_60p_r10r5u7"][1]["turns"][-1]
    assert last["role"] == "assistant" and last["train"] is False  # ends on loss:false, kept as context


def test_data_card_counts(converted):
    _, stats = converted
    tf = stats["toolbench_tflan_60p_r10r5u7"]
    assert tf["ends_on_loss_false"] == 1 and tf["ends_on_loss_false_ids"] == ["toolbench_tflan_60p_r10r5u7_1"]
    assert stats["toolbench_react_10p"]["roles"] == {"assistant": 4, "system": 2, "user": 4}
    assert stats["agent_instruct_react"]["tasks"] == {"db": 1, "kg": 1, "os": 1}
    assert stats["toolbench_tflan_60p_r10r5u7"]["trained_turns_by_capability"] == {
        "reasoning": 4, "retrieval": 2, "understanding": 2}


def test_non_ascii_survives(converted):
    recs, _ = converted
    text = json.dumps(recs["toolbench_react_10p"][0], ensure_ascii=False)
    assert "São Paulo" in text and "°C" in text


def test_infer_task():
    rec = {"source": "agent_instruct_tflan", "turns": [{"content": "```sql\nSELECT 1\n```"}]}
    assert infer_task(rec) == "db"
    assert infer_task({"source": "toolbench_negative", "turns": []}) == "toolbench"


@pytest.mark.parametrize("line,message", [
    ('{"id": "x_0", "conversation": [{"role": "user", "content": "q"}', "is the line truncated"),
    ('{"id": "x_0", "conversation": [{"role": "tool", "content": "q"}]}', "unknown role 'tool'"),
    ('{"id": "x_0", "conversation": [{"role": "assistant", "content": "a", "loss": "yes"}]}', "non-boolean 'loss'"),
    ('{"id": "x_0", "conversation": []}', "no non-empty 'conversation'"),
])
def test_corrupted_input_names_file_and_line_and_leaves_nothing(tmp_path, line, message):
    src = tmp_path / "toolbench_react_10p.jsonl"
    good = '{"id": "x_1", "conversation": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    src.write_text(good + "\n" + line + "\n")
    dst = tmp_path / "out" / "toolbench_react_10p.jsonl"
    with pytest.raises(DataError) as exc:
        convert_file(src, dst, "toolbench_react_10p")
    assert str(src) + ":2" in str(exc.value) and message in str(exc.value)
    assert not dst.exists() and not list((tmp_path / "out").glob("*"))


def test_empty_file_is_an_error(tmp_path):
    src = tmp_path / "toolbench_negative.jsonl"
    src.write_text("\n")
    with pytest.raises(DataError, match="empty"):
        convert_file(src, tmp_path / "o.jsonl", "toolbench_negative")
