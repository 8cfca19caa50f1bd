"""Diff of the generated tables (and Figure 1/2 data) against every entry of paper_reported.yaml.

``diff_vs_paper.csv`` columns: ``id,row,column,paper,ours,delta,status`` in the yaml's order.
Status is one of

* ``match``: |ours - paper| within the entry's tolerance (strings: equal);
* ``differs``;
* ``not produced (<reason>)``: the run has no value for that cell;
* ``unknown in paper``: the paper's value is ``??``;
* ``not in paper (printed '-')``: the paper prints a dash (value ``null``).

Tolerances: ``tol`` on the yaml entry, else ``tolerances[<id>/<row>/<column>]`` or
``tolerances[<id>]``, else the per-id default (exact for hyperparameters and counts, 0.05 for the
Figure 2 losses), else ``tolerance`` (0.5 points). Token counts (``19.2M``) match within 5% relative
(or the entry's ``tol``, read as a relative tolerance).
"""
from __future__ import annotations

import csv
import io as _io
from pathlib import Path
from typing import Mapping

from ..io import DataError, write_text
from . import reported as rep
from .figures import LOSS_FORMAT, figure1_data
from .tables import (NOT_RUN_COLUMN, TABLE_IDS, Summary, fmt_num, fmt_paper, fmt_tokens, parse_tokens,
                     read_table_csv)

DEFAULT_TOLERANCE = 0.5
TOKEN_REL_TOL = 0.05
EXACT_IDS = ("table5", "table6", "release")
ID_TOLERANCE = {"figure2": 0.05}
FIG2_ROWS = {"loss (content/reasoning, inferred)": "content", "loss (format, inferred)": "format"}
NOT_SUMMARISED = "not a quantity the result summaries report"


def _is_tokens(v: object) -> bool:
    return isinstance(v, str) and len(v) > 1 and v[-1] in "kMB" and _num(v[:-1]) is not None


def _num(s: str) -> float | None:
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


class _Ours:
    """Looks up our value for a yaml entry: ``(value string, reason when empty)``."""

    def __init__(self, s: Summary, entries: list[rep.Entry], tables_dir: Path):
        self.s = s
        self.entries = entries
        self.tables = {}
        for tid in TABLE_IDS:
            p = tables_dir / f"{tid}.csv"
            if not p.exists():
                raise DataError(p, "table CSV not found (build all six tables before the diff)")
            self.tables[tid] = read_table_csv(p)
        self._fig1: dict | None = None

    def cell(self, tid: str, row: str, column: str) -> tuple[str, str]:
        cell = self.tables[tid].get((row, column))
        if cell is None:
            return "", f"no cell {row!r} / {column!r} in {tid}.csv"
        return cell["ours"], cell["note"]

    def fig1(self) -> dict:
        if self._fig1 is None:
            self._fig1 = figure1_data(self.s, self.entries, reference="paper:GPT-4")
        return self._fig1

    def lookup(self, e: rep.Entry) -> tuple[str, str]:
        if e.id in self.tables:
            return self.cell(e.id, e.row, e.column)
        if e.id == "release":
            return self.cell("table6", "release files total", "samples")
        if e.id == "figure1":
            d = self.fig1()
            if e.column not in d["columns"]:
                return "", NOT_RUN_COLUMN.get(e.column, f"no {e.column} scores or reference value")
            if e.row == "Agent-FLAN label":
                v = d["labels"].get(e.column)
                return ("", "no label (needs Agent-FLAN and another series)") if v is None \
                    else (fmt_num(v), "")
            label = d["highlight"] if e.row == rep.FIG1_HIGHLIGHT else e.row
            v = d["bars"].get((label, e.column))
            return ("", f"series {e.row!r} not in figures.fig1") if v is None else (fmt_num(v), "")
        if e.id == "figure2" and e.row in FIG2_ROWS:
            cfg = self.s.config("figures", "fig2")
            curves = self.s.curves(cfg["model_id"], LOSS_FORMAT, "diff (Figure 2)")
            last = [r for r in curves if r["category"] == FIG2_ROWS[e.row]][-1]
            return fmt_num(last["loss"], 3), ""
        if e.id == "text" and e.row == "abstract":
            af, _ = self.cell("table1", "Agent-FLAN", "Overall")
            at, _ = self.cell("table1", "AgentTuning*", "Overall")
            if af and at:
                return fmt_num(float(af) - float(at), sign=True), ""
            return "", "needs Table 1 Overall, which needs all five held-out columns"
        return "", NOT_SUMMARISED


def _tolerance(e: rep.Entry, tolerance: float, tolerances: Mapping[str, float]) -> float:
    if e.tol is not None:
        return e.tol
    for key in (f"{e.id}/{e.row}/{e.column}", e.id):
        if key in tolerances:
            return float(tolerances[key])
    if e.id in EXACT_IDS:
        return 0.0
    return ID_TOLERANCE.get(e.id, tolerance)


def _fmt_delta(e: rep.Entry, d: float) -> str:
    if e.id in ("table6", "release"):
        return f"{int(round(d)):+d}"
    if e.id == "table5":
        return f"{int(d):+d}" if float(d).is_integer() else f"{d:+.3g}"
    return fmt_num(d, 3 if e.id == "figure2" else 2, sign=True)


def compare(e: rep.Entry, ours: str, tolerance: float = DEFAULT_TOLERANCE,
            tolerances: Mapping[str, float] | None = None) -> tuple[str, str]:
    """``(delta, status)`` for a produced value ``ours`` against a known paper value."""
    tolerances = tolerances or {}
    if _is_tokens(e.value):
        try:
            p, o = parse_tokens(e.value), parse_tokens(ours)
        except ValueError:
            return "", "differs"
        d = o - p
        rel = TOKEN_REL_TOL if e.tol is None else e.tol
        return ("+" if d >= 0 else "") + fmt_tokens(d), "match" if abs(d) <= rel * abs(p) else "differs"
    if e.numeric:
        o = _num(ours)
        if o is None:
            return "", "differs"
        d = o - float(e.value)
        tol = _tolerance(e, tolerance, tolerances)
        ok = abs(d) <= tol + 1e-9 * max(1.0, abs(float(e.value)))
        return _fmt_delta(e, d), "match" if ok else "differs"
    same = str(ours).strip().lower() == str(e.value).strip().lower()
    return "", "match" if same else "differs"


def diff_rows(summary_dir: str | Path, reported_path: str | Path, tables_dir: str | Path, *,
              tolerance: float = DEFAULT_TOLERANCE,
              tolerances: Mapping[str, float] | None = None) -> tuple[Summary, list[rep.Entry], list[dict]]:
    s = Summary(summary_dir)
    entries = rep.load_reported(reported_path)
    ours = _Ours(s, entries, Path(tables_dir))
    rows = []
    for e in entries:
        value, reason = ours.lookup(e)
        delta = ""
        if e.unknown:
            status = "unknown in paper"
        elif e.printed_dash:
            status = "not in paper (printed '-')"
        elif not value:
            status = f"not produced ({reason})"
        else:
            delta, status = compare(e, value, tolerance, tolerances)
        rows.append({"id": e.id, "row": e.row, "column": e.column, "paper": fmt_paper(e.value),
                     "ours": value, "delta": delta, "status": status, "note": e.note or ""})
    return s, entries, rows


def _md_cell(x: str) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _md(s: Summary, entries: list[rep.Entry], rows: list[dict], tolerance: float) -> str:
    out = [f"# Diff of run `{s.run}` (preset `{s.preset}`) against the paper\n"]
    if s.preset == "paper":
        out.append(f"Preset `paper`: a cell matches when |ours - paper| <= its tolerance (default "
                   f"{tolerance:g} points; per-entry `tol` in paper_reported.yaml; exact for "
                   f"hyperparameters and counts; {TOKEN_REL_TOL:.0%} relative for token counts).\n")
    else:
        out.append(f"Preset `{s.preset}`: the miniature runs tiny models on synthetic data, so its "
                   "numbers are not expected to match the paper's scale. This diff shows that the "
                   "table structure is complete and which cells the run produces; `match`/`differs` "
                   f"use the same tolerances as the paper preset (default {tolerance:g} points).\n")
    counts: dict[str, int] = {}
    for r in rows:
        key = r["status"].split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    out.append("Status counts: " + ", ".join(f"{k}: {counts[k]}" for k in sorted(counts)) + ".\n")
    out.append("## Known paper errata (experiments.md)\n")
    out += [f"- {text}" for _, text in rep.ERRATA]
    out.append("")
    out.append("## Cells\n")
    header = ["id", "row", "column", "paper", "ours", "delta", "status", "paper note"]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join(" --- " for _ in header) + "|")
    for r in rows:
        out.append("| " + " | ".join(_md_cell(r[k]) for k in
                                     ("id", "row", "column", "paper", "ours", "delta", "status",
                                      "note")) + " |")
    out.append("")
    out.append("## Paper-internal consistency checks (computed from paper_reported.yaml)\n")
    out.append("A check is `ok` when the recomputed value rounds to the printed one (half a unit of "
               "the last printed digit).\n")
    header = ["check", "printed", "recomputed", "delta", "status", "note"]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join(" --- " for _ in header) + "|")
    for c in rep.consistency_checks(entries):
        out.append("| " + " | ".join(_md_cell(x) for x in (
            c["check"], fmt_paper(c["printed"]), f"{c['recomputed']:.3f}", f"{c['delta']:+.3f}",
            c["status"], c["note"])) + " |")
    return "\n".join(out) + "\n"


def build_diff(summary_dir: Path, reported_path: Path, tables_dir: Path, out_md: Path,
               out_csv: Path, *, tolerance: float = DEFAULT_TOLERANCE,
               tolerances: Mapping[str, float] | None = None) -> None:
    """Write ``diff_vs_paper.md`` and ``.csv`` (id,row,column,paper,ours,delta,status)."""
    s, entries, rows = diff_rows(summary_dir, reported_path, tables_dir, tolerance=tolerance,
                                 tolerances=tolerances)
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["id", "row", "column", "paper", "ours", "delta", "status"]
    w.writerow(cols)
    for r in rows:
        w.writerow([r[c] for c in cols])
    write_text(out_csv, buf.getvalue())
    write_text(out_md, _md(s, entries, rows, tolerance))
