"""Capability decomposition (paper §4.2, experiments.md §3.3 (b)).

Each trained assistant turn of the chat-aligned ("tflan") data gets exactly one capability:

* ``retrieval``     the turn names the API to call: its stripped text is one identifier
                    (``get_weather``, ``Tool.api``), optionally in back-ticks or quotes;
* ``understanding`` the turn fills the selected API's parameters: it is a JSON / Python-dict
                    object, or it carries a fenced code block (the call in some syntax);
* ``instruction``   the turn answers a format-following request: every trained turn of the
                    ``toolbench_instruct_j1s1_3k`` file (single-turn, output format given in the
                    system prompt);
* ``reasoning``     everything else: the per-step thought and the final natural-language answer.

Turns of the ReAct-format files and of the negative samples are not decomposed (capability
``None``, reported as ``other``): the paper applies the decomposition to chat-aligned data only.
The rule is ours (the paper does not publish its tagger); tests pin its behaviour.
"""
from __future__ import annotations

import ast
import json
import re

_IDENT = re.compile(r"^[`'\"]?[A-Za-z_][\w.\-]*[`'\"]?\.?$")
_FENCE = re.compile(r"```")

CHAT_SOURCES = ("agent_instruct_tflan", "toolbench_tflan_60p_r10r5u7", "toolbench_tflan_cot_30p")
INSTRUCT_SOURCES = ("toolbench_instruct_j1s1_3k",)


def _is_object(text: str) -> bool:
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        pass
    try:
        return isinstance(ast.literal_eval(text), dict)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return False


def tag_turn(content: str) -> str:
    """Capability of one chat-aligned assistant turn."""
    text = content.strip()
    if _IDENT.match(text) and len(text) <= 80:
        return "retrieval"
    if _is_object(text) or _FENCE.search(text):
        return "understanding"
    return "reasoning"


def source_family(source: str) -> str:
    """Map a (possibly prefixed) file stem to its family: chat / instruction / react / negative / general."""
    stem = source[5:] if source.startswith("data_") else source
    if stem in CHAT_SOURCES:
        return "chat"
    if stem in INSTRUCT_SOURCES:
        return "instruction"
    if stem == "toolbench_negative":
        return "negative"
    if stem == "sharegpt":
        return "general"
    return "react"


def tag_record(record: dict) -> dict:
    """Return ``record`` with ``capability`` set on every trained assistant turn (in place)."""
    family = source_family(record["source"])
    for turn in record["turns"]:
        if not (turn["role"] == "assistant" and turn["train"]):
            turn["capability"] = None
        elif family == "chat":
            turn["capability"] = tag_turn(turn["content"])
        elif family == "instruction":
            turn["capability"] = "instruction"
        else:
            turn["capability"] = None
    return record
