"""Text helpers shared by the scorers: normalisation, bag-of-words cosine, JSON-ish parsing.

Nothing here downloads anything or imports torch. The one place where the original harnesses use
a neural model (T-Eval's sentence-embedding cosine with ``all-mpnet-base-v2``) is computed by
:mod:`agentflan.evaluation.embeddings` (``similarity: "embedding"``); :func:`bow_cosine`, a
deterministic bag-of-words cosine, is only an explicit, labelled fallback (``similarity: "bow"``)
and the retrieval score of the HotpotQA stand-in search.
"""
from __future__ import annotations

import ast
import json
import math
import re
import string
from collections import Counter
from typing import Any, Callable, Iterable

# --------------------------------------------------------------------------------------------
# Similarity
# --------------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def word_tokens(text: Any) -> list[str]:
    """Lower-cased word tokens: maximal runs of letters/digits.

    Underscores, dots and all other punctuation split words, so an API name such as
    ``AirbnbSearch.get_property_details`` becomes ``airbnbsearch get property details`` (closer
    to what a sub-word sentence encoder sees than one opaque token).
    """
    return _WORD.findall(str(text).lower())


def bow_cosine(a: Any, b: Any) -> float:
    """Cosine of the two term-frequency vectors of :func:`word_tokens`, clipped to [0, 1].

    Two texts without any word token have similarity 0 (an empty answer never matches), except
    that two *identical* strings always score 1.
    """
    a, b = str(a), str(b)
    if a == b:
        return 1.0
    ca, cb = Counter(word_tokens(a)), Counter(word_tokens(b))
    if not ca or not cb:
        return 0.0
    dot = sum(v * cb.get(k, 0) for k, v in ca.items())
    na = math.sqrt(sum(v * v for v in ca.values()))
    nb = math.sqrt(sum(v * v for v in cb.values()))
    return max(0.0, min(1.0, dot / (na * nb)))


# Values of T-Eval's ``similarity`` option: "embedding" = sentence-embedding cosine as T-Eval
# (agentflan.evaluation.embeddings, needs a model); "bow" = the labelled bag-of-words fallback.
SIMILARITY_KINDS = ("embedding", "bow")

# Model-free similarities by name (the embedding cosine needs a model: see embeddings.embedder_for).
SIMILARITIES: dict[str, Callable[[Any, Any], float]] = {"bow": bow_cosine}


def similarity_fn(name: str = "bow") -> Callable[[Any, Any], float]:
    """A model-free text-similarity function by name (only ``"bow"``, the labelled fallback).

    T-Eval's sentence-embedding cosine is :class:`agentflan.evaluation.embeddings.Embedder`
    (selected in the T-Eval scorer by ``similarity: "embedding"``).
    """
    try:
        return SIMILARITIES[name]
    except KeyError:
        raise ValueError(f"unknown similarity {name!r}; available: {sorted(SIMILARITIES)}") from None


# --------------------------------------------------------------------------------------------
# JSON-ish parsing (T-Eval's format_load behaviour)
# --------------------------------------------------------------------------------------------

class ParseError(ValueError):
    pass


def parse_jsonish(raw: Any, start: str = "", end: str = "") -> Any:
    """Parse a model answer the way T-Eval's ``format_load`` does.

    * non-strings are returned unchanged (already parsed);
    * if the text contains a ```` ```json ```` fence, everything before (and the fence) is dropped
      and surrounding back-ticks are stripped;
    * if ``start`` is given, the text is cut from its first occurrence; if ``end`` is given, up to
      and including its last occurrence;
    * then a Python literal, strict JSON, and JSON with single quotes swapped for double quotes
      are tried in this order. Failure raises :class:`ParseError`.
    """
    if not isinstance(raw, str):
        return raw
    text = raw
    if "```json" in text:
        text = text[text.find("```json") + len("```json"):]
        text = text.strip("`")
    if start:
        # as upstream: when ``start`` is absent, find() is -1 and only the last character remains
        text = text[text.find(start):]
    if end:
        text = text[:text.rfind(end) + len(end)]
    for attempt in (lambda t: ast.literal_eval(t), json.loads, lambda t: json.loads(t.replace("'", '"'))):
        try:
            return attempt(text)
        except Exception:  # noqa: BLE001 - every failure means "try the next parser"
            continue
    raise ParseError(f"cannot parse {raw[:80]!r}")


def try_parse_jsonish(raw: Any, start: str = "", end: str = "", default: Any = None) -> Any:
    try:
        return parse_jsonish(raw, start, end)
    except ParseError:
        return default


def first_json_object(text: str) -> Any:
    """The first balanced JSON/Python-literal object or array in ``text`` (tolerant), else None."""
    for i, ch in enumerate(text):
        if ch not in "{[":
            continue
        close = "}" if ch == "{" else "]"
        depth = 0
        in_str: str | None = None
        esc = False
        for j in range(i, len(text)):
            c = text[j]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == in_str:
                    in_str = None
                continue
            if c in "\"'":
                in_str = c
            elif c == ch:
                depth += 1
            elif c == close:
                depth -= 1
                if depth == 0:
                    parsed = try_parse_jsonish(text[i:j + 1])
                    if parsed is not None:
                        return parsed
                    break
        # unbalanced or unparsable from this opening bracket: try the next one
    return None


# --------------------------------------------------------------------------------------------
# Answer normalisation (SQuAD/HotpotQA official evaluation, as used by AgentTuning)
# --------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: Any) -> str:
    """Lower-case, remove punctuation, remove articles, collapse white space."""
    s = str(s).lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def f1_score(prediction: Any, gold: Any) -> float:
    """Token F1 after :func:`normalize_answer`, with HotpotQA's yes/no/noanswer rule.

    If either normalised side is ``yes``, ``no`` or ``noanswer`` and the two differ, F1 is 0.
    """
    p, g = normalize_answer(prediction), normalize_answer(gold)
    special = {"yes", "no", "noanswer"}
    if (p in special or g in special) and p != g:
        return 0.0
    pt, gt = p.split(), g.split()
    common = Counter(pt) & Counter(gt)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pt)
    recall = same / len(gt)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: Any, gold: Any) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


# --------------------------------------------------------------------------------------------
# Small numeric helpers
# --------------------------------------------------------------------------------------------

def prediction_text(row: Any) -> str:
    """The prediction text of a prediction row (``{"id", "prediction", ...}``) or a bare string.

    ``None`` (a failed generation) counts as the empty string.
    """
    if isinstance(row, dict):
        row = row.get("prediction")
    return "" if row is None else str(row)


def mean(values: Iterable[float]) -> float | None:
    values = list(values)
    if not values:
        return None
    return sum(values) / len(values)


def pct(value: float | None) -> float | None:
    """Fraction -> percent (None stays None)."""
    return None if value is None else 100.0 * value


def keyword_pattern(keywords: Iterable[str], case_sensitive: bool = False) -> re.Pattern | None:
    """A regex matching any keyword as a phrase not glued to a preceding/following word char.

    The boundary check applies only on the sides where the keyword itself starts/ends with a
    word character (so ``Action:`` does not match ``Transaction:``, and ``<functioncall>`` still
    matches anywhere).
    """
    parts = []
    for kw in keywords:
        if not kw:
            continue
        pre = r"(?<!\w)" if re.match(r"\w", kw[0]) else ""
        post = r"(?!\w)" if re.match(r"\w", kw[-1]) else ""
        parts.append(pre + re.escape(kw) + post)
    if not parts:
        return None
    return re.compile("|".join(parts), 0 if case_sensitive else re.IGNORECASE)


def to_plain(obj: Any) -> Any:
    """numpy arrays / scalars (from parquet) -> plain Python lists / scalars."""
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return to_plain(obj.tolist())
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def iter_rows(path):
    """``(1-based row, record)`` of a JSONL or parquet file (HF layouts), parquet values made plain."""
    from pathlib import Path

    from ..io import DataError, iter_jsonl
    path = Path(path)
    if path.suffix == ".parquet":
        import pandas as pd
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001
            raise DataError(path, f"cannot read parquet file ({exc})") from None
        for i, rec in enumerate(df.to_dict(orient="records")):
            yield i + 1, to_plain(rec)
    else:
        yield from iter_jsonl(path)
