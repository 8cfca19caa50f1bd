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
    assert [i["id"] for i in a] == [i["id"] for i in b] == ["agenth/1", "agenth/2", "agenth/3"]
    assert [i["meta"]["index"] for i in a] == sorted(i["meta"]["index"] for i in a)
    assert [i["id"] for i in registry.load_items("agenth", RAW, {"max_samples": 3, "seed": 1})] \
        != ["agenth/1", "agenth/2", "agenth/3"]
    with pytest.raises(DataError, match=r"glaive-function-calling-v2\.json.*index 5.*no USER"):
        registry.load_items("agenth", RAW, {"strict": True})


def test_selection_is_seeded_and_stable():
    # the paper preset's draw: 1,845 of glaive's 112,960 records (all eligible in the real file
    # or not, the draw is over positions of the eligible ones); pinned so that a change of the
    # sampling code (or of Python's random) is caught
    assert agenth.select(112960, 8, 0) == [5306, 33936, 50494, 55125, 63691, 67013, 99346, 110680]
    full = agenth.select(112960, 1845, 0)
    assert len(full) == len(set(full)) == 1845 and full == sorted(full) and full[:8] != list(range(8))
    assert agenth.select(112960, 1845, 0) == full and agenth.select(112960, 1845, 1) != full
    assert agenth.select(5, None, 0) == agenth.select(5, 9, 0) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="max_samples"):
        agenth.select(5, -1, 0)


def test_prompt_variants():
    by = {p: {it["id"]: it for it in registry.load_items("agenth", RAW, {"prompt": p})}
          for p in agenth.PROMPTS}
    movie = {p: by[p]["agenth/0"]["messages"][0]["content"] for p in agenth.PROMPTS}
    # react: the package's ReAct tool prompt (format instruction with the FinalAnswer action)
    assert movie["react"].startswith(prompts.TOOL_PREAMBLE) and prompts.ACTION_INPUT in movie["react"]
    assert prompts.FINISH_ACTION in movie["react"]
    # tools: the same tool list, no scaffold
    assert movie["tools"].startswith(prompts.TOOL_PREAMBLE) and "get_movie_details" in movie["tools"]
    assert prompts.ACTION_INPUT not in movie["tools"] and prompts.FINISH_ACTION not in movie["tools"]
    # glaive: the record's own system text, without the role label
    raw = json.loads((RAW / agenth.REPO / agenth.FILE).read_text())
    assert movie["glaive"] == raw[0]["system"][len("SYSTEM: "):].strip()
    assert movie["glaive"].startswith("You are a helpful assistant with access to the following functions.")
    assert by["glaive"]["agenth/2"]["messages"][0]["content"] == \
        "You are a helpful assistant, with no access to external functions."
    assert by["react"]["agenth/2"]["messages"][0]["content"] == prompts.NO_TOOL_SYSTEM
    assert by["tools"]["agenth/2"]["messages"][0]["content"] == prompts.NO_TOOL_SYSTEM
    for p in agenth.PROMPTS:    # only the system turn differs
        assert [it["messages"][1] for it in by[p].values()] == \
            [it["messages"][1] for it in by["react"].values()]
        assert {it["meta"]["prompt"] for it in by[p].values()} == {p}
    assert registry.load_items("agenth", RAW, {}) == list(by["react"].values())    # the default
    with pytest.raises(ValueError, match="prompt 'chat'"):
        registry.load_items("agenth", RAW, {"prompt": "chat"})
    with pytest.raises(ValueError, match="react_keywords"):
        registry.load_items("agenth", RAW, {"react_keywords": ["Thought:"]})


def test_loader_malformed(tmp_path):
    d = tmp_path / "glaiveai" / "glaive-function-calling-v2"
    d.mkdir(parents=True)
    (d / "glaive-function-calling-v2.json").write_text(json.dumps([{"system": 1, "chat": "x"}]))
    with pytest.raises(DataError, match="index 0"):
        registry.load_items("agenth", tmp_path, {})
    (d / "glaive-function-calling-v2.json").write_text(json.dumps({"system": "x"}))
    with pytest.raises(DataError, match="JSON array"):
        registry.load_items("agenth", tmp_path, {})


# One general-truth sample (no tool needed) answered in every way the docs distinguish.
GENERAL_CASES = [
    # (reply, ReAct-format hallucination, general-format hallucination)
    ("I'm sorry, I can't book tickets. You can call the cinema directly.", False, False),
    ("Sure! I will use my knowledge: why did the chicken cross the road?", False, False),
    ("Thought: I can answer directly.\nAction: FinalAnswer\nAction Input: {\"answer\": \"Hello!\"}",
     False, False),                                            # obeys the ReAct prompt
    ("Thought: done\nAction: Final Answer\nAction Input: {}", False, False),
    ("Transaction: done. Thought: nothing to call.", False, False),
    ('Here is a function schema: {"name": "get_news", "description": "x", "parameters": {}}',
     False, False),
    ('The answer is {"answer": "Paris"}.', False, False),
    ("Thought: I should use get_movie_details\nAction: get_movie_details\nAction Input: {}",
     True, False),                                             # ReAct tool call
    ("  Action: `search_web`\nAction Input: {\"q\": \"x\"}", True, False),
    ('<functioncall> {"name": "get_news", "arguments": \'{}\'}', False, True),
    ('```json\n{"name": "get_news", "parameters": {"topic": "sport"}}\n```', False, True),
    ('{"thought": "x", "function_call": {"name": "f", "arguments": "{}"}}', False, True),
    ("I will use get_weather to get the weather in Paris.", False, True),
    ("I need to call the `lookup` tool.", False, False),       # not a listed function, no `_`
    ("I need to call get_movie_details first.", False, True),
    ("Let me invoke the book_ticket API.", False, True),
    ("Calling `get_news()` now.", False, True),
    ("Use the following format and call the front desk.", False, False),
]


@pytest.mark.parametrize("reply,react,general", GENERAL_CASES)
def test_hallucination_semantics(reply, react, general):
    items = [{"id": "g", "reference": {"type": "general"},
              "meta": {"has_tools": True, "tools": ["get_movie_details"]}}]
    m, rows = agenth.score(items, {"g": reply}, {})
    assert rows[0]["react_hallucination"] is react
    assert rows[0]["general_hallucination"] is general
    assert m["h_react"] == (100.0 if react else 0.0) and m["h_general"] == (100.0 if general else 0.0)


def test_listed_function_names_count_in_prose():
    items = [{"id": "g", "reference": {"type": "general"}, "meta": {"has_tools": True, "tools": ["lookup"]}}]
    assert agenth.score(items, {"g": "I need to call the `lookup` tool."}, {})[0]["h_general"] == 100.0


def test_finish_actions_configurable():
    items = [{"id": "g", "reference": {"type": "general"}}]
    reply = "Thought: t\nAction: Respond\nAction Input: {}"
    assert agenth.score(items, {"g": reply}, {})[0]["h_react"] == 100.0
    assert agenth.score(items, {"g": reply}, {"finish_actions": ["Respond"]})[0]["h_react"] == 0.0
    with pytest.raises(ValueError, match="finish_actions"):
        agenth.score(items, {"g": reply}, {"finish_actions": "Respond"})


PREDS = {
    # general-truth samples
    "agenth/0": "Thought: I should use get_movie_details\nAction: get_movie_details\nAction Input: {}",
    "agenth/2": "Sure! I will use my knowledge: why did the chicken cross the road?",
    "agenth/4": "Thought: I need the length.\nAction: FinalAnswer\nAction Input: "
                "{\"answer\": \"How long should the password be?\"}",
    # tool-truth samples
    "agenth/1": "Thought: compute\nAction: calculate_factorial\nAction Input: {\"number\": 5}",
    "agenth/3": "<functioncall> {\"name\": \"get_news\"}",
    "agenth/6": "Your text sounds positive.",
}


def test_score_counts_and_denominators():
    items = registry.load_items("agenth", RAW, {})
    m, rows = registry.score("agenth", items, [{"id": k, "prediction": v} for k, v in PREDS.items()], {})
    # denominators: 3 general-truth samples (2 with functions: 0 and 4; 1 without: 2), 3 tool-truth
    assert (m["n"], m["n_general"], m["n_tool"]) == (6.0, 3.0, 3.0)
    assert (m["n_general_with_tools"], m["n_general_no_tools"], m["n_with_tools"]) == (2.0, 1.0, 5.0)
    assert m["h_react"] == pytest.approx(100 / 3)           # only agenth/0 calls a tool
    assert m["h_general"] == 0.0                            # "I will use my knowledge" is no call
    assert m["h_score"] == pytest.approx(0.5 * ((100 - 100 / 3) + 100))
    assert m["tool_call_rate"] == pytest.approx(200 / 3)
    r = {row["id"]: row for row in rows}
    assert r["agenth/0"]["react_hallucination"] and not r["agenth/0"]["general_hallucination"]
    assert r["agenth/0"]["react_call"] == "Action: get_movie_details"
    assert not r["agenth/2"]["general_hallucination"] and not r["agenth/4"]["react_hallucination"]
    assert r["agenth/3"]["tool_call_detected"] and not r["agenth/6"]["tool_call_detected"]


def test_no_general_samples_gives_null():
    m, _ = agenth.score([{"id": "t", "reference": {"type": "tool"}}], {"t": "x"}, {})
    assert m["h_score"] is None and m["tool_call_rate"] == 0.0
    assert m["n_general"] == 0.0 and m["n_tool"] == 1.0


SUMMARY = Path(__file__).parent / "fixtures" / "summary"
REPORTED = Path(__file__).resolve().parents[1] / "paper" / "paper_reported.yaml"
if not REPORTED.exists():
    REPORTED = Path(__file__).resolve().parents[2] / "shared" / "paper" / "paper_reported.yaml"


def test_tables_carry_reconstruction_note_and_denominators(tmp_path):
    """The score file's counts reach Table 1/3's notes through scores.csv (the summary)."""
    import shutil

    from agentflan.reporting.tables import make_table

    d = tmp_path / "summary"
    shutil.copytree(SUMMARY, d)
    _, md = make_table("table3", d, REPORTED)
    assert "Agent-H is our reconstruction" in md and "denominators" not in md   # no counts yet
    items = registry.load_items("agenth", RAW, {})
    m, _ = registry.score("agenth", items, [{"id": k, "prediction": v} for k, v in PREDS.items()], {})
    lines = [f"{mid},agenth,{k},{m[k]}" for mid in ("base-7b", "react-7b", "weighted-7b", "agentflan-7b")
             for k in ("n", "n_general", "n_general_with_tools", "n_general_no_tools", "n_tool")]
    with open(d / "scores.csv", "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    note = ("Agent-H denominators: 6 samples; H_ReAct and H_General divide by the 3 with a general "
            "(no-tool) ground truth, 2 of which list functions; 3 need a tool call.")
    t3, md3 = make_table("table3", d, REPORTED)
    assert note in t3.footnotes and note in md3
    t1, _ = make_table("table1", d, REPORTED)
    assert note in t1.footnotes
    assert any(n.startswith("Agent-H is our reconstruction") for n in t1.footnotes)
