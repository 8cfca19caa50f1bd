"""Renderers of the five ToolBench-derived Agent-FLAN files (data_formats.md §1.3).

One abstract trajectory pool is partitioned into 10 % / 60 % / 30 % and rendered as

* ``toolbench_react_10p`` -- ReAct. All wiki two-hop trajectories of the pool (80 at the
  default scale) and some API trajectories (see :func:`partition`). Wiki trajectories and every other API record use the
  *text* protocol of :mod:`agentflan.prompts` (system = ``render_tool_system(tools, react=True)``,
  for wiki exactly the HotpotQA harness prompt; assistant = ``Thought/Action/Action Input``, last
  step ``Action: FinalAnswer`` with ``{"answer": ...}``), the protocol the HotpotQA and Agent-H
  harnesses prompt with. The other API records use ToolBench's JSON protocol: system = tool list +
  a ``FinalAction`` API + a response-format template whose key names are randomised per record;
  every assistant turn is one JSON object with those keys; the last one is ``FinalAction`` with
  ``{"return_type": "give_answer", "final_answer": ...}``.
* ``toolbench_tflan_60p_r10r5u7`` -- chat-aligned: thought, API name and JSON arguments are
  separate assistant turns, the user side asks with THE elicit statements
  (:data:`pools.ELICIT_NAME`, :data:`pools.ELICIT_ARGS`, one wording each, which T-Eval-mini
  reuses verbatim); the final answer is plain text; a share of records
  (:data:`TFLAN_LAST_LOSS_FALSE`) ends on an assistant turn with ``"loss": false``.
* ``toolbench_tflan_cot_30p`` -- chat-aligned chain of thought: natural-language "I will use ..."
  turns; about a third of the call turns carry one code block with the call in a random syntax
  (python/json/yaml/bash/plaintext); multi-step tasks often open with a numbered plan.
  No ``loss`` keys (missing = trained).
* ``toolbench_instruct_j1s1_3k`` -- format following, the prompts of T-Eval-mini's instruct,
  plan, rru_json and review files: "You have access to the following API(s):" + the APIs as
  Python dict literals + a JSON template with randomised keys (a share with exactly T-Eval's
  ``thought``/``name``/``args``) or a delimiter template; a share asks for a plan (JSON list or
  numbered list); a share (:data:`INSTRUCT_REVIEW_SHARE`) is a chat-aligned call followed by
  the review question, answered with one letter (only that turn is trained).
* ``toolbench_negative`` -- Agent-FLAN negative samples: case (c) no tools, case (b) irrelevant
  tools in a ReAct system prompt; the query is tool-like, a general question (the same ones as
  ShareGPT-mini chit-chat and glaive-mini) or a request the attached tool cannot serve; the reply
  is plain text without any tool call.

Every API observation is a user turn holding ``{"error": "", "response": "..."}``; a wiki
``Search`` observation is the HotpotQA harness's user turn ``Observation: <paragraph>``. A share
(:data:`SYNTH_SHARE`) of the trajectories, j1s1 queries and tool-like negative queries fills its
entity slots with generated copy-drill names (:data:`pools.SYNTH`) instead of the TRAIN pool.
"""
from __future__ import annotations

import json
import random
import re
import shlex

from .. import prompts
from .pools import (CHITCHAT, CODE_SYNTAXES, COUNTRIES, ELICIT_ARGS, ELICIT_CONTINUE, ELICIT_NAME,
                    FACT_ANSWERS, FACT_QUESTIONS, INSTRUCT_ACTION_KEYS, INSTRUCT_ARGS_KEYS,
                    INSTRUCT_DELIMITERS, INSTRUCT_THOUGHT_KEYS, JOKES, REACT_ACTION_KEYS,
                    REACT_ARGS_KEYS, REACT_THOUGHT_KEYS, REVIEW_QUESTION, RRU_KEYS)
from .trajectories import (KIND_OF_API, MULTI_KINDS, SINGLE_KINDS, DEPENDENT_KINDS, Trajectory,
                           make_api_trajectory, training_split)
from .world import API_TOOLS, TOOLS, World, pyrepr, render_observation

TFLAN_LAST_LOSS_FALSE = 0.08   # tflan records ending on an assistant turn with loss false
COT_CODE_SHARE = 1 / 3         # cot call turns carrying a code block
COT_PLAN_SHARE = 0.6           # independent multi-step cot records opening with a plan
INSTRUCT_REVIEW_SHARE = 0.2    # j1s1 records: review question (letter answer)
INSTRUCT_PLAN_SHARE = 0.2      # j1s1 records asking for a plan (half JSON list, half numbered)
INSTRUCT_STRING_SHARE = 0.3    # single-call j1s1 records with a delimiter template
INSTRUCT_RRU_KEYS_SHARE = 0.4  # JSON single-call j1s1 records with exactly T-Eval's rru keys
PLAN_SINGLE_SHARE = 0.25       # plan prompts over a single-call query (else a two-step one)
# Training records whose entities are generated copy-drill names instead of the TRAIN pool
# (pools.SYNTH): many distinct values make copying, not memorising, the way to fit the data.
SYNTH_SHARE = 0.5
REACT_FILE_SHARE = 0.1         # toolbench_react_10p / tflan_60p / cot_30p shares of the pool
TFLAN_FILE_SHARE = 0.6

FINAL_ACTION = "FinalAction"
FINAL_ACTION_API = {
    "name": FINAL_ACTION,
    "description": "Give the final answer.",
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


def partition(pool: list, n_total: int | None = None) -> list[list]:
    """Split ``pool`` into the react / tflan / cot parts.

    Every wiki trajectory goes to the react part (the ReAct file carries the HotpotQA protocol),
    followed by API trajectories in pool order: enough to fill the part to ``round(n * 0.1)``, and
    never fewer than ``round(n * 0.05)`` (so the ToolBench JSON protocol is always present). The
    tflan part takes the next ``round(n * 0.6)`` API trajectories, the cot part the rest. With more
    wiki trajectories than 10 % of the pool (the default: 80 of 500, so that the tiny models learn
    the HotpotQA protocol), the react part is larger than its name says and the cot part smaller.
    """
    n = len(pool) if n_total is None else n_total
    n_react, n_tflan = round(n * REACT_FILE_SHARE), round(n * TFLAN_FILE_SHARE)
    wiki = [t for t in pool if getattr(t, "family", "") == "wiki"]
    api = [t for t in pool if getattr(t, "family", "") != "wiki"]
    fill = max(n_react - len(wiki), round(n * REACT_FILE_SHARE / 2))
    react = wiki + api[:fill]
    rest = api[fill:]
    return [react, rest[:n_tflan], rest[n_tflan:]]


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
    return (f"Respond with one JSON object per step, with the keys \"{k1}\", \"{k2}\" and "
            f"\"{k3}\".")


def render_react_text(t: Trajectory) -> list[dict]:
    conv = [turn("system", prompts.render_tool_system(t.tools, react=True)), turn("user", t.query)]
    for s in t.steps:
        conv.append(turn("assistant", prompts.render_react_step(s.thought, s.api, s.args), True))
        conv.append(turn("user", s.observation))
    conv.append(turn("assistant", prompts.render_react_step(
        t.final_thought, prompts.FINISH_ACTION, {"answer": t.answer}), True))
    return conv


def render_react_json(t: Trajectory, rng: random.Random, keys: tuple[str, str, str] | None = None
                      ) -> list[dict]:
    keys = keys or (rng.choice(REACT_THOUGHT_KEYS), rng.choice(REACT_ACTION_KEYS),
                    rng.choice(REACT_ARGS_KEYS))
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


def render_react_part(part: list[Trajectory], rng: random.Random) -> list[list[dict]]:
    """Wiki trajectories and every other API record: text protocol; the rest: JSON protocol.

    The JSON records' key names walk through the three key pools from random offsets, so that
    even a handful of JSON records shows several spellings of every key."""
    offsets = [rng.randrange(len(p)) for p in (REACT_THOUGHT_KEYS, REACT_ACTION_KEYS, REACT_ARGS_KEYS)]
    out, k = [], 0
    for t in part:
        if t.family == "wiki" or k % 2 == 0:
            out.append(render_react_text(t))
        else:
            j = k // 2
            keys = tuple(p[(o + j) % len(p)] for p, o in
                         zip((REACT_THOUGHT_KEYS, REACT_ACTION_KEYS, REACT_ARGS_KEYS), offsets))
            out.append(render_react_json(t, rng, keys))
        k += t.family != "wiki"
    return out


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

_NEED = re.compile(r"(?:Now )?I need to ")


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
    """``"I will use get_weather to get the weather in Paris."``"""
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
# toolbench_instruct_j1s1_3k (and the T-Eval instruct / plan / rru / review prompts, which share
# the wording)
# ============================================================================================

def api_dict_literal(tool: dict) -> str:
    """One API in ToolBench's Python-dict style (name, description, parameters)."""
    return pyrepr({"name": tool["name"], "description": tool["description"],
                   "parameters": prompts.tool_schema(tool["parameters"])})


def apis_system(tools: list[dict]) -> str:
    head = "You have access to the following API:" if len(tools) == 1 else \
        "You have access to the following APIs:"
    return head + "\n" + "\n".join(api_dict_literal(t) for t in tools)


def instruct_keys(rng: random.Random) -> tuple[str, str, str]:
    """Key names of a JSON single-call template: exactly T-Eval's rru keys in
    :data:`INSTRUCT_RRU_KEYS_SHARE` of the draws, else randomised (j1s1 records, T-Eval instruct)."""
    if rng.random() < INSTRUCT_RRU_KEYS_SHARE:
        return RRU_KEYS
    return rng.choice(INSTRUCT_THOUGHT_KEYS), rng.choice(INSTRUCT_ACTION_KEYS), rng.choice(INSTRUCT_ARGS_KEYS)


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


def instruct_json_answer(keys: tuple[str, str, str], s) -> str:
    return dumps({keys[0]: s.thought, keys[1]: s.api, keys[2]: s.args})


PLAN_JSON_INSTRUCTION = ("Make a plan first. Respond with a JSON list of steps, each with the "
                         "keys \"id\", \"name\" and \"args\". End with the step FinishAction.")
PLAN_STR_INSTRUCTION = "Make a plan first. Write the steps as a numbered list, one API per line."


def plan_gold(t: Trajectory) -> list[dict]:
    steps = [{"id": i, "name": s.api, "args": s.args} for i, s in enumerate(t.steps)]
    return steps + [{"id": len(steps), "name": "FinishAction", "args": {}}]


def plan_trajectory(w: World, rng: random.Random, split: str) -> Trajectory:
    """The query of a plan prompt: a two-step task, or (a quarter) a single call."""
    if rng.random() < PLAN_SINGLE_SHARE:
        return make_api_trajectory(w, rng, split, rng.choice(list(SINGLE_KINDS)))
    kind = rng.choice([k for k in MULTI_KINDS if k not in DEPENDENT_KINDS])
    return make_api_trajectory(w, rng, split, kind)


def plan_prompt(t: Trajectory, ptype: str) -> str:
    """System prompt of a plan request (``ptype`` json | str), shared with T-Eval-mini."""
    return apis_system(t.tools) + "\n" + (PLAN_JSON_INSTRUCTION if ptype == "json" else PLAN_STR_INSTRUCTION)


def single_call(w: World, rng: random.Random, split: str) -> Trajectory:
    return make_api_trajectory(w, rng, split, rng.choice(list(SINGLE_KINDS)))


# ---- review (T-Eval review_str): a chat-aligned call, its result, and the review question

def review_conversation(w: World, rng: random.Random, split: str, letter: str,
                        obs_role: str = "user") -> list[tuple[str, str]]:
    """``[(role, content)]`` of one review case ending with the review question.

    ``letter``: A = the call worked, B = wrong arguments (another entity of the same kind),
    C = the API returned an error, D = wrong API (a second tool is listed). Observations carry
    the role ``obs_role`` (``user`` in the Agent-FLAN files, ``function`` in T-Eval).
    """
    t = single_call(w, rng, split)
    s = t.steps[0]
    tools = list(t.tools)
    api, args, obs = s.api, dict(s.args), s.observation
    thought = s.thought
    if letter == "B":
        key = next(iter(args))
        other = make_api_trajectory(w, rng, split, t.kind).steps[0]
        while other.args[key] == args[key]:
            other = make_api_trajectory(w, rng, split, t.kind).steps[0]
        args[key] = other.args[key]
        obs = render_observation(w.response(api, args))
    elif letter == "C":
        obs = render_observation("", error=rng.choice(["timeout", "service unavailable"]))
    elif letter == "D":
        wrong = rng.choice([n for n in KIND_OF_API if n != s.api])
        ws = make_api_trajectory(w, rng, split, KIND_OF_API[wrong]).steps[0]
        api, args, obs = ws.api, ws.args, ws.observation
        tools = [TOOLS[s.api], TOOLS[wrong]]
        rng.shuffle(tools)
    return [("system", prompts.render_tool_system(tools, react=False)), ("user", t.query),
            ("assistant", thought), ("user", ELICIT_NAME[0]), ("assistant", api),
            ("user", ELICIT_ARGS[0]), ("assistant", dumps(args)), (obs_role, obs),
            ("user", REVIEW_QUESTION)]


def instruct_kinds(rng: random.Random, n: int) -> list[str]:
    """Exact mix of the j1s1 file: review / plan_json / plan_str / single, shuffled."""
    n_review = round(n * INSTRUCT_REVIEW_SHARE)
    n_plan = round(n * INSTRUCT_PLAN_SHARE)
    kinds = (["review"] * n_review + ["plan_json"] * (n_plan // 2)
             + ["plan_str"] * (n_plan - n_plan // 2) + ["single"] * (n - n_review - n_plan))
    rng.shuffle(kinds)
    return kinds


def render_instruct(w: World, rng: random.Random, kind_rng: random.Random, kind: str = "single",
                    synth_share: float = SYNTH_SHARE) -> list[dict]:
    split = training_split(rng, synth_share)
    if kind == "review":
        letter = rng.choice("ABCD")
        conv = [turn(role, text) if role != "assistant" else turn(role, text, False)
                for role, text in review_conversation(w, kind_rng, split, letter)]
        return conv + [turn("assistant", letter, True)]
    if kind in ("plan_json", "plan_str"):
        t = plan_trajectory(w, kind_rng, split)
        ptype = kind.split("_")[1]
        answer = dumps(plan_gold(t)) if ptype == "json" else plan_lines(t)
        return [turn("system", plan_prompt(t, ptype)), turn("user", t.query),
                turn("assistant", answer, True)]
    t = single_call(w, kind_rng, split)
    s = t.steps[0]
    if rng.random() < INSTRUCT_STRING_SHARE:
        d = rng.choice(INSTRUCT_DELIMITERS)
        system = apis_system(t.tools) + "\n" + instruct_string_template(d)
        answer = instruct_string_answer(d, s.thought, s.api, s.args)
    else:
        keys = instruct_keys(rng)
        system = apis_system(t.tools) + "\n" + instruct_json_template(keys)
        answer = instruct_json_answer(keys, s)
    return [turn("system", system), turn("user", t.query), turn("assistant", answer, True)]


# ============================================================================================
# toolbench_negative
# ============================================================================================

# What the assistant lacks, per tool-like query kind (case b/c refusals).
LACKS = {
    "weather": "live weather data", "time": "a live clock", "flights": "flight schedules",
    "movie": "a movie database", "stock": "live stock prices", "recipe": "a recipe database",
    "book_table": "a booking system",
}

# (request the tool cannot serve, what the assistant cannot do, what the tool can do): the
# case (b) requests of toolbench_negative and glaive-mini's "unservable" samples.
UNSERVABLE = {
    "get_weather": ("Can you order an umbrella for me?", "order items", "get the weather in a city"),
    "get_time": ("Can you set an alarm for me?", "set alarms", "get the time in a city"),
    "search_flights": ("Can you book a hotel room for me?", "book hotel rooms", "find flights"),
    "get_movie_details": ("Can you buy a movie ticket for me?", "buy movie tickets",
                          "get details about movies"),
    "get_stock_price": ("Can you buy ten shares for me?", "buy shares", "get stock prices"),
    "find_recipe": ("Can you order a pizza for me?", "order food", "find recipes"),
    "book_table": ("Can you cancel my hotel booking?", "cancel hotel bookings",
                   "book tables at restaurants"),
}


def unservable_exchange(api: str) -> tuple[str, str]:
    ask, cannot, can = UNSERVABLE[api]
    return ask, f"I'm sorry, but I can't {cannot}. I can only {can}."


def fact_exchange(rng: random.Random) -> tuple[str, str]:
    """A question about one fact of a fictional country, with its one-sentence answer."""
    c = rng.choice(COUNTRIES)
    fact = rng.choice(list(FACT_QUESTIONS))
    return FACT_QUESTIONS[fact].format(**c), FACT_ANSWERS[fact].format(**c)


def general_exchange(rng: random.Random) -> tuple[str, str]:
    """A general (non-tool) query with a direct answer: a country fact (half) or chit-chat."""
    if rng.random() < 0.5:
        return fact_exchange(rng)
    q, a = rng.choice(CHITCHAT)
    return q, a if a is not None else rng.choice(JOKES)


def negative_reply(t: Trajectory) -> str:
    """Plain refusal of a tool-like query without the tool it needs."""
    s = t.steps[0]
    return f"I'm sorry, but I don't have access to {LACKS[t.kind]}, so I can't {s.purpose} for you."


NEGATIVE_MIX = {   # query kinds per case, as shares of that case's records
    "b": (("tool", 0.45), ("general", 0.3), ("unservable", 0.25)),
    "c": (("tool", 0.6), ("general", 0.4)),
}


def negative_plan(rng: random.Random, n: int) -> list[tuple[str, str, str | None]]:
    """``(case, query kind, tool)`` for ``n`` negatives: half case (b), half case (c), query kinds
    by :data:`NEGATIVE_MIX`; the unservable requests cycle through every API tool."""
    plan = []
    for case, n_case in (("b", n // 2), ("c", n - n // 2)):
        mix = NEGATIVE_MIX[case]
        counts = [round(n_case * share) for _, share in mix[:-1]]
        counts.append(n_case - sum(counts))
        for (kind, _), k in zip(mix, counts):
            tools = list(API_TOOLS)
            rng.shuffle(tools)
            plan += [(case, kind, tools[i % len(tools)] if kind == "unservable" else None) for i in range(k)]
    rng.shuffle(plan)
    return plan


def render_negative(w: World, rng: random.Random, kind_rng: random.Random, case: str,
                    kind: str = "tool", tool: str | None = None, synth_share: float = SYNTH_SHARE
                    ) -> list[dict]:
    """``case`` "b": irrelevant tools in a ReAct system prompt; "c": no tools at all.

    ``kind``: ``tool`` (a tool-like query, ToolBench queries in the paper, refused because the
    needed tool is absent), ``general`` (a general query, answered directly) or ``unservable``
    (case b only: a request the attached ``tool`` cannot serve).
    """
    if kind == "unservable":
        tool = tool or rng.choice(API_TOOLS)
        query, reply = unservable_exchange(tool)
        return [turn("system", prompts.render_tool_system([TOOLS[tool]], react=True)),
                turn("user", query), turn("assistant", reply)]
    needed: list[str] = []
    if kind == "tool":
        t = make_api_trajectory(w, kind_rng, training_split(rng, synth_share), rng.choice(list(SINGLE_KINDS)))
        query, reply, needed = t.query, negative_reply(t), [t.steps[0].api]
    else:
        query, reply = general_exchange(rng)
    if case == "c":
        system = prompts.NO_TOOL_SYSTEM
    else:
        others = [n for n in API_TOOLS if n not in needed]
        tools = [TOOLS[n] for n in rng.sample(others, 1 if rng.random() < 0.75 else 2)]
        system = prompts.render_tool_system(tools, react=True)
    return [turn("system", system), turn("user", query), turn("assistant", reply)]
