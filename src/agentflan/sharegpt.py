"""General-chat data: ShareGPT (``anon8231489123/ShareGPT_Vicuna_unfiltered``) -> canonical records.

Input (``ShareGPT_V3_unfiltered_cleaned_split.json``, one JSON array; shared/paper/data_formats.md §5)::

    [{"id": "<id>", "conversations": [{"from": "human"|"gpt", "value": str}, ...]}, ...]

Output: canonical records (:mod:`agentflan.records`)::

    {"id": <original id>, "source": "sharegpt",
     "turns": [{"role": "user"|"assistant", "content": str, "train": bool, "capability": None}]}

Rules, applied in this order (each drop is counted in the stats dict):

1. Structure is checked strictly: the top level must be an array, each record an object with a
   string ``id`` and a ``conversations`` list of objects with string ``from`` and ``value``.
   Anything else raises :class:`~agentflan.io.DataError` naming the file and the record index.
2. ``human`` -> ``user`` (``train: False``); ``gpt`` -> ``assistant`` (``train: True``). A record
   with any other ``from`` value (e.g. ``system``, ``bing``) is dropped (``dropped_unknown_role``;
   the values are counted in ``unknown_roles``).
3. Leading ``gpt`` turns are removed (chats chopped by the splitter start mid-answer), and so are
   trailing ``human`` turns (no answer to learn from). A record left with no assistant turn is
   dropped (``dropped_empty``; this includes empty ``conversations``).
4. English filter (``english_only=True``): a deterministic script heuristic, not language
   identification. Over all turns of the record, let *letters* be the Unicode word characters that
   are not digits or ``_``; the record is kept if the share of ASCII letters ``[A-Za-z]`` among
   them is at least ``min_ascii_letter_share`` (0.9), or if it has no letters at all. This removes
   Chinese/Japanese/Korean/Cyrillic/... chats but keeps Latin-script languages (French, German,
   Spanish with few accents). AgentTuning reports using English ShareGPT only; the exact filter
   (and file) Agent-FLAN used is not published (issue InternLM/Agent-FLAN#7), so this is our
   documented substitute, not the authors' filter.
5. Duplicate ids (after filtering) get a deterministic ``#<k>`` suffix (k = 2, 3, ... in file
   order) so that ids stay unique downstream; counted in ``duplicate_ids``.
6. ``max_conversations``: a seeded (``random.Random(seed)``) subset of that size, kept in the
   original file order; the same file, options and seed always give the same subset.
"""
from __future__ import annotations

import logging
import random
import re
from collections import Counter
from pathlib import Path

from .io import DataError, read_json

log = logging.getLogger(__name__)

ROLE_MAP = {"human": "user", "gpt": "assistant"}
SOURCE = "sharegpt"

_ASCII_LETTER = re.compile(r"[A-Za-z]")
_NON_ASCII_LETTER = re.compile(r"[^\W\d_A-Za-z]")


def ascii_letter_share(text: str) -> float | None:
    """Share of ASCII letters among all letters of ``text``; ``None`` if it has no letters."""
    n_ascii = len(_ASCII_LETTER.findall(text))
    n_other = len(_NON_ASCII_LETTER.findall(text))
    total = n_ascii + n_other
    return None if total == 0 else n_ascii / total


def is_english(texts: list[str], min_ascii_letter_share: float = 0.9) -> bool:
    share = ascii_letter_share("\n".join(texts))
    return share is None or share >= min_ascii_letter_share


def _check_record(obj, i: int, path: Path) -> tuple[str, list[dict]]:
    if not isinstance(obj, dict):
        raise DataError(path, f"record index {i} is a {type(obj).__name__}, expected an object")
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid:
        raise DataError(path, f"record index {i} has no string 'id'")
    conv = obj.get("conversations")
    if not isinstance(conv, list):
        raise DataError(path, f"record index {i} has no 'conversations' list", record=rid)
    for j, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) \
                or not isinstance(turn.get("value"), str):
            raise DataError(path, f"record index {i}, turn {j}: expected "
                                  "{'from': str, 'value': str}", record=rid)
    return rid, conv


def load_sharegpt_with_stats(path: Path, *, english_only: bool = True,
                             max_conversations: int | None = None, seed: int = 0,
                             min_ascii_letter_share: float = 0.9) -> tuple[list[dict], dict]:
    """Load, clean, filter and subsample ShareGPT; return ``(records, stats)`` (see module doc)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(path, f"top level is a {type(data).__name__}, expected a JSON array "
                              "of {'id', 'conversations'} records")
    if max_conversations is not None and max_conversations < 0:
        raise ValueError("max_conversations must be >= 0 or None")

    stats = {"file": str(path), "records_in": len(data), "dropped_unknown_role": 0,
             "unknown_roles": Counter(), "leading_gpt_turns_dropped": 0,
             "trailing_human_turns_dropped": 0, "dropped_empty": 0, "dropped_non_english": 0,
             "duplicate_ids": 0, "subsampled_out": 0, "kept": 0}
    kept: list[dict] = []
    seen_ids: Counter = Counter()
    for i, obj in enumerate(data):
        rid, conv = _check_record(obj, i, path)
        unknown = [t["from"] for t in conv if t["from"] not in ROLE_MAP]
        if unknown:
            stats["dropped_unknown_role"] += 1
            stats["unknown_roles"].update(unknown)
            continue
        start = 0
        while start < len(conv) and conv[start]["from"] == "gpt":
            start += 1
        end = len(conv)
        while end > start and conv[end - 1]["from"] == "human":
            end -= 1
        stats["leading_gpt_turns_dropped"] += start
        stats["trailing_human_turns_dropped"] += len(conv) - end if end > start else 0
        conv = conv[start:end]
        if not any(t["from"] == "gpt" for t in conv):
            stats["dropped_empty"] += 1
            continue
        if english_only and not is_english([t["value"] for t in conv], min_ascii_letter_share):
            stats["dropped_non_english"] += 1
            continue
        seen_ids[rid] += 1
        if seen_ids[rid] > 1:
            stats["duplicate_ids"] += 1
            rid = f"{rid}#{seen_ids[rid]}"
        turns = [{"role": ROLE_MAP[t["from"]], "content": t["value"],
                  "train": t["from"] == "gpt", "capability": None} for t in conv]
        kept.append({"id": rid, "source": SOURCE, "turns": turns})

    if max_conversations is not None and len(kept) > max_conversations:
        chosen = sorted(random.Random(seed).sample(range(len(kept)), max_conversations))
        stats["subsampled_out"] = len(kept) - max_conversations
        kept = [kept[k] for k in chosen]
    stats["kept"] = len(kept)
    stats["unknown_roles"] = dict(sorted(stats["unknown_roles"].items()))
    log.info("sharegpt %s: %d in, %d kept (%s)", path, stats["records_in"], stats["kept"],
             {k: v for k, v in stats.items() if k not in ("file", "records_in", "kept") and v})
    return kept, stats


def load_sharegpt(path: Path, *, english_only: bool = True, max_conversations: int | None = None,
                  seed: int = 0) -> list[dict]:
    """Canonical records of a ShareGPT file (see :func:`load_sharegpt_with_stats`)."""
    return load_sharegpt_with_stats(path, english_only=english_only,
                                    max_conversations=max_conversations, seed=seed)[0]
