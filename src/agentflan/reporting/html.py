"""The paper tables as one self-contained HTML page with per-cell provenance (issue 11, item 5).

:func:`build_html` reads what the table rule wrote (``<tables_dir>/tableN.csv`` and its
``.provenance.json`` sidecar), the run's ``experiments.json`` (which model fills which row) and, for
every score cell, the score file ``<eval_dir>/<model>/<benchmark>.scores.json`` behind it (given as a list), and writes
one HTML page. Each cell shows our value, the paper's value, the interval the CSV carries (bootstrap
or seed interval; paired delta against the row it is compared with) and, as a tooltip (``title=``)
and as a numbered entry below the table, where it came from: the scores file, the predictions file
named in that score file's provenance (with its sha256), the config subset and the code hash the
score file records. Cells that are not computed from predictions (token counts, hyperparameters,
data statistics) carry the table's own provenance: the summary files it read and their sha256.

A score cell whose value does not match its score file is an error (one line: table file, line, row
and column), so a page can never attribute a number to the wrong file.

No JavaScript, no timestamps, no absolute paths: the same inputs give the same bytes. Links to the
files are relative to the page's own directory (they work when the page is opened from the
checkout); the text always names paths relative to the working directory (the repository root when
run by Snakemake). This module reads files only; it never imports training or generation.
"""
from __future__ import annotations

import csv
import html
import json
import os
from pathlib import Path
from typing import Any

from .. import provenance as prov
from ..config import HARNESS_PREFIX
from ..io import DataError, read_json, write_text
from .reported import HELD_OUT
from .tables import METRICS, TABLE_IDS, TABLE_TITLES, fmt_num, t4_metric_key

#: The columns of a table CSV the page needs (the others are optional: intervals, deltas).
REQUIRED = ("row", "column", "ours", "paper", "note")

CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}
th,td{border:1px solid #bbb;padding:.3em .5em;vertical-align:top;text-align:right}
th.row{text-align:left}
td.na{color:#888;text-align:center}
.ours{font-weight:bold}
.paper,.ival,.delta{display:block;font-size:.85em;color:#555}
.delta.sig{color:#a40}
a.prov{font-size:.75em;text-decoration:none}
ol.prov li{margin-bottom:.4em;font-size:.85em}
code{font-size:.9em;word-break:break-all}
"""


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class _Sources:
    """Score files, read once each, checked for the provenance fields the page shows."""

    def __init__(self, scores: list[str | Path], require: bool):
        # <eval>/<model>/<benchmark>.scores.json, the layout evaluate.smk writes
        self.index = {(Path(p).parent.name, Path(p).name[:-len(".scores.json")]): Path(p)
                      for p in scores if str(p).endswith(".scores.json")}
        self.require = require
        self.cache: dict[tuple[str, str], dict | None] = {}

    def get(self, model_id: str, benchmark: str) -> dict | None:
        key = (model_id, benchmark)
        if key not in self.cache:
            self.cache[key] = self._read(model_id, benchmark)
        return self.cache[key]

    def _read(self, model_id: str, benchmark: str) -> dict | None:
        path = self.index.get((model_id, benchmark))
        if path is None or not path.exists():
            if self.require:
                raise DataError(path or f"{model_id}/{benchmark}.scores.json",
                                "score file missing (a table cell is computed from it)")
            return None
        doc = read_json(path)
        p = doc.get("provenance") if isinstance(doc, dict) else None
        if not isinstance(p, dict) or not all(k in p for k in ("code_hash", "config", "config_hash", "inputs")):
            raise DataError(path, "no provenance block with code_hash, config, config_hash and inputs")
        if not isinstance(doc.get("metrics"), dict):
            raise DataError(path, "no metrics object")
        if benchmark.startswith(HARNESS_PREFIX):
            # lm-evaluation-harness scored its own generations (agentflan.evaluation.harness): the
            # model's answers are its per-sample file, written by the same job
            answers = path.with_name(f"{benchmark}.per_sample.jsonl")
            if not answers.is_file():
                raise DataError(path, f"its per-sample file {answers.name} (the model's answers) is missing")
            return {"scores": prov.relative(path), "scores_path": path, "predictions": prov.relative(answers),
                    "predictions_sha256": prov.sha256_file(answers), "metrics": doc["metrics"],
                    "code_hash": p["code_hash"], "config": p["config"], "config_hash": p["config_hash"]}
        preds = sorted(k for k in p["inputs"] if k.endswith(f"/{model_id}/{benchmark}.predictions.jsonl"))
        if len(preds) != 1:
            raise DataError(path, f"provenance.inputs names {len(preds)} predictions files for "
                                  f"{model_id}/{benchmark}; expected 1")
        return {"scores": prov.relative(path), "scores_path": path, "predictions": preds[0],
                "predictions_sha256": p["inputs"][preds[0]], "metrics": doc["metrics"],
                "code_hash": p["code_hash"], "config": p["config"], "config_hash": p["config_hash"]}


def _read_table(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        raise DataError(path, "table file missing")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
        header = rows[0].keys() if rows else []
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(path, f"missing columns {missing}", line=1)
    for i, r in enumerate(rows, start=2):
        r["_line"] = str(i)
    return rows


def _row_models(table_id: str, cfg: Any, path: Path) -> dict[str, dict[str, str]]:
    """``{row label: {role: model_id}}`` from experiments.json ``tables.<table_id>``."""
    if cfg in (None, {}):
        return {}
    if not isinstance(cfg, list):
        raise DataError(path, f"tables.{table_id} is not a list")
    out = {}
    for i, e in enumerate(cfg):
        if not isinstance(e, dict) or "label" not in e:
            raise DataError(path, f"tables.{table_id}[{i}] has no label", record=str(i))
        out[e["label"]] = {k: v for k, v in e.items() if k.endswith("model_id") and isinstance(v, str)}
    return out


def _cell_sources(table_id: str, rec: dict[str, str], models: dict[str, dict[str, str]],
                  filled: set[str], experiments: dict | None = None) -> list[tuple[str, str, str, str]]:
    """``[(role, model_id, benchmark, metric)]`` behind one cell; empty where it is not computed
    from predictions. ``role`` is ``value`` (the number shown), ``part`` (one term of a mean or a
    difference) or ``reference`` (the row a paired delta compares with)."""
    row, col = rec["row"], rec["column"]
    m = models.get(row, {})
    if table_id == "table4":
        name, _, kind = col.rpartition(" ")
        if name not in METRICS:
            return []
        bench, metric = METRICS[t4_metric_key(experiments or {}, name)]
        role_of = {"general-only": [("value", "general_model_id")], "general+agent": [("value", "agent_model_id")],
                   "delta": [("part", "general_model_id"), ("part", "agent_model_id")]}
        return [(role, m[k], bench, metric) for role, k in role_of.get(kind, []) if k in m]
    mid = m.get("model_id")
    if mid is None:
        return []
    if col in METRICS:
        out = [("value", mid, *METRICS[col])]
        ref = models.get(rec.get("vs") or "", {}).get("model_id")
        if ref and rec.get("delta"):
            out.append(("reference", ref, *METRICS[col]))
        return out
    if table_id == "table1" and col.startswith("Overall"):
        return [("part", mid, *METRICS[c]) for c in HELD_OUT if c in filled]
    return []


def _fmt_sources(entries: list[tuple[str, dict]], table_prov: dict, table_files: dict) -> tuple[str, str]:
    """(tooltip text, HTML list item body) for one cell."""
    tip, body = [], []
    if not entries:
        tip.append("not computed from predictions; from the table's inputs:")
        tip += [f"  {p}" for p in sorted(table_prov["inputs"])]
        tip.append(f"table: {table_files['csv']} (config {_dumps(table_prov['config'])})")
        tip.append(f"code {table_prov['code_hash']}")
        body.append("not computed from predictions; the table's inputs: "
                    + ", ".join(f"<code>{_esc(p)}</code> (sha256 <code>{_esc(h[:12])}</code>)"
                                for p, h in sorted(table_prov["inputs"].items())))
        body.append(f"table config subset <code>{_esc(_dumps(table_prov['config']))}</code>, "
                    f"code <code>{_esc(table_prov['code_hash'])}</code>")
        return "\n".join(tip), "<br>".join(body)
    for role, src in entries:
        tip += [f"[{role}] {src['model_id']} / {src['benchmark']}.{src['metric']}",
                f"  scores: {src['scores']}", f"  predictions: {src['predictions']}",
                f"  config: {_dumps(src['config'])}", f"  code: {src['code_hash']}"]
        body.append(
            f"<b>{_esc(role)}</b> {_esc(src['model_id'])} / {_esc(src['benchmark'])}.{_esc(src['metric'])}: "
            f"scores <a href=\"{_esc(src['scores_href'])}\"><code>{_esc(src['scores'])}</code></a>, "
            f"predictions <a href=\"{_esc(src['predictions_href'])}\"><code>{_esc(src['predictions'])}</code></a> "
            f"(sha256 <code>{_esc(src['predictions_sha256'][:12])}</code>), "
            f"config subset <code>{_esc(_dumps(src['config']))}</code> "
            f"(sha256 <code>{_esc(src['config_hash'][:12])}</code>), "
            f"code <code>{_esc(src['code_hash'])}</code>")
    return "\n".join(tip), "<br>".join(body)


def _cell_html(rec: dict[str, str], anchor: str, tip: str) -> str:
    ours, paper, note = rec["ours"], rec["paper"], rec["note"]
    parts = []
    if ours:
        parts.append(f"<span class=\"ours\">{_esc(ours)}</span>")
        if rec.get("ours_lo") and rec.get("ours_hi"):
            seeds = rec.get("n_seeds") or ""
            what = f"{seeds} seeds" if seeds and seeds != "1" else "bootstrap"
            parts.append(f"<span class=\"ival\">[{_esc(rec['ours_lo'])}, {_esc(rec['ours_hi'])}] ({_esc(what)})</span>")
        if rec.get("delta"):
            sig = rec.get("excludes_0") == "true"
            parts.append(f"<span class=\"delta{' sig' if sig else ''}\">Δ {_esc(rec['delta'])} "
                         f"[{_esc(rec.get('delta_lo', ''))}, {_esc(rec.get('delta_hi', ''))}]{'*' if sig else ''}"
                         f" vs {_esc(rec.get('vs', ''))}</span>")
    else:
        parts.append("<span class=\"ours\">—</span>")
    parts.append(f"<span class=\"paper\">paper {_esc(paper) if paper else '—'}</span>")
    parts.append(f"<a class=\"prov\" href=\"#{_esc(anchor)}\">[{_esc(anchor.rsplit('-', 1)[1])}]</a>")
    title = tip if ours else f"not run: {note}"
    if ours and note:
        title = f"note: {note}\n{tip}"
    cls = "" if ours else " class=\"na\""
    return f"<td{cls} title=\"{_esc(title)}\">{''.join(parts)}</td>"


def _href(rel: str, out_dir: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(rel), os.path.abspath(out_dir))).as_posix()


def render_table(table_id: str, tables_dir: Path, experiments: dict, experiments_path: Path,
                 sources: _Sources, out_dir: Path) -> tuple[str, list[Path]]:
    """One ``<section>`` for one table, and the score files it read."""
    csv_path = tables_dir / f"{table_id}.csv"
    side = prov.sidecar_path(csv_path)
    if not side.exists():
        raise DataError(side, "provenance sidecar of the table missing")
    table_prov = read_json(side)
    if not isinstance(table_prov, dict) or not all(k in table_prov for k in ("code_hash", "config", "inputs")):
        raise DataError(side, "no code_hash, config and inputs")
    recs = _read_table(csv_path)
    models = _row_models(table_id, (experiments.get("tables") or {}).get(table_id), experiments_path)
    rows: list[str] = []
    cols: list[str] = []
    cells: dict[tuple[str, str], dict] = {}
    for r in recs:
        if r["row"] not in rows:
            rows.append(r["row"])
        if r["column"] not in cols:
            cols.append(r["column"])
        cells[(r["row"], r["column"])] = r
    table_files = {"csv": prov.relative(csv_path)}
    used: list[Path] = []
    items: list[str] = []
    body: list[str] = []
    n = 0
    for row in rows:
        filled = {c for c in cols if (row, c) in cells and cells[(row, c)]["ours"]}
        tds = [f"<th class=\"row\">{_esc(row)}</th>"]
        for col in cols:
            rec = cells.get((row, col))
            if rec is None:
                tds.append("<td class=\"na\">—</td>")
                continue
            n += 1
            anchor = f"{table_id}-{n}"
            entries, unavailable = [], []
            if rec["ours"]:
                for role, mid, bench, metric in _cell_sources(table_id, rec, models, filled, experiments):
                    src = sources.get(mid, bench)
                    if src is None:
                        unavailable.append(f"{mid}/{bench}.{metric}")
                        continue
                    used.append(src["scores_path"])
                    if role == "value" and (rec.get("n_seeds") or "1") == "1":
                        v = src["metrics"].get(metric)
                        if not isinstance(v, (int, float)) or fmt_num(float(v)) != rec["ours"]:
                            raise DataError(csv_path, f"row {row!r} column {col!r}: ours {rec['ours']} but "
                                            f"{src['scores']} has {metric} = {v!r}", line=int(rec["_line"]))
                    entries.append((role, {**src, "model_id": mid, "benchmark": bench, "metric": metric,
                                           "scores_href": _href(src["scores"], out_dir),
                                           "predictions_href": _href(src["predictions"], out_dir)}))
            tip, item = _fmt_sources(entries, table_prov, table_files)
            if unavailable:
                what = ", ".join(unavailable)
                tip = f"computed from the scores of {what}; the score files are not among this run's files\n" + tip
                item = (f"computed from the scores of {_esc(what)}; the score files are not among this run's "
                        "files (tables rebuilt from a results bundle)<br>" + item)
            if not rec["ours"]:
                item = f"not run: {_esc(rec['note'])}"
            tds.append(_cell_html(rec, anchor, tip))
            items.append(f"<li id=\"{_esc(anchor)}\" value=\"{n}\"><b>{_esc(row)} / {_esc(col)}</b>: {item}</li>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    head = "<tr><th class=\"row\">Row</th>" + "".join(f"<th>{_esc(c)}</th>" for c in cols) + "</tr>"
    title = TABLE_TITLES.get(table_id, table_id)
    md = tables_dir / f"{table_id}.md"
    out = [f"<section id=\"{_esc(table_id)}\">",
           f"<h2>{_esc(title)}</h2>",
           f"<p>Table <a href=\"{_esc(_href(table_files['csv'], out_dir))}\"><code>{_esc(table_files['csv'])}</code></a>"
           + (f", notes in <a href=\"{_esc(_href(prov.relative(md), out_dir))}\"><code>{_esc(prov.relative(md))}</code></a>"
              if md.exists() else "")
           + f"; table code <code>{_esc(table_prov['code_hash'])}</code>, config subset "
           f"<code>{_esc(_dumps(table_prov['config']))}</code>.</p>",
           "<table>", head, *body, "</table>",
           "<details open><summary>Per-cell provenance</summary><ol class=\"prov\">", *items, "</ol></details>",
           "</section>"]
    return "\n".join(out), used


def build_html(tables_dir: str | Path, summary_dir: str | Path, scores: list[str | Path], out_html: str | Path,
               table_ids: list[str] | tuple[str, ...] = TABLE_IDS, require_scores: bool = True) -> list[Path]:
    """Write the page; returns every file it read (for the page's provenance stamp).

    ``scores``: the score files, ``<eval_dir>/<model>/<benchmark>.scores.json``. ``require_scores``: a score cell whose score file is missing is an error (False where the
    score files are not there by design, e.g. tables rebuilt from a bundle: such cells then show
    the table's provenance only)."""
    tables_dir, summary_dir, out_html = map(Path, (tables_dir, summary_dir, out_html))
    exp_path = summary_dir / "experiments.json"
    experiments = read_json(exp_path)
    if not isinstance(experiments, dict):
        raise DataError(exp_path, "expected a JSON object")
    sources = _Sources(list(scores), require_scores)
    sections, read = [], [exp_path]
    for tid in table_ids:
        sec, used = render_table(tid, tables_dir, experiments, exp_path, sources, out_html.parent)
        sections.append(sec)
        read += [tables_dir / f"{tid}.csv", prov.sidecar_path(tables_dir / f"{tid}.csv"), *used]
    toc = " · ".join(f"<a href=\"#{_esc(t)}\">{_esc(TABLE_TITLES.get(t, t).split(':')[0])}</a>" for t in table_ids)
    run = experiments.get("run", "")
    page = "\n".join([
        "<!DOCTYPE html>",
        "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>Agent-FLAN reproduction: paper tables ({_esc(run)})</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Agent-FLAN reproduction: paper tables, run <code>{_esc(run)}</code></h1>",
        "<p>Each cell: our value (bold), its interval where the table has one (bootstrap over items, "
        "or over seeds), the paired delta against the row it is compared with (* where the interval "
        "excludes 0) and the paper's value. Hover a cell for its provenance, or follow its [n] to the "
        "list under the table: the scores file and the predictions file (paths relative to the "
        "repository root), the config subset and the code hash recorded in the score file.</p>",
        f"<p>{toc}</p>",
        *sections,
        "</body></html>",
        "",
    ])
    write_text(out_html, page)
    return sorted(set(read), key=str)
