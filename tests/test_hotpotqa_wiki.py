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
