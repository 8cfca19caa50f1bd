"""Decontamination: word n-gram overlap between the training data and every evaluation set.

For each evaluation item, the text that identifies it (the last user turn, i.e. the query, and its
reference answer where it is a string) is split into lower-cased word n-grams; the item counts as
contaminated if any of its n-grams occurs in a training turn. System prompts are excluded on both
sides: tool lists and format instructions are shared by design and would flag every item.
The default n = 13 follows common practice (GPT-3 / open-instruct style decontamination).
"""
from __future__ import annotations

import hashlib
import re

from .io import DataError

_WORD = re.compile(r"\w+")


def ngrams(text: str, n: int) -> list[bytes]:
    """Stable 8-byte digests of the word n-grams of ``text``, in text order (no salted ``hash``)."""
    words = _WORD.findall(text.lower())
    return [hashlib.blake2b(" ".join(words[i:i + n]).encode(), digest_size=8).digest()
            for i in range(len(words) - n + 1)]


def item_text(item: dict) -> str:
    users = [m["content"] for m in item.get("messages", []) if m["role"] == "user"]
    text = users[-1] if users else ""
    ref = item.get("reference")
    if isinstance(ref, str):
        text += "\n" + ref
    elif isinstance(ref, dict):
        for key in ("answer", "question"):
            if isinstance(ref.get(key), str):
                text += "\n" + ref[key]
    return text


def check(train_records: dict[str, list[dict]], eval_items: dict[str, list[dict]], n: int = 13,
          max_examples: int = 5) -> dict:
    index: dict[bytes, str] = {}
    for source, recs in sorted(train_records.items()):
        for r in recs:
            for t in r["turns"]:
                if t["role"] != "system":
                    for g in ngrams(t["content"], n):
                        index.setdefault(g, f"{source}:{r['id']}")
    report = {"ngram": n, "benchmarks": {}}
    for bench, items in sorted(eval_items.items()):
        hits = []
        for it in items:
            grams = ngrams(item_text(it), n)
            found = next((index[g] for g in grams if g in index), None)
            if found:
                hits.append({"item": it["id"], "train": found})
        report["benchmarks"][bench] = {"items": len(items), "contaminated": len(hits),
                                       "ratio": round(len(hits) / len(items), 6) if items else 0.0,
                                       "examples": hits[:max_examples]}
    return report


def enforce(report: dict, action: str, max_ratio: float, path: str) -> list[str]:
    """Return warning lines; raise DataError when ``action == 'fail'`` and a ratio is too high."""
    bad = [f"{b}: {v['contaminated']}/{v['items']} items share a {report['ngram']}-gram with the training data"
           for b, v in report["benchmarks"].items() if v["ratio"] > max_ratio]
    if bad and action == "fail":
        raise DataError(path, "evaluation sets overlap the training data: " + "; ".join(bad))
    return bad


def render_md(report: dict, warnings: list[str]) -> str:
    lines = ["# Decontamination report", "",
             f"Word {report['ngram']}-gram overlap between training turns (all converted Agent-FLAN files and "
             "the general-chat data, system prompts excluded) and each evaluation item's query and reference.", "",
             "| benchmark | items | contaminated | ratio |", "| --- | ---: | ---: | ---: |"]
    for b, v in report["benchmarks"].items():
        lines.append(f"| {b} | {v['items']} | {v['contaminated']} | {v['ratio']:.4f} |")
    lines += ["", "## Status", ""] + ([f"- WARNING {w}" for w in warnings] or ["- no overlap above the threshold"])
    for b, v in report["benchmarks"].items():
        if v["examples"]:
            lines += ["", f"### {b}: first overlapping items", ""]
            lines += [f"- `{e['item']}` ~ `{e['train']}`" for e in v["examples"]]
    return "\n".join(lines) + "\n"
