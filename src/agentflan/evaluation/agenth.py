"""Agent-H (hallucination), **our reconstruction** from ``glaiveai/glaive-function-calling-v2``.

The paper (experiments.md §3.4) evaluates 1,845 glaive-function-calling-v2 samples and judges each
output "by keyword detection". It released neither the selection, nor the prompt, nor the keyword
lists, so everything below is our reconstruction; the numbers it gives are not the paper's
benchmark, only the paper's metric on our version of it.

Ground truth
------------
The type of a sample comes from the *first* ASSISTANT turn after the first USER turn: ``tool`` if
it starts with ``<functioncall>``, else ``general`` (systems without functions, and refusals or
direct answers under a system that lists functions).

Eligible records and selection
------------------------------
A record is eligible when its ``system`` parses (every ``{...}`` after the header is a JSON function
schema with a string ``name``), its ``chat`` has a non-empty USER turn and an ASSISTANT turn after
it. Ineligible records are skipped with a warning (``strict: true`` makes the first one an error).
``max_samples`` eligible records are then drawn uniformly without replacement by
``random.Random(seed).sample`` over the eligible records' positions (``seed`` default 0) and kept in
file order; ``max_samples: null`` keeps every eligible record. The paper preset draws 1,845. The
draw is not stratified: the shares of tool / general ground truths and of samples with / without
functions are glaive's own; the score file reports them (``n_tool``, ``n_general``,
``n_general_with_tools``, ``n_general_no_tools``).

Prompt (``prompt`` option; user turn = the first USER text in every variant)
-----------------------------------------------------------------------------
* ``react`` (default): the functions re-rendered into the package's ReAct tool prompt,
  ``prompts.render_tool_system(tools, react=True)`` (Thought / Action / Action Input, finish with
  ``Action: FinalAnswer``); ``prompts.NO_TOOL_SYSTEM`` when the sample lists no function. This is
  the prompt shape of the paper's Agent-H case study ("You have access to the following tools:
  {...} {Format Instruction...}") and of the released negative samples (case (b): irrelevant tools
  in a ReAct system prompt), which the "w/o NS" ablation of Table 3 is about. An obedient direct
  answer through ``Action: FinalAnswer`` is *not* a hallucination (see below).
* ``tools``: the same tool list without the format instruction,
  ``prompts.render_tool_system(tools, react=False)`` (the chat-aligned Agent-FLAN format); no
  scaffold is asked for.
* ``glaive``: the sample's own ``system`` text as it is in the data (functions as glaive's JSON
  schemas, "Use them if required"), without its leading ``SYSTEM:`` label (the chat template
  supplies the role).

Default ``react``: it is the paper's prompt shape and the one the negative samples teach a model
to answer without a tool; ``glaive`` and ``tools`` measure the same behaviour out of that format.

What counts as a hallucination (structural patterns, not phrases in prose)
--------------------------------------------------------------------------
Only samples with a ``general`` ground truth can hallucinate (the paper's definition).

* **ReAct-format hallucination**: the reply has a ReAct tool call, i.e. a line that starts (after
  optional spaces) with ``Action:`` (case-sensitive) followed by an action name that is not a
  finish action (``finish_actions``, default ``FinalAnswer``, ``Finish``; compared after lower-casing
  and dropping everything but letters and digits, so ``Final Answer`` and ``final_answer`` finish
  too). ``Transaction: done``, ``Thought:`` alone and ``Action: FinalAnswer`` are no call.
* **General-format hallucination**: the reply has a function call in a non-ReAct format:
  1. glaive's ``<functioncall>`` followed by a JSON object (``<functioncall> {``);
  2. a JSON object (anywhere in the reply, also nested) with a string name key (``name``,
     ``api_name``, ``function``, ``tool``, ``action``) that is not a finish action and an argument
     key (``arguments``, ``parameters``, ``args``, ``action_input``, ``tool_input``); an object
     that also has a ``description`` key is a function schema (e.g. echoed from the prompt), not a
     call;
  3. a named call in prose: ``use`` / ``call`` / ``invoke`` (or ``using`` / ``calling`` /
     ``invoking``), optionally ``the``, then a *function identifier*: a function the sample lists
     (case-insensitive) or a code identifier with at least one ``_`` (letters, digits, ``_`` and
     ``.``), bare or after a back-tick. "I will use get_weather to ..." is a call; "You can call
     the cinema directly" and "I will use my knowledge" are not. Lines of a ReAct step (starting
     with ``Thought:``, ``Action:``, ``Action Input:`` or ``Observation:``) are not prose:
     "Thought: I will use get_weather" belongs to a ReAct call and is not a second one.

Metrics (percent unless a count): ``h_react`` / ``h_general`` = general-truth samples with a
ReAct / general-format hallucination divided by ``n_general`` (the general-truth samples);
``h_score = 0.5·((100 − h_react) + (100 − h_general))`` — the paper's Eq. (1) prints H_ReAct in both
terms, a typo (experiments.md §3.4: the text and all other numbers imply H_General in the second
term; 9.9 / 11.9 give the printed 89.1). Counts: ``n`` (samples), ``n_general``, ``n_tool``
(tool-truth samples), ``n_with_tools`` (samples whose prompt lists functions),
``n_general_with_tools``, ``n_general_no_tools``. Extra, *not in the paper*: ``tool_call_rate``, the
share of tool-truth samples whose reply has any call of either kind (the paper's metric never
penalises a model that does not call tools).
"""
from __future__ import annotations

import ast
import json
import logging
import random
import re
from pathlib import Path
from typing import Any, Iterator

from .. import prompts
from ..io import DataError, read_json
from .text import prediction_text

log = logging.getLogger(__name__)

REPO = "glaiveai/glaive-function-calling-v2"
FILE = "glaive-function-calling-v2.json"

PROMPTS = ("react", "tools", "glaive")

DEFAULTS = {
    "max_samples": None,
    "seed": 0,
    "strict": False,                 # True: an unusable record raises instead of being skipped
    "prompt": "react",
    "finish_actions": [prompts.FINISH_ACTION, "Finish"],
}

_SPLIT = re.compile(r"\n*(USER|ASSISTANT|FUNCTION RESPONSE):\s*")
_EOT = "<|endoftext|>"
_CALL = "<functioncall>"
_CALL_RE = re.compile(r'^\{\s*"name"\s*:\s*"(?P<name>(?:[^"\\]|\\.)*)"\s*'
                      r'(?:,\s*"arguments"\s*:\s*(?P<args>.*?))?\s*\}\s*$', re.S)
_SYSTEM_LABEL = re.compile(r"^\s*SYSTEM:[ \t]*")


def _opts(options: dict | None) -> dict:
    o = dict(DEFAULTS)
    unknown = sorted(set(options or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown Agent-H option(s) {unknown}; known: {sorted(DEFAULTS)}")
    o.update(options or {})
    if o["prompt"] not in PROMPTS:
        raise ValueError(f"Agent-H prompt {o['prompt']!r} is not one of {list(PROMPTS)}")
    if not isinstance(o["finish_actions"], list) or \
            not all(isinstance(a, str) and a for a in o["finish_actions"]):
        raise ValueError("Agent-H finish_actions must be a list of non-empty strings")
    return o


def scoring_info(options: dict | None = None) -> dict:
    """How the Agent-H scores were produced (recorded in every score file, printed in the tables'
    notes): our reconstruction, its prompt variant, the seeded selection and the finish actions."""
    o = _opts(options)
    return {"protocol": "reconstruction (the paper released no selection, prompt or keyword lists)",
            "prompt": o["prompt"], "seed": o["seed"], "max_samples": o["max_samples"],
            "finish_actions": list(o["finish_actions"]),
            "hallucination_patterns": "structural (ReAct Action line naming a tool; <functioncall>/JSON call; "
                                      "a named function in prose), not phrases"}


# ============================================================================================
# glaive parsing
# ============================================================================================

def parse_chat(chat: str) -> list[dict]:
    """Split a glaive ``chat`` string into ``[{role, content}]`` (roles USER/ASSISTANT/FUNCTION RESPONSE).

    ``<|endoftext|>`` is stripped; text before the first marker is ignored; a trailing USER turn
    with no text (a copied/trimmed row) is dropped.
    """
    parts = _SPLIT.split(chat)
    turns = []
    for role, text in zip(parts[1::2], parts[2::2]):
        turns.append({"role": role, "content": text.replace(_EOT, "").strip()})
    while turns and turns[-1]["role"] == "USER" and not turns[-1]["content"]:
        turns.pop()
    return turns


def _parse_args(raw: str | None) -> tuple[Any, bool]:
    if raw is None:
        return {}, True
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == "'" and raw[-1] == "'":
        raw = raw[1:-1]
    for parser in (json.loads, ast.literal_eval):
        try:
            val = parser(raw)
        except Exception:  # noqa: BLE001
            continue
        if isinstance(val, str):            # doubly encoded
            try:
                val = json.loads(val)
            except Exception:  # noqa: BLE001
                pass
        return val, isinstance(val, dict)
    return raw, False


def parse_functioncall(text: str) -> dict | None:
    """Parse ``<functioncall> {"name": ..., "arguments": '<json>'}`` tolerantly.

    Accepts single-quoted argument strings (glaive's usual, not valid JSON), unquoted objects
    (``"arguments": {}``), a missing ``arguments`` key and a trailing ``<|endoftext|>``. Returns
    ``{"name", "arguments", "arguments_ok"}`` or None when the text holds no call.
    """
    t = text.replace(_EOT, "").strip()
    i = t.find(_CALL)
    if i < 0:
        return None
    body = t[i + len(_CALL):].strip()
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and "name" in obj:
        args = obj.get("arguments", {})
        if isinstance(args, str):
            args, ok = _parse_args(args)
        else:
            ok = isinstance(args, dict)
        return {"name": str(obj["name"]), "arguments": args, "arguments_ok": ok}
    m = _CALL_RE.match(body)
    if not m:
        return {"name": None, "arguments": body, "arguments_ok": False}
    args, ok = _parse_args(m.group("args"))
    return {"name": m.group("name"), "arguments": args, "arguments_ok": ok}


def parse_system_tools(system: str) -> list[dict]:
    """Function schemas listed in a glaive ``system`` string (JSON objects, blank-line separated)."""
    text = system
    dec = json.JSONDecoder()
    tools = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            raise ValueError(f"unparsable function schema at character {pos}") from None
        if isinstance(obj, dict) and "name" in obj:
            tools.append(obj)
        pos = text.find("{", end)
    return tools


def system_prompt(variant: str, tools: list[dict], glaive_system: str) -> str:
    """The system turn of an Agent-H item under prompt ``variant`` (see the module docs)."""
    if variant == "glaive":
        return _SYSTEM_LABEL.sub("", glaive_system, count=1).strip()
    if not tools:
        return prompts.NO_TOOL_SYSTEM
    rendered = [{"name": t["name"], "description": t.get("description", ""),
                 "parameters": t.get("parameters") if isinstance(t.get("parameters"), dict) else {}}
                for t in tools]
    if variant == "react":
        return prompts.render_tool_system(rendered, react=True)
    if variant == "tools":
        return prompts.render_tool_system(rendered, react=False)
    raise ValueError(f"Agent-H prompt {variant!r} is not one of {list(PROMPTS)}")


def record_to_item(rec: Any, index: int, path: Path, prompt: str = DEFAULTS["prompt"]) -> dict:
    """One glaive record -> Agent-H item. Raises ValueError if the record is unusable."""
    if not isinstance(rec, dict) or not isinstance(rec.get("system"), str) \
            or not isinstance(rec.get("chat"), str):
        raise DataError(path, "record is not an object with string 'system' and 'chat'",
                        record=f"index {index}")
    tools = parse_system_tools(rec["system"])
    turns = parse_chat(rec["chat"])
    first_user = next((k for k, t in enumerate(turns) if t["role"] == "USER"), None)
    if first_user is None or not turns[first_user]["content"]:
        raise ValueError("no USER turn")
    reply = next((t for t in turns[first_user + 1:] if t["role"] == "ASSISTANT"), None)
    if reply is None:
        raise ValueError("no ASSISTANT turn after the first USER turn")
    is_tool = reply["content"].startswith(_CALL)
    call = parse_functioncall(reply["content"]) if is_tool else None
    for t in tools:
        if not isinstance(t.get("name"), str):
            raise ValueError("function schema without a string name")
    kind = "tool" if is_tool else "general"
    return {
        "id": f"agenth/{index}",
        "benchmark": "agenth",
        "subset": kind,
        "messages": [{"role": "system", "content": system_prompt(prompt, tools, rec["system"])},
                     {"role": "user", "content": turns[first_user]["content"]}],
        "reference": {"type": kind, "first_assistant": reply["content"], "call": call},
        "meta": {"index": index, "has_tools": bool(tools), "tools": [t["name"] for t in tools],
                 "prompt": prompt},
    }


def select(n_eligible: int, max_samples: int | None, seed: int) -> list[int]:
    """Positions (sorted) of the eligible records kept: all of them, or a seeded uniform draw."""
    if max_samples is None or max_samples >= n_eligible:
        return list(range(n_eligible))
    if max_samples < 0:
        raise ValueError("max_samples must be >= 0")
    return sorted(random.Random(seed).sample(range(n_eligible), max_samples))


def load_items(raw_dir: Path, options: dict | None = None) -> list[dict]:
    o = _opts(options)
    path = Path(raw_dir) / REPO / FILE
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON array of {{system, chat}} records, got {type(data).__name__}")
    usable: list[dict] = []
    skipped = 0
    for index, rec in enumerate(data):
        try:
            usable.append(record_to_item(rec, index, path, o["prompt"]))
        except DataError:
            raise
        except ValueError as exc:
            if o["strict"]:
                raise DataError(path, f"unusable record: {exc}", record=f"index {index}") from None
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d unusable glaive records (no user/assistant pair or bad schema)",
                    path, skipped)
    items = [usable[i] for i in select(len(usable), o["max_samples"], o["seed"])]
    n_tool = sum(it["subset"] == "tool" for it in items)
    n_gen_tools = sum(it["subset"] == "general" and it["meta"]["has_tools"] for it in items)
    log.info("Agent-H: %d of %d eligible records (seed %s, prompt %s): %d tool, %d general "
             "(%d of them with functions)", len(items), len(usable), o["seed"], o["prompt"],
             n_tool, len(items) - n_tool, n_gen_tools)
    return items


# ============================================================================================
# Hallucination detectors (structural; see the module docs)
# ============================================================================================

_ACTION_LINE = re.compile(r"^[ \t]*Action:[ \t]*(\S[^\n]*)$", re.M)
_NAME_KEYS = ("name", "api_name", "function", "tool", "action")
_ARG_KEYS = ("arguments", "parameters", "args", "action_input", "tool_input")
_REACT_LINE = re.compile(r"[ \t]*(?:Thought|Action|Action Input|Observation):")
_FUNCTIONCALL_JSON = re.compile(r"<functioncall>\s*\{")
_NAMED_CALL = re.compile(r"\b(?:use|call|invoke|using|calling|invoking)\s+(?:the\s+)?"
                         r"`?([A-Za-z][\w.]*\w|[A-Za-z])", re.I)


def _norm_action(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def react_tool_call(text: str, finish_actions: list[str]) -> str | None:
    """The first ReAct tool call (the ``Action:`` line) in ``text``, or None."""
    finish = {_norm_action(a) for a in finish_actions}
    for m in _ACTION_LINE.finditer(text):
        rest = m.group(1).strip()
        name = rest.split()[0].strip("`'\"[](){}<>.,;:")
        if name and not finish & {_norm_action(name), _norm_action(rest)}:
            return m.group(0).strip()
    return None


def _json_objects(text: str) -> Iterator[Any]:
    dec = json.JSONDecoder()
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        yield obj
        pos = text.find("{", end)


def _is_call_object(obj: Any, finish: set[str]) -> bool:
    if isinstance(obj, dict):
        for nk in _NAME_KEYS if "description" not in obj else ():   # a schema is no call
            name = obj.get(nk)
            if isinstance(name, str) and name.strip() and _norm_action(name) not in finish \
                    and any(ak in obj for ak in _ARG_KEYS):
                return True
        return any(_is_call_object(v, finish) for v in obj.values())
    if isinstance(obj, list):
        return any(_is_call_object(v, finish) for v in obj)
    return False


def general_tool_call(text: str, tools: list[str], finish_actions: list[str]) -> str | None:
    """The first non-ReAct function call in ``text`` (``<functioncall>`` JSON, a call object in
    JSON, or a named call of a function identifier in prose), or None."""
    m = _FUNCTIONCALL_JSON.search(text)
    if m:
        return m.group(0)
    finish = {_norm_action(a) for a in finish_actions}
    for obj in _json_objects(text):
        if _is_call_object(obj, finish):
            return json.dumps(obj, ensure_ascii=False, sort_keys=True)[:200]
    listed = {t.lower() for t in tools}
    prose = "\n".join(line for line in text.split("\n") if not _REACT_LINE.match(line))
    for m in _NAMED_CALL.finditer(prose):
        ident = m.group(1)
        if ident.lower() in listed or "_" in ident:
            return m.group(0)
    return None


# ============================================================================================
# Scoring
# ============================================================================================

def h_score(h_react: float, h_general: float) -> float:
    """H_Score = 0.5·((100 − H_ReAct) + (100 − H_General)), all in percent (Eq. (1), typo fixed)."""
    return 0.5 * ((100.0 - h_react) + (100.0 - h_general))


def score(items: list[dict], predictions: dict[str, Any], options: dict | None = None
          ) -> tuple[dict, list[dict]]:
    o = _opts(options)
    finish = o["finish_actions"]
    rows = []
    n_general = n_tool = n_with_tools = n_gen_tools = hr = hg = calls = 0
    for item in items:
        pred = prediction_text(predictions[item["id"]])
        kind = item["reference"]["type"]
        if kind not in ("tool", "general"):
            raise ValueError(f"item {item['id']}: unknown Agent-H type {kind!r}")
        meta = item.get("meta") or {}
        tools = list(meta.get("tools") or [])
        has_tools = bool(meta.get("has_tools", bool(tools)))
        n_with_tools += has_tools
        rc = react_tool_call(pred, finish)
        gc = general_tool_call(pred, tools, finish)
        row = {"id": item["id"], "type": kind, "has_tools": has_tools,
               "react_call": rc, "general_call": gc}
        if kind == "general":
            n_general += 1
            n_gen_tools += has_tools
            hr += rc is not None
            hg += gc is not None
            row["react_hallucination"] = rc is not None
            row["general_hallucination"] = gc is not None
        else:
            n_tool += 1
            calls += rc is not None or gc is not None
            row["tool_call_detected"] = rc is not None or gc is not None
        rows.append(row)
    metrics: dict[str, float | None] = {
        "n": float(len(items)), "n_general": float(n_general), "n_tool": float(n_tool),
        "n_with_tools": float(n_with_tools), "n_general_with_tools": float(n_gen_tools),
        "n_general_no_tools": float(n_general - n_gen_tools)}
    if n_general:
        metrics["h_react"] = 100.0 * hr / n_general
        metrics["h_general"] = 100.0 * hg / n_general
        metrics["h_score"] = h_score(metrics["h_react"], metrics["h_general"])
    else:
        metrics.update(h_react=None, h_general=None, h_score=None)
    metrics["tool_call_rate"] = 100.0 * calls / n_tool if n_tool else None
    return metrics, rows
