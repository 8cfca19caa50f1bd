"""Agent evaluation sources on EVAL-pool entities: T-Eval-mini, glaive-mini (Agent-H source) and
HotpotQA-mini.

T-Eval-mini (data_formats.md §3.2): eight v2 files, each ``{sample_id: {origin_prompt,
ground_truth, meta_data, template?, meta?}}``. Every prompt is built by the *same* functions as
the corresponding training records, so the wording is exactly the training wording and only the
entity values (EVAL pools) are new:

* ``instruct_v2`` -- the ``toolbench_instruct_j1s1_3k`` single-call prompt (APIs as dict
  literals + JSON key template or delimiter template); ``template`` holds the key names / the six
  delimiters.
* ``plan_json_v2`` / ``plan_str_v2`` -- the j1s1 plan prompts; ``meta`` = ``{prompt_type, API_list}``.
* ``reason_str_v2`` / ``retrieve_str_v2`` / ``understand_str_v2`` -- the chat-aligned (tflan)
  conversation cut where tflan's assistant gives its thought / after THE API-name elicit / after
  THE arguments elicit; earlier steps appear as tflan turns with observations in the ``function``
  role. ``ground_truth`` = ``{thought, name, args}`` with ``args`` as the JSON text the tflan file
  uses (the v2 str scorer compares argument strings exactly).
* ``reason_retrieve_understand_json_v2`` -- the j1s1 single-call prompt with the JSON template
  keyed ``thought``/``name``/``args`` (a share of the j1s1 training records uses exactly these
  keys); ``args`` in the ground truth is a dict.
* ``review_str_v2`` -- one executed call (correct, wrong arguments, tool error or wrong API) and
  the review question of the j1s1 review records; ``ground_truth`` = ``{"answer": letter}``.

glaive-mini (data_formats.md §4): half function-call samples (the training query templates), half
general-response samples (no tools; tools that cannot serve the request; tools plus an unrelated
general query), with the general queries of toolbench_negative and ShareGPT-mini chit-chat.

HotpotQA-mini (HF ``hotpot_qa`` schema): two-hop bridge and comparison questions over the eval
wiki, with the gold paragraphs plus distractors in ``context``; every answer is in a supporting
sentence (or is yes/no) and each hop is a ``Search`` of a page title.
"""
from __future__ import annotations

import json
import random

from .. import prompts
from .pools import ELICIT_ARGS, ELICIT_NAME, INSTRUCT_DELIMITERS, REVIEW_QUESTION, RRU_KEYS
from .toolbench import (apis_system, dumps, general_exchange, instruct_json_template, instruct_keys,
                        instruct_string_template, plan_gold, plan_prompt, plan_trajectory,
                        review_conversation, single_call, unservable_exchange)
from .trajectories import KIND_OF_API, Trajectory, make_trajectory, wiki_question
from .world import API_TOOLS, TOOLS, World

TEVAL_STEMS = ("instruct_v2", "plan_json_v2", "plan_str_v2", "reason_str_v2", "retrieve_str_v2",
               "understand_str_v2", "reason_retrieve_understand_json_v2", "review_str_v2")

__all__ = ["TEVAL_STEMS", "REVIEW_QUESTION", "KIND_OF_API", "teval", "teval_sample", "glaive",
           "glaive_record", "hotpotqa"]


def _msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _tflan_history(t: Trajectory, k: int) -> list[dict]:
    out = []
    for s in t.steps[:k]:
        out += [_msg("assistant", s.thought), _msg("user", ELICIT_NAME[0]),
                _msg("assistant", s.api), _msg("user", ELICIT_ARGS[0]),
                _msg("assistant", dumps(s.args)), _msg("function", s.observation)]
    return out


def _gt(s, args_as_text: bool) -> dict:
    return {"thought": s.thought, "name": s.api, "args": dumps(s.args) if args_as_text else s.args}


def teval_sample(w: World, rng: random.Random, stem: str) -> dict:
    if stem == "instruct_v2":
        t = single_call(w, rng, "eval")
        s = t.steps[0]
        if rng.random() < 0.5:
            keys = instruct_keys(rng)
            system = apis_system(t.tools) + "\n" + instruct_json_template(keys)
            fmt, template = "json", {"thought": keys[0], "action": keys[1], "args": keys[2]}
        else:
            template = dict(rng.choice(INSTRUCT_DELIMITERS))
            system = apis_system(t.tools) + "\n" + instruct_string_template(template)
            fmt = "string"
        return {"origin_prompt": [_msg("system", system), _msg("user", t.query)],
                "ground_truth": {"action": s.api, "args": s.args},
                "meta_data": {"response_format": fmt}, "template": template}
    if stem in ("plan_json_v2", "plan_str_v2"):
        t = plan_trajectory(w, rng, "eval")
        ptype = "json" if stem == "plan_json_v2" else "str"
        return {"origin_prompt": [_msg("system", plan_prompt(t, ptype)), _msg("user", t.query)],
                "ground_truth": plan_gold(t),
                "meta_data": {"response_format": ptype},
                "meta": {"prompt_type": ptype, "API_list": [x["name"] for x in t.tools]}}
    if stem == "review_str_v2":
        letter = rng.choice("ABCD")
        conv = review_conversation(w, rng, "eval", letter, obs_role="function")
        return {"origin_prompt": [_msg(r, c) for r, c in conv], "ground_truth": {"answer": letter},
                "meta_data": {"response_format": "str"}}
    if stem == "reason_retrieve_understand_json_v2":
        t = single_call(w, rng, "eval")
        system = apis_system(t.tools) + "\n" + instruct_json_template(RRU_KEYS)
        return {"origin_prompt": [_msg("system", system), _msg("user", t.query)],
                "ground_truth": _gt(t.steps[0], args_as_text=False),
                "meta_data": {"response_format": "json"}}
    if stem not in ("reason_str_v2", "retrieve_str_v2", "understand_str_v2"):
        raise KeyError(f"unknown T-Eval stem {stem!r}")
    t = make_trajectory(w, rng, "eval")
    k = rng.randrange(len(t.steps))
    s = t.steps[k]
    conv = [_msg("system", prompts.render_tool_system(t.tools, react=False)), _msg("user", t.query)]
    conv += _tflan_history(t, k)
    if stem in ("retrieve_str_v2", "understand_str_v2"):
        conv += [_msg("assistant", s.thought), _msg("user", ELICIT_NAME[0])]
    if stem == "understand_str_v2":
        conv += [_msg("assistant", s.api), _msg("user", ELICIT_ARGS[0])]
    return {"origin_prompt": conv, "ground_truth": _gt(s, args_as_text=True),
            "meta_data": {"response_format": "str"}}


def teval(w: World, rng: random.Random, n: int) -> dict[str, dict]:
    """``{stem: {sample_id: sample}}`` with ``n`` samples per stem."""
    return {stem: {str(i): teval_sample(w, rng, stem) for i in range(n)} for stem in TEVAL_STEMS}


# ============================================================================================
# glaive-mini
# ============================================================================================

GLAIVE_TOOL_SYSTEM = ("SYSTEM: You are a helpful assistant with access to the following functions. "
                      "Use them if required -\n")
GLAIVE_NO_TOOL_SYSTEM = "SYSTEM: You are a helpful assistant, with no access to external functions."
EOT = " <|endoftext|>"
SEP = "\n\n\n"


def glaive_system(tools: list[dict]) -> str:
    if not tools:
        return GLAIVE_NO_TOOL_SYSTEM
    return GLAIVE_TOOL_SYSTEM + "\n\n".join(json.dumps(t, indent=4, ensure_ascii=False) for t in tools)


def _glaive_chat(turns: list[tuple[str, str]]) -> str:
    parts = []
    for role, text in turns:
        parts.append(f"{role}: {text}" + (EOT if role == "ASSISTANT" else ""))
    return SEP.join(parts) + SEP


def glaive_record(w: World, rng: random.Random, kind: str) -> dict:
    """``kind``: call | general_no_tools | general_unservable | general_with_tools."""
    if kind == "call":
        t = single_call(w, rng, "eval")
        s = t.steps[0]
        call = f"<functioncall> {{\"name\": \"{s.api}\", \"arguments\": '{dumps(s.args)}'}}"
        turns = [("USER", t.query), ("ASSISTANT", call),
                 ("FUNCTION RESPONSE", dumps(w.call(s.api, s.args))), ("ASSISTANT", t.answer)]
        if rng.random() < 0.3:
            turns += [("USER", "Thank you!"), ("ASSISTANT", "You're welcome!")]
        return {"system": glaive_system(t.tools), "chat": _glaive_chat(turns)}
    if kind == "general_unservable":
        name = rng.choice(API_TOOLS)
        ask, reply = unservable_exchange(name)
        return {"system": glaive_system([TOOLS[name]]),
                "chat": _glaive_chat([("USER", ask), ("ASSISTANT", reply)])}
    q, a = general_exchange(rng)
    if kind == "general_with_tools":
        tools = [TOOLS[n] for n in rng.sample(API_TOOLS, 1 if rng.random() < 0.75 else 2)]
        return {"system": glaive_system(tools), "chat": _glaive_chat([("USER", q), ("ASSISTANT", a)])}
    return {"system": glaive_system([]), "chat": _glaive_chat([("USER", q), ("ASSISTANT", a)])}


def glaive(w: World, rng: random.Random, n: int) -> list[dict]:
    kinds = []
    for i in range(n):
        kinds.append("call" if i % 2 == 0 else
                     ("general_no_tools", "general_unservable", "general_with_tools")[(i // 2) % 3])
    rng.shuffle(kinds)
    return [glaive_record(w, rng, k) for k in kinds]


# ============================================================================================
# HotpotQA-mini
# ============================================================================================

LEVEL_TYPES = {   # every question is two hops; the levels differ in their question types
    "easy": ((0.8, ("b_country", "b_town")), (0.2, ("c_film_first",))),
    "medium": ((0.6, ("b_founded",)), (0.4, ("c_born_first", "c_same_country"))),
    "hard": ((0.5, ("b_town", "b_founded")), (0.5, ("c_same_director", "c_same_country"))),
}


def hotpot_record(w: World, rng: random.Random, level: str, wq: dict) -> dict:
    gold = list(dict.fromkeys(title for title, _ in wq["hops"]))
    others = [x for x in w.wiki_titles("eval") if x not in gold]
    titles = gold + rng.sample(others, rng.randint(2, 4))
    rng.shuffle(titles)
    sup = wq["supporting"]
    return {
        "id": "".join(rng.choice("0123456789abcdef") for _ in range(24)),
        "question": wq["question"], "answer": wq["answer"], "type": wq["type"], "level": level,
        "supporting_facts": {"title": [t for t, _ in sup], "sent_id": [i for _, i in sup]},
        "context": {"title": titles, "sentences": [w.wiki_sentences(t) for t in titles]},
    }


def hotpotqa(w: World, rng: random.Random, per_level: int) -> list[dict]:
    out = []
    for level, mix in LEVEL_TYPES.items():
        seen: set[str] = set()
        tries = 0
        while sum(1 for r in out if r["level"] == level) < per_level and tries < per_level * 50:
            tries += 1
            (p_bridge, bridge), (_, compare) = mix
            qtype = rng.choice(bridge if rng.random() < p_bridge else compare)
            wq = wiki_question(w, rng, "eval", qtype)
            if wq["question"] in seen and tries < per_level * 10:
                continue   # prefer distinct questions; allow repeats once the pool runs dry
            seen.add(wq["question"])
            out.append(hotpot_record(w, rng, level, wq))
    return out
