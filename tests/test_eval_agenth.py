"""Agent-H: glaive parsing, item construction, hallucination counts and the H_Score formula."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflan import prompts
from agentflan.evaluation import agenth, registry
from agentflan.io import DataError

RAW = Path(__file__).parent / "fixtures" / "eval" / "raw"


def test_h_score_formula_matches_paper_rows():
    # experiments.md §3.4 / Table 3: Agent-FLAN 9.9 / 11.9 -> 89.1; w/o NS 15.6 / 13.5 -> 85.45
    # (the paper prints 84.5 for that row: a known inconsistency)
    assert agenth.h_score(9.9, 11.9) == pytest.approx(89.1)
    assert agenth.h_score(15.6, 13.5) == pytest.approx(85.45)
    assert agenth.h_score(0.0, 0.0) == 100.0


def test_parse_chat_and_trailing_empty_user():
    chat = ("USER: hi\n\n\nASSISTANT: hello <|endoftext|>\n\n\nFUNCTION RESPONSE: {\"a\": 1}"
            "\n\n\nUSER: ")
    turns = agenth.parse_chat(chat)
    assert [t["role"] for t in turns] == ["USER", "ASSISTANT", "FUNCTION RESPONSE"]
    assert turns[1]["content"] == "hello"


@pytest.mark.parametrize("text,name,args,ok", [
    ("<functioncall> {\"name\": \"f\", \"arguments\": '{\"x\": 5}'} <|endoftext|>", "f", {"x": 5}, True),
    ("<functioncall> {\"name\": \"g\", \"arguments\": {}}", "g", {}, True),
    ("<functioncall> {\"name\": \"h\"}", "h", {}, True),
    ("<functioncall> {\"name\": \"t\", \"arguments\": '{\"text\": \"I'm fine\"}'}", "t", {"text": "I'm fine"}, True),
    ("<functioncall> {\"name\": \"m\", \"arguments\": '{\n  \"a\": 1,\n  \"b\": \"c\"\n}'}", "m", {"a": 1, "b": "c"}, True),
    ("<functioncall> {\"name\": \"bad\", \"arguments\": '{not json'}", "bad", "{not json", False),
])
def test_parse_functioncall(text, name, args, ok):
    call = agenth.parse_functioncall(text)
    assert call == {"name": name, "arguments": args, "arguments_ok": ok}


def test_parse_functioncall_absent():
    assert agenth.parse_functioncall("I'm sorry, I can't.") is None


def test_parse_system_tools():
    sys_text = ("SYSTEM: You are a helpful assistant with access to the following functions. "
                "Use them if required -\n" + json.dumps({"name": "a", "parameters": {}}, indent=4)
                + "\n\n" + json.dumps({"name": "b", "description": "has {braces}"}, indent=4))
    assert [t["name"] for t in agenth.parse_system_tools(sys_text)] == ["a", "b"]
    assert agenth.parse_system_tools("SYSTEM: You are a helpful assistant, with no access to external functions.") == []


def test_loader_items(caplog):
    items = registry.load_items("agenth", RAW, {})
    # record 5 has no USER turn -> skipped with a warning
    assert [it["id"] for it in items] == ["agenth/0", "agenth/1", "agenth/2", "agenth/3", "agenth/4", "agenth/6"]
    by = {it["id"]: it for it in items}
    kinds = {k: v["reference"]["type"] for k, v in by.items()}
    assert kinds == {"agenth/0": "general", "agenth/1": "tool", "agenth/2": "general",
                     "agenth/3": "tool", "agenth/4": "general", "agenth/6": "tool"}
    movie = by["agenth/0"]
    assert movie["messages"][0]["role"] == "system"
    assert movie["messages"][0]["content"].startswith(prompts.TOOL_PREAMBLE)
    assert "get_movie_details" in movie["messages"][0]["content"]
    assert prompts.ACTION_INPUT in movie["messages"][0]["content"]        # ReAct format instruction
    assert movie["messages"][1] == {"role": "user", "content": "Can you book a movie ticket for me?"}
    assert by["agenth/2"]["messages"][0]["content"] == prompts.NO_TOOL_SYSTEM
    assert by["agenth/1"]["reference"]["call"] == {"name": "calculate_factorial",
                                                   "arguments": {"number": 5}, "arguments_ok": True}
    assert by["agenth/3"]["meta"]["tools"] == ["get_news", "get_movie_details"]
    assert by["agenth/6"]["reference"]["call"]["arguments"] == {"text": "I'm happy today"}
    # first assistant turn decides, even though record 4 later calls a function
    assert by["agenth/4"]["reference"]["first_assistant"].startswith("Of course.")


def test_loader_selection_and_strict():
    a = registry.load_items("agenth", RAW, {"max_samples": 3, "seed": 7})
    b = registry.load_items("agenth", RAW, {"max_samples": 3, "seed": 7})
    assert [i["id"] for i in a] == [i["id"] for i in b] and len(a) == 3
    assert [i["meta"]["index"] for i in a] == sorted(i["meta"]["index"] for i in a)
    with pytest.raises(DataError, match=r"glaive-function-calling-v2\.json.*index 5.*no USER"):
        registry.load_items("agenth", RAW, {"strict": True})


def test_loader_malformed(tmp_path):
    d = tmp_path / "glaiveai" / "glaive-function-calling-v2"
    d.mkdir(parents=True)
    (d / "glaive-function-calling-v2.json").write_text(json.dumps([{"system": 1, "chat": "x"}]))
    with pytest.raises(DataError, match="index 0"):
        registry.load_items("agenth", tmp_path, {})
    (d / "glaive-function-calling-v2.json").write_text(json.dumps({"system": "x"}))
    with pytest.raises(DataError, match="JSON array"):
        registry.load_items("agenth", tmp_path, {})


PREDS = {
    "agenth/0": "Thought: I should use get_movie_details\nAction: get_movie_details\nAction Input: {}",
    "agenth/2": "Sure! I will use my knowledge: why did the chicken cross the road?",
    "agenth/4": "How long should the password be?",
    "agenth/1": "Thought: compute\nAction: calculate_factorial\nAction Input: {\"number\": 5}",
    "agenth/3": "<functioncall> {\"name\": \"get_news\"}",
    "agenth/6": "Your text sounds positive.",
}


def test_score_counts():
    items = registry.load_items("agenth", RAW, {})
    m, rows = registry.score("agenth", items, [{"id": k, "prediction": v} for k, v in PREDS.items()], {})
    assert m["n_general"] == 3 and m["n_tool"] == 3
    assert m["h_react"] == pytest.approx(100 / 3)
    assert m["h_general"] == pytest.approx(100 / 3)
    assert m["h_score"] == pytest.approx(0.5 * ((100 - 100 / 3) + (100 - 100 / 3)))
    assert m["tool_call_rate"] == pytest.approx(200 / 3)
    r = {row["id"]: row for row in rows}
    assert r["agenth/0"]["react_hallucination"] and not r["agenth/0"]["general_hallucination"]
    assert r["agenth/2"]["general_hallucination"] and r["agenth/2"]["general_match"] == "I will use"
    assert not r["agenth/4"]["react_hallucination"]


def test_keywords_configurable_and_boundaries():
    items = [{"id": "g", "reference": {"type": "general"}}]
    # "Transaction:" must not count as "Action:"; general markers are case-insensitive by default
    m, _ = agenth.score(items, {"g": "Transaction: done. i WILL USE nothing"}, {})
    assert m["h_react"] == 0.0 and m["h_general"] == 100.0
    m, _ = agenth.score(items, {"g": "thought: lower case"}, {})
    assert m["h_react"] == 0.0                      # ReAct markers case-sensitive by default
    m, _ = agenth.score(items, {"g": "thought: lower case"}, {"react_case_sensitive": False})
    assert m["h_react"] == 100.0
    m, _ = agenth.score(items, {"g": "Let me search"}, {"general_keywords": ["let me search"]})
    assert m["h_general"] == 100.0


def test_no_general_samples_gives_null():
    m, _ = agenth.score([{"id": "t", "reference": {"type": "tool"}}], {"t": "x"}, {})
    assert m["h_score"] is None and m["tool_call_rate"] == 0.0
