"""The canonical record format and the one loss policy used everywhere.

Released Agent-FLAN record (one JSON line)::

    {"id": "toolbench_react_10p_0",
     "conversation": [{"role": "system"|"user"|"assistant", "content": str, "loss": bool?}, ...]}

Canonical record (what every stage after ``convert`` reads)::

    {"id": str, "source": str,                      # source = file stem, e.g. "toolbench_react_10p"
     "turns": [{"role": str, "content": str, "train": bool,
                "capability": str | None}, ...]}    # capability: set by agentflan.capability

Loss policy (maintainer, InternLM/Agent-FLAN issue #4): an assistant turn is trained unless its
``loss`` is ``false``; a missing or ``null`` ``loss`` on an assistant turn means *trained*.
System and user turns are never trained, whatever their ``loss`` says. A trailing assistant turn
with ``loss: false`` stays in the prompt but contributes no loss.

Records that cannot be trained as released (:func:`skip_reason`) are skipped by ``convert``,
counted and listed by id in the data card (data/README.md, "Bad input"):

* ``no_assistant_turn``: the conversation has no assistant turn at all;
* ``no_trained_turn``: every assistant turn has ``loss: false`` (no token would be trained);
* ``opens_with_assistant``: the first turn is an assistant turn (an answer to no prompt; a
  chopped conversation).
"""
from __future__ import annotations

from typing import Any

from .io import DataError

ROLES = ("system", "user", "assistant")
CAPABILITIES = ("reasoning", "retrieval", "understanding", "instruction")


def turn_is_trained(turn: dict, *, path: str = "<memory>", line: int | None = None,
                    record: str | None = None) -> bool:
    """The loss policy. Raises :class:`DataError` on a non-boolean ``loss`` value."""
    loss = turn.get("loss", None)
    if loss is not None and not isinstance(loss, bool):
        raise DataError(path, f"turn has non-boolean 'loss' value {loss!r}", line=line, record=record)
    if turn.get("role") != "assistant":
        return False
    return loss is not False


SKIP_REASONS = {
    "no_assistant_turn": "no assistant turn",
    "no_trained_turn": "every assistant turn has loss: false",
    "opens_with_assistant": "the conversation opens with an assistant turn",
}


def skip_reason(rec: dict) -> str | None:
    """Why a canonical record cannot be trained as released (a key of :data:`SKIP_REASONS`), or
    ``None`` if it can."""
    turns = rec["turns"]
    if not any(t["role"] == "assistant" for t in turns):
        return "no_assistant_turn"
    if not any(t["train"] for t in turns):
        return "no_trained_turn"
    if turns[0]["role"] == "assistant":
        return "opens_with_assistant"
    return None


def canonical_from_released(obj: Any, *, source: str, path: str = "<memory>",
                            line: int | None = None) -> dict:
    """Validate one released Agent-FLAN record and return its canonical form."""
    if not isinstance(obj, dict):
        raise DataError(path, f"record is a JSON {_json_type(obj)}, expected an object "
                              "(one {\"id\", \"conversation\"} record per line)", line=line)
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid:
        raise DataError(path, "record has no string 'id'", line=line)
    conv = obj.get("conversation")
    if conv is None and isinstance(obj.get("conversations"), list):
        raise DataError(path, "record has 'conversations' (AgentInstruct/ShareGPT layout), expected "
                              "'conversation' with role/content turns", line=line, record=rid)
    if not isinstance(conv, list) or not conv:
        raise DataError(path, "record has no non-empty 'conversation' list", line=line, record=rid)
    turns = []
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            raise DataError(path, f"turn {i} is not an object", line=line, record=rid)
        role = turn.get("role")
        if role not in ROLES:
            raise DataError(path, f"turn {i} has unknown role {role!r} (expected one of {ROLES})",
                            line=line, record=rid)
        content = turn.get("content")
        if not isinstance(content, str):
            raise DataError(path, f"turn {i} has non-string 'content'", line=line, record=rid)
        trained = turn_is_trained(turn, path=path, line=line, record=rid)
        turns.append({"role": role, "content": content, "train": trained, "capability": None})
    return {"id": rid, "source": source, "turns": turns}


def _json_type(obj: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(obj), type(obj).__name__)


def validate_canonical(rec: Any, *, path: str = "<memory>", line: int | None = None) -> dict:
    """Check a canonical record (as read back from a converted/ablation JSONL file)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
        raise DataError(path, "not a canonical record (missing 'id')", line=line)
    turns = rec.get("turns")
    if not isinstance(turns, list) or not turns:
        raise DataError(path, "canonical record has no turns", line=line, record=rec["id"])
    for i, t in enumerate(turns):
        if t.get("role") not in ROLES or not isinstance(t.get("content"), str) \
                or not isinstance(t.get("train"), bool):
            raise DataError(path, f"turn {i} is malformed", line=line, record=rec["id"])
        if t["train"] and t["role"] != "assistant":
            raise DataError(path, f"turn {i} ({t['role']}) is marked trained", line=line, record=rec["id"])
        cap = t.get("capability")
        if cap is not None and cap not in CAPABILITIES:
            raise DataError(path, f"turn {i} has unknown capability {cap!r}", line=line, record=rec["id"])
    return rec


def to_released(rec: dict) -> dict:
    """Inverse of :func:`canonical_from_released` (used by the miniature and by tests)."""
    conv = []
    for t in rec["turns"]:
        turn = {"role": t["role"], "content": t["content"]}
        if t["role"] == "assistant":
            turn["loss"] = bool(t["train"])
        conv.append(turn)
    return {"id": rec["id"], "conversation": conv}
