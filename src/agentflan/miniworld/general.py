"""General sources: ShareGPT-mini, MMLU-mini, GSM8K-mini, HumanEval-mini and the pretraining corpus.

The general benchmarks are built so that a tiny model can learn them from the training data, and
their prompts are exactly the prompts the evaluation harness (:mod:`agentflan.evaluation.general`)
renders:

* MMLU-mini asks the capital / language / river of twelve fictional countries
  (:data:`pools.COUNTRIES`). ShareGPT-mini holds multiple-choice conversations whose user turn is
  the harness's MMLU prompt (its default ``mmlu_template``) and whose answer is the letter alone;
  chit-chat and the pretraining corpus state the facts. A multiple-choice item belongs to the
  training or the evaluation side by a hash of its question and choices (:func:`mc_side`), so the
  evaluation items are new (choice order / distractors) while the facts are the same. MMLU's
  ``dev`` split (:func:`mmlu_dev`, 5 training-side items per subject) holds the few-shot exemplars
  of lm-evaluation-harness's 5-shot MMLU (:mod:`agentflan.evaluation.harness`).
* GSM8K-mini: one-step problems ``a + b`` / ``a - b`` (``a >= b``) with single-digit operands, one
  template per operation (:data:`pools.GSM_TEMPLATES`). ShareGPT-mini renders them with the
  harness's ``gsm8k_template`` and answers ``"3 + 4 = 7. The answer is 7."``, covering every operand
  pair several times; evaluation problems use other names and objects.
* HumanEval-mini: three function families (:data:`pools.FUNC_FAMILIES`) with one docstring phrasing;
  ShareGPT-mini's user turn is the task prompt exactly as the loader renders it
  (``prompt_template`` ``"{prompt}"``) and the answer is the completion the scorer runs after the
  prompt: ``"def add_3(x):\n    return x + 3"`` (generation strips the reply, so a bare indented
  body would lose its indentation; a full re-definition survives). Evaluation tasks use constants
  held out per family (:data:`pools.FUNC_EVAL_K`).

The pretraining corpus (plain text, no chat template) is about 3,000 short documents dominated by
copying patterns: ReAct transcripts ``Question / Thought / Action / Action Input`` that copy an
entity from the question into the arguments, wiki two-hop transcripts in the HotpotQA step
format, facts, word problems, multiple-choice items and functions. The copying transcripts use
TRAIN entities or (:data:`PRETRAIN_SYNTH_SHARE`) generated copy-drill names; no EVAL value occurs.
Tool transcripts that open with a tool list are *always* followed by a tool call, also for queries
that need no tool (:data:`PRETRAIN_GENERAL_QUERY_SHARE`) -- the prior that makes a base model
over-use the ReAct format, as Llama-2 does on Agent-H. Documents are at most 120 tokens (of a
1,536-token BPE) except those that carry a harness system prompt (the Agent-H tool list with the
ReAct format instruction, about 130 tokens alone; the HotpotQA prompt, about 240) and the wiki
two-hop transcripts (about 170).
"""
from __future__ import annotations

import hashlib
import json
import random
import string

from .. import prompts
from ..evaluation.general import DEFAULTS as EVAL_DEFAULTS
from ..evaluation.general import LETTERS
from .pools import (CHITCHAT, COUNTRIES, FACT_ANSWERS, FACT_QUESTIONS, FUNC_EVAL_K, FUNC_FAMILIES,
                    FUNC_K, GSM_DIGITS, GSM_NAMES, GSM_TEMPLATES, GSM_THINGS, JOKES, MMLU_SUBJECT,
                    RRU_KEYS)
from .toolbench import general_exchange, instruct_json_answer
from .trajectories import SINGLE_KINDS, make_api_trajectory, make_wiki_trajectory, training_split
from .world import TOOLS, World

MMLU_TEMPLATE = EVAL_DEFAULTS["mmlu_template"]
GSM8K_TEMPLATE = EVAL_DEFAULTS["gsm8k_template"]
HUMANEVAL_TEMPLATE = EVAL_DEFAULTS["prompt_template"]

# ============================================================================================
# MMLU-mini: multiple-choice questions about the countries
# ============================================================================================


def mc_item(rng: random.Random, country: dict, fact: str) -> dict:
    """One MMLU record ``{question, subject, choices, answer}`` about ``fact`` of ``country``."""
    correct = country[fact]
    wrong = rng.sample([c[fact] for c in COUNTRIES if c[fact] != correct], 3)
    choices = wrong + [correct]
    rng.shuffle(choices)
    return {"question": FACT_QUESTIONS[fact].format(**country), "subject": MMLU_SUBJECT,
            "choices": choices, "answer": choices.index(correct)}


def mc_side(item: dict) -> str:
    """``train`` or ``eval``: a fixed hash of (question, choices) splits all possible items."""
    key = json.dumps([item["question"], item["choices"]], ensure_ascii=False)
    return "train" if hashlib.sha256(key.encode("utf-8")).digest()[0] % 2 == 0 else "eval"


def draw_mc(rng: random.Random, side: str, country: dict | None = None, fact: str | None = None
            ) -> dict:
    """A multiple-choice item of ``side`` (redrawn until :func:`mc_side` agrees)."""
    country = country or rng.choice(COUNTRIES)
    fact = fact or rng.choice(list(FACT_QUESTIONS))
    while True:
        item = mc_item(rng, country, fact)
        if mc_side(item) == side:
            return item


def mmlu_prompt(item: dict) -> str:
    """The user turn :func:`agentflan.evaluation.general.load_items` renders for an MMLU record."""
    choices = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item["choices"]))
    return MMLU_TEMPLATE.format(subject=item["subject"].replace("_", " "), question=item["question"],
                                choices=choices)


def mmlu(rng: random.Random, n: int) -> list[dict]:
    """``n`` evaluation items, cycling over all (country, fact) pairs in a shuffled order."""
    pairs = [(c, f) for c in COUNTRIES for f in FACT_QUESTIONS]
    rng.shuffle(pairs)
    return [draw_mc(rng, "eval", *pairs[i % len(pairs)]) for i in range(n)]


#: MMLU's dev split (the few-shot exemplars, 5 per subject), next to the test file
MMLU_DEV_PATH = "cais/mmlu/all/dev.jsonl"
MMLU_DEV_PER_SUBJECT = 5


def mmlu_dev(rng: random.Random, per_subject: int = MMLU_DEV_PER_SUBJECT,
             subjects: tuple[str, ...] = (MMLU_SUBJECT,)) -> list[dict]:
    """MMLU's ``dev`` split (the few-shot exemplars of lm-evaluation-harness's 5-shot MMLU):
    ``per_subject`` records per subject in the test file's schema, on distinct (country, fact)
    pairs. They are drawn from the *training* side of :func:`mc_side`, so none equals an
    evaluation item (as MMLU's dev and test splits are disjoint); the caller passes its own
    random stream (``miniworld/<seed>/mmlu_dev``), so the test items are unchanged."""
    out = []
    for subject in subjects:
        pairs = [(c, f) for c in COUNTRIES for f in FACT_QUESTIONS]
        rng.shuffle(pairs)
        for i in range(per_subject):
            out.append({**draw_mc(rng, "train", *pairs[i % len(pairs)]), "subject": subject})
    return out


# ============================================================================================
# GSM8K-mini: one-step single-digit word problems
# ============================================================================================

GSM_PAIRS = ([("+", a, b) for a in GSM_DIGITS for b in GSM_DIGITS]
             + [("-", a, b) for a in GSM_DIGITS for b in GSM_DIGITS if b <= a])


def word_problem(op: str, a: int, b: int, name: str, thing: str) -> dict:
    """``{question, gsm_answer (GSM8K style, ends '#### n'), chat_answer, answer: int}``."""
    s = a + b if op == "+" else a - b
    q = GSM_TEMPLATES[op].format(n=name, a=a, b=b, th=thing)
    state = "now" if op == "+" else "left"
    work = f"{name} has {a} {op} {b} = <<{a}{op}{b}={s}>>{s} {thing} {state}."
    verb = "gets" if op == "+" else "gives away"
    story = (f"{name} has {a} {thing} and {verb} {b}. {a} {op} {b} = {s}, so {name} has {s} {thing} "
             f"{state}.")
    return {"question": q, "gsm_answer": f"{work}\n#### {s}",
            "chat_answer": f"{a} {op} {b} = {s}. The answer is {s}.", "answer": s, "story": story}


def problem_stream(rng: random.Random, side: str):
    """Endless problems of ``side``: every operand pair once per shuffled cycle."""
    while True:
        pairs = list(GSM_PAIRS)
        rng.shuffle(pairs)
        for op, a, b in pairs:
            yield word_problem(op, a, b, rng.choice(GSM_NAMES[side]), rng.choice(GSM_THINGS[side]))


def gsm8k_prompt(question: str) -> str:
    return GSM8K_TEMPLATE.format(question=question)


def gsm8k(rng: random.Random, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        op, a, b = rng.choice(GSM_PAIRS)
        wp = word_problem(op, a, b, rng.choice(GSM_NAMES["eval"]), rng.choice(GSM_THINGS["eval"]))
        out.append({"question": wp["question"], "answer": wp["gsm_answer"]})
    return out


# ============================================================================================
# HumanEval-mini: three function families
# ============================================================================================

FUNC_TRAIN_K = {fam: [k for k in FUNC_K if k not in FUNC_EVAL_K[fam]] for fam in FUNC_FAMILIES}


def func_task(family: str, k: int, example: int) -> dict:
    """One task: name, doc, body, HumanEval prompt (with a ``>>>`` example), tests, completion."""
    name_f, doc_f, body_f = FUNC_FAMILIES[family]
    name, doc, body = name_f.format(k=k), doc_f.format(k=k), body_f.format(k=k)
    ns: dict = {}
    exec(compile(f"def {name}(x):\n    {body}\n", "<miniworld>", "exec"), ns)  # our own template
    fn = ns[name]
    inputs = [0, 1, 5, 12] if family != "is_multiple_of" else [k, 2 * k + 1, 3 * k, 7]
    prompt = (f"def {name}(x):\n    \"\"\"{doc}\n    >>> {name}({example})\n    {fn(example)!r}\n"
              f"    \"\"\"\n")
    return {"name": name, "doc": doc, "body": body, "prompt": prompt,
            "cases": [(str(x), repr(fn(x))) for x in inputs],
            "completion": f"def {name}(x):\n    {body}"}


def humaneval(rng: random.Random, n: int) -> list[dict]:
    """``n`` tasks (at most one per held-out (family, constant) pair, i.e. 30), families in turn."""
    per_family = {fam: rng.sample(FUNC_EVAL_K[fam], len(FUNC_EVAL_K[fam])) for fam in FUNC_FAMILIES}
    combos = [(fam, per_family[fam][i]) for i in range(max(map(len, per_family.values())))
              for fam in FUNC_FAMILIES if i < len(per_family[fam])]
    if n > len(combos):
        raise ValueError(f"humaneval-mini has at most {len(combos)} tasks, asked for {n}")
    out = []
    for fam, k in combos[:n]:
        f = func_task(fam, k, rng.randrange(1, 10))
        test = "\n\nMETADATA = {}\n\n\ndef check(candidate):\n" + "".join(
            f"    assert candidate({i}) == {e}\n" for i, e in f["cases"]) + "\n"
        out.append({"task_id": f"HumanEval/{len(out)}", "prompt": f["prompt"],
                    "canonical_solution": f"    {f['body']}\n", "test": test,
                    "entry_point": f["name"]})
    return out


def train_func(rng: random.Random) -> dict:
    fam = rng.choice(list(FUNC_FAMILIES))
    return func_task(fam, rng.choice(FUNC_TRAIN_K[fam]), rng.randrange(1, 10))


# ============================================================================================
# ShareGPT-mini
# ============================================================================================

SHAREGPT_MIX = (("mc", 150), ("math", 250), ("code", 150), ("chat", 150))   # per 700 records
SPLIT_SHARE = 0.03       # chit-chat conversations split into <id>_0 / <id>_1 (a chopped chat)
FOREIGN_SHARE = 0.06     # chit-chat conversations in another language (a few)


def _fact_chat(rng) -> list[tuple[str, str]]:
    c = rng.choice(COUNTRIES)
    facts = list(FACT_QUESTIONS)
    rng.shuffle(facts)
    return [(FACT_QUESTIONS[f].format(**c), FACT_ANSWERS[f].format(**c))
            for f in facts[:rng.randint(1, 3)]]


def _small_talk(rng) -> list[tuple[str, str]]:
    picks = rng.sample(CHITCHAT, rng.randint(1, 2))
    return [(q, a if a is not None else rng.choice(JOKES)) for q, a in picks]


def _foreign(rng) -> list[tuple[str, str]]:
    c = rng.choice(COUNTRIES)
    return rng.choice([
        [(f"{c['name']}的首都是哪里？", f"{c['name']}的首都是{c['capital']}。")],
        [(f"Какая столица страны {c['name']}?", f"Столица страны {c['name']} — {c['capital']}.")],
    ])


def _chat(rng) -> list[tuple[str, str]]:
    r = rng.random()
    if r < FOREIGN_SHARE:
        return _foreign(rng)
    return _fact_chat(rng) if r < 0.55 else _small_talk(rng)


def _sg_id(rng) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(7))


def _conv(pairs) -> list[dict]:
    out = []
    for q, a in pairs:
        out += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return out


def sharegpt_counts(n: int) -> dict[str, int]:
    total = sum(c for _, c in SHAREGPT_MIX)
    counts = {k: round(n * c / total) for k, c in SHAREGPT_MIX[:-1]}
    counts[SHAREGPT_MIX[-1][0]] = n - sum(counts.values())
    return counts


def sharegpt(rng: random.Random, n: int) -> list[dict]:
    """``n`` ShareGPT records in the mix :data:`SHAREGPT_MIX`. The first chit-chat unit (and a few
    more) is a long chat split into ``<id>_0``/``<id>_1``, the second part starting with a ``gpt``
    turn (a chopped chat)."""
    counts = sharegpt_counts(n)
    units: list[list[dict]] = []
    mc = [draw_mc(rng, "train", c, f) for c in COUNTRIES for f in FACT_QUESTIONS]
    while len(mc) < counts["mc"]:
        mc.append(draw_mc(rng, "train"))
    for item in mc[:counts["mc"]]:
        units.append([{"id": _sg_id(rng), "conversations": _conv(
            [(mmlu_prompt(item), LETTERS[item["answer"]])])}])
    problems = problem_stream(rng, "train")
    for _ in range(counts["math"]):
        wp = next(problems)
        units.append([{"id": _sg_id(rng), "conversations": _conv(
            [(gsm8k_prompt(wp["question"]), wp["chat_answer"])])}])
    for _ in range(counts["code"]):
        f = train_func(rng)
        units.append([{"id": _sg_id(rng), "conversations": _conv(
            [(HUMANEVAL_TEMPLATE.format(prompt=f["prompt"]), f["completion"])])}])
    left = counts["chat"]
    first = True
    while left > 0:
        rid = _sg_id(rng)
        if left >= 2 and (first or rng.random() < SPLIT_SHARE):
            conv = _conv(_fact_chat(rng) + _small_talk(rng))
            while len(conv) < 4:
                conv += _conv(_small_talk(rng))
            cut = 2 * rng.randint(1, len(conv) // 2 - 1) + 1
            units.append([{"id": f"{rid}_0", "conversations": conv[:cut]},
                          {"id": f"{rid}_1", "conversations": conv[cut:]}])
            left -= 2
            first = False
            continue
        units.append([{"id": rid, "conversations": _conv(_chat(rng))}])
        left -= 1
    rng.shuffle(units)
    return [r for u in units for r in u]


# ============================================================================================
# Pretraining corpus
# ============================================================================================

# No document uses an evaluation answer format (the MMLU letter prompt, "The answer is N."):
# answering in those formats is what fine-tuning teaches; the base model only gets the knowledge
# (country facts, sums and differences, functions).
PRETRAIN_MIX = (("copy_react", 0.20), ("tool_react", 0.17), ("json_call", 0.05),
                ("wiki_react", 0.06), ("wiki_page", 0.04), ("fact", 0.12), ("math", 0.15),
                ("code", 0.10), ("chat", 0.11))
PRETRAIN_GENERAL_QUERY_SHARE = 0.35   # tool transcripts whose query needs no tool (still a call)
# Copying transcripts (tool calls, wiki hops) on generated names (pools.SYNTH) instead of TRAIN
# entities: many distinct values, so that the model learns to copy rather than to memorise.
PRETRAIN_SYNTH_SHARE = 0.7
# Tool transcripts whose tool list carries the ReAct format instruction (the Agent-H system
# prompt, ``render_tool_system(tools, react=True)``). That prompt alone is about 130 tokens, so
# these documents (about 160 tokens) and the wiki transcripts are longer than 120 tokens.
PRETRAIN_REACT_SYSTEM_SHARE = 0.5
# Wiki transcripts that open with the HotpotQA harness's system prompt (about 240 tokens alone).
PRETRAIN_WIKI_SYSTEM_SHARE = 0.2


def _react_lines(query: str, steps, final_thought: str, answer: str) -> list[str]:
    parts = [f"Question: {query}"]
    for s in steps:
        parts.append(prompts.render_react_step(s.thought, s.api, s.args))
        parts.append(f"{prompts.OBSERVATION} {s.payload}")
    parts.append(prompts.render_react_step(final_thought, prompts.FINISH_ACTION, {"answer": answer}))
    return parts


def _copy_react(w: World, rng: random.Random) -> str:
    """``Question: ...`` + ReAct steps copying the question's entity into the arguments (and the
    answer). Calls with long results or two entities end with the call, to stay short."""
    kind = rng.choice(list(SINGLE_KINDS))
    t = make_api_trajectory(w, rng, training_split(rng, PRETRAIN_SYNTH_SHARE), kind)
    lines = _react_lines(t.query, t.steps, t.final_thought, t.answer)
    return "\n".join(lines[:2] if kind in ("flights", "book_table", "movie") else lines)


def _tool_react(w: World, rng: random.Random) -> str:
    """A tool list ALWAYS followed by a ReAct tool call (also for queries that need no tool).

    The document ends with the call (``Action Input``), which keeps it short; without the format
    instruction only one-argument tools are used (two-argument ones would not fit in 120 tokens)."""
    react = rng.random() < PRETRAIN_REACT_SYSTEM_SHARE
    kinds = [k for k in SINGLE_KINDS if react or k not in ("flights", "book_table")]
    t = make_api_trajectory(w, rng, training_split(rng, PRETRAIN_SYNTH_SHARE), rng.choice(kinds))
    query = t.query
    if rng.random() < PRETRAIN_GENERAL_QUERY_SHARE:
        query = general_exchange(rng)[0]
    s = t.steps[0]
    return "\n".join([prompts.render_tool_system([TOOLS[s.api]], react=react), f"Question: {query}",
                      prompts.render_react_step(s.thought, s.api, s.args)])


def _json_call(w: World, rng: random.Random) -> str:
    t = make_api_trajectory(w, rng, training_split(rng, PRETRAIN_SYNTH_SHARE), rng.choice(list(SINGLE_KINDS)))
    return f"Question: {t.query}\nAnswer: {instruct_json_answer(RRU_KEYS, t.steps[0])}"


def _wiki_react(w: World, rng: random.Random) -> str:
    """A two-hop wiki transcript in the HotpotQA harness's step format; a share
    (:data:`PRETRAIN_WIKI_SYSTEM_SHARE`) opens with the harness's system prompt."""
    t = make_wiki_trajectory(w, rng, training_split(rng, PRETRAIN_SYNTH_SHARE))
    head = [prompts.render_tool_system(t.tools, react=True)] if rng.random() < PRETRAIN_WIKI_SYSTEM_SHARE else []
    return "\n".join(head + _react_lines(t.query, t.steps, t.final_thought, t.answer))


def _fact_text(rng) -> str:
    c = rng.choice(COUNTRIES)
    return (f"{c['name']} is a country. Its capital is {c['capital']}. People in {c['name']} speak "
            f"{c['language']}. The {c['river']} river flows through {c['name']}.")


def _math_text(rng, problems) -> str:
    """A word problem told as a story with its sum or difference (no question, no answer format),
    or a few bare equations."""
    wp = next(problems)
    if rng.random() < 0.5:
        return wp["story"]
    eqs = []
    for _ in range(4):
        op, a, b = rng.choice(GSM_PAIRS)
        eqs.append(f"{a} {op} {b} = {a + b if op == '+' else a - b}.")
    return " ".join(eqs)


def _code_text(rng) -> str:
    f = train_func(rng)
    return f"{f['prompt']}    {f['body']}\n"


def _chat_text(rng) -> str:
    q, a = general_exchange(rng)
    return f"Question: {q}\nAnswer: {a}"


def pretrain(w: World, rng: random.Random, n: int) -> list[dict]:
    titles = w.wiki_titles("train")
    names, weights = zip(*PRETRAIN_MIX)
    problems = problem_stream(rng, "train")
    out = []
    for _ in range(n):
        kind = rng.choices(names, weights=weights)[0]
        if kind == "copy_react":
            text = _copy_react(w, rng)
        elif kind == "tool_react":
            text = _tool_react(w, rng)
        elif kind == "json_call":
            text = _json_call(w, rng)
        elif kind == "wiki_react":
            text = _wiki_react(w, rng)
        elif kind == "wiki_page":
            text = w.wiki_page(rng.choice(titles))
        elif kind == "fact":
            text = _fact_text(rng)
        elif kind == "math":
            text = _math_text(rng, problems)
        elif kind == "code":
            text = _code_text(rng)
        else:
            text = _chat_text(rng)
        out.append({"text": text})
    return out
