"""General-capability sources: ShareGPT-mini, MMLU-mini, GSM8K-mini, HumanEval-mini, and the
pretraining corpus of the miniature's "base model".

They share three small knowledge families, so the evaluation sets test what the training data
teaches: facts about the fictional countries of :data:`pools.COUNTRIES`, one-/two-step arithmetic
word problems (:func:`word_problem`), and tiny Python functions (:data:`FUNC_FAMILIES`).

The pretraining corpus (plain text, no chat template) also holds ReAct tool transcripts in which
a tool list is *always* followed by tool calls, even for queries that need no tool -- the prior
that makes a base model over-use the ReAct format, as Llama-2 does on Agent-H.
"""
from __future__ import annotations

import random
import string

from .. import prompts
from .pools import COUNTRIES, JOKES, NAMES, THINGS, TRANSLATIONS
from .toolbench import general_exchange
from .trajectories import SINGLE_KINDS, make_trajectory, make_api_trajectory
from .world import World

# ============================================================================================
# Shared families
# ============================================================================================


def word_problem(rng: random.Random) -> dict:
    """``{question, gsm_answer (GSM8K style, ends '#### n'), chat_answer, answer: int}``."""
    n, th = rng.choice(NAMES), rng.choice(THINGS)
    form = rng.randrange(5)
    if form == 0:
        a, b = rng.randrange(2, 50), rng.randrange(2, 50)
        s = a + b
        q = f"{n} has {a} {th}. {n} buys {b} more {th}. How many {th} does {n} have now?"
        work = [f"{n} has {a} + {b} = <<{a}+{b}={s}>>{s} {th} now."]
        chat = f"{n} has {a} + {b} = {s} {th} now."
    elif form == 1:
        a = rng.randrange(10, 90)
        b = rng.randrange(1, a)
        s = a - b
        q = f"{n} has {a} {th} and gives {b} of them to a friend. How many {th} does {n} have left?"
        work = [f"{n} has {a} - {b} = <<{a}-{b}={s}>>{s} {th} left."]
        chat = f"{n} has {a} - {b} = {s} {th} left."
    elif form == 2:
        a, b = rng.randrange(2, 13), rng.randrange(2, 10)
        s = a * b
        q = f"A box holds {a} {th}. How many {th} are in {b} boxes?"
        work = [f"There are {a} * {b} = <<{a}*{b}={s}>>{s} {th} in {b} boxes."]
        chat = f"There are {a} * {b} = {s} {th} in {b} boxes."
    elif form == 3:
        s, b = rng.randrange(2, 13), rng.randrange(2, 8)
        total = s * b
        q = f"{n} shares {total} {th} equally among {b} friends. How many {th} does each friend get?"
        work = [f"Each friend gets {total} / {b} = <<{total}/{b}={s}>>{s} {th}."]
        chat = f"Each friend gets {total} / {b} = {s} {th}."
    else:
        a, b = rng.randrange(2, 10), rng.randrange(2, 10)
        p = a * b
        c = rng.randrange(1, p)
        s = p - c
        q = (f"{n} buys {a} packs of {th} with {b} {th} in each pack. Then {n} gives away {c} {th}. "
             f"How many {th} does {n} have now?")
        work = [f"{n} buys {a} * {b} = <<{a}*{b}={p}>>{p} {th}.",
                f"Then {n} has {p} - {c} = <<{p}-{c}={s}>>{s} {th} left."]
        chat = f"{n} buys {a} * {b} = {p} {th}. Then {n} has {p} - {c} = {s} {th} left."
    return {"question": q, "gsm_answer": "\n".join(work) + f"\n#### {s}",
            "chat_answer": f"{chat} The answer is {s}.", "answer": s}


# (name format, parameters, docstring, body, test inputs); {k} is the family's constant
FUNC_FAMILIES = [
    ("add_{k}", "x", "Return x plus {k}.", "return x + {k}", ["2", "0", "10"]),
    ("times_{k}", "x", "Return x times {k}.", "return x * {k}", ["2", "0", "5"]),
    ("minus_{k}", "x", "Return x minus {k}.", "return x - {k}", ["20", "{k}", "3"]),
    ("is_multiple_of_{k}", "x", "Return True if x is divisible by {k}, else False.",
     "return x % {k} == 0", ["{k}", "7", "30"]),
    ("repeat_{k}", "s", "Return the string s repeated {k} times.", "return s * {k}",
     ["'ab'", "'x'", "''"]),
    ("first_{k}", "xs", "Return the first {k} items of the list xs.", "return xs[:{k}]",
     ["[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "[4]", "[]"]),
    ("square_plus_{k}", "x", "Return x squared plus {k}.", "return x * x + {k}", ["2", "0", "3"]),
    ("sum_list", "xs", "Return the sum of the numbers in the list xs.", "return sum(xs)",
     ["[1, 2, 3]", "[]", "[10, -4]"]),
    ("max_of_two", "a, b", "Return the larger of a and b.", "return a if a > b else b",
     ["3, 5", "9, 2", "4, 4"]),
]


def func_task(family: int, k: int) -> dict:
    """One tiny function: name, signature, doc, body, and test cases ``[(input, expected)]``."""
    name_f, params, doc_f, body_f, inputs = FUNC_FAMILIES[family]
    name, doc, body = name_f.format(k=k), doc_f.format(k=k), body_f.format(k=k)
    fn_src = f"def {name}({params}):\n    {body}\n"
    ns: dict = {}
    exec(compile(fn_src, "<miniworld>", "exec"), ns)  # our own template code, for expected values
    cases = []
    for inp in inputs:
        inp = inp.format(k=k)
        cases.append((inp, repr(eval(f"{name}({inp})", ns))))  # noqa: S307 - fixed templates
    return {"name": name, "params": params, "doc": doc, "body": body, "cases": cases,
            "source": fn_src}


def random_func(rng: random.Random) -> dict:
    return func_task(rng.randrange(len(FUNC_FAMILIES)), rng.randrange(2, 10))


# ============================================================================================
# ShareGPT-mini
# ============================================================================================

def _sg_fact(rng):
    c = rng.choice(COUNTRIES)
    turns = [(f"What is the capital of {c['name']}?", f"The capital of {c['name']} is {c['capital']}."),
             ("And what language do people speak there?", f"People in {c['name']} speak {c['language']}."),
             ("Is there a big river?", f"Yes, the {c['river']} river flows through {c['name']}.")]
    return turns[:rng.randint(1, 3)]


def _sg_math(rng):
    wp = word_problem(rng)
    return [(wp["question"], wp["chat_answer"])]


def _sg_code(rng):
    f = random_func(rng)
    inp, out = f["cases"][0]
    ask = rng.choice(["Write a Python function {n}({p}). {d}", "Can you write a Python function "
                      "called {n}? {d}"]).format(n=f["name"], p=f["params"], d=f["doc"])
    turns = [(ask, f"Here is the function:\n```python\n{f['source']}```")]
    if rng.random() < 0.5:
        turns.append((f"What does {f['name']}({inp}) return?", f"{f['name']}({inp}) returns {out}."))
    return turns


def _sg_chat(rng):
    form = rng.randrange(4)
    if form == 0:
        return [("Hi!", "Hello! How can I help you today?"),
                ("Can you tell me a joke?", rng.choice(JOKES))]
    if form == 1:
        return [("What is your name?", "I am a helpful assistant. I do not have a name."),
                ("Thank you!", "You're welcome!")]
    if form == 2:
        text = rng.choice(list(TRANSLATIONS))
        lang = rng.choice(list(TRANSLATIONS[text]))
        return [(f"How do you say '{text}' in {lang}?",
                 f"In {lang}, '{text}' is '{TRANSLATIONS[text][lang]}'.")]
    x, y = rng.randrange(2, 30), rng.randrange(2, 30)
    return [(f"What is {x} times {y}?", f"{x} times {y} is {x * y}.")]


def _sg_foreign(rng):
    c = rng.choice(COUNTRIES)
    return rng.choice([
        [(f"{c['name']}的首都是哪里？", f"{c['name']}的首都是{c['capital']}。")],
        [(f"Какая столица страны {c['name']}?",
          f"Столица страны {c['name']} — {c['capital']}.")],
        [(f"¿Cuál es la capital de {c['name']}?", f"La capital de {c['name']} es {c['capital']}.")],
    ])


SG_FAMILIES = [(_sg_fact, 0.3), (_sg_math, 0.25), (_sg_code, 0.2), (_sg_chat, 0.2), (_sg_foreign, 0.05)]


def _sg_id(rng) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(7))


def _conv(pairs) -> list[dict]:
    out = []
    for q, a in pairs:
        out += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return out


def sharegpt(rng: random.Random, n: int) -> list[dict]:
    """``n`` ShareGPT records. Some long chats are split into ``<id>_0``/``<id>_1``, the second
    part starting with a ``gpt`` turn (a chopped chat); record 3 is always such a split."""
    fams, weights = zip(*SG_FAMILIES)
    out: list[dict] = []
    while len(out) < n:
        rid = _sg_id(rng)
        split = len(out) == 3 or rng.random() < 0.05
        if split and n - len(out) >= 2:
            conv = _conv(_sg_fact(rng) + _sg_math(rng) + _sg_chat(rng))
            cut = 2 * rng.randint(1, len(conv) // 2 - 1) + 1 if len(conv) >= 4 else 1
            out.append({"id": f"{rid}_0", "conversations": conv[:cut]})
            out.append({"id": f"{rid}_1", "conversations": conv[cut:]})
            continue
        fam = rng.choices(fams, weights=weights)[0]
        out.append({"id": rid, "conversations": _conv(fam(rng))})
    return out[:n]


# ============================================================================================
# MMLU-mini, GSM8K-mini, HumanEval-mini
# ============================================================================================

def _choices(rng, correct, wrong_pool) -> tuple[list, int]:
    wrong = rng.sample([x for x in wrong_pool if x != correct], 3)
    choices = wrong + [correct]
    rng.shuffle(choices)
    return [str(c) for c in choices], choices.index(correct)


def mmlu(rng: random.Random, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        form = rng.randrange(5)
        c = rng.choice(COUNTRIES)
        if form == 0:
            q, subj = f"What is the capital of {c['name']}?", "high_school_geography"
            ch, ans = _choices(rng, c["capital"], [x["capital"] for x in COUNTRIES])
        elif form == 1:
            q, subj = f"Which language is spoken in {c['name']}?", "high_school_geography"
            ch, ans = _choices(rng, c["language"], [x["language"] for x in COUNTRIES])
        elif form == 2:
            q, subj = f"Which country has the capital {c['capital']}?", "high_school_geography"
            ch, ans = _choices(rng, c["name"], [x["name"] for x in COUNTRIES])
        elif form == 3:
            x, y = rng.randrange(2, 30), rng.randrange(2, 30)
            op = rng.choice(["+", "*"])
            val = x + y if op == "+" else x * y
            q, subj = f"What is {x} {op} {y}?", "elementary_mathematics"
            ch, ans = _choices(rng, val, [val + d for d in (-10, -2, -1, 1, 2, 10)])
        else:
            fam, k = rng.randrange(len(FUNC_FAMILIES)), rng.randrange(2, 10)
            f = func_task(fam, k)
            inp, out_ = f["cases"][0]
            q = f"In Python, what does {f['name']}({inp}) return if the function body is `{f['body']}`?"
            subj = "high_school_computer_science"
            # distractors: the same family with other constants, other inputs, generic values
            wrong = [func_task(fam, k2)["cases"][0][1] for k2 in range(2, 10) if k2 != k]
            wrong += [e for _, e in f["cases"][1:]] + ["None", "0", "-1", "''"]
            wrong = [x for x in dict.fromkeys(wrong) if x != out_]
            ch, ans = _choices(rng, out_, wrong)
        out.append({"question": q, "subject": subj, "choices": ch, "answer": ans})
    return out


def gsm8k(rng: random.Random, n: int) -> list[dict]:
    return [{"question": wp["question"], "answer": wp["gsm_answer"]}
            for wp in (word_problem(rng) for _ in range(n))]


def humaneval(rng: random.Random, n: int) -> list[dict]:
    combos = [(f, k) for f in range(len(FUNC_FAMILIES)) for k in range(2, 10)]
    seen, out = set(), []
    rng.shuffle(combos)
    for fam, k in combos:
        f = func_task(fam, k)
        if f["name"] in seen:
            continue
        seen.add(f["name"])
        inp, exp = f["cases"][0]
        prompt = (f"def {f['name']}({f['params']}):\n    \"\"\"{f['doc']}\n"
                  f"    >>> {f['name']}({inp})\n    {exp}\n    \"\"\"\n")
        test = "\n\nMETADATA = {}\n\n\ndef check(candidate):\n" + "".join(
            f"    assert candidate({i}) == {e}\n" for i, e in f["cases"]) + "\n"
        out.append({"task_id": f"HumanEval/{len(out)}", "prompt": prompt,
                    "canonical_solution": f"    {f['body']}\n", "test": test,
                    "entry_point": f["name"]})
        if len(out) == n:
            break
    return out


# ============================================================================================
# Pretraining corpus
# ============================================================================================

def _react_transcript(w: World, rng: random.Random) -> str:
    """A tool list ALWAYS followed by tool calls (also for queries that need no tool)."""
    if rng.random() < 0.35:
        query, answer = general_exchange(rng)
        t = make_api_trajectory(w, rng, "train", rng.choice(list(SINGLE_KINDS)))
        steps, final_thought = t.steps, "I now have the answer."
    else:
        t = make_trajectory(w, rng, "train")
        query, answer, steps, final_thought = t.query, t.answer, t.steps, t.final_thought
    parts = [prompts.render_tool_system(t.tools, react=True), f"Question: {query}"]
    for s in steps:
        parts.append(prompts.render_react_step(s.thought, s.api, s.args))
        parts.append(f"{prompts.OBSERVATION} {s.payload}")
    parts.append(prompts.render_react_step(final_thought, prompts.FINISH_ACTION, {"answer": answer}))
    return "\n".join(parts)


def _fact_text(rng) -> str:
    c = rng.choice(COUNTRIES)
    return (f"{c['name']} is a country. Its capital is {c['capital']}. People in {c['name']} speak "
            f"{c['language']}. The {c['river']} river flows through {c['name']}.")


def _qa_text(rng) -> str:
    if rng.random() < 0.4:
        item = mmlu(rng, 1)[0]
        opts = "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(item["choices"]))
        return f"Question: {item['question']}\n{opts}\nAnswer: {'ABCD'[item['answer']]}"
    q, a = general_exchange(rng) if rng.random() < 0.5 else _sg_fact(rng)[0]
    return f"Question: {q}\nAnswer: {a}"


def _math_text(rng) -> str:
    wp = word_problem(rng)
    return f"Question: {wp['question']}\nAnswer: {wp['gsm_answer']}" if rng.random() < 0.5 \
        else f"{wp['question']} {wp['chat_answer']}"


def _code_text(rng) -> str:
    f = random_func(rng)
    inp, out = f["cases"][0]
    return (f"def {f['name']}({f['params']}):\n    \"\"\"{f['doc']}\"\"\"\n    {f['body']}\n\n\n"
            f"print({f['name']}({inp}))  # {out}\n")


def pretrain(w: World, rng: random.Random, n: int) -> list[dict]:
    titles = w.wiki_titles("train")
    kinds = [("react", 0.3), ("fact", 0.15), ("qa", 0.15), ("math", 0.15), ("code", 0.1), ("wiki", 0.15)]
    names, weights = zip(*kinds)
    out = []
    for _ in range(n):
        kind = rng.choices(names, weights=weights)[0]
        if kind == "react":
            text = _react_transcript(w, rng)
        elif kind == "fact":
            text = _fact_text(rng)
        elif kind == "qa":
            text = _qa_text(rng)
        elif kind == "math":
            text = _math_text(rng)
        elif kind == "code":
            text = _code_text(rng)
        else:
            text = w.wiki_page(rng.choice(titles))
        out.append({"text": text})
    return out

