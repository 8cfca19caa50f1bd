"""Agent-H (hallucination) built from ``glaiveai/glaive-function-calling-v2``.

The paper's benchmark (experiments.md §3.4) is 1,845 samples of glaive-function-calling-v2 whose
model outputs are classified by keyword detection. Neither the selection nor the keyword lists were
released, so both are configurable and **our choices** are documented here:

* **Selection**: ``max_samples`` records drawn uniformly with ``seed`` from all usable records
  (paper preset: 1,845); the items keep file order. ``None`` = all usable records.
* **Ground-truth type** comes from the *first* assistant turn after the first user turn:
  ``tool`` if it starts with ``<functioncall>``, else ``general`` (covers systems without
  functions and refusals under a tool system prompt).
* **Prompt** (the paper's case-study figure): system = ``prompts.render_tool_system(tools,
  react=True)`` when the glaive system lists functions, else ``prompts.NO_TOOL_SYSTEM``; user =
  the first USER text.
* **Keywords** (defaults, our choice): ReAct-format markers ``Thought:``, ``Action:``,
  ``Action Input:`` (case-sensitive by default); general-format markers ``I will use``,
  ``I need to call``, ``I will call``, ``call the``, ``<functioncall>`` (case-insensitive by
  default). A keyword matches as a phrase: it may not be glued to a word character on a side where
  the keyword itself starts/ends with one.

Metrics (percent): ``h_react`` / ``h_general`` = number of general-response samples whose
output contains a ReAct / general marker, divided by the number of general-response samples;
``h_score = 0.5·((100 − h_react) + (100 − h_general))`` — the paper's Eq. (1) prints H_ReAct in
both terms, a typo (experiments.md §3.4: the text and all other numbers imply H_General in the
second term). Also ``n_general``, ``n_tool``, and, as an extra *not in the paper*,
``tool_call_rate``: the share of tool-needed samples whose output contains any marker (the paper's
metric never penalises a model that does not call tools).
"""
from __future__ import annotations

import ast
import json
import logging
import random
import re
from pathlib import Path
from typing import Any

from .. import prompts
from ..io import DataError, read_json
from .text import keyword_pattern, prediction_text

log = logging.getLogger(__name__)

REPO = "glaiveai/glaive-function-calling-v2"
FILE = "glaive-function-calling-v2.json"

DEFAULT_REACT_KEYWORDS = [prompts.THOUGHT, prompts.ACTION, prompts.ACTION_INPUT]
DEFAULT_GENERAL_KEYWORDS = ["I will use", "I need to call", "I will call", "call the", "<functioncall>"]

DEFAULTS = {
    "max_samples": None,
    "seed": 0,
    "strict": False,                 # True: an unusable record raises instead of being skipped
    "react_keywords": DEFAULT_REACT_KEYWORDS,
    "general_keywords": DEFAULT_GENERAL_KEYWORDS,
    "react_case_sensitive": True,
    "general_case_sensitive": False,
}

_SPLIT = re.compile(r"\n*(USER|ASSISTANT|FUNCTION RESPONSE):\s*")
_EOT = "<|endoftext|>"
_CALL = "<functioncall>"
_CALL_RE = re.compile(r'^\{\s*"name"\s*:\s*"(?P<name>(?:[^"\\]|\\.)*)"\s*'
                      r'(?:,\s*"arguments"\s*:\s*(?P<args>.*?))?\s*\}\s*$', re.S)


def _opts(options: dict | None) -> dict:
    o = dict(DEFAULTS)
    o.update(options or {})
    return o


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


def record_to_item(rec: Any, index: int, path: Path) -> dict:
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
    system = prompts.render_tool_system(
        [{"name": t["name"], "description": t.get("description", ""),
          "parameters": t.get("parameters") if isinstance(t.get("parameters"), dict) else {}}
         for t in tools], react=True) if tools else prompts.NO_TOOL_SYSTEM
    kind = "tool" if is_tool else "general"
    return {
        "id": f"agenth/{index}",
        "benchmark": "agenth",
        "subset": kind,
        "messages": [{"role": "system", "content": system},
                     {"role": "user", "content": turns[first_user]["content"]}],
        "reference": {"type": kind, "first_assistant": reply["content"], "call": call},
        "meta": {"index": index, "has_tools": bool(tools), "tools": [t["name"] for t in tools]},
    }


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
            usable.append(record_to_item(rec, index, path))
        except DataError:
            raise
        except ValueError as exc:
            if o["strict"]:
                raise DataError(path, f"unusable record: {exc}", record=f"index {index}") from None
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d unusable glaive records (no user/assistant pair or bad schema)",
                    path, skipped)
    limit = o["max_samples"]
    if limit is not None and limit < len(usable):
        if limit < 0:
            raise ValueError("max_samples must be >= 0")
        chosen = sorted(random.Random(o["seed"]).sample(range(len(usable)), limit))
        usable = [usable[i] for i in chosen]
    return usable


# ============================================================================================
# Scoring
# ============================================================================================

def h_score(h_react: float, h_general: float) -> float:
    """H_Score = 0.5·((100 − H_ReAct) + (100 − H_General)), all in percent (Eq. (1), typo fixed)."""
    return 0.5 * ((100.0 - h_react) + (100.0 - h_general))


def score(items: list[dict], predictions: dict[str, Any], options: dict | None = None
          ) -> tuple[dict, list[dict]]:
    o = _opts(options)
    react_re = keyword_pattern(o["react_keywords"], o["react_case_sensitive"])
    general_re = keyword_pattern(o["general_keywords"], o["general_case_sensitive"])
    rows = []
    n_general = n_tool = hr = hg = calls = 0
    for item in items:
        pred = prediction_text(predictions[item["id"]])
        kind = item["reference"]["type"]
        if kind not in ("tool", "general"):
            raise ValueError(f"item {item['id']}: unknown Agent-H type {kind!r}")
        rm = react_re.search(pred) if react_re else None
        gm = general_re.search(pred) if general_re else None
        row = {"id": item["id"], "type": kind,
               "react_match": rm.group(0) if rm else None,
               "general_match": gm.group(0) if gm else None}
        if kind == "general":
            n_general += 1
            hr += bool(rm)
            hg += bool(gm)
            row["react_hallucination"] = bool(rm)
            row["general_hallucination"] = bool(gm)
        else:
            n_tool += 1
            calls += bool(rm or gm)
            row["tool_call_detected"] = bool(rm or gm)
        rows.append(row)
    metrics: dict[str, float | None] = {"n_general": float(n_general), "n_tool": float(n_tool)}
    if n_general:
        metrics["h_react"] = 100.0 * hr / n_general
        metrics["h_general"] = 100.0 * hg / n_general
        metrics["h_score"] = h_score(metrics["h_react"], metrics["h_general"])
    else:
        metrics.update(h_react=None, h_general=None, h_score=None)
    metrics["tool_call_rate"] = 100.0 * calls / n_tool if n_tool else None
    return metrics, rows
