"""T-Eval loader and scorers on hand-made fixtures (tests/fixtures/eval/raw, real T-Eval layout).

Expected values are computed by hand in the comments, following data_formats.md §3.3-3.4.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agentflan.evaluation import registry, teval
from agentflan.evaluation.text import bow_cosine
from agentflan.io import DataError

RAW = Path(__file__).parent / "fixtures" / "eval" / "raw"
# The hand-computed expectations below use the labelled bag-of-words fallback; the embedding
# similarity (T-Eval's metric) is tested against the official evaluator's numbers further down.
BOW = {"similarity": "bow"}

# one prediction per fixture sample, keyed by "<stem>/<key>"
PRED = {
    # instruct, json: fenced -> parses; em (1 + 1) / 2 = 1
    "instruct_v2/i_json_0": '```json\n{"goal": "find", "name": "AirbnbSearch.search_property_by_place", '
                            '"args": {"place": "Berlin"}}\n```',
    # json: action ok, city ok, unit wrong: (1 + 1 + 0) / 3
    "instruct_v2/i_json_1": '{"goal": "x", "name": "Weather.get_weather", "args": {"city": "Paris", "unit": "F"}}',
    # json: leading prose, no fence -> format_load (no bracket slicing for instruct) fails -> 0 / 0
    "instruct_v2/i_json_2": 'Sure! {"goal": "x", "name": "A.b", "args": {"x": 1}}',
    # string: template matched, args {} == {} -> (1 + 0 args) / 1 = 1
    "instruct_v2/i_str_0": "<thought>t</thought><name>TimeTool.get_weekday</name><args>{}</args>",
    # string: matched (leading text and newlines inside a field allowed, action stripped),
    # args not a dict -> {} -> (1 + 0 + 0) / 3
    "instruct_v2/i_str_1": "I think <thought>x\ny</thought><name> Email.send </name><args>not a dict</args>",
    # plan json: exact plan -> F1 1
    "plan_json_v2/p0": json.dumps([
        {"id": 0, "name": "AirbnbSearch.search_property_by_place", "args": {"place": "Berlin"}},
        {"id": 1, "name": "AirbnbSearch.get_property_reviews", "args": {"propertyId": 1}},
        {"id": 2, "name": "FinishAction", "args": {}}]),
    # reversed order: both steps matched (pred0->gold1, pred1->gold0) but the chain is 1 -> F1 0.5
    "plan_json_v2/p1": "Plan: " + json.dumps([
        {"id": 0, "name": "AirbnbSearch.get_property_reviews", "args": {"propertyId": 1}},
        {"id": 1, "name": "AirbnbSearch.search_property_by_place", "args": {"place": "Berlin"}}]),
    # nothing matches, but the chain quirk counts 1: P = 1/1, R = 1/2 -> F1 2/3
    "plan_json_v2/p2": json.dumps([{"id": 0, "name": "Weather.get_weather", "args": {"city": "X"}}]),
    # unparsable -> 0, parse_rate 0
    "plan_json_v2/p3": "I cannot plan this.",
    # plan str: 2 steps; step 0 matches (0.75 + 0.25*cos = 0.857 > 0.8), step 1 does not
    # (0.75 + 0 < 0.8) -> count 1, P = R = 1/2 -> F1 0.5 (v2). v1 (0.7): both match -> F1 1.
    "plan_str_v2/s0": "Use AirbnbSearch.search_property_by_place to search Berlin. "
                      "Use AirbnbSearch.get_property_reviews to get reviews\nThen finish.",
    # reason str: cos("i should search the weather in paris", gold) = 5 / sqrt(7*5)
    "reason_str_v2/r0": "I should search the weather in Paris",
    "reason_str_v2/r1": "",
    # retrieve str: exact -> 1; FinishAction also present -> 0; trailing period is fine -> 1
    "retrieve_str_v2/t0": "Weather.get_weather",
    "retrieve_str_v2/t1": "I will call Weather.get_weather then FinishAction",
    "retrieve_str_v2/t2": "Answer: Weather.get_weather.",
    # understand str (v2 exact on str(gold args) = "{'city': 'Paris'}"): 1, 1 (quotes stripped), 0
    "understand_str_v2/u0": "{'city': 'Paris'}",
    "understand_str_v2/u1": "\"{'city': 'Paris'}\"",
    "understand_str_v2/u2": '{"city": "Paris"}',
    # rru json: thought 1, name 1, args 1 of 2 keys -> 1 / (2 + 1e-5)
    "reason_retrieve_understand_json_v2/j0": '{"thought": "get the weather of paris", "name": '
                                             '"Weather.get_weather", "args": {"city": "Paris", "unit": "F"}}',
    "reason_retrieve_understand_json_v2/j1": "no json here",
    # prose before the object is cut at the first "{" -> thought 1, name 1, args both empty -> 1
    "reason_retrieve_understand_json_v2/j2": "Sure: {'thought': 'finish', 'name': 'FinishAction', 'args': {}}",
    # review: B==B; "A" (no colon) == A; "The answer is C" -> unparsed; E != D
    "review_str_v2/v0": "Answer: B",
    "review_str_v2/v1": "A",
    "review_str_v2/v2": "Answer: The answer is C",
    "review_str_v2/v3": "Answer: E",
}


def _items(**opts):
    return registry.load_items("teval", RAW, opts)


def _preds(items):
    return [{"id": it["id"], "prediction": PRED[it["id"].split("/", 1)[1]]} for it in items]


def _rows_by_key(rows):
    return {r["id"].split("/", 1)[1]: r for r in rows}


def test_loader_shapes_and_roles():
    items = _items()
    assert len(items) == len(PRED)
    by = {it["id"]: it for it in items}
    it = by["teval/understand_str_v2/u0"]           # origin_prompt given as a JSON string
    assert it["subset"] == "understand_str"
    assert [m["role"] for m in it["messages"]] == ["system", "user", "assistant", "user"]
    assert it["messages"][-1]["content"] == "{'temp': 18}"   # the function turn became a user turn
    assert by["teval/reason_retrieve_understand_json_v2/j0"]["subset"] == "rru_json"
    assert by["teval/instruct_v2/i_str_0"]["reference"]["template"]["args_start"] == "<args>"
    assert by["teval/plan_str_v2/s0"]["reference"]["meta"]["prompt_type"] == "str"
    for it in items:
        assert it["benchmark"] == "teval"
        assert it["messages"][-1]["role"] in ("user", "system")
    # deterministic
    assert [i["id"] for i in _items()] == [i["id"] for i in items]


def test_loader_max_per_file_seeded():
    a = _items(max_per_file=2, seed=1)
    b = _items(max_per_file=2, seed=1)
    assert [i["id"] for i in a] == [i["id"] for i in b]
    counts = {}
    for it in a:
        counts[it["meta"]["stem"]] = counts.get(it["meta"]["stem"], 0) + 1
    assert max(counts.values()) == 2 and counts["plan_str_v2"] == 1


def test_loader_errors_name_file_and_record(tmp_path):
    d = tmp_path / "lovesnowbest" / "T-Eval" / "data"
    d.mkdir(parents=True)
    (d / "review_str_v2.json").write_text(json.dumps(
        {"k1": {"origin_prompt": [{"role": "robot", "content": "x"}], "ground_truth": {"answer": "A"}}}))
    with pytest.raises(DataError, match=r"review_str_v2\.json.*k1.*unknown role"):
        registry.load_items("teval", tmp_path, {"stems": ["review_str_v2"]})
    (d / "review_str_v2.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="keyed by sample id"):
        registry.load_items("teval", tmp_path, {"stems": ["review_str_v2"]})
    with pytest.raises(DataError, match="not found"):
        registry.load_items("teval", tmp_path, {"stems": ["plan_str_v2"]})


def test_instruct_scores():
    items = _items(stems=["instruct_v2"])
    m, rows = registry.score("teval", items, _preds(items), BOW)
    r = _rows_by_key(rows)
    assert r["instruct_v2/i_json_0"]["json_args_em"] == 1.0
    assert r["instruct_v2/i_json_1"]["json_args_em"] == pytest.approx(2 / 3)
    assert r["instruct_v2/i_json_2"]["json_format"] == 0.0
    assert r["instruct_v2/i_str_1"]["string_format"] == 1.0
    assert r["instruct_v2/i_str_1"]["string_args_em"] == pytest.approx(1 / 3)
    json_part = (2 / 3 + (1 + 2 / 3 + 0) / 3) / 2      # = 11/18
    string_part = (1 + (1 + 1 / 3) / 2) / 2            # = 5/6
    assert m["instruct"] == pytest.approx(100 * (json_part + string_part) / 2)
    assert m["instruct"] == pytest.approx(100 * 13 / 18)
    assert m["n_dimensions"] == 1 and m["overall"] == pytest.approx(m["instruct"])
    assert "plan" not in m


def test_args_em_python_equality():
    assert teval.args_em("a", "a", {"n": 1, "s": "x"}, {"n": 1.0, "s": "x"}) == 1.0
    assert teval.args_em("a", "b", {"n": 1}, {"n": "1"}) == 0.0   # types matter


def test_plan_scores_and_chain_quirk():
    items = _items(stems=["plan_json_v2", "plan_str_v2"])
    m, rows = registry.score("teval", items, _preds(items), BOW)
    r = _rows_by_key(rows)
    assert r["plan_json_v2/p0"]["f1_score"] == pytest.approx(1.0)
    assert r["plan_json_v2/p1"]["f1_score"] == pytest.approx(0.5)
    assert r["plan_json_v2/p2"]["f1_score"] == pytest.approx(2 / 3)     # quirk: no match, count 1
    assert r["plan_json_v2/p2"]["precision"] == pytest.approx(1.0)
    assert r["plan_json_v2/p3"]["f1_score"] == 0.0 and r["plan_json_v2/p3"]["parse_rate"] == 0.0
    assert r["plan_str_v2/s0"]["f1_score"] == pytest.approx(0.5)
    plan_json = (1 + 0.5 + 2 / 3 + 0) / 4
    assert m["plan_json_f1_score"] == pytest.approx(100 * plan_json)
    assert m["plan"] == pytest.approx(100 * (plan_json + 0.5) / 2)
    assert m["parse_rate_plan_json"] == pytest.approx(75.0)
    # v1 protocol: threshold 0.7 -> the second str step matches too
    m1, rows1 = registry.score("teval", items, _preds(items), {**BOW, "protocol": "v1"})
    assert _rows_by_key(rows1)["plan_str_v2/s0"]["f1_score"] == pytest.approx(1.0)
    # explicit threshold overrides the protocol
    m2, rows2 = registry.score("teval", items, _preds(items), {**BOW, "protocol": "v1", "plan_threshold": 0.8})
    assert _rows_by_key(rows2)["plan_str_v2/s0"]["f1_score"] == pytest.approx(0.5)


def test_plan_match_unit():
    sim = bow_cosine
    a = {"id": 0, "name": "T.a", "args": "{}"}
    b = {"id": 1, "name": "T.b", "args": "{}"}
    fin = {"id": 9, "name": "FinishAction", "args": "{}"}
    assert teval.plan_match([a, b], [a, b, fin], sim, 0.8)["f1_score"] == pytest.approx(1.0)
    # only a FinishAction predicted: empty after dropping it -> 0 (upstream would crash)
    assert teval.plan_match([fin], [a, b], sim, 0.8)["f1_score"] == 0.0
    # str plan parsing: earliest API mention names the step, ". " splits lines
    steps = teval.plan_from_str("First T.b then T.a. Next T.a", ["T.a", "T.b"])
    assert [s["name"] for s in steps] == ["T.b", "T.a"]


def test_reason_retrieve_understand():
    items = _items(stems=["reason_str_v2", "retrieve_str_v2", "understand_str_v2",
                          "reason_retrieve_understand_json_v2"])
    m, rows = registry.score("teval", items, _preds(items), BOW)
    r = _rows_by_key(rows)
    cos_r0 = 5 / math.sqrt(7 * 5)
    assert r["reason_str_v2/r0"]["thought"] == pytest.approx(cos_r0)
    assert r["reason_str_v2/r1"]["thought"] == 0.0
    assert [r[f"retrieve_str_v2/t{i}"]["name"] for i in range(3)] == [1.0, 0.0, 1.0]
    assert [r[f"understand_str_v2/u{i}"]["args"] for i in range(3)] == [1.0, 1.0, 0.0]
    j0 = r["reason_retrieve_understand_json_v2/j0"]
    assert (j0["thought"], j0["name"]) == (1.0, 1.0)
    assert j0["args"] == pytest.approx(1 / (2 + 1e-5))
    assert r["reason_retrieve_understand_json_v2/j1"]["parse_rate"] == 0.0
    j2 = r["reason_retrieve_understand_json_v2/j2"]
    assert (j2["thought"], j2["name"], j2["args"]) == (1.0, 1.0, 1.0)
    rru_args = (1 / (2 + 1e-5) + 0 + 1) / 3
    assert m["reason"] == pytest.approx(100 * (cos_r0 / 2 + 2 / 3) / 2)
    assert m["retrieve"] == pytest.approx(100 * (2 / 3 + 2 / 3) / 2)
    assert m["understand"] == pytest.approx(100 * (2 / 3 + rru_args) / 2)
    assert m["parse_rate_understand_str"] == 100.0
    # v1: understand by cosine of str(args) -> u2 (same words, other quotes) scores 1
    m1, rows1 = registry.score("teval", items, _preds(items), {**BOW, "protocol": "v1"})
    assert _rows_by_key(rows1)["understand_str_v2/u2"]["args"] == pytest.approx(1.0)


def test_retrieve_str_rule_unit():
    assert teval.retrieve_str_correct("A.b", "call A.b") == 1.0
    assert teval.retrieve_str_correct("A.b", "call A.b, e.g. now") == 0.0   # "e.g" is a word.word token
    assert teval.retrieve_str_correct("A.b", "call C.d") == 0.0


def test_review():
    items = _items(stems=["review_str_v2"])
    m, rows = registry.score("teval", items, _preds(items), BOW)
    r = _rows_by_key(rows)
    assert [r[f"review_str_v2/v{i}"]["review_quality"] for i in range(4)] == [1.0, 1.0, 0.0, 0.0]
    assert r["review_str_v2/v2"]["parse_rate"] == 0.0
    assert m["review"] == pytest.approx(50.0)
    assert teval.review_letter("Answer:   D because") == "D"


def test_overall_is_mean_of_dimensions():
    items = _items()
    m, rows = registry.score("teval", items, _preds(items), BOW)
    cos_r0 = 5 / math.sqrt(35)
    dims = {
        "instruct": 13 / 18,
        "plan": ((1 + 0.5 + 2 / 3) / 4 + 0.5) / 2,
        "reason": (cos_r0 / 2 + 2 / 3) / 2,
        "retrieve": 2 / 3,
        "understand": (2 / 3 + (1 / (2 + 1e-5) + 1) / 3) / 2,
        "review": 0.5,
    }
    for k, v in dims.items():
        assert m[k] == pytest.approx(100 * v), k
    assert m["overall"] == pytest.approx(100 * sum(dims.values()) / 6)
    assert m["n_dimensions"] == 6
    assert teval.dimensions_entered(m) == list(teval.DIMENSIONS)
    assert len(rows) == len(items)


def test_subset_of_stem():
    assert teval.subset_of_stem("plan_json_v2_subset") == "plan_json"
    assert teval.subset_of_stem("reason_retrieve_understand_json_v1") == "rru_json"
    assert teval.subset_of_stem("instruct_v2_zh") == "instruct"
    with pytest.raises(ValueError):
        teval.subset_of_stem("nonsense_v2")
