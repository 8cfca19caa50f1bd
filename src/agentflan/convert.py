"""Released Agent-FLAN files -> canonical records, and the generated data card.

``convert_file`` reads a released JSONL file line by line (never through ``datasets`` schema
inference, which would turn a missing ``loss`` into ``None``), validates every record, applies the
loss policy of :mod:`agentflan.records`, tags capabilities (:mod:`agentflan.capability`) and the
AgentInstruct task, and writes the canonical file atomically: a bad record aborts the conversion
with an error naming the file and the line, and no output is left behind.
"""
from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path

from .capability import source_family, tag_record
from .io import iter_jsonl, write_json, write_jsonl, write_text
from .records import canonical_from_released

# Markers of the six AgentInstruct tasks in the released text (data_formats.md §1.3, §2).
TASK_MARKERS = (
    ("os", re.compile(r"The output of the OS|Act: bash|Act: answer\(|Act: finish")),
    ("db", re.compile(r"```sql|Action: Operation|Action: Answer")),
    ("kg", re.compile(r"get_relations\(|get_neighbors\(|intersection\(|argmax\(|argmin\(")),
    ("mind2web", re.compile(r"Action: (?:CLICK|TYPE|SELECT)|Answer: [A-F]\.")),
    ("webshop", re.compile(r"search\[|click\[")),
    ("alfworld", re.compile(r"\bgo to\b|\btake\b.*\bfrom\b|You are in the middle of a room")),
)


def infer_task(record: dict) -> str:
    """AgentInstruct task of a record (``toolbench`` / ``general`` for the other families)."""
    family = source_family(record["source"])
    if family == "general":
        return "general"
    if not record["source"].replace("data_", "", 1).startswith("agent_instruct"):
        return "toolbench"
    text = "\n".join(t["content"] for t in record["turns"])
    for task, pattern in TASK_MARKERS:
        if pattern.search(text):
            return task
    return "unknown"


def convert_file(src: Path, dst: Path, stem: str) -> dict:
    """Convert one released file; returns per-file counts for the data card."""
    records = []
    for line, obj in iter_jsonl(src):
        rec = canonical_from_released(obj, source=stem, path=str(src), line=line)
        tag_record(rec)
        rec["task"] = infer_task(rec)
        records.append(rec)
    write_jsonl(dst, records)
    return file_stats(records)


def file_stats(records: list[dict]) -> dict:
    roles = Counter(t["role"] for r in records for t in r["turns"])
    loss_false = sum(1 for r in records for t in r["turns"] if t["role"] == "assistant" and not t["train"])
    ends_false = [r["id"] for r in records
                  if r["turns"][-1]["role"] == "assistant" and not r["turns"][-1]["train"]]
    caps = Counter((t["capability"] or "other") for r in records for t in r["turns"] if t["train"])
    tasks = Counter(r.get("task", "unknown") for r in records)
    starts_system = sum(1 for r in records if r["turns"][0]["role"] == "system")
    return {
        "rows": len(records),
        "turns": sum(len(r["turns"]) for r in records),
        "roles": dict(sorted(roles.items())),
        "loss_false": loss_false,
        "ends_on_loss_false": len(ends_false),
        "ends_on_loss_false_ids": ends_false[:20],
        "starts_with_system": starts_system,
        "trained_turns_by_capability": dict(sorted(caps.items())),
        "tasks": dict(sorted(tasks.items())),
    }


def token_stats(records: list[dict], seg_tok) -> dict:
    lengths, trained = [], 0
    for r in records:
        enc = seg_tok.encode_record(r)
        lengths.append(len(enc))
        trained += sum(1 for x in enc.labels if x != -100)
    if not lengths:
        return {"tokens_total": 0, "tokens_trained": 0}
    qs = statistics.quantiles(lengths, n=20) if len(lengths) > 1 else [lengths[0]] * 19
    return {"tokens_total": sum(lengths), "tokens_trained": trained,
            "length_mean": round(statistics.fmean(lengths), 2), "length_median": statistics.median(lengths),
            "length_p95": round(qs[18], 2), "length_max": max(lengths)}


def build_card(converted: dict[str, list[dict]], seg_tok, max_length: int, out_json: Path,
               out_md: Path, provenance: dict) -> dict:
    """Data card: per-file rows, roles, turns, loss:false counts, samples ending on loss:false,
    capability counts, tasks and token-length statistics (with the run's tokenizer)."""
    files = {}
    for stem in sorted(converted):
        recs = converted[stem]
        st = file_stats(recs)
        st.update(token_stats(recs, seg_tok))
        st["over_max_length"] = sum(1 for r in recs if len(seg_tok.encode_record(r)) > max_length)
        files[stem] = st
    card = {"files": files, "max_length": max_length, "provenance": provenance,
            "total_rows": sum(f["rows"] for f in files.values())}
    write_json(out_json, card)
    write_text(out_md, render_card_md(card))
    return card


def render_card_md(card: dict) -> str:
    lines = ["# Data card", "",
             f"Source: {card['provenance'].get('description', '')}", "",
             f"Total rows: {card['total_rows']}; max training length {card['max_length']} tokens.", "",
             "| file | rows | turns | system/user/assistant turns | assistant loss:false | ends on loss:false "
             "| tokens (total / trained) | length mean / p95 / max | over max length |",
             "| --- | ---: | ---: | --- | ---: | ---: | --- | --- | ---: |"]
    for stem, f in card["files"].items():
        roles = "/".join(str(f["roles"].get(r, 0)) for r in ("system", "user", "assistant"))
        lines.append(f"| `{stem}` | {f['rows']} | {f['turns']} | {roles} | {f['loss_false']} | "
                     f"{f['ends_on_loss_false']} | {f['tokens_total']} / {f['tokens_trained']} | "
                     f"{f.get('length_mean', 0)} / {f.get('length_p95', 0)} / {f.get('length_max', 0)} | "
                     f"{f['over_max_length']} |")
    lines += ["", "## Trained assistant turns by capability", "",
              "| file | " + " | ".join(("reasoning", "retrieval", "understanding", "instruction", "other")) + " |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for stem, f in card["files"].items():
        caps = f["trained_turns_by_capability"]
        lines.append(f"| `{stem}` | " + " | ".join(str(caps.get(c, 0)) for c in
                                                   ("reasoning", "retrieval", "understanding", "instruction", "other")) + " |")
    lines += ["", "## Tasks (AgentInstruct files) and samples ending on `loss: false`", ""]
    for stem, f in card["files"].items():
        tasks = ", ".join(f"{k} {v}" for k, v in f["tasks"].items())
        ends = ", ".join(f"`{i}`" for i in f["ends_on_loss_false_ids"]) or "none"
        lines.append(f"- `{stem}`: tasks: {tasks}; ends on loss:false: {ends}")
    return "\n".join(lines) + "\n"
