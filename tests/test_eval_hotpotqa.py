"""HotpotQA: loader (jsonl and parquet), offline document store, ReAct harness, F1/EM metric."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflan import prompts
from agentflan.evaluation import hotpotqa, registry
from agentflan.evaluation.text import exact_match, f1_score, normalize_answer
from agentflan.io import DataError

RAW = Path(__file__).parent / "fixtures" / "eval" / "raw"
Q_FILM = "hotpotqa/5a8b57f25542995d1e6f1371"
Q_WORK = "hotpotqa/5a8c7595554299585d9e36b6"
Q_YEAR = "hotpotqa/5a85ea095542994775f606a8"


def _items(**opts):
    return registry.load_items("hotpotqa", RAW, opts)


def test_loader():
    items = _items()
    assert [it["id"] for it in items] == [Q_FILM, Q_WORK, Q_YEAR]
    it = items[0]
    assert it["messages"][0]["role"] == "system"
    assert "Search: " in it["messages"][0]["content"] and "Lookup: " in it["messages"][0]["content"]
    assert prompts.FINISH_ACTION in it["messages"][0]["content"]
    assert it["messages"][1] == {"role": "user", "content": "In which country was the director of Film X born?"}
    assert it["reference"]["answer"] == "France" and it["reference"]["level"] == "hard"
    assert it["meta"]["docs"]["Jane Doe"][1] == " She was born in Lyon, France."
    assert {i["subset"] for i in items} == {"hard", "medium", "easy"}


def test_loader_selection():
    assert [i["id"] for i in _items(levels=["easy", "hard"])] == [Q_FILM, Q_YEAR]
    a = _items(per_level=1, seed=3)
    assert len(a) == 3
    b = _items(max_samples=2, seed=3)
    assert len(b) == 2 and [i["id"] for i in b] == [i["id"] for i in _items(max_samples=2, seed=3)]


def test_loader_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rows = [json.loads(l) for l in (RAW / "hotpotqa/hotpot_qa/distractor/validation.jsonl").read_text().splitlines()]
    d = tmp_path / "hotpotqa" / "hotpot_qa" / "distractor"
    d.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(d / "validation-00000-of-00001.parquet")
    items = registry.load_items("hotpotqa", tmp_path, {})
    assert [i["id"] for i in items] == [i["id"] for i in _items()]
    assert items[0]["meta"]["docs"] == _items()[0]["meta"]["docs"]
    json.dumps(items)   # plain Python types only


def test_loader_errors(tmp_path):
    d = tmp_path / "hotpotqa" / "hotpot_qa" / "distractor"
    d.mkdir(parents=True)
    (d / "validation.jsonl").write_text(
        json.dumps({"id": "x1", "question": "q", "answer": "a", "context": {"title": ["A"], "sentences": []}}) + "\n")
    with pytest.raises(DataError, match=r"validation\.jsonl:1 \(record 'x1'\).*context"):
        registry.load_items("hotpotqa", tmp_path, {})
    (d / "validation.jsonl").write_text('{"id": "x2", "question": "q"}\n{broken\n')
    with pytest.raises(DataError, match=r"validation\.jsonl:1 .*'answer'"):
        registry.load_items("hotpotqa", tmp_path, {})
    with pytest.raises(DataError, match="no HotpotQA file"):
        registry.load_items("hotpotqa", tmp_path, {"split": "train"})


def test_doc_env_search_and_lookup():
    env = hotpotqa.DocEnv({"Jane Doe": ["Jane Doe is a director.", " She was born in Lyon.", " Born again."],
                           "Film X": ["Film X is a film."]})
    assert env.lookup("born").startswith("The last page Searched was not found")
    assert env.search("jane  doe") == "Jane Doe is a director. She was born in Lyon. Born again."
    assert env.lookup("born") == "(Result 1/2) She was born in Lyon."
    assert env.lookup("born") == "(Result 2/2) Born again."
    assert env.lookup("born") == "No More Results"
    assert env.lookup("zebra") == "No Results"
    assert env.search("Film Y") == "Could not find [Film Y]. Similar: ['Film X']"
    assert env.lookup("film").startswith("The last page Searched was not found")
    assert env.search("Nothing here") == "Could not find [Nothing here]. Similar: []"


@pytest.mark.parametrize("text,expected", [
    ('Thought: a\nAction: Search\nAction Input: {"entity": "Film X"}', ("Search", "Film X")),
    ("Thought: a\nAction: Search[Film X]", ("Search", "Film X")),
    ("I think Lookup[born] is next", ("Lookup", "born")),
    ('Action: FinalAnswer\nAction Input: {"answer": "France"}', ("Finish", "France")),
    ("Action: Finish[France]", ("Finish", "France")),
    ('Action: search\nAction Input: "Film X"', ("Search", "Film X")),
    ("Action: Search\nAction Input: Film X\nmore text", ("Search", "Film X")),
    ('Action: Calculator\nAction Input: {"x": 1}', ("?Calculator", None)),
    ("I do not know.", None),
    ("Action: Search", None),
])
def test_parse_action(text, expected):
    assert hotpotqa.parse_action(text) == expected


class ScriptedModel:
    """Replies by question; records the batch size of every call."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, batch):
        self.calls.append(len(batch))
        out = []
        for messages in batch:
            assert messages[-1]["role"] == "user"
            question = messages[1]["content"]
            step = sum(m["role"] == "assistant" for m in messages)
            if "Film X" in question:
                script = ['Thought: find the film\nAction: Search\nAction Input: {"entity": "Film X"}\n'
                          'Observation: (made up by the model)',
                          "Thought: now the director\nAction: Search[Jane Doe]",
                          'Thought: done\nAction: FinalAnswer\nAction Input: {"answer": "France"}']
                out.append(script[step])
            elif "same type of work" in question:
                out.append("I am not sure what to do.")
            else:
                out.append('Action: Lookup\nAction Input: {"keyword": "year"}')
        return out


def test_run_episodes_scripted():
    items = _items()
    model = ScriptedModel()
    rows = registry.run_episodes(items, model, {"max_steps": 4})
    assert model.calls == [3, 2, 2, 1]          # one batched call per step, finished ones dropped
    r = {row["id"]: row for row in rows}
    film = r[Q_FILM]
    assert film["prediction"] == "France" and film["stop_reason"] == "finish"
    assert [s["action"] for s in film["trajectory"]] == ["Search", "Search", "Finish"]
    assert "Observation" not in film["trajectory"][0]["assistant"]   # model-written observation cut
    assert film["trajectory"][0]["observation"] == "Film X is a 1999 drama film. It was directed by Jane Doe."
    assert "Lyon, France" in film["trajectory"][1]["observation"]
    work = r[Q_WORK]
    assert work["prediction"] == "" and work["stop_reason"] == "invalid_action"
    year = r[Q_YEAR]
    assert year["prediction"] == "" and year["stop_reason"] == "max_steps" and len(year["trajectory"]) == 4
    m, srows = registry.score("hotpotqa", items, rows, {})
    assert m["reward"] == pytest.approx(100 / 3) and m["em"] == pytest.approx(100 / 3)
    assert m["reward_hard"] == 100.0 and m["reward_easy"] == 0.0
    assert m["reward_level_mean"] == pytest.approx(100 / 3)
    assert m["finish_rate"] == pytest.approx(100 / 3)
    assert len(srows) == 3                       # every row kept


def test_episode_messages_layout():
    items = _items(levels=["hard"])
    seen = []

    def gen(batch):
        seen.append(batch[0])
        return ["Action: Search[Film X]"] if len(seen) == 1 else ["Action: Finish[x]"]

    registry.run_episodes(items, gen, {})
    second = seen[1]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[3]["content"].startswith(prompts.OBSERVATION + " Film X is")


def test_invalid_action_can_continue():
    items = _items(levels=["hard"])
    replies = iter(["Action: Calculator[1+1]", "Action: Finish[France]"])
    rows = registry.run_episodes(items, lambda b: [next(replies)], {"stop_on_invalid": False})
    assert rows[0]["prediction"] == "France"
    assert rows[0]["trajectory"][0]["observation"].startswith("Invalid Action")


def test_generate_length_mismatch():
    with pytest.raises(ValueError, match="replies"):
        registry.run_episodes(_items(), lambda b: [], {})


def test_f1_em_normalisation():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert f1_score("The Eiffel Tower!", "eiffel tower") == 1.0
    assert f1_score("Paris France", "Paris") == pytest.approx(2 / 3)
    assert f1_score("yes", "no") == 0.0
    assert f1_score("yes it is", "yes") == 0.0           # yes/no rule
    assert f1_score("no", "no") == 1.0
    assert f1_score("", "Paris") == 0.0
    assert exact_match("an apple.", "Apple") == 1.0
    assert exact_match("apples", "apple") == 0.0


def test_score_levels_and_mean():
    items = [{"id": f"q{i}", "reference": {"answer": "red fox", "level": lvl}}
             for i, lvl in enumerate(["easy", "easy", "hard"])]
    m, _ = hotpotqa.score(items, {"q0": "Red fox", "q1": "fox", "q2": "dog"}, {})
    assert m["reward_easy"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert m["reward"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    assert m["reward_level_mean"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 0) / 2)
    assert m["em"] == pytest.approx(100 / 3)
