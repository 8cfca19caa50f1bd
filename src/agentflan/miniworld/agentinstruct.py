"""Mini AgentInstruct: six AgentBench-like tasks, in the original (ReAct-ish) task formats and in
a chat-aligned rewrite (``agent_instruct_react`` / ``agent_instruct_tflan``).

Each task builds an abstract episode: an instruction (``core`` + ``rules``), a problem, and steps
``(think, react_text, name, arg, observation)``. ``react_text`` is the assistant turn in the
task's own format (data_formats.md §2: OS ``Think:/Act: bash``, DB ``Action: Operation`` +
```` ```sql ````, KG ``Thought: ... Action: get_relations(...)``, WebShop ``search[...]``/
``click[...]``, ALFWorld ``go to``/``take``, Mind2Web ``Answer: D.\\nAction: CLICK``). The tflan
rendering drops the format rules and splits every step into a thought turn, the action name and
its argument, asked for by short elicit statements; a step whose ``name`` is None is a final
answer and becomes one plain-text turn.

The instruction is the first user turn; observations are user turns. Record ``i`` of both files
is the same episode. The ``loss`` keys follow a per-record style (AgentInstruct's
``null``-on-user/``true``-on-assistant, all keys absent, or ``null`` on assistant turns), which
all mean "assistant turns trained" under the package's loss policy.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

from .pools import TRAIN
from .world import World

TASKS = ("os", "db", "kg", "webshop", "alfworld", "mind2web")


@dataclass
class AIStep:
    think: str
    react: str
    name: str | None        # tflan action name (None: final answer turn)
    arg: str | None         # tflan argument turn (None: no argument turn)
    obs: str | None         # the following user turn (None: episode ends)
    final: str | None = None  # tflan text of a final step


@dataclass
class Episode:
    task: str
    core: str
    rules: str
    problem: str
    steps: list[AIStep]
    elicit_name: str
    elicit_arg: str


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


# ============================================================================================
# OS
# ============================================================================================

OS_CORE = "You are using a Linux system. Do my task or answer my question."
OS_RULES = ("Start each turn with Think: your thought. Then act with one of:\n"
            "Act: bash\n\n```bash\n# your code\n```\nAct: answer(your answer)\nAct: finish")
OS_USERS = ["alice", "bob", "carol", "dave", "erin"]
OS_DIRS = ["docs", "photos", "music", "work", "notes", "backup"]
OS_LINES = ["hello world", "buy milk and eggs", "meeting at ten", "the sky is blue",
            "call mom on sunday", "water the plants"]
OS_WORDS = ["error", "warning", "login", "update"]


def _os_bash(think: str, cmd: str, out: str) -> AIStep:
    return AIStep(think, f"Think: {think}\n\nAct: bash\n\n```bash\n{cmd}\n```", "bash",
                  f"```bash\n{cmd}\n```",
                  f"The output of the OS:\n\n{out}" if out else "The output of the OS is empty.")


def _os_answer(think: str, ans: str) -> AIStep:
    return AIStep(think, f"Think: {think}\n\nAct: answer({ans})", None, None, None,
                  final=f"{think} The answer is {ans}.")


def os_episode(w: World, rng: random.Random) -> Episode:
    u = rng.choice(OS_USERS)
    form = rng.randrange(4)
    if form == 0:
        d, n = rng.choice(OS_DIRS), rng.randrange(2, 15)
        problem = f"How many files are in the directory /home/{u}/{d}?"
        steps = [_os_bash(f"I need to count the files in /home/{u}/{d}.",
                          f"ls /home/{u}/{d} | wc -l", str(n)),
                 _os_answer(f"The output shows {n} files.", str(n))]
    elif form == 1:
        line = rng.choice(OS_LINES)
        problem = f"What is the first line of the file /home/{u}/todo.txt?"
        steps = [_os_bash("I need to print the first line of the file.",
                          f"head -n 1 /home/{u}/todo.txt", line),
                 _os_answer(f"The first line is {line}.", line)]
    elif form == 2:
        d = rng.choice(OS_DIRS)
        problem = f"Create a directory named {d} in /home/{u}."
        steps = [_os_bash(f"I need to create the directory /home/{u}/{d}.", f"mkdir /home/{u}/{d}", ""),
                 AIStep("The directory has been created.",
                        "Think: The directory has been created.\n\nAct: finish", None, None, None,
                        final="The directory has been created, so the task is finished.")]
    else:
        word, n = rng.choice(OS_WORDS), rng.randrange(0, 9)
        problem = f"How many lines of /home/{u}/log.txt contain the word {word}?"
        steps = [_os_bash(f"I need to count the lines with {word} in the log file.",
                          f"grep -c {word} /home/{u}/log.txt", str(n)),
                 _os_answer(f"The output shows {n} lines.", str(n))]
    return Episode("os", OS_CORE, OS_RULES, f"Now, my problem is:\n\n{problem}", steps,
                   "Which action will you take?", "What command will you run?")


# ============================================================================================
# DB
# ============================================================================================

DB_CORE = "Answer the question with a MySQL database."
DB_RULES = ("To operate:\nAction: Operation\n```sql\nSQL\n```\n"
            "To answer:\nAction: Answer\nFinal Answer: [\"ANSWER\"]")
DB_PRODUCTS = ["lamp", "chair", "desk", "kettle", "pillow", "mirror", "clock", "basket"]


def _db_op(think: str, sql: str, out: str) -> AIStep:
    return AIStep(think, f"{think}\nAction: Operation\n```sql\n{sql}\n```", "Operation",
                  f"```sql\n{sql}\n```", out)


def _db_answer(think: str, ans: str) -> AIStep:
    return AIStep(think, f"{think}\nAction: Answer\nFinal Answer: [{_dumps(ans)}]", None, None, None,
                  final=f"{think} The answer is {ans}.")


def db_episode(w: World, rng: random.Random) -> Episode:
    form = rng.randrange(3)
    if form < 2:
        names = rng.sample(TRAIN["person"], 6)
        cities = rng.sample(TRAIN["city"], 3)
        rows = [(n, rng.choice(cities), 1000 * rng.randrange(30, 90)) for n in names]
        head = "The name of this table is employees, and the headers of this table are name, city, salary."
        if form == 0:
            city = rng.choice(cities)
            n = sum(1 for r in rows if r[1] == city)
            q = f"How many employees work in {city}?"
            steps = [_db_op(f"I need to count the employees whose city is {city}.",
                            f"SELECT COUNT(*) FROM employees WHERE city = '{city}';", f"[({n},)]"),
                     _db_answer(f"There are {n} employees in {city}.", str(n))]
        else:
            top = max(rows, key=lambda r: r[2])[0]
            q = "Which employee has the highest salary?"
            steps = [_db_op("I need to sort the employees by salary and take the first one.",
                            "SELECT name FROM employees ORDER BY salary DESC LIMIT 1;", f"[('{top}',)]"),
                     _db_answer(f"The employee with the highest salary is {top}.", top)]
    else:
        prod = rng.choice(DB_PRODUCTS)
        price = rng.randrange(5, 200)
        head = "The name of this table is products, and the headers of this table are name, price, stock."
        q = f"What is the price of the {prod}?"
        steps = [_db_op(f"I need to find the price of the {prod}.",
                        f"SELECT price FROM products WHERE name = '{prod}';", f"[({price},)]"),
                 _db_answer(f"The price of the {prod} is {price}.", str(price))]
    return Episode("db", DB_CORE, DB_RULES, f"{q}\n{head}", steps,
                   "Which action will you take?", "What SQL will you run?")


# ============================================================================================
# KG
# ============================================================================================

KG_CORE = ("Answer the question with a knowledge base. Tools:\n"
           "1. get_relations(variable)\n2. get_neighbors(variable, relation)")
KG_RULES = "Use the format:\nThought: your thought\nAction: the action\nEnd with Final Answer: #id."


def _kg(think: str, fn: str, args: list[str], obs: str) -> AIStep:
    keys = ["variable", "relation"]
    return AIStep(think, f"Thought: {think}\nAction: {fn}({', '.join(args)})", fn,
                  _dumps(dict(zip(keys, args))), f"Observation: {obs}")


def kg_episode(w: World, rng: random.Random) -> Episode:
    if rng.random() < 0.5:
        p = rng.choice(TRAIN["person"])
        q, ent, rel = f"which films did {p} direct?", p, "film.director.film"
        rels, kind = "[film.director.film, people.person.nationality]", "film.film"
    else:
        f = rng.choice(TRAIN["film"])
        q, ent, rel = f"who directed {f}?", f, "film.film.directed_by"
        rels, kind = "[film.film.directed_by, film.film.genre]", "people.person"
    steps = [_kg(f"I need to find the relations of {ent}.", "get_relations", [ent], rels),
             _kg(f"{rel} gives the answer.", "get_neighbors", [ent, rel],
                 f"variable #0, which are instances of {kind}")]
    think = "#0 is the final answer."
    steps.append(AIStep(think, f"Thought: {think}\nFinal Answer: #0", None, None, None,
                        final=f"{think} Final Answer: #0"))
    return Episode("kg", KG_CORE, KG_RULES, f"Question: {q}\nEntities: [{ent}]", steps,
                   "Which function will you call?", "With which arguments?")


# ============================================================================================
# WebShop
# ============================================================================================

WS_CORE = "You are web shopping. Respond with one action: search[keywords] or click[value]."
WS_RULES = "Use the format:\nThought:\nI think ...\n\nAction:\nclick[something]"
WS_COLORS = ["red", "blue", "green", "black", "white", "yellow"]
WS_ITEMS = ["shirt", "mug", "lamp", "backpack", "scarf", "pillow"]


def _ws(think: str, act: str, arg: str, obs: str | None) -> AIStep:
    key = "keywords" if act == "search" else "button"
    return AIStep(think, f"Thought:\n{think}\n\nAction:\n{act}[{arg}]", act, _dumps({key: arg}), obs)


def webshop_episode(w: World, rng: random.Random) -> Episode:
    color, item = rng.choice(WS_COLORS), rng.choice(WS_ITEMS)
    limit = rng.randrange(20, 60)
    ids = [f"b0{x}" for x in rng.sample(range(10, 100), 2)]
    price = rng.randrange(5, limit)
    other_color = rng.choice([c for c in WS_COLORS if c != color])
    products = [(ids[0], f"{color} {item}", price), (ids[1], f"{other_color} {item}", price)]
    rng.shuffle(products)
    listing = " [SEP] ".join(f"{pid.upper()} [SEP] {name} [SEP] ${p}.0" for pid, name, p in products)
    kw = f"{color} {item}"
    steps = [
        _ws(f"I think I should search for {kw}.", "search", kw, f"[SEP] Back to Search [SEP] {listing}"),
        _ws(f"I think {ids[0].upper()} is a {kw} under {limit} dollars.", "click", ids[0],
            f"[SEP] Back to Search [SEP] {kw} [SEP] Price: ${price}.0 [SEP] Buy Now"),
        _ws("I think I should click on Buy Now.", "click", "Buy Now", None),
    ]
    problem = f"WebShop [SEP] Instruction: [SEP] i need a {kw} under {limit} dollars [SEP] Search"
    return Episode("webshop", WS_CORE, WS_RULES, problem, steps,
                   "What is your action?", "What is the value?")


# ============================================================================================
# ALFWorld
# ============================================================================================

AW_CORE = "Interact with a household to solve a task."
AW_RULES = "Use the format:\nThought: your thoughts.\nAction: your next action"
AW_OBJECTS = ["mug", "apple", "book", "pen", "plate", "key", "towel", "cup"]
AW_RECEPTACLES = ["countertop", "shelf", "drawer", "cabinet", "desk", "table", "sidetable"]


def _aw(think: str, act: str, obs: str | None) -> AIStep:
    return AIStep(think, f"Thought: {think}\nAction: {act}", act, None, obs)


def alfworld_episode(w: World, rng: random.Random) -> Episode:
    obj, other = rng.sample(AW_OBJECTS, 2)
    src, tgt, third = rng.sample(AW_RECEPTACLES, 3)
    seen = sorted([src, tgt, third])
    room = ", ".join(f"a {r} 1" for r in seen)
    problem = f"You are in a room. You see {room}.\nYour task is to: put a {obj} in/on the {tgt}."
    steps = [
        _aw(f"The {obj} may be on the {src}.", f"go to {src} 1",
            f"On the {src} 1, you see a {obj} 1 and a {other} 1."),
        _aw(f"I will take the {obj}.", f"take {obj} 1 from {src} 1", f"You pick up the {obj} 1."),
        _aw(f"Now I go to the {tgt}.", f"go to {tgt} 1", f"You arrive at the {tgt} 1."),
        _aw(f"I will put the {obj} on the {tgt}.", f"put {obj} 1 in/on {tgt} 1", None),
    ]
    return Episode("alfworld", AW_CORE, AW_RULES, problem, steps, "What is your next action?", "")


# ============================================================================================
# Mind2Web
# ============================================================================================

M2W_CORE = "You are navigating a website. Pick one choice and one operation: CLICK or TYPE."
M2W_RULES = "Use the format:\nThought: your thought\nAnswer: the letter.\nAction: CLICK or TYPE\nValue: the text"


def mind2web_episode(w: World, rng: random.Random) -> Episode:
    o, d = rng.sample(TRAIN["city"], 2)
    elements = {"from": "<input id=2 From />", "to": "<input id=3 To />",
                "search": "<button id=1> Search </button>"}
    stage = rng.randrange(3)
    prev = ["None", f"From -> TYPE: {o}", f"From -> TYPE: {o}\nTo -> TYPE: {d}"][stage]
    target, op, value, think = [
        ("from", "TYPE", o, f"I need to type {o} into the From field."),
        ("to", "TYPE", d, f"I need to type {d} into the To field."),
        ("search", "CLICK", None, "Both cities are filled in, so I need to click Search."),
    ][stage]
    order = list(elements)
    rng.shuffle(order)
    letters = "BCD"
    choices = "\n".join(["A. None of the above"] +
                        [f"{letters[i]}. {elements[k]}" for i, k in enumerate(order)])
    letter = letters[order.index(target)]
    html = "<html> " + " ".join(elements[k] for k in sorted(elements)) + " </html>"
    problem = (f"{html}\nTask: Search for flights from {o} to {d}.\n"
               f"Previous actions:\n{prev}\nWhat is the next action? Choices:\n{choices}")
    tail = f"\nValue: {value}" if value else ""
    react = f"Thought: {think}\nAnswer: {letter}.\nAction: {op}{tail}"
    step = AIStep(think, react, letter, f"{op}: {value}" if value else op, None)
    return Episode("mind2web", M2W_CORE, M2W_RULES, problem, [step],
                   "Which option will you choose?", "Which operation?")


BUILDERS = {"os": os_episode, "db": db_episode, "kg": kg_episode, "webshop": webshop_episode,
            "alfworld": alfworld_episode, "mind2web": mind2web_episode}


# ============================================================================================
# Rendering
# ============================================================================================

LOSS_STYLES = ("agentinstruct", "absent", "null")


def _t(role: str, content: str, style: str) -> dict:
    t = {"role": role, "content": content}
    if style == "agentinstruct":
        t["loss"] = True if role == "assistant" else None
    elif style == "null" and role == "assistant":
        t["loss"] = None
    return t


def render_react(ep: Episode, style: str) -> list[dict]:
    conv = [_t("user", f"{ep.core}\n\n{ep.rules}\n\n{ep.problem}", style)]
    for s in ep.steps:
        conv.append(_t("assistant", s.react, style))
        if s.obs is not None:
            conv.append(_t("user", s.obs, style))
    return conv


def render_tflan(ep: Episode, style: str) -> list[dict]:
    conv = [_t("user", f"{ep.core}\n\n{ep.problem}", style)]
    for s in ep.steps:
        if s.name is None:
            conv.append(_t("assistant", s.final or s.think, style))
            continue
        conv.append(_t("assistant", s.think, style))
        conv.append(_t("user", ep.elicit_name, style))
        conv.append(_t("assistant", s.name, style))
        if s.arg is not None:
            conv.append(_t("user", ep.elicit_arg, style))
            conv.append(_t("assistant", s.arg, style))
        if s.obs is not None:
            conv.append(_t("user", s.obs, style))
    return conv


def episodes(w: World, rng: random.Random, per_task: int) -> list[tuple[Episode, str]]:
    """``per_task`` episodes of each task, shuffled, each with its loss style."""
    eps = [(BUILDERS[task](w, rng), rng.choice(LOSS_STYLES)) for task in TASKS for _ in range(per_task)]
    rng.shuffle(eps)
    return eps
