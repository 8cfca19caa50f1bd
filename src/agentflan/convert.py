"""Released Agent-FLAN files -> canonical records, and the generated data card.

``convert_file`` reads a released JSONL file line by line (never through ``datasets`` schema
inference, which would turn a missing ``loss`` into ``None``), validates every record, applies the
loss policy of :mod:`agentflan.records`, tags capabilities (:mod:`agentflan.capability`) and the
AgentInstruct task, and writes the canonical file atomically: a bad record aborts the conversion
with an error naming the file and the line, and no output is left behind.

``convert_release`` (the ``convert`` stage) reads and checks all seven files before it writes
any, so a bad record in any file leaves no converted file at all. Policies (data/README.md,
"Bad input"): a duplicate record id within a file is an error naming both lines; records that
cannot be trained (:func:`agentflan.records.skip_reason`) are skipped, logged, and listed with
their file, line and reason in ``<out_dir>/skipped.json``, which the data card reports.
"""
from __future__ import annotations

import logging
import re
import statistics
from collections import Counter
from pathlib import Path

from .capability import source_family, tag_record
from .io import DataError, iter_jsonl, read_json, write_json, write_jsonl, write_text
from .records import SKIP_REASONS, canonical_from_released, skip_reason

log = logging.getLogger(__name__)

#: Name of the skip list that ``convert_release`` writes next to the converted files.
SKIPPED_NAME = "skipped.json"

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


def convert_records(src: Path, stem: str) -> tuple[list[dict], list[dict]]:
    """Read and check one released file: ``(records, skipped)``; ``skipped`` lists
    ``{"id", "line", "reason"}`` of the records :func:`~agentflan.records.skip_reason` refuses."""
    records: list[dict] = []
    skipped: list[dict] = []
    first_line: dict[str, int] = {}
    for line, obj in iter_jsonl(src):
        rec = canonical_from_released(obj, source=stem, path=str(src), line=line)
        rid = rec["id"]
        if rid in first_line:
            raise DataError(src, f"duplicate record id (first on line {first_line[rid]}); "
                                 "record ids must be unique within a file", line=line, record=rid)
        first_line[rid] = line
        reason = skip_reason(rec)
        if reason is not None:
            log.warning("%s:%d (record %r): skipped, %s", src, line, rid, SKIP_REASONS[reason])
            skipped.append({"id": rid, "line": line, "reason": reason})
            continue
        tag_record(rec)
        rec["task"] = infer_task(rec)
        records.append(rec)
    if not records:
        raise DataError(src, f"no trainable record: all {len(skipped)} records are skipped "
                             f"({dict(sorted(Counter(s['reason'] for s in skipped).items()))})")
    return records, skipped


def convert_file(src: Path, dst: Path, stem: str) -> dict:
    """Convert one released file; returns per-file counts for the data card (with ``skipped``)."""
    records, skipped = convert_records(src, stem)
    write_jsonl(dst, records)
    stats = file_stats(records)
    stats["skipped"] = skipped_summary(skipped)
    return stats


def convert_release(files: dict[str, Path], out_dir: Path) -> dict:
    """Convert every released file (``{stem: path}``) into ``out_dir/<stem>.jsonl`` and write the
    skip list ``out_dir/skipped.json`` (``{stem: [{"id", "line", "reason"}]}``). Every file is
    read and checked before anything is written. Returns ``{stem: file stats}``."""
    out_dir = Path(out_dir)
    converted = {stem: convert_records(Path(path), stem) for stem, path in sorted(files.items())}
    stats = {}
    for stem, (records, skipped) in converted.items():
        write_jsonl(out_dir / f"{stem}.jsonl", records)
        stats[stem] = {**file_stats(records), "skipped": skipped_summary(skipped)}
    write_json(out_dir / SKIPPED_NAME, {stem: skipped for stem, (_, skipped) in converted.items()})
    return stats


def skipped_summary(skipped: list[dict], max_ids: int = 20) -> dict:
    """Card entry of a file's skip list: total, count per reason, the first ``max_ids`` ids."""
    return {"total": len(skipped),
            "by_reason": dict(sorted(Counter(s["reason"] for s in skipped).items())),
            "ids": [s["id"] for s in skipped[:max_ids]]}


def load_skipped(converted_dir: Path) -> dict[str, list[dict]]:
    """The skip list written by :func:`convert_release` (a missing file is an error: the card
    must not report zero skips it does not know about)."""
    path = Path(converted_dir) / SKIPPED_NAME
    if not path.exists():
        raise DataError(path, "skip list of the convert stage not found; re-run the convert stage")
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataError(path, "expected {stem: [{id, line, reason}]}")
    return data


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


def _encode(seg_tok, records: list[dict]) -> list:
    """``seg_tok.encode_records`` where the tokenizer has it (batched), else one record at a time."""
    if hasattr(seg_tok, "encode_records"):
        return seg_tok.encode_records(records)
    return [seg_tok.encode_record(r) for r in records]


def _lengths_and_trained(records: list[dict], seg_tok, counts=None) -> tuple[list[int], int]:
    """Full token length of every record and trained tokens in all (no truncation): from the
    token-count cache (:mod:`agentflan.tokcache`) where it holds a record, else tokenised."""
    from .tokcache import derive
    lengths: list = [None] * len(records)
    trained = 0
    if counts is not None:
        for i, r in enumerate(records):
            row = counts.lookup(r)
            if row is not None:
                n, full, _, _ = derive(row, r)
                lengths[i] = n
                trained += full
    miss = [i for i, n in enumerate(lengths) if n is None]
    if counts is not None:
        counts.fallbacks += len(miss)
    for k in range(0, len(miss), 512):
        chunk = miss[k:k + 512]
        for i, enc in zip(chunk, _encode(seg_tok, [records[i] for i in chunk])):
            lengths[i] = len(enc)
            trained += sum(1 for x in enc.labels if x != -100)
    return lengths, trained


def token_stats(records: list[dict], seg_tok, counts=None, lengths_trained=None) -> dict:
    lengths, trained = lengths_trained or _lengths_and_trained(records, seg_tok, counts)
    if not lengths:
        return {"tokens_total": 0, "tokens_trained": 0}
    qs = statistics.quantiles(lengths, n=20) if len(lengths) > 1 else [lengths[0]] * 19
    return {"tokens_total": sum(lengths), "tokens_trained": trained,
            "length_mean": round(statistics.fmean(lengths), 2), "length_median": statistics.median(lengths),
            "length_p95": round(qs[18], 2), "length_max": max(lengths)}


def build_card(converted: dict[str, list[dict]], seg_tok, max_length: int, out_json: Path,
               out_md: Path, provenance: dict, skipped: dict[str, list[dict]] | None = None,
               counts=None) -> dict:
    """Data card: per-file rows, roles, turns, loss:false counts, samples ending on loss:false,
    capability counts, tasks and token-length statistics (with the run's tokenizer), and the
    records the conversion skipped (``skipped``: the skip list of :func:`convert_release`).
    ``counts`` (a :class:`agentflan.tokcache.TokenCounts`) gives token counts without tokenising."""
    skipped = skipped or {}
    unknown = sorted(set(skipped) - set(converted))
    if unknown:
        raise DataError(SKIPPED_NAME, f"skip list names file(s) {unknown} that are not converted")
    files = {}
    for stem in sorted(converted):
        recs = converted[stem]
        st = file_stats(recs)
        st["skipped"] = skipped_summary(skipped.get(stem, []))
        st["skipped"]["listed"] = stem in skipped  # False: not a released file (e.g. sharegpt)
        lengths, trained = _lengths_and_trained(recs, seg_tok, counts)
        st.update(token_stats(recs, seg_tok, lengths_trained=(lengths, trained)))
        st["over_max_length"] = sum(1 for n in lengths if n > max_length)
        files[stem] = st
    card = {"files": files, "max_length": max_length, "provenance": provenance,
            "total_rows": sum(f["rows"] for f in files.values()),
            "total_skipped": sum(f["skipped"]["total"] for f in files.values())}
    write_json(out_json, card)
    write_text(out_md, render_card_md(card))
    return card


def _md_code(text: str) -> str:
    """An id as inline code that cannot break a Markdown table row."""
    return "`" + str(text).replace("`", "'").replace("|", "\\|") + "`"


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
    lines += ["", "## Records skipped by the conversion", "",
              f"{card['total_skipped']} records in all (policy: data/README.md, \"Bad input\"). "
              "Rows above count the records kept.", "",
              "| file | skipped | " + " | ".join(f"`{r}`" for r in SKIP_REASONS) + " | first ids |",
              "| --- | ---: | " + " | ".join("---:" for _ in SKIP_REASONS) + " | --- |"]
    for stem, f in card["files"].items():
        sk = f["skipped"]
        if not sk.get("listed", True):
            lines.append(f"| `{stem}` | — | " + " | ".join("—" for _ in SKIP_REASONS)
                         + " | not a released file (ShareGPT: general/sharegpt.stats.json) |")
            continue
        lines.append(f"| `{stem}` | {sk['total']} | "
                     + " | ".join(str(sk["by_reason"].get(r, 0)) for r in SKIP_REASONS)
                     + " | " + (", ".join(_md_code(i) for i in sk["ids"]) or "none") + " |")
    lines += ["", "## Tasks (AgentInstruct files) and samples ending on `loss: false`", ""]
    for stem, f in card["files"].items():
        tasks = ", ".join(f"{k} {v}" for k, v in f["tasks"].items())
        ends = ", ".join(f"`{i}`" for i in f["ends_on_loss_false_ids"]) or "none"
        lines.append(f"- `{stem}`: tasks: {tasks}; ends on loss:false: {ends}")
    return "\n".join(lines) + "\n"
