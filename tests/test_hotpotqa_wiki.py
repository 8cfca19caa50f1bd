"""HotpotQA on a local wiki store (agentflan.evaluation.wikistore) and AgentTuning's protocol."""
from __future__ import annotations

import json
import random

import pytest

from agentflan.evaluation import wikistore
from agentflan.io import DataError

WORDS = ("river valley castle music band album novel film city harbour bridge railway painter "
         "poet football club league island mountain church school college empire battle").split()


def _fixture_pages(n: int = 300) -> list[dict]:
    """A few hundred deterministic pages plus hand-written ones the tests aim at."""
    rng = random.Random(7)
    pages = [
        {"title": "Milhouse Van Houten",
         "text": ["Milhouse Mussolini Van Houten is a fictional character in The Simpsons.",
                  "He was named after Richard Nixon, whose middle name was Milhous.",
                  "Milhouse is the best friend of Bart Simpson."]},
        {"title": "Leonid Levin", "text": "Leonid Levin is a Soviet-American mathematician. "
                                          "He is known for work in computational complexity."},
        {"title": "Pavel Urysohn", "paragraphs": [["Pavel Urysohn was a Soviet mathematician."],
                                                  ["Urysohn is known for dimension theory."]]},
        {"title": "Nixon (film)", "text": "Nixon is a 1995 film about Richard Nixon."},
    ]
    for i in range(n):
        w = rng.sample(WORDS, 3)
        title = f"{w[0].title()} {w[1]} {i}"
        sents = [f"{title} is a {w[2]} in the region of {rng.choice(WORDS)}.",
                 f"It was founded in {1800 + i} near the {w[1]}.",
                 f"The {w[2]} is known for its {rng.choice(WORDS)}."]
        pages.append({"title": title, "text": sents} if i % 2 else {"_id": str(i), "title": title,
                                                                      "text": " ".join(sents)})
    return pages


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("wiki")
    src = d / "pages.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in _fixture_pages()), encoding="utf-8")
    info = wikistore.build([src], d / "wiki.sqlite")
    assert info["pages"] == 304
    return wikistore.WikiStore(d / "wiki.sqlite")


def test_exact_title_search_returns_first_paragraph(store):
    env = wikistore.WikiEnv(store)
    obs = env.search("Milhouse Van Houten")
    assert obs.startswith("Milhouse Mussolini Van Houten is a fictional character")
    assert "named after Richard Nixon" in obs          # one paragraph of three sentences
    # case, white space and underscores are normalised
    assert wikistore.WikiEnv(store).search("milhouse_van   houten") == obs
    # only the first paragraph of a multi-paragraph page
    assert wikistore.WikiEnv(store).search("Pavel Urysohn") == "Pavel Urysohn was a Soviet mathematician."


def test_similar_titles_come_from_the_whole_store(store):
    env = wikistore.WikiEnv(store, similar_k=5)
    obs = env.search("Richard Nixon")
    assert obs.startswith("Could not find [Richard Nixon]. Similar: [")
    similar = eval(obs.split("Similar: ", 1)[1])   # a Python list repr, as LangChain prints it
    assert len(similar) <= 5
    assert "Nixon (film)" in similar and "Milhouse Van Houten" in similar
    assert similar[0] == "Nixon (film)"             # title matches rank first (bm25, title x10)
    # deterministic: the same query on a fresh env gives the same list
    assert wikistore.WikiEnv(store, similar_k=5).search("Richard Nixon") == obs
    assert wikistore.WikiEnv(store).search("zzzz qqqq") == "Could not find [zzzz qqqq]. Similar: []"


def test_lookup_steps_through_sentences(store):
    env = wikistore.WikiEnv(store)
    with pytest.raises(wikistore.NoPage):
        env.lookup("Nixon")
    env.search("Milhouse Van Houten")
    assert env.lookup("milhouse") == ("(Result 1/2) Milhouse Mussolini Van Houten is a fictional "
                                      "character in The Simpsons.")
    assert env.lookup("Milhouse") == "(Result 2/2) Milhouse is the best friend of Bart Simpson."
    assert env.lookup("milhouse") == "No More Results"
    assert env.lookup("named after").startswith("(Result 1/1) He was named")  # new keyword restarts
    assert env.lookup("Springfield") == "No Results"
    env.search("Leonid Levin")                        # a string text split at ". " like ReAct
    assert env.lookup("known for") == "(Result 1/1) He is known for work in computational complexity."
    par = wikistore.WikiEnv(store, lookup_unit="paragraph")
    par.search("Pavel Urysohn")
    assert par.lookup("urysohn") == "(Result 1/2) Pavel Urysohn was a Soviet mathematician."
    assert par.lookup("urysohn") == "(Result 2/2) Urysohn is known for dimension theory."
    env.search("no such page at all")
    with pytest.raises(wikistore.NoPage):
        env.lookup("Nixon")


def test_build_is_deterministic_and_refuses_bad_records(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in _fixture_pages(50)), encoding="utf-8")
    a = wikistore.build([src], tmp_path / "a.sqlite")
    b = wikistore.build([src], tmp_path / "b.sqlite")
    assert a == b
    assert (tmp_path / "a.sqlite").read_bytes() == (tmp_path / "b.sqlite").read_bytes()
    with pytest.raises(DataError, match="expected 99"):
        wikistore.build([src], tmp_path / "c.sqlite", expected_pages=99)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"title": "A", "text": "x"}) + "\n" + json.dumps({"title": "B"}) + "\n")
    with pytest.raises(DataError) as e:
        wikistore.build([bad], tmp_path / "d.sqlite")
    assert str(e.value).startswith(f"{bad}:2 (record 'B'): ") and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- agent loop
from agentflan.evaluation import hotpotqa  # noqa: E402


def _at_item(qid: str = "q1", question: str = "Who was Milhouse named after?", level: str = "easy",
             answer: str = "Richard Nixon") -> dict:
    return {"id": f"hotpotqa/{qid}", "benchmark": "hotpotqa", "subset": level,
            "messages": [{"role": "user", "content": hotpotqa.agenttuning_prompt(question)}],
            "reference": {"answer": answer, "level": level}, "meta": {"level": level}}


def _scripted(replies_by_step):
    calls = []

    def gen(batch):
        calls.append([list(m) for m in batch])
        return [replies_by_step[len(calls) - 1]] * len(batch)
    return gen, calls


def test_agenttuning_prompt_is_upstreams_two_shot_react_prompt():
    p = hotpotqa.agenttuning_prompt("Q?")
    assert p.startswith("This task involves solving a question-answering exercise")
    assert p.count("\nQuestion: ") == 3 and p.endswith("(END OF EXAMPLES)\nQuestion: Q?")
    assert "Action 3: Finish[Richard Nixon]" in p and "Action 3: Finish[yes]" in p


def test_agenttuning_loop_search_lookup_invalid_finish(store):
    replies = [
        "Thought 1: I should search.\nAction 1: Search[Milhouse Van Houten]\nObservation 1: made up",
        "Thought 2: Not there.\nAction 2: Search[Richard Nixon]",
        "Thought 3: Back.\nAction 3: Search[milhouse van houten]",
        "Thought 4: look up.\nAction 4: Lookup[named after]",
        "Thought 5: again\nAction 5: Lookup[named after]",
        "Thought 6: bad\nAction 6: search[Nixon]",          # case-sensitive names upstream
        "Thought 7: no action line at all",
        "Thought 8: done.\nAction 8: Finish[Richard Nixon]",
    ]
    gen, calls = _scripted(replies)
    [row] = hotpotqa.run_episodes([_at_item()], gen, {"protocol": "agenttuning",
                                                      "wiki_db": str(store.path)})
    t = row["trajectory"]
    assert row["stop_reason"] == "finish" and row["prediction"] == "Richard Nixon" and len(t) == 8
    assert t[0]["assistant"].endswith("Search[Milhouse Van Houten]")      # cut before Observation
    assert t[0]["observation"].startswith("Milhouse Mussolini Van Houten is a fictional")
    assert t[1]["observation"].startswith("Could not find [Richard Nixon]. Similar: ['Nixon (film)'")
    assert t[3]["observation"] == "(Result 1/1) He was named after Richard Nixon, whose middle name was Milhous."
    assert t[4]["observation"] == "No More Results"
    assert t[5]["observation"] == hotpotqa.INVALID_ACTION == t[6]["observation"]
    # the observation comes back as the next user turn, numbered like upstream's scratchpad
    assert calls[1][0][-1] == {"role": "user", "content": "Observation 1: " + t[0]["observation"]}
    assert calls[1][0][-2] == {"role": "assistant", "content": t[0]["assistant"]}


def test_agenttuning_lookup_without_page_and_step_cap(store):
    gen, calls = _scripted(["Thought: x\nAction: Lookup[Nixon]"] * 12)
    [row] = hotpotqa.run_episodes([_at_item()], gen, {"protocol": "agenttuning",
                                                      "wiki_db": str(store.path)})
    assert len(calls) == 10 and row["stop_reason"] == "max_steps" and row["prediction"] == ""
    assert row["trajectory"][0]["observation"].startswith("The last page Searched was not found")
    gen, calls = _scripted(["Action: Search[Leonid Levin]"] * 5)
    [row] = hotpotqa.run_episodes([_at_item()], gen, {"protocol": "agenttuning", "max_steps": 3,
                                                      "wiki_db": str(store.path)})
    assert len(calls) == 3 and row["stop_reason"] == "max_steps"


def test_agenttuning_context_cap_halts_with_empty_answer(store):
    item = _at_item()
    n0, counter = hotpotqa.count_tokens(item["messages"][0]["content"])
    assert counter in ("cl100k_base", "approx-regex")
    gen, calls = _scripted(["Thought 1: x\nAction 1: Search[Milhouse Van Houten]"] * 10)
    [row] = hotpotqa.run_episodes([item], gen, {"protocol": "agenttuning", "wiki_db": str(store.path),
                                                "context_cap_tokens": n0 + 20})
    # the first step fits, the page observation pushes the prompt over the cap
    assert len(calls) == 1 and row["stop_reason"] == "context_cap" and row["prediction"] == ""
    gen, calls = _scripted(["Action 1: Finish[x]"])
    [row] = hotpotqa.run_episodes([item], gen, {"protocol": "agenttuning", "wiki_db": str(store.path),
                                                "context_cap_tokens": n0 - 1})
    assert calls == [] and row["stop_reason"] == "context_cap"


def test_agenttuning_on_the_closed_distractor_store():
    item = _at_item()
    item["meta"]["docs"] = {"Milhouse Van Houten": ["Milhouse was named after Richard Nixon."]}
    gen, _ = _scripted(["Action 1: Search[Milhouse]", "Action 2: Finish[Richard Nixon]"])
    [row] = hotpotqa.run_episodes([item], gen, {"protocol": "agenttuning", "store": "distractor"})
    assert row["trajectory"][0]["observation"].startswith("Could not find [Milhouse]. Similar: ")
    assert row["prediction"] == "Richard Nixon"


def test_parse_agenttuning_action_follows_upstream_regexes():
    p = hotpotqa.parse_agenttuning_action
    assert p("Thought 1: t\nAction 1: Search[A [b] c]") == ("Search", "A [b] c")
    assert p("Action 2: Finish[yes].") == ("Finish", "yes")       # fuzzy: trailing period
    assert p("Action 2: Finish[yes] because") == ("Finish", "yes")  # fuzzy: prefix match
    assert p("Action 3: Search[]") == ("Search[]", "")              # empty argument: invalid
    assert p("I think so") == ("I think so", "")


# ----------------------------------------------------------------------------- question list
def test_agenttuning_question_list_shape():
    qs = hotpotqa.agenttuning_question_list()
    assert len(qs) == 300 and len({q["id"] for q in qs}) == 300
    assert [q["level"] for q in qs] == ["easy"] * 100 + ["medium"] * 100 + ["hard"] * 100
    assert all(len(q["id"]) == 24 and int(q["id"], 16) >= 0 for q in qs)
    # the medium file's first row is the train question of data_formats.md §6.1
    assert qs[100]["id"] == "5a7a06935542990198eaf050"


def _hotpot_file(tmp_path, ids_levels, extra=()):
    base = tmp_path / "raw" / hotpotqa.REPO / "distractor"
    base.mkdir(parents=True)
    rows = [{"id": i, "question": f"Q {i}?", "answer": "A", "type": "bridge", "level": lv,
             "context": {"title": ["T"], "sentences": [["S."]]}} for i, lv in [*ids_levels, *extra]]
    (base / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "raw"


def test_load_items_agenttuning_selects_the_listed_300(tmp_path):
    qs = hotpotqa.agenttuning_question_list()
    raw = _hotpot_file(tmp_path, [(q["id"], q["level"]) for q in reversed(qs)],
                       extra=[("0" * 24, "hard")])
    items = hotpotqa.load_items(raw, {"protocol": "agenttuning"})
    assert [it["id"] for it in items] == [f"hotpotqa/{q['id']}" for q in qs]
    assert items[0]["messages"] == [{"role": "user", "content": hotpotqa.agenttuning_prompt(f"Q {qs[0]['id']}?")}]
    assert items[0]["meta"]["protocol"] == "agenttuning"


def test_load_items_agenttuning_refuses_a_missing_listed_question(tmp_path):
    qs = hotpotqa.agenttuning_question_list()
    raw = _hotpot_file(tmp_path, [(q["id"], q["level"]) for q in qs[1:]])
    with pytest.raises(DataError, match=f"record '{qs[0]['id']}'.*train split"):
        hotpotqa.load_items(raw, {"protocol": "agenttuning"})


# ----------------------------------------------------------------------------- F1 / EM
# Expected values computed by hand with the official formula: THUDM/AgentTuning@e33a45d
# eval_heldout/hotpotQA/src/agent_arch.py normalize_answer / f1_score / EM (the same as
# hotpotqa/hotpot hotpot_evaluate_v1.py): lower-case, drop string.punctuation, drop a/an/the,
# collapse white space; F1 = 0 when either side is yes/no/noanswer and they differ. The official
# functions, run on these cases outside the package, return the same values (not vendored here).
OFFICIAL_CASES = [
    # prediction, gold, F1, EM
    ("the Richard Nixon", "Richard Nixon", 1.0, 1.0),
    ("President Richard Nixon.", "Richard Nixon", 0.8, 0.0),          # P 2/3, R 1
    ("yes", "no", 0.0, 0.0),
    ("yes, it is", "yes", 0.0, 0.0),                                    # gold is special, differs
    ("1,800 to 7,000 ft", "1800 to 7000 ft", 1.0, 1.0),
    ("An apple a day", "apple day", 1.0, 1.0),
    ("Milhouse Milhouse", "Milhouse", 2 / 3, 0.0),                      # P 1/2, R 1
    ("", "Richard Nixon", 0.0, 0.0),
    ("noanswer", "noanswer", 1.0, 1.0),
    ("Nixon, Richard M.", "Richard Milhous Nixon", 2 / 3, 0.0),        # 2 common: P 2/3, R 2/3
]


def test_f1_em_match_the_official_formula():
    from agentflan.evaluation.text import exact_match, f1_score
    for pred, gold, f1, em in OFFICIAL_CASES:
        assert f1_score(pred, gold) == pytest.approx(f1, abs=1e-12), (pred, gold)
        assert exact_match(pred, gold) == em, (pred, gold)


def test_level_means_and_their_mean():
    items = [_at_item("a", level="easy"), _at_item("b", level="easy"), _at_item("c", level="medium"),
             _at_item("d", level="hard", answer="yes")]
    preds = {"hotpotqa/a": {"prediction": "Richard Nixon", "stop_reason": "finish"},
             "hotpotqa/b": {"prediction": "President Richard Nixon", "stop_reason": "finish"},
             "hotpotqa/c": {"prediction": "", "stop_reason": "max_steps"},
             "hotpotqa/d": {"prediction": "yes", "stop_reason": "finish"}}
    m, rows = hotpotqa.score(items, preds)
    assert m["reward_easy"] == pytest.approx(90.0) and m["reward_medium"] == 0.0
    assert m["reward_hard"] == 100.0
    assert m["reward_level_mean"] == pytest.approx((90.0 + 0.0 + 100.0) / 3)
    assert m["reward"] == pytest.approx((100 + 80 + 0 + 100) / 4)
    assert m["em"] == 50.0 and m["em_level_mean"] == pytest.approx((50 + 0 + 100) / 3)


# ----------------------------------------------------------------------------- stage, labels
def test_wiki_store_stage_builds_from_the_source_files(tmp_path):
    from agentflan.stages import wiki_store
    import gzip
    raw = tmp_path / "raw" / "BeIR" / "hotpotqa"
    raw.mkdir(parents=True)
    with gzip.open(raw / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        for p in _fixture_pages(20):
            f.write(json.dumps(p) + "\n")
    out = tmp_path / "eval" / "wiki.sqlite"
    wiki_store(raw_dir=str(raw), files=["corpus.jsonl.gz"], out=str(out), expected_pages=24)
    env = wikistore.WikiEnv(wikistore.WikiStore(out))
    assert env.search("Leonid Levin").startswith("Leonid Levin is a Soviet-American mathematician.")
    with pytest.raises(DataError, match="expected 5233329"):
        wiki_store(raw_dir=str(raw), files=["corpus.jsonl.gz"], out=str(out), expected_pages=5233329)
    with pytest.raises(DataError, match="no wiki page file"):
        wiki_store(raw_dir=str(raw), files=["nothing*.jsonl"], out=str(out))


def test_scoring_info_labels_the_store():
    d = hotpotqa.scoring_info({})
    assert d["protocol"] == "distractor" and d["store"] == "distractor" and d["max_steps"] == 4
    assert d["store_label"].startswith("closed distractor store")
    a = hotpotqa.scoring_info({"protocol": "agenttuning", "wiki_db": "x"})
    assert (a["max_steps"], a["context_cap_tokens"], a["store"], a["questions"]) == (10, 1700, "local",
                                                                                      "agenttuning300")
    assert "hermetic" in a["store_label"]
    assert hotpotqa.scoring_info({"protocol": "agenttuning", "store": "distractor"})["store"] == "distractor"


def test_agenttuning_episodes_resume_keys_through_the_registry(store):
    from agentflan.evaluation.registry import run_episodes
    names = []

    def gen(batch, ids):
        names.append(ids)
        return ["Action 1: Search[Leonid Levin]" if len(names) == 1 else "Action 2: Finish[yes]"] * len(batch)
    rows = run_episodes([_at_item("a"), _at_item("b")], gen,
                        {"protocol": "agenttuning", "wiki_db": str(store.path)}, step_ids=True)
    assert names == [["hotpotqa/a#1", "hotpotqa/b#1"], ["hotpotqa/a#2", "hotpotqa/b#2"]]
    assert [r["prediction"] for r in rows] == ["yes", "yes"]


def test_table_notes_name_the_hotpotqa_protocol_and_store(tmp_path):
    """Every table with our HotpotQA numbers says which protocol and document store produced them
    (summary/scoring.json, from the score files); two protocols in one run get one note each."""
    from agentflan.evaluation.hotpotqa import scoring_info
    from agentflan.reporting import tables
    closed = scoring_info({})
    (tmp_path / "scoring.json").write_text(json.dumps({"hotpotqa": {"agentflan-xs": closed, "react-xs": closed}}))
    (note,) = tables._hotpotqa_notes(tables.Summary(tmp_path))
    assert "protocol distractor" in note and "not Wikipedia search" in note and "at most 4 steps" in note
    agenttuning = scoring_info({"protocol": "agenttuning", "store": "local"})
    (tmp_path / "scoring.json").write_text(json.dumps({"hotpotqa": {"agentflan-xs": agenttuning, "react-xs": closed}}))
    notes = tables._hotpotqa_notes(tables.Summary(tmp_path))
    assert len(notes) == 2
    assert "AgentTuning's (2-shot text ReAct)" in notes[0] and "[agentflan-xs]" in notes[0]
    assert "local Wikipedia" in notes[0] and "at most 10 steps" in notes[0] and "context cap" in notes[0]
    assert "[react-xs]" in notes[1]
