"""Renderers of the five ToolBench-derived Agent-FLAN files (data_formats.md §1.3).

One abstract trajectory pool is partitioned 10 % / 60 % / 30 % and rendered as

* ``toolbench_react_10p`` -- ReAct. Wiki multi-hop trajectories and a share
  (:data:`REACT_TEXT_SHARE`) of the others use the *text* protocol of
  :mod:`agentflan.prompts` (system = ``render_tool_system(tools, react=True)``, assistant =
  ``Thought/Action/Action Input``, last step ``Action: FinalAnswer`` with ``{"answer": ...}``), the
  protocol the HotpotQA and Agent-H harnesses prompt with. The rest use ToolBench's JSON protocol:
  system = tool list + a ``FinalAction`` API + a response-format template whose key names are
  randomised per record; every assistant turn is one JSON object with those keys; the last one is
  ``FinalAction`` with ``{"return_type": "give_answer", "final_answer": ...}``.
* ``toolbench_tflan_60p_r10r5u7`` -- chat-aligned: thought, API name and JSON arguments are
  separate assistant turns, the user side asks with fixed elicit statements
  (:data:`pools.ELICIT_NAME`, :data:`pools.ELICIT_ARGS`); the final answer is plain text; a share
  of records (:data:`TFLAN_LAST_LOSS_FALSE`) ends on an assistant turn with ``"loss": false``.
* ``toolbench_tflan_cot_30p`` -- chat-aligned chain of thought: natural-language "I will use ..."
  turns; about a third of the call turns carry one code block with the call in a random syntax
  (python/json/yaml/bash/plaintext); multi-step independent tasks often open with a numbered plan.
  No ``loss`` keys (missing = trained).
* ``toolbench_instruct_j1s1_3k`` -- single-turn format following: "You have access to the
  following API:" + one API as a Python dict literal + a JSON template with randomised keys or a
  delimiter template; a share asks for a plan (JSON list or numbered list) over two APIs.
* ``toolbench_negative`` -- Agent-FLAN negative samples: case (c) no tools, case (b) irrelevant
  tools in a ReAct system prompt; the reply is plain text without any tool call.

Every API observation is a user turn holding ``{"error": "", "response": "..."}``; a wiki
``Search`` observation is the HotpotQA harness's user turn ``Observation: <paragraph>``.
"""
from __future__ import annotations

import json
import random
import re
import shlex

from .. import prompts
from .pools import (CODE_SYNTAXES, COUNTRIES, ELICIT_ARGS, ELICIT_CONTINUE, ELICIT_NAME,
                    INSTRUCT_ACTION_KEYS, INSTRUCT_ARGS_KEYS, INSTRUCT_DELIMITERS,
                    INSTRUCT_THOUGHT_KEYS, JOKES, REACT_ACTION_KEYS, REACT_ARGS_KEYS,
                    REACT_THOUGHT_KEYS, TRANSLATIONS)
from .trajectories import (MULTI_KINDS, SINGLE_KINDS, DEPENDENT_KINDS, Trajectory,
                           make_api_trajectory)
from .world import API_TOOLS, TOOLS, World, pyrepr

REACT_TEXT_SHARE = 0.4         # non-wiki records of the react file rendered in the text protocol
TFLAN_LAST_LOSS_FALSE = 0.08   # tflan records ending on an assistant turn with loss false
COT_CODE_SHARE = 1 / 3         # cot call turns carrying a code block
COT_PLAN_SHARE = 0.6           # independent multi-step cot records opening with a plan
INSTRUCT_STRING_SHARE = 0.3    # j1s1 records with a delimiter template instead of JSON
INSTRUCT_PLAN_SHARE = 0.2      # j1s1 records asking for a plan (half JSON list, half numbered)

FINAL_ACTION = "FinalAction"
FINAL_ACTION_API = {
    "name": FINAL_ACTION,
    "description": "Give the final answer at the end of the task.",
    "parameters": {"type": "object", "properties": {
        "return_type": {"type": "string"}, "final_answer": {"type": "string"}},
        "required": ["return_type", "final_answer"]},
}


def dumps(obj) -> str:
    """Compact JSON as it appears inside turn texts (insertion order, UTF-8 kept)."""
    return json.dumps(obj, ensure_ascii=False)


def turn(role: str, content: str, loss=...) -> dict:
    t = {"role": role, "content": content}
    if loss is not ...:
        t["loss"] = loss
    return t


def partition(pool: list, shares=(0.1, 0.6, 0.3)) -> list[list]:
    """Split ``pool`` into parts with the given shares, stratified by trajectory family.

    Part sizes are ``round(n * share)`` (the last part takes the rest). Within each family
    (single / multi / wiki) items go to parts in pool order with the same shares, so even the
    small ReAct part gets its proportional share of wiki multi-hop trajectories; each part keeps
    the pool order.
    """
    n = len(pool)
    sizes = [round(n * sh) for sh in shares[:-1]]
    sizes.append(n - sum(sizes))
    families: dict[str, list[int]] = {}
    for i, t in enumerate(pool):
        families.setdefault(getattr(t, "family", ""), []).append(i)
    # order items so that consecutive slices of ``sizes`` are stratified: interleave the
    # families by their relative position (i-th of m items sits at (i + 0.5) / m)
    keyed = sorted(((k + 0.5) / len(idxs), i) for idxs in families.values() for k, i in enumerate(idxs))
    order = [i for _, i in keyed]
    parts, start = [], 0
    for size in sizes:
        parts.append([pool[i] for i in sorted(order[start:start + size])])
        start += size
    return parts


# ============================================================================================
# toolbench_react_10p
# ============================================================================================

def react_json_template(rng: random.Random, keys: tuple[str, str, str]) -> str:
    k1, k2, k3 = keys
    if rng.random() < 0.5:
        return ("Respond with one JSON object per step:\n```\n{\n"
                f"  // your reasoning\n  \"{k1}\": string,\n"
                f"  // the API to call\n  \"{k2}\": string,\n"
                f"  // its arguments\n  \"{k3}\": object\n}}\n```")
    return (f"Respond with one JSON object per step, with the key \"{k1}\" for your reasoning, "
            f"\"{k2}\" for the API and \"{k3}\" for its arguments.")


def render_react_text(t: Trajectory) -> list[dict]:
    conv = [turn("system", prompts.render_tool_system(t.tools, react=True)), turn("user", t.query)]
    for s in t.steps:
        conv.append(turn("assistant", prompts.render_react_step(s.thought, s.api, s.args), True))
        conv.append(turn("user", s.observation))
    conv.append(turn("assistant", prompts.render_react_step(
        t.final_thought, prompts.FINISH_ACTION, {"answer": t.answer}), True))
    return conv


def render_react_json(t: Trajectory, rng: random.Random) -> list[dict]:
    keys = (rng.choice(REACT_THOUGHT_KEYS), rng.choice(REACT_ACTION_KEYS), rng.choice(REACT_ARGS_KEYS))
    system = "\n".join([prompts.render_tool_system(t.tools, react=False),
                        prompts.render_api(FINAL_ACTION_API["name"], FINAL_ACTION_API["description"],
                                           FINAL_ACTION_API["parameters"]),
                        react_json_template(rng, keys)])
    conv = [turn("system", system), turn("user", t.query)]
    for s in t.steps:
        conv.append(turn("assistant", dumps({keys[0]: s.thought, keys[1]: s.api, keys[2]: s.args}), True))
        conv.append(turn("user", s.observation))
    final = {"return_type": "give_answer", "final_answer": t.answer}
    last = {keys[0]: t.final_thought, keys[1]: FINAL_ACTION, keys[2]: final}
    conv.append(turn("assistant", dumps(last), True))
    return conv


def render_react(t: Trajectory, rng: random.Random) -> list[dict]:
    if t.family == "wiki" or rng.random() < REACT_TEXT_SHARE:
        return render_react_text(t)
    return render_react_json(t, rng)


# ============================================================================================
# toolbench_tflan_60p_r10r5u7
# ============================================================================================

def tflan_step_turns(s, rng: random.Random, loss=True) -> list[dict]:
    """Thought / API name / JSON arguments of one step as chat turns (observation excluded)."""
    return [turn("assistant", s.thought, loss), turn("user", rng.choice(ELICIT_NAME)),
            turn("assistant", s.api, loss), turn("user", rng.choice(ELICIT_ARGS)),
            turn("assistant", dumps(s.args), loss)]


def render_tflan(t: Trajectory, rng: random.Random) -> list[dict]:
    conv = [turn("system", prompts.render_tool_system(t.tools, react=False)), turn("user", t.query)]
    for s in t.steps:
        conv.extend(tflan_step_turns(s, rng))
        conv.append(turn("user", s.observation))
    final = t.final_thought if t.family == "wiki" else t.answer
    conv.append(turn("assistant", final, not (rng.random() < TFLAN_LAST_LOSS_FALSE)))
    return conv


# ============================================================================================
# toolbench_tflan_cot_30p
# ============================================================================================

_NEED = re.compile(r"(?:First, |To answer this, |Now |Next, )?I need to ")


def code_block(api: str, args: dict, syntax: str) -> str:
    if syntax == "python":
        body = f"{api}(" + ", ".join(f"{k}={dumps(v)}" for k, v in args.items()) + ")"
    elif syntax == "json":
        body = dumps({"name": api, "parameters": args})
    elif syntax == "yaml":
        body = f"name: {api}\nparameters:\n" + "\n".join(f"  {k}: {v}" for k, v in args.items())
    elif syntax == "bash":
        body = api + "".join(f" --{k} {shlex.quote(str(v))}" for k, v in args.items())
    else:
        body = api + " " + ", ".join(f"{k}={v}" for k, v in args.items())
    return f"```{syntax}\n{body}\n```"


def cot_call_text(s) -> str:
    """``"Night Train was directed by Anna Berg. I will use Search to search for Anna Berg."``"""
    text, n = _NEED.subn(f"I will use {s.api} to ", s.thought, count=1)
    return text if n else f"{s.thought} I will use {s.api} to {s.purpose}."


def plan_lines(t: Trajectory) -> str:
    """Numbered plan, one API per line with its arguments (what T-Eval's plan_str parser reads)."""
    lines = [f"{i + 1}. Use {s.api} with {dumps(s.args)}." for i, s in enumerate(t.steps)]
    return f"I will solve this in {len(t.steps)} steps:\n" + "\n".join(lines)


def render_cot(t: Trajectory, rng: random.Random) -> list[dict]:
    conv = [turn("system", prompts.render_tool_system(t.tools, react=False)), turn("user", t.query)]
    if t.family == "multi" and t.independent and rng.random() < COT_PLAN_SHARE:
        conv.append(turn("assistant", plan_lines(t)))
        conv.append(turn("user", rng.choice(ELICIT_CONTINUE)))
    for s in t.steps:
        text = cot_call_text(s)
        if rng.random() < COT_CODE_SHARE:
            text += "\n" + code_block(s.api, s.args, rng.choice(CODE_SYNTAXES))
        conv.append(turn("assistant", text))
        conv.append(turn("user", s.observation))
    conv.append(turn("assistant", t.final_thought if t.family == "wiki" else t.answer))
    return conv


# ============================================================================================
# toolbench_instruct_j1s1_3k (and the T-Eval instruct / plan prompts, which share the wording)
# ============================================================================================

def api_dict_literal(tool: dict) -> str:
    """One API in ToolBench's Python-dict style (name, description, parameters)."""
    return pyrepr({"name": tool["name"], "description": tool["description"],
                   "parameters": prompts.tool_schema(tool["parameters"])})


def apis_system(tools: list[dict]) -> str:
    head = "You have access to the following API:" if len(tools) == 1 else \
        "You have access to the following APIs:"
    return head + "\n" + "\n".join(api_dict_literal(t) for t in tools)


def instruct_json_template(keys: tuple[str, str, str]) -> str:
    k1, k2, k3 = keys
    return (f"Respond with a JSON object with the keys \"{k1}\", \"{k2}\" and \"{k3}\": "
            f"\"{k1}\" is your thought, \"{k2}\" is the API name and \"{k3}\" are the arguments.")


def instruct_string_template(d: dict) -> str:
    return ("Respond in the following format:\n"
            f"{d['thought_start']}your thought{d['thought_end']}"
            f"{d['action_start']}the API name{d['action_end']}"
            f"{d['args_start']}the arguments as JSON{d['args_end']}")


def instruct_string_answer(d: dict, thought: str, api: str, args: dict) -> str:
    return (f"{d['thought_start']}{thought}{d['thought_end']}{d['action_start']}{api}"
            f"{d['action_end']}{d['args_start']}{dumps(args)}{d['args_end']}")


PLAN_JSON_INSTRUCTION = ("Make a plan first. Respond with a JSON list of steps, each with the "
                         "keys \"id\", \"name\" and \"args\". End with the step FinishAction.")
PLAN_STR_INSTRUCTION = "Make a plan first. Write the steps as a numbered list, one API per line."


def plan_gold(t: Trajectory) -> list[dict]:
    steps = [{"id": i, "name": s.api, "args": s.args} for i, s in enumerate(t.steps)]
    return steps + [{"id": len(steps), "name": "FinishAction", "args": {}}]


def render_instruct(w: World, rng: random.Random, kind_rng: random.Random) -> list[dict]:
    r = rng.random()
    if r < INSTRUCT_PLAN_SHARE:
        kind = rng.choice([k for k in MULTI_KINDS if k not in DEPENDENT_KINDS])
        t = make_api_trajectory(w, kind_rng, "train", kind)
        tools = [TOOLS[n] for n in dict.fromkeys(s.api for s in t.steps)]
        if r < INSTRUCT_PLAN_SHARE / 2:
            system = apis_system(tools) + "\n" + PLAN_JSON_INSTRUCTION
            answer = dumps(plan_gold(t))
        else:
            system = apis_system(tools) + "\n" + PLAN_STR_INSTRUCTION
            answer = plan_lines(t)
        return [turn("system", system), turn("user", t.query), turn("assistant", answer, True)]
    t = make_api_trajectory(w, kind_rng, "train", rng.choice(list(SINGLE_KINDS)))
    s = t.steps[0]
    tool = TOOLS[s.api]
    if rng.random() < INSTRUCT_STRING_SHARE:
        d = rng.choice(INSTRUCT_DELIMITERS)
        system = apis_system([tool]) + "\n" + instruct_string_template(d)
        answer = instruct_string_answer(d, s.thought, s.api, s.args)
    else:
        keys = (rng.choice(INSTRUCT_THOUGHT_KEYS), rng.choice(INSTRUCT_ACTION_KEYS),
                rng.choice(INSTRUCT_ARGS_KEYS))
        system = apis_system([tool]) + "\n" + instruct_json_template(keys)
        answer = dumps({keys[0]: s.thought, keys[1]: s.api, keys[2]: s.args})
    return [turn("system", system), turn("user", t.query), turn("assistant", answer, True)]


# ============================================================================================
# toolbench_negative
# ============================================================================================

# What the assistant lacks, per tool-like query kind (case b/c refusals).
LACKS = {
    "weather": "live weather data", "time": "a live clock for other cities",
    "currency": "live exchange rates", "flights": "flight schedules",
    "movie": "a movie database", "stock": "live stock prices", "recipe": "a recipe database",
    "book_table": "a booking system", "track": "a package tracking system",
}
ADVICE = {
    "weather": "A weather website or app can show you the forecast.",
    "time": "The clock on your phone can show the time in other cities.",
    "currency": "A bank or an exchange website can give you the current rate.",
    "flights": "An airline or travel website can show you the flights.",
    "movie": "A movie website can tell you more about it.",
    "stock": "A finance website can show you the latest price.",
    "recipe": "A cooking website will have many good recipes.",
    "book_table": "You can phone the restaurant to book a table.",
    "track": "The website of the delivery company can show where it is.",
}


def general_exchange(rng: random.Random) -> tuple[str, str]:
    """A general (non-tool) query with a direct answer: facts, chit-chat, a joke."""
    c = rng.choice(COUNTRIES)
    form = rng.randrange(5)
    if form == 0:
        return f"What is the capital of {c['name']}?", f"The capital of {c['name']} is {c['capital']}."
    if form == 1:
        return (f"What language do people speak in {c['name']}?",
                f"People in {c['name']} speak {c['language']}.")
    if form == 2:
        return "Can you tell me a joke?", rng.choice(JOKES)
    if form == 3:
        return "Hello! How are you?", "Hello! I am doing well, thank you. How can I help you today?"
    return ("What can you help me with?",
            "I can answer questions, explain things and help you with writing and math.")


def negative_reply(t: Trajectory, rng: random.Random) -> str:
    """Plain reply to a tool-like query without tools: a refusal or a direct answer."""
    s = t.steps[0]
    if t.kind == "calculator":
        return t.answer.replace(" is ", " equals ", 1)
    if t.kind == "translate":
        tr = TRANSLATIONS[s.args["text"]][s.args["language"]]
        return f"In {s.args['language']}, '{s.args['text']}' is '{tr}'."
    sorry = rng.choice(["I'm sorry, but", "Sorry,"])
    return f"{sorry} I don't have access to {LACKS[t.kind]}, so I can't {s.purpose} for you. {ADVICE[t.kind]}"


def render_negative(w: World, rng: random.Random, kind_rng: random.Random, case: str
                    ) -> list[dict]:
    """``case`` "b": irrelevant tools in a ReAct system prompt; "c": no tools at all.

    Case (c) queries are always tool-like (ToolBench queries in the paper); case (b) queries are
    tool-like queries the attached tools cannot serve, or (20 %) general queries.
    """
    if case == "b" and rng.random() < 0.2:
        query, reply = general_exchange(rng)
        needed: list[str] = []
    else:
        kind = rng.choice(list(SINGLE_KINDS))
        t = make_api_trajectory(w, kind_rng, "train", kind)
        query, reply, needed = t.query, negative_reply(t, rng), [t.steps[0].api]
    if case == "c":
        system = prompts.NO_TOOL_SYSTEM
    else:
        others = [n for n in API_TOOLS if n not in needed]
        tools = [TOOLS[n] for n in rng.sample(others, rng.randint(1, 3))]
        system = prompts.render_tool_system(tools, react=True)
    return [turn("system", system), turn("user", query), turn("assistant", reply)]
