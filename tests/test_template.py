"""The chat template is rendered byte-exactly; label masks follow the loss policy."""
from agentflan.records import canonical_from_released
from agentflan.template import (ASSISTANT_BEGIN, ASSISTANT_END, USER_BEGIN, USER_END, render, segments)


def test_template_bytes_match_authors_readme():
    # <|Human|> + U+0D46, "\n ", <|Assistant|> + U+0D46, U+0D3F + "\n "
    assert USER_BEGIN.encode("utf-8") == b"<|Human|>\xe0\xb5\x86"
    assert USER_END.encode("utf-8") == b"\n "
    assert ASSISTANT_BEGIN.encode("utf-8") == b"<|Assistant|>\xe0\xb5\x86"
    assert ASSISTANT_END.encode("utf-8") == b"\xe0\xb4\xbf\n "


def test_render_conversation_bytes():
    turns = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
             {"role": "assistant", "content": "A"}]
    text = render(turns, add_generation_prompt=False)
    assert text == "<|Human|>\u0d46S\n <|Human|>\u0d46Q\n <|Assistant|>\u0d46A\u0d3f\n "
    assert render(turns[:2], add_generation_prompt=True).endswith("Q\n <|Assistant|>\u0d46")


def test_segments_training_flags_follow_loss_policy():
    rec = canonical_from_released({"id": "x_0", "conversation": [
        {"role": "system", "content": "tools", "loss": True},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "obs", "loss": None},
        {"role": "assistant", "content": "a2", "loss": None},
        {"role": "assistant", "content": "a3", "loss": False}]}, source="x")
    trained_text = "".join(s.text for s in segments(rec["turns"]) if s.trained)
    assert trained_text == "a1" + ASSISTANT_END + "a2" + ASSISTANT_END
    # begin tags are never trained
    assert all(not s.trained for s in segments(rec["turns"]) if s.text in (USER_BEGIN, ASSISTANT_BEGIN))


def test_react_scaffold_is_format_part():
    turns = [{"role": "user", "content": "q"},
             {"role": "assistant", "content": "Thought: look\nAction: Search\nAction Input: {}", "train": True}]
    segs = [s for s in segments(turns) if s.trained]
    fmt = [s.text for s in segs if s.part == "format"]
    assert fmt[:3] == ["Thought:", "Action:", "Action Input:"]
    assert "".join(s.text for s in segs if s.part == "content") == " look\n Search\n {}"
