"""Agent evaluation sources on EVAL-pool entities: T-Eval-mini, glaive-mini (Agent-H source) and
HotpotQA-mini.

T-Eval-mini (data_formats.md §3.2): eight v2 files, each ``{sample_id: {origin_prompt,
ground_truth, meta_data, template?, meta?}}``. The prompts deliberately use the wording families
of the training data, so a tiny model trained on the mini-world has a chance:

* ``instruct_v2`` -- the ``toolbench_instruct_j1s1_3k`` prompt (one API as a dict literal + JSON
  key template or delimiter template); ``template`` holds the key names / the six delimiters.
* ``plan_json_v2`` / ``plan_str_v2`` -- the j1s1 plan prompts; ``meta`` = ``{prompt_type, API_list}``.
* ``reason_str_v2`` / ``retrieve_str_v2`` / ``understand_str_v2`` -- the chat-aligned (tflan)
  conversation cut before the thought / after the API-name elicit / after the arguments elicit;
  earlier steps appear as tflan turns with observations in the ``function`` role.
  ``ground_truth`` = ``{thought, name, args}`` with ``args`` as the JSON text the tflan files use
  (the v2 str scorer compares argument strings exactly).
* ``reason_retrieve_understand_json_v2`` -- tool list + the j1s1 JSON template with keys
  ``thought``/``name``/``args``; ``args`` in the ground truth is a dict.
* ``review_str_v2`` -- one executed call (correct, wrong arguments, tool error or wrong API) and
  a five-option review question; ``ground_truth`` = ``{"answer": letter}``.

glaive-mini (data_formats.md §4): half function-call samples, half general-response samples
(no tools; tools that cannot serve the request; tools plus an unrelated general query).

HotpotQA-mini (HF ``hotpot_qa`` schema): bridge and comparison questions over the eval wiki, with
the gold paragraphs plus distractors in ``context``; every answer is in a supporting sentence
(or is yes/no) and each hop is a ``Search`` of a page title.
"""
from __future__ import annotations

import json
import random

from .. import prompts
from .pools import ELICIT_ARGS, ELICIT_NAME, INSTRUCT_ACTION_KEYS, INSTRUCT_ARGS_KEYS, \
    INSTRUCT_DELIMITERS, INSTRUCT_THOUGHT_KEYS
from .toolbench import (PLAN_JSON_INSTRUCTION, PLAN_STR_INSTRUCTION, apis_system, dumps,
                        general_exchange, instruct_json_template, instruct_string_template,
                        plan_gold)
from .trajectories import (DEPENDENT_KINDS, MULTI_KINDS, SINGLE_KINDS, Trajectory,
                           make_api_trajectory, make_trajectory, wiki_question)
from .world import TOOLS, World, render_observation

TEVAL_STEMS = ("instruct_v2", "plan_json_v2", "plan_str_v2", "reason_str_v2", "retrieve_str_v2",
               "understand_str_v2", "reason_retrieve_understand_json_v2", "review_str_v2")

KIND_OF_API = {"get_weather": "weather", "get_time": "time", "convert_currency": "currency",
               "search_flights": "flights", "get_movie_details": "movie", "get_stock_price": "stock",
               "find_recipe": "recipe", "translate": "translate", "calculator": "calculator",
               "book_table": "book_table", "track_package": "track"}

REVIEW_QUESTION = ("Review the last API call. Answer with one letter:\n"
                   "A. It worked.\nB. Wrong arguments.\nC. The API returned an error.\n"
                   "D. Wrong API.\nE. None of the above.")


def _msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _tflan_history(t: Trajectory, k: int, rng: random.Random) -> list[dict]:
    out = []
    for s in t.steps[:k]:
        out += [_msg("assistant", s.thought), _msg("user", rng.choice(ELICIT_NAME)),
                _msg("assistant", s.api), _msg("user", rng.choice(ELICIT_ARGS)),
                _msg("assistant", dumps(s.args)), _msg("function", s.observation)]
    return out


def _gt(s, args_as_text: bool) -> dict:
    return {"thought": s.thought, "name": s.api, "args": dumps(s.args) if args_as_text else s.args}


def _single(w, rng) -> Trajectory:
    return make_api_trajectory(w, rng, "eval", rng.choice(list(SINGLE_KINDS)))


def teval_sample(w: World, rng: random.Random, stem: str) -> dict:
    if stem == "instruct_v2":
        t = _single(w, rng)
        s = t.steps[0]
        if rng.random() < 0.5:
            keys = (rng.choice(INSTRUCT_THOUGHT_KEYS), rng.choice(INSTRUCT_ACTION_KEYS),
                    rng.choice(INSTRUCT_ARGS_KEYS))
            system = apis_system([TOOLS[s.api]]) + "\n" + instruct_json_template(keys)
            fmt, template = "json", {"thought": keys[0], "action": keys[1], "args": keys[2]}
        else:
            template = dict(rng.choice(INSTRUCT_DELIMITERS))
            system = apis_system([TOOLS[s.api]]) + "\n" + instruct_string_template(template)
            fmt = "string"
        return {"origin_prompt": [_msg("system", system), _msg("user", t.query)],
                "ground_truth": {"action": s.api, "args": s.args},
                "meta_data": {"response_format": fmt}, "template": template}
    if stem in ("plan_json_v2", "plan_str_v2"):
        if rng.random() < 0.75:
            kind = rng.choice([k for k in MULTI_KINDS if k not in DEPENDENT_KINDS])
            t = make_api_trajectory(w, rng, "eval", kind)
        else:
            t = _single(w, rng)
        ptype = "json" if stem == "plan_json_v2" else "str"
        instr = PLAN_JSON_INSTRUCTION if ptype == "json" else PLAN_STR_INSTRUCTION
        return {"origin_prompt": [_msg("system", apis_system(t.tools) + "\n" + instr),
                                  _msg("user", t.query)],
                "ground_truth": plan_gold(t),
                "meta_data": {"response_format": ptype},
                "meta": {"prompt_type": ptype, "API_list": [x["name"] for x in t.tools]}}
    if stem == "review_str_v2":
        return _review_sample(w, rng)
    t = make_trajectory(w, rng, "eval")
    k = rng.randrange(len(t.steps))
    s = t.steps[k]
    system = prompts.render_tool_system(t.tools, react=False)
    head = [_msg("user", t.query)]
    if stem == "reason_retrieve_understand_json_v2":
        system += "\n" + instruct_json_template(("thought", "name", "args"))
        hist = []
        for p in t.steps[:k]:
            hist += [_msg("assistant", dumps({"thought": p.thought, "name": p.api, "args": p.args})),
                     _msg("function", p.observation)]
        return {"origin_prompt": [_msg("system", system)] + head + hist,
                "ground_truth": _gt(s, args_as_text=False), "meta_data": {"response_format": "json"}}
    conv = [_msg("system", system)] + head + _tflan_history(t, k, rng)
    if stem in ("retrieve_str_v2", "understand_str_v2"):
        conv += [_msg("assistant", s.thought), _msg("user", rng.choice(ELICIT_NAME))]
    if stem == "understand_str_v2":
        conv += [_msg("assistant", s.api), _msg("user", rng.choice(ELICIT_ARGS))]
    if stem not in ("reason_str_v2", "retrieve_str_v2", "understand_str_v2"):
        raise KeyError(f"unknown T-Eval stem {stem!r}")
    return {"origin_prompt": conv, "ground_truth": _gt(s, args_as_text=True),
            "meta_data": {"response_format": "str"}}


def _review_sample(w: World, rng: random.Random) -> dict:
    t = _single(w, rng)
    s = t.steps[0]
    tools = list(t.tools)
    letter = rng.choice("ABCD")
    api, args, obs = s.api, dict(s.args), s.observation
    if letter == "B":
        # swap the first argument for another value of the same kind (a different entity)
        other = make_api_trajectory(w, rng, "eval", t.kind).steps[0]
        key = next(iter(args))
        while other.args[key] == args[key]:
            other = make_api_trajectory(w, rng, "eval", t.kind).steps[0]
        args[key] = other.args[key]
        obs = render_observation(w.response(api, args))
    elif letter == "C":
        obs = render_observation("", error=rng.choice(["timeout", "service unavailable"]))
    elif letter == "D":
        wrong = rng.choice([n for n in KIND_OF_API if n != s.api])
        ws = make_api_trajectory(w, rng, "eval", KIND_OF_API[wrong]).steps[0]
        api, args, obs = ws.api, ws.args, ws.observation
        rest = [x for x in tools if x["name"] not in (s.api, wrong)]
        tools = [TOOLS[s.api], TOOLS[wrong]] + rest[:1]
        rng.shuffle(tools)
    conv = [_msg("system", prompts.render_tool_system(tools, react=False)), _msg("user", t.query),
            _msg("assistant", s.thought), _msg("user", rng.choice(ELICIT_NAME)),
            _msg("assistant", api), _msg("user", rng.choice(ELICIT_ARGS)),
            _msg("assistant", dumps(args)), _msg("function", obs), _msg("user", REVIEW_QUESTION)]
    return {"origin_prompt": conv, "ground_truth": {"answer": letter},
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

# (request the tool cannot serve, what the assistant cannot do, what the tool can do)
UNSERVABLE = {
    "get_weather": ("Can you order an umbrella for me?", "order items", "get the current weather in a city"),
    "get_movie_details": ("Can you book a movie ticket for me?", "book movie tickets",
                          "get details about movies"),
    "search_flights": ("Can you book a hotel room for me?", "book hotel rooms",
                       "search for flights between two cities"),
    "convert_currency": ("Can you send 100 CHF to my friend?", "send money",
                         "convert amounts between currencies"),
    "get_stock_price": ("Can you buy ten shares for me?", "buy shares", "get stock prices"),
    "find_recipe": ("Can you order a pizza for me?", "order food", "find recipes"),
    "get_time": ("Can you set an alarm for seven o'clock?", "set alarms",
                 "get the local time in a city"),
    "book_table": ("Can you cancel my hotel booking?", "cancel hotel bookings",
                   "book tables at restaurants"),
    "track_package": ("Can you send a package to Perth for me?", "send packages",
                      "track packages"),
    "translate": ("Can you phone my friend for me?", "make phone calls", "translate short texts"),
    "calculator": ("Can you pay my electricity bill?", "make payments", "compute arithmetic"),
}


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
        t = _single(w, rng)
        s = t.steps[0]
        tools = t.tools[:2] if TOOLS[s.api] in t.tools[:2] else [TOOLS[s.api]]
        call = (f"<functioncall> {{\"name\": \"{s.api}\", \"arguments\": '{dumps(s.args)}'}}")
        turns = [("USER", rng.choice(["", "Hi! ", "Hello, "]) + t.query), ("ASSISTANT", call),
                 ("FUNCTION RESPONSE", dumps(w.call(s.api, s.args))), ("ASSISTANT", t.answer)]
        if rng.random() < 0.3:
            turns += [("USER", "Thank you!"), ("ASSISTANT", "You're welcome! Anything else I can help with?")]
        return {"system": glaive_system(tools), "chat": _glaive_chat(turns)}
    if kind == "general_unservable":
        name = rng.choice(sorted(UNSERVABLE))
        ask, cannot, can = UNSERVABLE[name]
        reply = (f"I'm sorry, but I don't have the capability to {cannot}. "
                 f"My current function only lets me {can}.")
        return {"system": glaive_system([TOOLS[name]]),
                "chat": _glaive_chat([("USER", ask), ("ASSISTANT", reply)])}
    q, a = general_exchange(rng)
    if kind == "general_with_tools":
        tools = [TOOLS[n] for n in rng.sample(sorted(KIND_OF_API), rng.randint(1, 2))]
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

LEVEL_TYPES = {
    "easy": ((0.8, ("b_country", "b_town")), (0.2, ("c_film_first",))),
    "medium": ((0.6, ("b_founded",)), (0.4, ("c_born_first", "c_same_country"))),
    "hard": ((0.8, ("b_river",)), (0.2, ("c_same_director",))),
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
