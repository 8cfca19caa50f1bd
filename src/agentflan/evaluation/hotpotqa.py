"""HotpotQA: loader, multi-step ReAct harness with an offline document store, and scorer.

Set-up follows AgentTuning's held-out HotpotQA evaluation (../shared/paper/data_formats.md §6),
adapted to the Agent-FLAN chat format:

* **Documents (offline substitute for live Wikipedia).** Each item carries a document store built
  from its own HotpotQA ``context`` (title → sentences; in the distractor setting the two gold
  paragraphs plus eight distractors, i.e. the opening paragraphs of the Wikipedia articles).
  ``Search`` only sees these ten pages; upstream searched all of (2023) Wikipedia, so absolute
  rewards are not comparable with the paper.
* **Prompt.** system = ``prompts.render_tool_system([Search(entity), Lookup(keyword)],
  react=True)`` (ReAct instruction; the final answer is the ``FinalAnswer`` action), user = the
  question. No few-shot exemplars (upstream used two, one of which leaks a medium question).
* **Loop.** One ``generate`` call per step for all unfinished episodes. The assistant text is
  cut before a model-written ``Observation:`` (option ``truncate_at_observation``), parsed for
  ``Action: X`` + ``Action Input: {json}`` (also ``Search[x]`` / ``Finish[x]`` styles; action
  names case-insensitive, ``Finish``/``FinalAnswer`` both finish), executed, and the observation
  appended as a user turn ``Observation: ...``.
  ``Search[x]``: exact, then case-insensitive (white-space-normalised) title match → the page's
  paragraph; else ``Could not find [x]. Similar: [...]`` (up to ``similar_k`` titles of the store
  sharing a word with x, best first). ``Lookup[k]``: the next sentence of the last found page that
  contains k (case-insensitive) as ``(Result i/N) <sentence>``; ``No Results`` / ``No More
  Results``; the upstream message when no page was found.
* **Stop** at a finish action, after ``max_steps`` (default 4) steps (answer ""), or at an
  unparsable action (answer ""; with ``stop_on_invalid: false`` an "Invalid Action" observation is
  returned instead and the episode continues). The prompt-length stop of upstream (1,700 tokens) is
  left to the generate function.
* **Every** episode is kept in the output (upstream's ``log_agent`` reopened its log with mode
  ``'w'`` per question, keeping one row per level; here rows are returned, never overwritten).

**Protocols** (option ``protocol``): ``distractor`` (the default above; the miniature's) and
``agenttuning`` (:data:`AGENTTUNING`, below): AgentTuning's held-out HotpotQA evaluation as its code
runs it, over a local Wikipedia (:mod:`.wikistore`) or, as a labelled variant, the closed
distractor store (``store: distractor``).

Metric (AgentTuning): reward = token F1 of the normalised answer ×100 (yes/no/noanswer rule);
``em`` also reported. ``reward``/``em`` are means over all questions; ``reward_<level>`` and
``reward_level_mean`` (mean of the level means, AgentTuning's "average" when levels have equal
size) are reported too.
"""
from __future__ import annotations

import copy
import glob
import random
import re
from pathlib import Path
from typing import Any, Callable

from .. import prompts
from ..io import DataError
from .text import iter_rows, bow_cosine, f1_score, exact_match, first_json_object, mean, prediction_text, \
    try_parse_jsonish

REPO = "hotpotqa/hotpot_qa"
GenerateFn = Callable[[list[list[dict]]], list[str]]

SEARCH_TOOL = {
    "name": "Search",
    "description": "Search for an entity on Wikipedia. Returns the first paragraph of its page if "
                   "it exists, otherwise some similar entities to search.",
    "parameters": {"type": "object",
                   "properties": {"entity": {"type": "string", "description": "the entity to search"}},
                   "required": ["entity"]},
}
LOOKUP_TOOL = {
    "name": "Lookup",
    "description": "Return the next sentence containing the keyword in the page found by the last "
                   "successful Search.",
    "parameters": {"type": "object",
                   "properties": {"keyword": {"type": "string", "description": "the keyword to look up"}},
                   "required": ["keyword"]},
}
TOOLS = [SEARCH_TOOL, LOOKUP_TOOL]

LOAD_DEFAULTS = {
    "protocol": "distractor",   # distractor | agenttuning
    "questions": "agenttuning300",  # agenttuning: the shipped list of 300 ids, or "draw" (per_level seeded)
    "config": "distractor",
    "split": "validation",
    "files": None,          # explicit file list/globs relative to the repo dir (overrides config/split)
    "levels": None,         # keep only these levels
    "per_level": None,      # int: at most N questions per level (seeded)
    "max_samples": None,    # at most N questions overall (seeded, after per_level)
    "seed": 0,
}
RUN_DEFAULTS = {
    "max_steps": 4,
    "similar_k": 5,
    "stop_on_invalid": True,
    "truncate_at_observation": True,
}
PROTOCOLS = ("distractor", "agenttuning")

# AgentTuning's held-out HotpotQA evaluation, THUDM/AgentTuning@e33a45d eval_heldout/hotpotQA
# (adapted by its authors from salesforce/BOLAA): eval_hotpot.py passes --max_context_len (default
# 1700) as the agent's context_len; src/agent_arch.py BaseAgent: max_steps=10, is_halted() when
# step_n > max_steps or the whole prompt exceeds context_len tokens of tiktoken cl100k_base
# (src/llms.py token_enc), answer "" then; reward = f1_score(answer, key)[0], EM logged
# (is_correct); actions parsed by ^(\w+)\[(.+)\]$ (then the same after stripping spaces/periods),
# names case-sensitive; anything else is answered "Invalid Action. ..." and the episode goes on.
AGENTTUNING = {
    "max_steps": 10,
    "context_cap_tokens": 1700,
    "store": "local",          # local (wikistore, wiki_db) | distractor (each item's own ten pages)
    "similar_k": 10,           # LangChain prints wikipedia.search(x): 10 results by default
    "lookup_unit": "sentence",  # sentence | paragraph (wikistore docstring)
    "wiki_db": None,           # path of the built store (the workflow sets it)
}

# The ReAct instruction and the two few-shot examples of AgentTuning's React_HotPotQA_run_Agent,
# verbatim from THUDM/AgentTuning@e33a45d eval_heldout/hotpotQA/src/pre_prompt.py
# (REACT_INSTRUCTION) and src/fewshots.py (REACT_EXAMPLE), Copyright (c) 2023 salesforce.com, inc.,
# Apache-2.0 (the examples are ReAct's, ysymyth/ReAct prompts). Kept byte for byte, including the
# mis-encoded en dash "\u00e2\u0080\u0093" of the Urysohn example and trailing spaces.
AGENTTUNING_INSTRUCTION = (
    "This task involves solving a question-answering exercise through a series of interleaved "
    "Thought, Action, and Observation steps. Any thought before the action is allowed, and action "
    "can be one of the following three types:\n"
    "(1) Search[entity]: This action involves searching for a specific entity on Wikipedia and "
    "returning the first paragraph of the entity's page if it exists. If the entity does not have a "
    "Wikipedia page, the assistant should suggest similar entities to search for.\n"
    "(2) Lookup[keyword]: This action involves searching for the next sentence containing the "
    "specified keyword in the most recent passage successfully found by the Search action.\n"
    "(3) Finish[answer]: This action concludes the task by providing the answer to the question.\n"
    "You can take as many steps as necessary to answer the question. The key is to ensure that each "
    "step logically follows the previous one and contributes to the final answer. The task aims to "
    "emulate a reasoning process that yields accurate and comprehensive answers.\n"
    "Here are some examples:\n{examples}\n(END OF EXAMPLES)\nQuestion: {question}")
AGENTTUNING_EXAMPLES = (
    'Question: Musician and satirist Allie Goertz wrote a song about the "The Simpsons" character '
    "Milhouse, who Matt Groening named after who?\n"
    'Thought 1: The question simplifies to "The Simpsons" character Milhouse is named after who. I '
    "only need to search Milhouse and find who it is named after.\n"
    "Action 1: Search[Milhouse]\n"
    "Observation 1: Milhouse Mussolini Van Houten is a recurring character in the Fox animated "
    "television series The Simpsons voiced by Pamela Hayden and created by Matt Groening.\n"
    'Thought 2: The paragraph does not tell who Milhouse is named after, maybe I can look up "named '
    'after".\n'
    "Action 2: Lookup[named after]\n"
    "Observation 2: (Result 1 / 1) Milhouse was named after U.S. president Richard Nixon, whose "
    "middle name was Milhous. \n"
    "Thought 3: Milhouse was named after U.S. president Richard Nixon, so the answer is Richard "
    "Nixon.\n"
    "Action 3: Finish[Richard Nixon]\n"
    "\n"
    "Question: Were Pavel Urysohn and Leonid Levin known for the same type of work?\n"
    "Thought 1: I need to search Pavel Urysohn and Leonid Levin, find their types of work, then "
    "find if they are the same.\n"
    "Action 1: Search[Pavel Urysohn]\n"
    "Observation 1: Pavel Samuilovich Urysohn (February 3, 1898 \u00e2\u0080\u0093 August 17, 1924) "
    "was a Soviet mathematician who is best known for his contributions in dimension theory.\n"
    "Thought 2: Pavel Urysohn is a mathematician. I need to search Leonid Levin next and find its "
    "type of work.\n"
    "Action 2: Search[Leonid Levin]\n"
    "Observation 2: Leonid Anatolievich Levin is a Soviet-American mathematician and computer "
    "scientist. \n"
    "Thought 3: Leonid Levin is a mathematician and computer scientist. So Pavel Urysohn and Leonid "
    "Levin have the same type of work. \n"
    "Action 3: Finish[yes]\n")
AGENTTUNING_QUESTIONS = Path(__file__).with_name("agenttuning_hotpotqa_300.json")


def agenttuning_prompt(question: str) -> str:
    return AGENTTUNING_INSTRUCTION.format(examples=AGENTTUNING_EXAMPLES, question=question)


def agenttuning_question_list() -> list[dict]:
    """``[{"id", "level", "row"}]`` of AgentTuning's 300 questions (agenttuning_hotpotqa_300.json)."""
    import json
    with open(AGENTTUNING_QUESTIONS, encoding="utf-8") as f:
        return json.load(f)["questions"]

NOT_FOUND_LOOKUP = ("The last page Searched was not found, so you cannot Lookup a keyword in it. "
                    "Please try one of the similar pages given.")
INVALID_ACTION = ("Invalid Action. Valid Actions are Lookup[<topic>] Search[<topic>] and "
                  "Finish[<answer>].")


def system_prompt() -> str:
    return prompts.render_tool_system(TOOLS, react=True)


# ============================================================================================
# Loader
# ============================================================================================


def _files(base: Path, o: dict) -> list[Path]:
    if o["files"]:
        pats = [o["files"]] if isinstance(o["files"], str) else list(o["files"])
    else:
        jsonl = base / o["config"] / f"{o['split']}.jsonl"
        if jsonl.exists():
            return [jsonl]
        pats = [f"{o['config']}/{o['split']}-*.parquet", f"{o['config']}/{o['split']}.parquet",
                f"{o['config']}/{o['split']}/*.parquet"]
    found: list[Path] = []
    for pat in pats:
        found += sorted(Path(p) for p in glob.glob(str(base / pat)))
    if not found:
        raise DataError(base / (pats[0] if pats else ""), "no HotpotQA file found "
                        f"(looked for {o['config']}/{o['split']}.jsonl and parquet files {pats})")
    return found


def _docs(context: Any, path: Path, line: int, rid: str) -> dict[str, list[str]]:
    if not isinstance(context, dict) or not isinstance(context.get("title"), list) \
            or not isinstance(context.get("sentences"), list) \
            or len(context["title"]) != len(context["sentences"]):
        raise DataError(path, "context must be {title: [...], sentences: [[...], ...]} of equal length",
                        line=line, record=rid)
    docs: dict[str, list[str]] = {}
    for title, sents in zip(context["title"], context["sentences"]):
        if not isinstance(title, str) or not isinstance(sents, list) \
                or not all(isinstance(s, str) for s in sents):
            raise DataError(path, "context titles must be strings and sentences lists of strings",
                            line=line, record=rid)
        docs.setdefault(title, list(sents))
    return docs


def load_items(raw_dir: Path, options: dict | None = None) -> list[dict]:
    o = dict(LOAD_DEFAULTS)
    o.update(options or {})
    if o["protocol"] not in PROTOCOLS:
        raise ValueError(f"hotpotqa: protocol must be one of {PROTOCOLS}, got {o['protocol']!r}")
    agenttuning = o["protocol"] == "agenttuning"
    base = Path(raw_dir) / REPO
    items: list[dict] = []
    seen: set[str] = set()
    sys_prompt = system_prompt()
    wanted = ({q["id"] for q in agenttuning_question_list()}
              if agenttuning and o["questions"] == "agenttuning300" else None)
    for path in _files(base, o):
        for line, rec in iter_rows(path):
            if not isinstance(rec, dict):
                raise DataError(path, "record is not an object", line=line)
            rid = rec.get("id")
            if not isinstance(rid, str) or not rid:
                raise DataError(path, "record has no string 'id'", line=line)
            for key in ("question", "answer"):
                if not isinstance(rec.get(key), str):
                    raise DataError(path, f"record has no string {key!r}", line=line, record=rid)
            if wanted is not None and rid not in wanted:
                continue        # AgentTuning's list: keep memory small on the train split
            if rid in seen:
                raise DataError(path, "duplicate id", line=line, record=rid)
            seen.add(rid)
            level = str(rec.get("level") or "unknown")
            qtype = str(rec.get("type") or "unknown")
            if agenttuning:     # one user turn: instruction, two examples, the question
                messages = [{"role": "user", "content": agenttuning_prompt(rec["question"])}]
            else:
                messages = [{"role": "system", "content": sys_prompt},
                            {"role": "user", "content": rec["question"]}]
            items.append({
                "id": f"hotpotqa/{rid}",
                "benchmark": "hotpotqa",
                "subset": level,
                "messages": messages,
                "reference": {"answer": rec["answer"], "level": level, "type": qtype,
                              "supporting_facts": rec.get("supporting_facts")},
                "meta": {"level": level, "type": qtype, "protocol": o["protocol"],
                         "docs": _docs(rec.get("context"), path, line, rid)},
            })
    if agenttuning and o["questions"] == "agenttuning300":
        return _select_listed(items)
    if agenttuning and o["questions"] != "draw":
        raise ValueError("hotpotqa: questions must be agenttuning300 or draw, got "
                         f"{o['questions']!r}")
    if o["levels"]:
        items = [it for it in items if it["subset"] in set(o["levels"])]
    rng_seed = o["seed"]
    if o["per_level"] is not None:
        keep: set[int] = set()
        by_level: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            by_level.setdefault(it["subset"], []).append(i)
        for level in sorted(by_level):
            idx = by_level[level]
            n = min(int(o["per_level"]), len(idx))
            keep.update(random.Random(f"{rng_seed}/{level}").sample(idx, n))
        items = [it for i, it in enumerate(items) if i in keep]
    if o["max_samples"] is not None and o["max_samples"] < len(items):
        chosen = sorted(random.Random(rng_seed).sample(range(len(items)), int(o["max_samples"])))
        items = [items[i] for i in chosen]
    return items


def _select_listed(items: list[dict]) -> list[dict]:
    """AgentTuning's 300 questions in the list's order (easy, medium, hard), levels from the list."""
    by_id = {it["id"][len("hotpotqa/"):]: it for it in items}
    out = []
    for q in agenttuning_question_list():
        it = by_id.get(q["id"])
        if it is None:
            raise DataError(AGENTTUNING_QUESTIONS, "listed question not in the loaded HotpotQA files "
                            "(easy/medium are train questions: data.sources.hotpotqa.files must include "
                            "the train split)", record=q["id"])
        if it["subset"] not in (q["level"], "unknown"):
            raise DataError(AGENTTUNING_QUESTIONS, f"level {q['level']!r} differs from the record's "
                            f"{it['subset']!r}", record=q["id"])
        it = dict(it, subset=q["level"], reference=dict(it["reference"], level=q["level"]),
                  meta=dict(it["meta"], level=q["level"]))
        out.append(it)
    return out


# ============================================================================================
# Environment
# ============================================================================================

def _norm_title(s: str) -> str:
    return " ".join(s.strip().strip("'\"`").split())


class DocEnv:
    """Search/Lookup over one item's document store (title -> sentences)."""

    def __init__(self, docs: dict[str, list[str]], similar_k: int = 5):
        self.docs = docs
        self.similar_k = similar_k
        self.page: str | None = None
        self.lookup_keyword: str | None = None
        self.lookup_results: list[str] = []
        self.lookup_index = 0

    def paragraph(self, title: str) -> str:
        return "".join(self.docs[title]).strip()

    def search(self, query: str) -> str:
        q = _norm_title(query)
        hit = next((t for t in self.docs if _norm_title(t) == q), None)
        if hit is None:
            hit = next((t for t in self.docs if _norm_title(t).lower() == q.lower()), None)
        self.lookup_keyword, self.lookup_results, self.lookup_index = None, [], 0
        if hit is None:
            self.page = None
            scored = [(bow_cosine(q, t), i, t) for i, t in enumerate(self.docs)]
            similar = [t for s, i, t in sorted(scored, key=lambda x: (-x[0], x[1])) if s > 0]
            return f"Could not find [{q}]. Similar: {similar[:self.similar_k]}"
        self.page = hit
        return self.paragraph(hit)

    def lookup(self, keyword: str) -> str:
        if self.page is None:
            return NOT_FOUND_LOOKUP
        kw = keyword.strip().strip("'\"`")
        if kw.lower() != (self.lookup_keyword or "").lower() or self.lookup_keyword is None:
            self.lookup_keyword = kw
            self.lookup_results = [s.strip() for s in self.docs[self.page] if kw.lower() in s.lower()]
            self.lookup_index = 0
        if not self.lookup_results:
            return "No Results"
        if self.lookup_index >= len(self.lookup_results):
            return "No More Results"
        out = f"(Result {self.lookup_index + 1}/{len(self.lookup_results)}) " \
              f"{self.lookup_results[self.lookup_index]}"
        self.lookup_index += 1
        return out


# ============================================================================================
# Action parsing
# ============================================================================================

_OBS_CUT = re.compile(r"\n\s*Observation\s*\d*\s*:")
_ACTION = re.compile(r"(?m)^[ \t]*Action(?:[ \t]*\d+)?[ \t]*:[ \t]*(?P<act>.*)$")
_INPUT = re.compile(r"(?m)^[ \t]*Action[ \t]+Input(?:[ \t]*\d+)?[ \t]*:[ \t]*", re.I)
_BRACKET = re.compile(r"^(?P<name>[A-Za-z_ ]+?)\s*\[(?P<arg>.*)\]\s*\.?$", re.S)
_BRACKET_ANY = re.compile(r"\b(?P<name>Search|Lookup|Finish|FinalAnswer)\[(?P<arg>[^\]\n]*)\]", re.I)
_NAMES = {"search": "Search", "lookup": "Lookup", "finish": "Finish", "finalanswer": "Finish",
          "final answer": "Finish", "final_answer": "Finish"}
_ARG_KEYS = {"Search": ("entity", "query", "search", "topic", "title"),
             "Lookup": ("keyword", "query", "topic"),
             "Finish": ("answer", "final_answer", "result")}


def _arg_from_input(name: str, raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    obj = first_json_object(raw) if raw[:1] in "{[" else None
    if obj is None:
        obj = try_parse_jsonish(raw.split("\n")[0].strip())
    if isinstance(obj, dict):
        for k in _ARG_KEYS[name]:
            if k in obj:
                return "" if obj[k] is None else str(obj[k])
        if len(obj) == 1:
            v = next(iter(obj.values()))
            return "" if v is None else str(v)
        return None
    if isinstance(obj, (str, int, float)) and not isinstance(obj, bool):
        return str(obj)
    return raw.split("\n")[0].strip().strip("'\"`")


def parse_action(text: str) -> tuple[str, str | None] | None:
    """``(action, argument)`` with action in Search/Lookup/Finish, ``("?" + name, arg)`` for an
    unknown action name, or None when no action can be found."""
    m = _ACTION.search(text)
    if m:
        act = m.group("act").strip().strip("`*").strip()
        b = _BRACKET.match(act)
        if b:
            name, arg = b.group("name").strip(), b.group("arg")
        else:
            name, arg = act.rstrip(".").strip(), None
        canon = _NAMES.get(name.lower())
        if canon is None:
            return ("?" + name, arg)
        if arg is None:
            after = text[m.end():]
            im = _INPUT.search(after)
            if im:
                arg = _arg_from_input(canon, after[im.end():])
        if arg is None and canon != "Finish":
            return None
        return (canon, arg or "")
    b = _BRACKET_ANY.search(text)
    if b:
        return (_NAMES[b.group("name").lower()], b.group("arg"))
    return None


# ============================================================================================
# Episodes
# ============================================================================================

class _Episode:
    def __init__(self, item: dict, o: dict):
        self.item = item
        self.o = o
        self.messages = copy.deepcopy(item["messages"])
        docs = item.get("meta", {}).get("docs")
        if not isinstance(docs, dict):
            raise ValueError(f"HotpotQA item {item.get('id')!r} has no meta.docs document store")
        self.env = DocEnv(docs, o["similar_k"])
        self.trajectory: list[dict] = []
        self.answer = ""
        self.done = False
        self.stop_reason: str | None = None

    def advance(self, reply: str) -> None:
        step = len(self.trajectory) + 1
        text = reply if isinstance(reply, str) else ""
        if self.o["truncate_at_observation"]:
            m = _OBS_CUT.search(text)
            if m:
                text = text[:m.start()]
        text = text.rstrip()
        entry: dict[str, Any] = {"step": step, "assistant": text, "action": None, "argument": None,
                                 "observation": None}
        self.trajectory.append(entry)
        self.messages.append({"role": "assistant", "content": text})
        parsed = parse_action(text)
        if parsed is None or (parsed[0].startswith("?") and self.o["stop_on_invalid"]):
            if parsed is not None:
                entry["action"], entry["argument"] = parsed
            self._stop("invalid_action")
            return
        name, arg = parsed
        entry["action"], entry["argument"] = name, arg
        if name == "Finish":
            self.answer = arg or ""
            self.done, self.stop_reason = True, "finish"
            return
        if name == "Search":
            obs = self.env.search(arg or "")
        elif name == "Lookup":
            obs = self.env.lookup(arg or "")
        else:
            obs = INVALID_ACTION
        entry["observation"] = obs
        self.messages.append({"role": "user", "content": f"{prompts.OBSERVATION} {obs}"})

    def _stop(self, reason: str) -> None:
        self.answer = ""
        self.done, self.stop_reason = True, reason

    def row(self) -> dict:
        return {"id": self.item["id"], "prediction": self.answer, "trajectory": self.trajectory,
                "stop_reason": self.stop_reason}


_AT_ACTION_LINE = re.compile(r"(?m)^[ \t]*Action[ \t]*\d*[ \t]*:(?P<act>.*)$")
_AT_ACTION = re.compile(r"^(\w+)\[(.+)\]$")
_AT_FUZZY = re.compile(r"^(\w+)\[(.+)\]")


def parse_agenttuning_action(text: str) -> tuple[str, str]:
    """``(action type, argument)`` as AgentTuning's agent_arch.parse_action reads the text after
    ``Action n:`` (here: the first ``Action n:`` line of the reply; a reply without one is read
    whole); an unparsable action comes back as ``(text, "")``, which the loop answers as invalid."""
    m = _AT_ACTION_LINE.search(text)
    act = (m.group("act") if m else text).strip("\n").strip().replace("\n", "")
    hit = _AT_ACTION.match(act)
    if hit:
        return hit.group(1), hit.group(2)
    act = act.strip(" ").strip(".")
    hit = _AT_FUZZY.match(act)
    return (hit.group(1), hit.group(2)) if hit else (act, "")


_TOKENIZER: Any = None


def count_tokens(text: str) -> tuple[int, str]:
    """``(tokens, counter)``: tiktoken ``cl100k_base`` (AgentTuning's counter) when installed,
    else a labelled approximation (runs of word characters and single other non-space characters;
    not cl100k, so the cap binds at a somewhat different length)."""
    global _TOKENIZER
    if _TOKENIZER is None:
        try:
            import tiktoken
            _TOKENIZER = ("cl100k_base", tiktoken.get_encoding("cl100k_base"))
        except Exception:                                  # not installed / no encoding file
            _TOKENIZER = ("approx-regex", None)
    name, enc = _TOKENIZER
    if enc is not None:
        return len(enc.encode(text)), name
    return len(re.findall(r"\w+|[^\w\s]", text)), name


class _ATEpisode(_Episode):
    """AgentTuning's React_HotPotQA_run_Agent loop in chat form: the user turn holds the instruction,
    the examples and the question; each assistant turn is one step ("Thought n: ... Action n: ...",
    cut before a model-written Observation); the observation comes back as a user turn
    "Observation n: ...". Upstream made two completion calls per step (Thought, then Action, each
    stopped at a newline); here one reply carries both."""

    def __init__(self, item: dict, o: dict, store: Any):
        self.item = item
        self.o = o
        self.messages = copy.deepcopy(item["messages"])
        if o["store"] == "local":
            from .wikistore import WikiEnv
            self.env = WikiEnv(store, o["similar_k"], o["lookup_unit"])
        else:
            docs = item.get("meta", {}).get("docs")
            if not isinstance(docs, dict):
                raise ValueError(f"HotpotQA item {item.get('id')!r} has no meta.docs document store")
            self.env = DocEnv(docs, o["similar_k"])
        self.trajectory = []
        self.answer = ""
        self.done = False
        self.stop_reason = None
        self.counter = None

    def prompt_tokens(self) -> int:
        n, self.counter = count_tokens("\n".join(m["content"] for m in self.messages))
        return n

    def advance(self, reply: str) -> None:
        from .wikistore import NoPage, NOT_FOUND_LOOKUP as NO_PAGE
        step = len(self.trajectory) + 1
        text = reply if isinstance(reply, str) else ""
        m = _OBS_CUT.search(text)
        if m:
            text = text[:m.start()]
        text = text.strip()
        name, arg = parse_agenttuning_action(text)
        entry: dict[str, Any] = {"step": step, "assistant": text, "action": name, "argument": arg,
                                 "observation": None}
        self.trajectory.append(entry)
        self.messages.append({"role": "assistant", "content": text})
        if name == "Finish":
            self.answer = arg
            self.done, self.stop_reason = True, "finish"
            return
        if name == "Search":
            obs = self.env.search(arg)
        elif name == "Lookup":
            try:
                obs = self.env.lookup(arg)
            except NoPage:
                obs = NO_PAGE
            if obs == NOT_FOUND_LOOKUP:     # DocEnv's message is the same text
                obs = NO_PAGE
        else:
            obs = INVALID_ACTION
        obs = obs.strip("\n").strip().replace("\n", "")    # upstream format_step
        entry["observation"] = obs
        self.messages.append({"role": "user", "content": f"Observation {step}: {obs}"})

    def row(self) -> dict:
        r = super().row()
        r["token_counter"] = self.counter
        return r


def run_episodes(items: list[dict], generate: GenerateFn, options: dict | None = None) -> list[dict]:
    """Run every item as a ReAct episode; returns ``{"id", "prediction", "trajectory",
    "stop_reason"}`` per item, in item order. ``generate`` is called once per step with the
    message lists of all unfinished episodes. With ``protocol: agenttuning`` the defaults are
    :data:`AGENTTUNING`'s and an episode also stops (answer "") when its prompt exceeds
    ``context_cap_tokens`` before a step (stop reason ``context_cap``)."""
    o = dict(RUN_DEFAULTS)
    protocol = (options or {}).get("protocol", "distractor")
    if protocol not in PROTOCOLS:
        raise ValueError(f"hotpotqa: protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "agenttuning":
        o.update(AGENTTUNING)
    o.update({k: v for k, v in (options or {}).items() if v is not None or k not in AGENTTUNING})
    if int(o["max_steps"]) < 1:
        raise ValueError("max_steps must be >= 1")
    if protocol == "agenttuning":
        if o["store"] not in ("local", "distractor"):
            raise ValueError(f"hotpotqa: store must be local or distractor, got {o['store']!r}")
        store = None
        if o["store"] == "local":
            if not o.get("wiki_db"):
                raise ValueError("hotpotqa: store local needs wiki_db (the built wiki store)")
            from .wikistore import WikiStore
            store = WikiStore(o["wiki_db"])
        episodes: list[_Episode] = [_ATEpisode(it, o, store) for it in items]
        cap = o.get("context_cap_tokens")
    else:
        episodes = [_Episode(it, o) for it in items]
        cap = None
    for _ in range(int(o["max_steps"])):
        if cap is not None:
            for e in episodes:
                if not e.done and e.prompt_tokens() > int(cap):
                    e._stop("context_cap")
        active = [e for e in episodes if not e.done]
        if not active:
            break
        replies = generate([copy.deepcopy(e.messages) for e in active])
        if len(replies) != len(active):
            raise ValueError(f"generate returned {len(replies)} replies for {len(active)} prompts")
        for e, r in zip(active, replies):
            e.advance(r)
    for e in episodes:
        if not e.done:
            e._stop("max_steps")
    return [e.row() for e in episodes]


# ============================================================================================
# Scoring
# ============================================================================================

def score(items: list[dict], predictions: dict[str, Any], options: dict | None = None
          ) -> tuple[dict, list[dict]]:
    rows = []
    by_level: dict[str, list[tuple[float, float]]] = {}
    stops: dict[str, int] = {}
    for item in items:
        row_in = predictions[item["id"]]
        pred = prediction_text(row_in)
        gold = item["reference"]["answer"]
        level = item["reference"].get("level") or item.get("subset") or "unknown"
        f1, em = f1_score(pred, gold), exact_match(pred, gold)
        by_level.setdefault(level, []).append((f1, em))
        row = {"id": item["id"], "level": level, "prediction": pred, "answer": gold,
               "reward": 100.0 * f1, "em": 100.0 * em}
        if isinstance(row_in, dict) and row_in.get("stop_reason"):
            row["stop_reason"] = row_in["stop_reason"]
            stops[row_in["stop_reason"]] = stops.get(row_in["stop_reason"], 0) + 1
        rows.append(row)
    all_pairs = [p for v in by_level.values() for p in v]
    metrics: dict[str, float | None] = {
        "reward": 100.0 * mean(f for f, _ in all_pairs) if all_pairs else None,
        "em": 100.0 * mean(e for _, e in all_pairs) if all_pairs else None,
    }
    level_means_f, level_means_e = [], []
    for level in sorted(by_level):
        f = mean(x for x, _ in by_level[level])
        e = mean(y for _, y in by_level[level])
        metrics[f"reward_{level}"] = 100.0 * f
        metrics[f"em_{level}"] = 100.0 * e
        level_means_f.append(f)
        level_means_e.append(e)
    if level_means_f:
        metrics["reward_level_mean"] = 100.0 * mean(level_means_f)
        metrics["em_level_mean"] = 100.0 * mean(level_means_e)
    if stops and len(rows):
        metrics["finish_rate"] = 100.0 * stops.get("finish", 0) / len(rows)
    return metrics, rows


def scoring_info(options: dict | None = None) -> dict:
    """How the HotpotQA scores were produced, for the score file and the tables' notes: protocol,
    document store (labelled: the closed distractor store is not Wikipedia search), steps, cap."""
    o = dict(options or {})
    protocol = o.get("protocol") or "distractor"
    if protocol == "agenttuning":
        run = {**AGENTTUNING, **{k: v for k, v in o.items() if v is not None}}
        store = run["store"]
        questions = o.get("questions") or "agenttuning300"
    else:
        run = {**RUN_DEFAULTS, **o}
        store = "distractor"
        questions = "loaded files" + (f", {o['per_level']} per level (seeded draw)" if o.get("per_level") else "")
    label = ("local Wikipedia (2017 introductory paragraphs, SQLite FTS5; hermetic)" if store == "local"
             else "closed distractor store (each question's own ten paragraphs; not Wikipedia search)")
    info = {"protocol": protocol, "store": store, "store_label": label, "questions": questions,
            "max_steps": run["max_steps"], "reward": "token F1 x100 (EM logged)"}
    if protocol == "agenttuning":
        info["context_cap_tokens"] = run["context_cap_tokens"]
        info["token_counter"] = count_tokens("")[1]
        info["similar_k"] = run["similar_k"]
        info["lookup_unit"] = run["lookup_unit"] if store == "local" else "sentence"
    return info
