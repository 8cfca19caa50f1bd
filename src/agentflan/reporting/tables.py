"""Paper Tables 1-6 rebuilt from the result summaries (docs/CONTRACTS.md, "Result summaries").

Every number in a table comes from a summary file under ``summary_dir``; the paper's value is
printed beside it from ``paper_reported.yaml``. Cells the run cannot produce are kept, empty in the
CSV with the reason in ``note`` and written ``n/a (not run: <reason>)`` in the Markdown.

Output layouts
--------------
CSV (one per table, long form, one line per cell, rows in the table's display order)::

    row,column,ours,paper,note[,ours_lo,ours_hi,n_seeds][,vs,delta,delta_lo,delta_hi,excludes_0]

``ours`` is the formatted value (fixed decimals) or empty; ``paper`` is the value as the paper
prints it (``??`` unknown in the paper, ``-`` printed as a dash, empty where the paper has no such
cell); ``note`` says why a cell is empty or how it was derived. Where the summary has
``bootstrap.csv`` (:mod:`agentflan.reporting.bootstrap`), score cells get their bootstrap
interval ``ours_lo, ours_hi`` over ``n_seeds`` training seeds, and the cells of an ablation
comparison (Tables 2-4) the paired bootstrap against the row ``vs``: ``delta`` (this row minus
``vs``), its interval ``delta_lo, delta_hi`` and ``excludes_0`` (``true``/``false``). These
column groups are written only by tables that have such cells.

Markdown: a one-line caption (run, preset, and that paper values are printed beside ours), then
the table. Table 1 gives every model an ``ours`` and a ``paper`` sub-row; Tables 2-6 pair each
column as ``<column> ours | <column> paper``.
"""
from __future__ import annotations

import csv
import io as _io
import math
from pathlib import Path
from typing import Any, Callable

from .. import provenance as prov
from ..config import HARNESS_PREFIX, uses_harness
from ..io import DataError, read_json, write_text
from . import reported as rep
from .bootstrap import FILE as BOOTSTRAP_FILE
from .bootstrap import UNITS as BOOTSTRAP_UNITS
from .bootstrap import Bootstrap, Comparison, comparisons

TABLE_IDS = ("table1", "table2", "table3", "table4", "table5", "table6")

# (benchmark, metric) in scores.csv behind each paper column.
METRICS = {
    "Held-In": ("heldin", "overall"),
    "HotpotQA": ("hotpotqa", "reward"),
    "SciWorld": ("sciworld", "score"),
    "WebArena": ("webarena", "success"),
    "T-Eval": ("teval", "overall"),
    "Agent-H": ("agenth", "h_score"),
    "H_ReAct": ("agenth", "h_react"),
    "H_General": ("agenth", "h_general"),
    "H_Score": ("agenth", "h_score"),
    "MMLU": ("mmlu", "accuracy"),
    "GSM8K": ("gsm8k", "accuracy"),
    "HumanEval": ("humaneval", "pass@1"),
    # Table 4 through lm-evaluation-harness (experiments.json general_protocol "lmeval")
    "MMLU (lm-eval)": ("lmeval_mmlu", "accuracy"),
    "GSM8K (lm-eval)": ("lmeval_gsm8k", "accuracy"),
    "HumanEval (lm-eval)": ("lmeval_humaneval", "pass@1"),
}


def t4_metric_key(experiments: dict, column: str) -> str:
    """The METRICS key of Table 4's ``column`` (MMLU, GSM8K, HumanEval) under the run's general
    protocol (experiments.json ``general_protocol``: lmeval, or chat for the package's own)."""
    return f"{column} (lm-eval)" if uses_harness(experiments) else column
# Why a column has no summary data: the package does not run these environments.
NOT_RUN_COLUMN = {
    "Held-In": "AgentBench held-in environments are not part of this package",
    "SciWorld": "ScienceWorld switched off (evaluation.benchmarks.sciworld.enabled: false)",
    "WebArena": "the WebArena environment is not part of this package",
}
# Why a paper row that the run's config does not fill has no values.
_EXTERNAL_NOT_CONFIGURED = ("third-party checkpoint not configured for this run "
                            "(evaluation.external_models, docs/models.md)")
NOT_RUN_ROW = {
    "GPT-3.5": "proprietary API model",
    "GPT-4": "proprietary API model",
    "FireAct-7B": _EXTERNAL_NOT_CONFIGURED,
    "AgentLM-7B": _EXTERNAL_NOT_CONFIGURED,
}
DEFAULT_ROW_REASON = "row not configured for this run"

TABLE_TITLES = {
    "table1": "Table 1: main results (held-in, held-out agent tasks and Overall)",
    "table2": "Table 2: format alignment and capability-decomposition ablation (Llama2-7B)",
    "table3": "Table 3: Agent-H hallucination results",
    "table4": "Table 4: general capabilities, general data only vs general + Agent-FLAN data",
    "table5": "Table 5: training hyperparameters",
    "table6": "Table 6: training data statistics",
}


# --------------------------------------------------------------------------------------------
# Formatting (fixed, locale-free; the same value always gives the same string)
# --------------------------------------------------------------------------------------------

def fmt_num(x: float, decimals: int = 2, sign: bool = False) -> str:
    s = f"{x:+.{decimals}f}" if sign else f"{x:.{decimals}f}"
    if float(s) == 0.0:  # no "-0.00"
        s = ("+" if sign else "") + f"{0.0:.{decimals}f}"
    return s


def fmt_tokens(n: float) -> str:
    """Token counts the way the paper prints them: ``19.2M``, ``37.3k``, ``512``."""
    n = float(n)
    sign = "-" if n < 0 else ""
    a = abs(n)
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if round(a / scale, 1) >= 1.0:
            if suffix != "B" and round(a / scale, 1) >= 1000.0:
                continue  # e.g. 999,960 -> "1.0M", not "1000.0k"
            return f"{sign}{a / scale:.1f}{suffix}"
    return f"{sign}{int(round(a))}"


def parse_tokens(s: str) -> float:
    s = str(s).strip()
    mult = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}.get(s[-1:], 1.0)
    return float(s[:-1] if mult != 1.0 else s) * mult


def fmt_sci(x: float) -> str:
    """``2e-05`` -> ``2e-5``; values between 0.01 and 1e4 stay plain."""
    x = float(x)
    if x == 0 or 1e-2 <= abs(x) < 1e4:
        return f"{x:g}"
    mant, exp = f"{x:.2e}".split("e")
    return f"{float(mant):g}e{int(exp)}"


def fmt_plain(x: Any) -> str:
    """Integers without decimals, other floats with ``%g``, strings as they are."""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() else f"{x:g}"
    return str(x)


def fmt_paper(value: Any, *, delta: bool = False) -> str:
    """A paper value for display: as printed (``??``/``-`` kept; ``20.0`` stays ``20.0``)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and 0 < abs(value) < 1e-2:
        return fmt_sci(value)
    text = repr(value) if isinstance(value, float) else fmt_plain(value)  # 20.0 stays "20.0"
    if delta and isinstance(value, (int, float)) and value >= 0:
        text = "+" + text
    return text


def na(reason: str) -> str:
    return f"n/a (not run: {reason})"


# --------------------------------------------------------------------------------------------
# Reading the result summaries
# --------------------------------------------------------------------------------------------

def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.exists():
        raise DataError(path, "file not found (a result summary the reports need)")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in required if c not in cols]
        if missing:
            raise DataError(path, f"missing columns {missing} (has {cols})")
        return [dict(r) for r in reader]


def _float(path: Path, line: int, col: str, s: str) -> float:
    try:
        v = float(s)
    except (TypeError, ValueError):
        raise DataError(path, f"column {col!r}: {s!r} is not a number", line=line) from None
    if math.isnan(v):
        raise DataError(path, f"column {col!r} is NaN", line=line)
    return v


class Summary:
    """Lazy, cached access to ``results/<run>/summary/``; every error names the file."""

    def __init__(self, summary_dir: str | Path):
        self.dir = Path(summary_dir)
        self._cache: dict[str, Any] = {}
        self.used: set[str] = set()     # the summary files asked for: a table's or figure's inputs

    def path(self, name: str) -> Path:
        self.used.add(name)
        return self.dir / name

    def inputs(self) -> list[Path]:
        """The summary files read so far (for the provenance of what was built from them)."""
        return [self.dir / name for name in sorted(self.used)]

    def _cached(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    # experiments.json ------------------------------------------------------------------------
    @property
    def experiments(self) -> dict:
        def load():
            obj = read_json(self.path("experiments.json"))
            if not isinstance(obj, dict):
                raise DataError(self.path("experiments.json"), "expected a JSON object")
            return obj
        return self._cached("experiments", load)

    @property
    def run(self) -> str:
        return str(self.experiments.get("run", "?"))

    @property
    def preset(self) -> str:
        return str(self.experiments.get("preset", "?"))

    def config(self, section: str, key: str) -> Any:
        sec = self.experiments.get(section)
        if not isinstance(sec, dict) or key not in sec:
            raise DataError(self.path("experiments.json"), f"no entry {section}.{key}")
        return sec[key]

    # bootstrap.csv (optional: summaries made before it existed have none) ----------------------
    @property
    def bootstrap(self) -> Bootstrap | None:
        def load():
            if not (self.dir / BOOTSTRAP_FILE).is_file():
                return None
            return Bootstrap(self.path(BOOTSTRAP_FILE))
        return self._cached("bootstrap", load)

    def comparisons(self, table_id: str) -> list[Comparison]:
        return [c for c in comparisons(self.experiments) if c.table == table_id]

    # models.csv: what each model is (kind, chat format, served API model and dates) -----------
    @property
    def models(self) -> dict[str, dict[str, str]]:
        """``{model_id: row}`` of models.csv (empty when a summary has no such file; columns a
        summary lacks read as empty)."""
        def load():
            if not (self.dir / "models.csv").is_file():
                return {}
            return {r["model_id"]: r for r in _read_csv(self.path("models.csv"), ("model_id",))}
        return self._cached("models", load)

    # scores.csv ------------------------------------------------------------------------------
    @property
    def scores(self) -> dict[tuple[str, str, str], float]:
        """``{(model_id, benchmark, metric): value}``; with a ``seed`` column (several training
        seeds) the mean over the model's seeds (:attr:`score_seeds` has their values)."""
        return self._cached("scores", lambda: {k: sum(v.values()) / len(v)
                                               for k, v in self.score_seeds.items()})

    @property
    def score_seeds(self) -> dict[tuple[str, str, str], dict[int, float]]:
        """``{(model_id, benchmark, metric): {training seed: value}}`` of scores.csv (seed 0 when
        the file has no ``seed`` column: one training seed)."""
        def load():
            p = self.path("scores.csv")
            out: dict[tuple[str, str, str], dict[int, float]] = {}
            rows = _read_csv(p, ("model_id", "benchmark", "metric", "value"))
            for i, r in enumerate(rows, start=2):
                key = (r["model_id"], r["benchmark"], r["metric"])
                seed = 0    # no seed column, or an empty seed (a model that is not seeded)
                if (r.get("seed") or "").strip():
                    try:
                        seed = int(r["seed"])
                    except (TypeError, ValueError):
                        raise DataError(p, f"seed {r['seed']!r} is not an integer", line=i) from None
                if seed in out.get(key, {}) or (key in out and not (r["value"] or "").strip()):
                    raise DataError(p, f"duplicate score {key}" + (f" seed {seed}" if "seed" in r else ""), line=i)
                if (r["value"] or "").strip():  # empty = the scorer could not compute this metric
                    out.setdefault(key, {})[seed] = _float(p, i, "value", r["value"])
            return out
        return self._cached("score_seeds", load)

    def n_seeds(self, model_id: str, column: str) -> int:
        """How many training seeds a cell's score is the mean of (1 for untrained models)."""
        bench, metric = METRICS[column]
        return len(self.score_seeds.get((model_id, bench, metric)) or {0: None})

    def require_model(self, model_id: str, what: str) -> None:
        if model_id not in self._cached("score_models", lambda: {k[0] for k in self.scores}):
            raise DataError(self.path("scores.csv"),
                            f"model_id {model_id!r} (needed by {what}) has no scores")

    def score(self, model_id: str, column: str) -> float | None:
        bench, metric = METRICS[column]
        return self.scores.get((model_id, bench, metric))

    def has_column(self, column: str) -> bool:
        bench, metric = METRICS[column]
        return any(k[1] == bench and k[2] == metric for k in self.scores)

    # ablation_stats.csv ----------------------------------------------------------------------
    def ablation(self, dataset_id: str, what: str) -> dict[str, float]:
        def load():
            p = self.path("ablation_stats.csv")
            cols = ("dataset_id", "n_samples", "tokens_trained", "case_a", "case_b", "case_c", "case_d")
            out = {}
            for i, r in enumerate(_read_csv(p, cols), start=2):
                out[r["dataset_id"]] = {k: _float(p, i, k, v) for k, v in r.items()
                                        if k != "dataset_id" and v not in (None, "")}
            return out
        stats = self._cached("ablation", load)
        if dataset_id not in stats:
            raise DataError(self.path("ablation_stats.csv"),
                            f"dataset_id {dataset_id!r} (needed by {what}) is missing")
        return stats[dataset_id]

    # train_curves.csv ------------------------------------------------------------------------
    def curves(self, model_id: str, categories: tuple[str, ...], what: str) -> list[dict]:
        def load():
            p = self.path("train_curves.csv")
            return [{"model_id": r["model_id"], "step": _float(p, i, "step", r["step"]),
                     "category": r["category"], "loss": _float(p, i, "loss", r["loss"])}
                    for i, r in enumerate(_read_csv(p, ("model_id", "step", "category", "loss")),
                                          start=2)]
        rows = [r for r in self._cached("curves", load) if r["model_id"] == model_id]
        if not rows:
            raise DataError(self.path("train_curves.csv"),
                            f"model_id {model_id!r} (needed by {what}) has no training curve")
        have = {r["category"] for r in rows}
        missing = [c for c in categories if c not in have]
        if missing:
            raise DataError(self.path("train_curves.csv"),
                            f"model_id {model_id!r} has no curve for categories {missing} ({what})")
        return sorted((r for r in rows if r["category"] in categories),
                      key=lambda r: (categories.index(r["category"]), r["step"]))

    # train_config.csv ------------------------------------------------------------------------
    def train_config(self, model_id: str, what: str) -> dict[str, str]:
        def load():
            p = self.path("train_config.csv")
            cols = ("model_id", "size", "learning_rate", "warmup_ratio", "lr_scheduler",
                    "batch_size", "epochs", "devices", "max_length", "method")
            return {r["model_id"]: r for r in _read_csv(p, cols)}
        cfg = self._cached("train_config", load)
        if model_id not in cfg:
            raise DataError(self.path("train_config.csv"),
                            f"model_id {model_id!r} (needed by {what}) is missing")
        return cfg[model_id]

    # data_card.json --------------------------------------------------------------------------
    @property
    def data_card(self) -> dict[str, dict]:
        """``{source stem: {"rows", "tasks", ...}}`` from the card's ``files`` object (a bare
        object keyed by source, or a ``sources`` wrapper, is accepted too)."""
        def load():
            p = self.path("data_card.json")
            card = read_json(p)
            for wrapper in ("files", "sources"):
                if isinstance(card, dict) and isinstance(card.get(wrapper), dict):
                    card = card[wrapper]
                    break
            if isinstance(card, list):
                card = {str(s.get("source")): s for s in card if isinstance(s, dict)}
            if not isinstance(card, dict):
                raise DataError(p, "expected an object keyed by source file")
            out = {}
            for name, stats in card.items():
                if isinstance(stats, dict) and "rows" in stats:
                    stem = name[:-len(".jsonl")] if name.endswith(".jsonl") else name
                    stem = stem[len("data_"):] if stem.startswith("data_") else stem
                    out[stem] = stats
            if not out:
                raise DataError(p, "no per-source entries with a 'rows' count")
            return out
        return self._cached("data_card", load)

    # examples.json ---------------------------------------------------------------------------
    @property
    def examples(self) -> dict:
        def load():
            p = self.path("examples.json")
            ex = read_json(p)
            for k in ("react", "chat"):
                if not isinstance(ex, dict) or not isinstance(ex.get(k), dict) \
                        or not isinstance(ex[k].get("turns"), list):
                    raise DataError(p, f"expected {{'react': {{'turns': [...]}}, 'chat': ...}}; "
                                       f"{k!r} is missing or malformed")
            return ex
        return self._cached("examples", load)


# --------------------------------------------------------------------------------------------
# A table being built
# --------------------------------------------------------------------------------------------

# Interval columns a cell can add to the CSV (written only when some cell of the table has them).
EXTRA_COLUMNS = ("ours_lo", "ours_hi", "n_seeds", "vs", "delta", "delta_lo", "delta_hi", "excludes_0")


class Table:
    def __init__(self, table_id: str, columns: list[str]):
        self.id = table_id
        self.columns = list(columns)
        self.rows: list[str] = []
        self.cells: dict[tuple[str, str], dict[str, str]] = {}
        self.footnotes: list[str] = []
        self.inputs: list[Path] = []    # the files it was built from (set by make_table)

    def set(self, row: str, column: str, ours: str = "", paper: str = "", note: str = "",
            md: str | None = None) -> None:
        if row not in self.rows:
            self.rows.append(row)
        if column not in self.columns:
            self.columns.append(column)
        if not ours and not note:
            raise AssertionError(f"{self.id} {row}/{column}: empty cell needs a note")
        self.cells[(row, column)] = {"ours": ours, "paper": paper, "note": note,
                                     "md": md if md is not None else (ours or na(note)), "extra": {}}

    def annotate(self, row: str, column: str, *, ours: str | None = None, md: str | None = None,
                 **extra: str) -> None:
        """Add interval columns (:data:`EXTRA_COLUMNS`) to a filled cell, or replace its text."""
        cell = self.cells[(row, column)]
        unknown = set(extra) - set(EXTRA_COLUMNS)
        if unknown:
            raise AssertionError(f"{self.id} {row}/{column}: unknown columns {sorted(unknown)}")
        if ours is not None:
            cell["ours"] = ours
        if md is not None:
            cell["md"] = md
        cell["extra"].update(extra)

    def to_csv(self) -> str:
        used = [c for c in EXTRA_COLUMNS if any(cell["extra"].get(c) for cell in self.cells.values())]
        buf = _io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["row", "column", "ours", "paper", "note", *used])
        for r in self.rows:
            for c in self.columns:
                cell = self.cells.get((r, c))
                if cell is not None:
                    w.writerow([r, c, cell["ours"], cell["paper"], cell["note"],
                                *(cell["extra"].get(k, "") for k in used)])
        return buf.getvalue()


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _caption(s: Summary, table_id: str) -> str:
    return (f"{TABLE_TITLES[table_id]}. Built from the result summaries of run `{s.run}` "
            f"(preset `{s.preset}`); the paper's values (paper_reported.yaml) are printed beside "
            f"ours wherever the paper reports them.\n")


def _md_paired(t: Table, first: str = "Row") -> str:
    """Columns ``X ours | X paper`` (only ``X`` for columns the paper never reports)."""
    paired = {c for c in t.columns if any(t.cells.get((r, c), {}).get("paper") for r in t.rows)}
    header = [first]
    for c in t.columns:
        header += [f"{c} ours", f"{c} paper"] if c in paired else [c]
    body = []
    for r in t.rows:
        line = [r]
        for c in t.columns:
            cell = t.cells.get((r, c))
            line.append(cell["md"] if cell else "—")
            if c in paired:
                line.append((cell["paper"] if cell else "") or "—")
        body.append(line)
    return _md_table(header, body)


def _notes_md(t: Table) -> str:
    if not t.footnotes:
        return ""
    return "\nNotes:\n" + "".join(f"- {n}\n" for n in t.footnotes)


def _entries(table_cfg: Any, s: Summary, table_id: str, keys: tuple[str, ...]) -> list[dict]:
    if not isinstance(table_cfg, list):
        raise DataError(s.path("experiments.json"), f"tables.{table_id} must be a list of rows")
    for i, e in enumerate(table_cfg):
        if not isinstance(e, dict) or any(k not in e for k in keys):
            raise DataError(s.path("experiments.json"),
                            f"tables.{table_id}[{i}] needs keys {list(keys)}: {e!r}")
    return table_cfg


def _row_order(paper_rows: list[str], config_rows: list[str]) -> list[str]:
    """The paper's rows in its order, then rows only this run has, in config order."""
    return paper_rows + [r for r in config_rows if r not in paper_rows]


def _score_cell(t: Table, s: Summary, row: str, column: str, model_id: str, paper: str,
                metric_column: str | None = None) -> float | None:
    """Fill one cell from scores.csv (``metric_column`` names the METRICS key when it differs
    from the display column). Returns the score, or None after noting why it is missing."""
    key = metric_column or column
    v = s.score(model_id, key)
    if v is None:
        bench, metric = METRICS[key]
        reason = NOT_RUN_COLUMN[key] if key in NOT_RUN_COLUMN and not s.has_column(key) \
            else f"no {bench}/{metric} score for {model_id} in scores.csv"
        t.set(row, column, paper=paper, note=reason)
    else:
        t.set(row, column, ours=fmt_num(v), paper=paper)
        v = _cell_interval(t, s, row, column, model_id, key, v)
    return v


def _cell_interval(t: Table, s: Summary, row: str, column: str, model_id: str, metric_column: str,
                   v: float) -> float:
    """Add the cell's bootstrap interval (bootstrap.csv) to a filled score cell. With several
    training seeds the cell shows their mean and its interval; returns the value shown."""
    b = s.bootstrap
    r = b.cell(model_id, *METRICS[metric_column]) if b is not None else None
    if r is None:
        n = s.n_seeds(model_id, metric_column)
        if n > 1:   # a mean over seeds without per-item scores to resample (no interval)
            t.annotate(row, column, md=f"{fmt_num(v)} (mean of {n} seeds)", n_seeds=str(n))
        return v
    lo, hi = fmt_num(r["lo"]), fmt_num(r["hi"])
    if r["n_seeds"] > 1:
        ours = fmt_num(r["estimate"])
        t.annotate(row, column, ours=ours, md=f"{ours} [{lo}, {hi}]", ours_lo=lo, ours_hi=hi,
                   n_seeds=str(r["n_seeds"]))
        return r["estimate"]
    t.annotate(row, column, ours_lo=lo, ours_hi=hi, n_seeds=str(r["n_seeds"]))
    return v


def _delta_cell(t: Table, s: Summary, c: Comparison, column: str, metric_column: str | None = None,
                replace: bool = False) -> dict | None:
    """Add the paired bootstrap of comparison ``c`` (bootstrap.csv) to a filled cell of its row:
    CSV columns vs, delta, delta_lo, delta_hi, excludes_0; in the Markdown ``(Δ d [lo, hi]*)``
    after the value, or, with ``replace`` (a cell that is the delta itself), `` [lo, hi]*``."""
    b = s.bootstrap
    cell = t.cells.get((c.row, column))
    if b is None or cell is None or not cell["ours"]:
        return None
    r = b.paired(c.model_id, c.ref_model_id, *METRICS[metric_column or column])
    if r is None:
        return None
    d, lo, hi = (fmt_num(r[k], sign=True) for k in ("estimate", "lo", "hi"))
    mark = "*" if r["excludes_0"] else ""
    md = f"{cell['md']} [{lo}, {hi}]{mark}" if replace else f"{cell['md']} (Δ {d} [{lo}, {hi}]{mark})"
    t.annotate(c.row, column, md=md, vs=c.vs, delta=d, delta_lo=lo, delta_hi=hi,
               excludes_0="true" if r["excludes_0"] else "false")
    return r


def _mark_references(t: Table, comps: list[Comparison], columns: tuple[str, ...]) -> None:
    """Markdown only: `` (ref.)`` after the filled cells of a reference row of the table."""
    for ref in dict.fromkeys(c.vs for c in comps):
        for col in columns:
            cell = t.cells.get((ref, col))
            if cell is not None and cell["ours"]:
                t.annotate(ref, col, md=f"{cell['md']} (ref.)")


def _bootstrap_notes(s: Summary, comps: list[Comparison], shown: list[dict],
                     benchmarks: tuple[str, ...]) -> list[str]:
    """How the deltas' intervals were computed (or why a table has none)."""
    if not comps:
        return []
    b = s.bootstrap
    if b is None:
        return [f"No {BOOTSTRAP_FILE} in the result summaries: the ablation comparisons are "
                "printed without bootstrap intervals."]
    if not shown:
        return [f"{BOOTSTRAP_FILE} has no paired bootstrap for this table's comparisons."]
    refs = ", ".join(dict.fromkeys(f"'{c.vs}'" for c in comps))
    notes = [f"Δ = the row minus {refs} on the same evaluation items (points); [lo, hi] = "
             f"{b.level:.0%} paired bootstrap percentile interval ({b.resamples} resamples of the "
             f"items, the same draws for both models, numpy seed {b.seed}; "
             f"agentflan.reporting.bootstrap, {BOOTSTRAP_FILE}); * = the interval excludes 0. "
             "Resampled: " + "; ".join(BOOTSTRAP_UNITS[x] for x in benchmarks) + "."]
    if any(r["n_seeds"] > 1 or (r["n_seeds_ref"] or 1) > 1 for r in shown):
        notes.append("Where a model has several training seeds, its score is the mean over seeds, "
                     "[lo, hi] its interval, and every resample also draws the seeds.")
    return notes


def _seed_notes(s: Summary, t: Table) -> list[str]:
    """What a cell of several training seeds (training.seeds) shows, once per table."""
    counts = sorted({int(c["extra"]["n_seeds"]) for c in t.cells.values()
                     if int(c["extra"].get("n_seeds") or 1) > 1})
    if not counts:
        return []
    b = s.bootstrap
    n = " or ".join(str(k) for k in counts)
    how = (f"[lo, hi] = its {b.level:.0%} bootstrap percentile interval ({b.resamples} resamples; each "
           f"draws the evaluation items, shared by the seeds, and {n} seeds with replacement; numpy seed "
           f"{b.seed}; {BOOTSTRAP_FILE})") if b is not None else "no interval (no bootstrap.csv)"
    return [f"Models trained with {n} seeds (training.seeds; base and external models have one run): "
            f"a cell is the mean over the seeds, {how}."]


def _paper(idx: dict, table_id: str, row: str, column: str, **kw) -> str:
    e = idx.get((table_id, row, column))
    return "" if e is None else fmt_paper(e.value, **kw)


# --------------------------------------------------------------------------------------------
# Table 1
# --------------------------------------------------------------------------------------------

def _table1(s: Summary, entries: list[rep.Entry]) -> Table:
    idx = rep.index(entries)
    cfg = _entries(s.config("tables", "table1"), s, "table1", ("label", "model_id"))
    by_label = {e["label"]: e["model_id"] for e in cfg}
    cols = ["Held-In", *rep.HELD_OUT]
    t = Table("table1", cols + ["Overall"])
    produced = [c for c in rep.HELD_OUT if s.has_column(c)]
    partial = produced != list(rep.HELD_OUT)
    avail_col = f"Overall (available: {', '.join(produced)})"
    for label in _row_order(rep.rows_of(entries, "table1"), list(by_label)):
        mid = by_label.get(label)
        if mid is not None:
            s.require_model(mid, f"Table 1 row {label!r}")
        vals: dict[str, float] = {}
        for c in cols:
            paper = _paper(idx, "table1", label, c)
            if mid is None:
                t.set(label, c, paper=paper, note=NOT_RUN_ROW.get(label, DEFAULT_ROW_REASON))
                continue
            v = _score_cell(t, s, label, c, mid, paper)
            if v is not None:
                vals[c] = v
        paper_overall = _paper(idx, "table1", label, "Overall")
        if mid is None:
            t.set(label, "Overall", paper=paper_overall,
                  note=NOT_RUN_ROW.get(label, DEFAULT_ROW_REASON))
        elif all(c in vals for c in rep.HELD_OUT):
            t.set(label, "Overall", ours=fmt_num(sum(vals[c] for c in rep.HELD_OUT) / 5),
                  paper=paper_overall)
        else:
            missing = [c for c in rep.HELD_OUT if c not in vals]
            t.set(label, "Overall", paper=paper_overall,
                  note=f"Overall needs all five held-out columns; no {', '.join(missing)}")
        if not partial or not produced:
            continue
        # The mean over the held-out columns this run has, never called the paper's Overall.
        pvals = [rep.paper_number(idx, "table1", label, c) for c in produced]
        ppaper = fmt_num(sum(pvals) / len(pvals)) if all(v is not None for v in pvals) else ""
        pnote = "paper value derived [D]: mean of the paper's cells in the same columns" \
            if ppaper else ""
        if mid is None:
            reason = NOT_RUN_ROW.get(label, DEFAULT_ROW_REASON)
            t.set(label, avail_col, paper=ppaper, note="; ".join(x for x in (reason, pnote) if x),
                  md=na(reason))
        elif all(c in vals for c in produced):
            t.set(label, avail_col, ours=fmt_num(sum(vals[c] for c in produced) / len(produced)),
                  paper=ppaper, note=pnote)
        else:
            reason = f"no {', '.join(c for c in produced if c not in vals)} for {mid}"
            t.set(label, avail_col, paper=ppaper, note="; ".join(x for x in (reason, pnote) if x),
                  md=na(reason))
    t.footnotes = [
        "Overall is the arithmetic mean of the five held-out columns (HotpotQA, SciWorld, "
        "WebArena, T-Eval, Agent-H); Held-In is not part of it.",
    ]
    if partial and produced:
        t.footnotes.append(
            f"'{avail_col}' is the mean over the held-out columns this run produces; it is not the "
            "paper's Overall. Its paper sub-row is derived from the paper's cells in the same columns.")
    t.footnotes += [
        "HotpotQA = reward, SciWorld = score (mean of the task means, 0-100), T-Eval = overall score, "
        "Agent-H = H_Score (all in %).",
        "Paper erratum: GPT-3.5's Overall is printed 47.8; the mean of its held-out cells is 47.852.",
        "Paper inconsistency: AgentTuning*'s Agent-H is 84.5 here but 83.9 in Table 3.",
    ]
    if s.has_column("SciWorld"):
        t.footnotes += _scoring_notes(s, "sciworld", "SciWorld", _sciworld_text)
    if s.has_column("Agent-H"):
        t.footnotes += _agenth_notes(s, [e["model_id"] for e in cfg])
    t.footnotes += _evaluated_only_notes(s, cfg)
    return t


def _evaluated_only_notes(s: Summary, cfg: list[dict]) -> list[str]:
    """One note per row of a model evaluated but not trained here (models.csv ``kind``): an
    external checkpoint names its checkpoint and chat format; an API model the served model and
    the dates of its replies (from the run records <predictions>.api.json, via summarize)."""
    notes = []
    for e in cfg:
        m = s.models.get(e["model_id"]) or {}
        kind = m.get("kind") or ""
        if kind == "external":
            notes.append(f"{e['label']}: external checkpoint {m.get('checkpoint') or '?'}, evaluated (not trained "
                         f"here) with the {m.get('chat_format') or '?'} chat format ({m.get('doc') or 'no source given'}).")
        elif kind == "api":
            served = m.get("served_model") or "unknown (no run record)"
            dates = m.get("served_dates") or "unknown"
            notes.append(f"{e['label']}: answered through an OpenAI-compatible API by {served} (requested "
                         f"{m.get('requested_model') or '?'}), replies dated {dates} (UTC; run records "
                         "<predictions>.api.json).")
    return notes


def _md_table1(s: Summary, t: Table) -> str:
    header = ["Model", "", *t.columns]
    body = []
    for r in t.rows:
        body.append([r, "ours"] + [t.cells[(r, c)]["md"] if (r, c) in t.cells else "—"
                                   for c in t.columns])
        body.append(["", "paper"] + [(t.cells[(r, c)]["paper"] if (r, c) in t.cells else "") or "—"
                                     for c in t.columns])
    return _caption(s, "table1") + "\n" + _md_table(header, body) + _notes_md(t)


# --------------------------------------------------------------------------------------------
# Table 2
# --------------------------------------------------------------------------------------------

T2_CAPS = ("reasoning", "retrieval", "understanding", "instruction")


def _table2(s: Summary, entries: list[rep.Entry]) -> Table:
    idx = rep.index(entries)
    cfg = _entries(s.config("tables", "table2"), s, "table2", ("label", "model_id", "dataset_id"))
    by_label = {e["label"]: e for e in cfg}
    cols = ["Tokens", "T-Eval", "HotpotQA", "Samples"] + [f"Tokens {c}" for c in T2_CAPS]
    t = Table("table2", cols)
    for label in _row_order(rep.rows_of(entries, "table2"), list(by_label)):
        e = by_label.get(label)
        if e is None:
            for c in cols:
                t.set(label, c, paper=_paper(idx, "table2", label, c), note=DEFAULT_ROW_REASON)
            continue
        what = f"Table 2 row {label!r}"
        st = s.ablation(e["dataset_id"], what)
        s.require_model(e["model_id"], what)
        for c in cols:
            paper = _paper(idx, "table2", label, c)
            if c in ("T-Eval", "HotpotQA"):
                _score_cell(t, s, label, c, e["model_id"], paper)
                continue
            key = {"Tokens": "tokens_trained", "Samples": "n_samples"}.get(c) \
                or "tokens_trained_" + c.split(" ", 1)[1]
            if key not in st:
                t.set(label, c, paper=paper, note=f"no {key} for {e['dataset_id']} in ablation_stats.csv")
            else:
                t.set(label, c, ours=str(int(st[key])) if c == "Samples" else fmt_tokens(st[key]),
                      paper=paper)
    t.footnotes = [
        "Tokens = trained (loss-bearing) tokens of the ablation dataset (ablation_stats.csv "
        "tokens_trained); the per-capability token columns are ours only (the paper does not print "
        "them).",
        "T-Eval = overall score, HotpotQA = reward (%).",
        "The ReAct row equals Table 1's AgentTuning* row in the paper (61.8 / 25.4).",
    ]
    comps = s.comparisons("table2")
    shown = [r for c in comps for col in ("T-Eval", "HotpotQA") if (r := _delta_cell(t, s, c, col))]
    if shown:
        _mark_references(t, comps, ("T-Eval", "HotpotQA"))
    t.footnotes += _bootstrap_notes(s, comps, shown, ("teval", "hotpotqa"))
    return t


# --------------------------------------------------------------------------------------------
# Table 3
# --------------------------------------------------------------------------------------------

def _simple_score_table(s: Summary, entries: list[rep.Entry], table_id: str,
                        cols: list[str]) -> Table:
    idx = rep.index(entries)
    cfg = _entries(s.config("tables", table_id), s, table_id, ("label", "model_id"))
    by_label = {e["label"]: e["model_id"] for e in cfg}
    t = Table(table_id, cols)
    for label in _row_order(rep.rows_of(entries, table_id), list(by_label)):
        mid = by_label.get(label)
        if mid is not None:
            s.require_model(mid, f"{table_id} row {label!r}")
        for c in cols:
            paper = _paper(idx, table_id, label, c)
            if mid is None:
                t.set(label, c, paper=paper, note=DEFAULT_ROW_REASON)
                continue
            _score_cell(t, s, label, c, mid, paper)
    return t


def _table3(s: Summary, entries: list[rep.Entry]) -> Table:
    t = _simple_score_table(s, entries, "table3", ["T-Eval", "H_ReAct", "H_General", "H_Score"])
    t.footnotes = [
        "H_ReAct and H_General are hallucination rates (lower is better); "
        "H_Score = 0.5*((100-H_ReAct)+(100-H_General)) (higher is better).",
        "Paper inconsistency: for Agent-FLAN w/o NS the formula gives 85.45 from the printed "
        "15.6 / 13.5, but H_Score 84.5 is printed.",
        "Paper cells for Llama2-7B and AgentTuning H_ReAct/H_General are reconstructions [D].",
    ]
    cfg = _entries(s.config("tables", "table3"), s, "table3", ("label", "model_id"))
    t.footnotes += _agenth_notes(s, [e["model_id"] for e in cfg])
    comps = s.comparisons("table3")
    shown = [r for c in comps for col in ("T-Eval", "H_ReAct", "H_General", "H_Score")
             if (r := _delta_cell(t, s, c, col))]
    if shown:
        _mark_references(t, comps, ("T-Eval", "H_ReAct", "H_General", "H_Score"))
    t.footnotes += _bootstrap_notes(s, comps, shown, ("teval", "agenth"))
    return t


AGENTH_RECONSTRUCTION = (
    "Agent-H is our reconstruction: the paper released neither its 1,845-sample selection nor its "
    "prompt nor its keyword lists. Ours: a seeded draw of eligible glaive-function-calling-v2 "
    "records, a configured prompt, and structural hallucination patterns (a ReAct `Action:` line "
    "naming a tool; a `<functioncall>`/JSON call or a named function in prose), not phrases "
    "(agentflan.evaluation.agenth, data/README.md).")
AGENTH_COUNTS = ("n", "n_general", "n_general_with_tools", "n_tool")


def _agenth_notes(s: Summary, model_ids: list[str]) -> list[str]:
    """The reconstruction note and the denominators of the Agent-H scores of ``model_ids``
    (the ``n*`` metrics the scorer writes to the score file, via scores.csv)."""
    counts: dict[tuple, list[str]] = {}
    for mid in dict.fromkeys(model_ids):
        c = tuple(s.scores.get((mid, "agenth", k)) for k in AGENTH_COUNTS)
        if all(v is not None for v in c):
            counts.setdefault(c, []).append(mid)
    notes = [AGENTH_RECONSTRUCTION] + _scoring_notes(s, "agenth", "Agent-H", _agenth_text)
    for (n, n_gen, n_gen_tools, n_tool), mids in counts.items():
        who = "" if len(counts) == 1 else f" ({', '.join(mids)})"
        notes.append(f"Agent-H denominators{who}: {n:.0f} samples; H_ReAct and H_General divide by "
                     f"the {n_gen:.0f} with a general (no-tool) ground truth, {n_gen_tools:.0f} of "
                     f"which list functions; {n_tool:.0f} need a tool call.")
    return notes


def _scoring_notes(s: Summary, benchmark: str, name: str, describe) -> list[str]:
    """How the run's ``benchmark`` scores were computed (summary/scoring.json, from the score
    files' ``scoring`` records): one note per distinct description, naming its models if several."""
    if not (s.dir / "scoring.json").is_file():
        return [f"{name} scoring details were not recorded (no scoring.json in the summary)."]
    path = s.path("scoring.json")
    data = s._cached("scoring", lambda: read_json(path))   # one read for every benchmark's notes
    per_model = data.get(benchmark) if isinstance(data, dict) else None
    if not isinstance(per_model, dict) or not per_model:
        return [f"{name} scoring details were not recorded (no {benchmark} entry in {path.name})."]
    groups: dict[str, list[str]] = {}
    for mid, info in sorted(per_model.items()):
        if not isinstance(info, dict):
            raise DataError(path, f"{benchmark} entry is not an object", record=mid)
        groups.setdefault(describe(info), []).append(mid)
    if len(groups) == 1:
        return [next(iter(groups)) + "."]
    return [f"{text} [{', '.join(mids)}]." for text, mids in groups.items()]


def _sciworld_text(info: dict) -> str:
    keys = ("protocol", "tasks", "variations_per_task", "episodes", "step_limit", "simplification", "seed", "shots",
            "scienceworld_version")
    parts = [f"{k.replace('_', ' ')} {info[k]}" for k in keys if info.get(k) not in (None, "")]
    text = "ScienceWorld: " + ", ".join(parts)
    if info.get("subset"):
        text += f"; {info['subset']}"
    return text


def _teval_text(info: dict) -> str:
    sha = info.get("similarity_model_sha256")
    return (f"T-Eval protocol {info.get('protocol')} ({'plan threshold ' + fmt_plain(info.get('plan_threshold'))}), "
            f"{info.get('files')} data files, similarity {info.get('similarity_model')}"
            + (f" (model.safetensors sha256 {sha})" if sha else "")
            + ("" if info.get("similarity") != "bow" else ": a labelled fallback, not T-Eval's metric")
            + ("; outputs cleaned with T-Eval's split_special_tokens" if info.get("clean_up") else ""))


def _hotpotqa_text(info: dict) -> str:
    protocol = info.get("protocol")
    name = "AgentTuning's (2-shot text ReAct)" if protocol == "agenttuning" else f"{protocol} (ours, zero-shot JSON tool calls)"
    text = (f"HotpotQA protocol {name}: questions {info.get('questions')}, {info.get('store_label')}, "
            f"at most {info.get('max_steps')} steps")
    if info.get("context_cap_tokens") is not None:
        text += f", context cap {info['context_cap_tokens']} tokens ({info.get('token_counter')})"
    return text + f"; reward {info.get('reward')}"


def _agenth_text(info: dict) -> str:
    text = f"Agent-H prompt variant {info.get('prompt')!r} (agentflan.evaluation.agenth), selection seed {info.get('seed')}"
    if info.get("max_samples") is not None:
        text += f", at most {info['max_samples']} samples"
    return text + f", finish actions {', '.join(info.get('finish_actions') or [])}"


GENERAL_NAMES = {"mmlu": "MMLU", "gsm8k": "GSM8K", "humaneval": "HumanEval"}


def _general_text(info: dict) -> str:
    if str(info.get("protocol", "")).startswith("lm-evaluation-harness"):
        parts = [str(info["protocol"])]
        parts += [f"{k.replace('_', ' ')} {info[k]}" for k in ("task", "task_yaml", "shots", "metric",
                                                              "chat_template", "executor")
                  if info.get(k) not in (None, "")]
        text = ", ".join(parts)
        if info.get("deviations"):
            dev = info["deviations"]
            text += "; deviations: " + ("; ".join(map(str, dev)) if isinstance(dev, list) else str(dev))
    else:
        text = f"{info.get('protocol')}, {info.get('shots')} shots, {info.get('answer')}"
    if info.get("execute") is False:
        text += " (execution switched off: pass@1 not computed)"
    return text


def _general_notes(s: Summary) -> list[str]:
    """Table 4: how MMLU, GSM8K and HumanEval were scored (lm-evaluation-harness or the package's
    own zero-shot chat protocol, experiments.json general_protocol)."""
    notes = []
    lmeval = uses_harness(s.experiments)
    for bench, name in GENERAL_NAMES.items():
        notes += [f"{name}: {n}" for n in _scoring_notes(s, HARNESS_PREFIX + bench if lmeval else bench, name,
                                                         _general_text)]
    if lmeval:
        notes.append("Scored by lm-evaluation-harness called as a library (agentflan.evaluation.harness) on the "
                     "locked local files, with its own task definitions, shots, filters and metrics; HumanEval's "
                     "generated code runs in the package's confined runner instead of lm-eval's unconfined "
                     "code_eval, which is fetched from the hub.")
    else:
        notes.append("These are the package's own zero-shot chat prompts and answer parsing "
                     "(agentflan.evaluation.general), not lm-evaluation-harness's MMLU 5-shot log-likelihood, "
                     "GSM8K 8-shot chain of thought or HumanEval harness; compare the deltas, not the levels, "
                     "with the paper.")
    return notes


def _teval_notes(s: Summary) -> list[str]:
    """T-Eval: protocol, data files, similarity model and the sha256 of its weights."""
    return _scoring_notes(s, "teval", "T-Eval", _teval_text)


def _hotpotqa_notes(s: Summary) -> list[str]:
    """HotpotQA: protocol, questions, document store (labelled), steps and context cap."""
    return _scoring_notes(s, "hotpotqa", "HotpotQA", _hotpotqa_text)


# --------------------------------------------------------------------------------------------
# Table 4
# --------------------------------------------------------------------------------------------

T4_BENCH = ("MMLU", "GSM8K", "HumanEval")


def _table4(s: Summary, entries: list[rep.Entry]) -> Table:
    idx = rep.index(entries)
    cfg = _entries(s.config("tables", "table4"), s, "table4",
                   ("label", "general_model_id", "agent_model_id"))
    by_label = {e["label"]: e for e in cfg}
    cols = []
    for b in T4_BENCH:
        cols += [f"{b} general-only", f"{b} general+agent", f"{b} delta"]
    t = Table("table4", cols)
    abs_unknown = any(e.id == "table4" and e.unknown for e in entries)
    paper_rows = [r for r in rep.rows_of(entries, "table4") if ("table4", r, "MMLU delta") in idx]
    for label in _row_order(paper_rows, list(by_label)):
        e = by_label.get(label)
        in_paper = ("table4", label, "MMLU delta") in idx
        if e is not None:
            for k in ("general_model_id", "agent_model_id"):
                s.require_model(e[k], f"Table 4 row {label!r} ({k})")
        for b in T4_BENCH:
            absolute_paper = "??" if (in_paper and abs_unknown) else ""
            dcol = f"{b} delta"
            dpaper = _paper(idx, "table4", label, dcol, delta=True)
            if e is None:
                for c in (f"{b} general-only", f"{b} general+agent"):
                    t.set(label, c, paper=absolute_paper, note=DEFAULT_ROW_REASON)
                t.set(label, dcol, paper=dpaper, note=DEFAULT_ROW_REASON)
                continue
            vals = []
            for c, mid in ((f"{b} general-only", e["general_model_id"]),
                           (f"{b} general+agent", e["agent_model_id"])):
                v = _score_cell(t, s, label, c, mid, absolute_paper, metric_column=t4_metric_key(s.experiments, b))
                if v is not None:
                    vals.append(float(fmt_num(v)))
            if len(vals) == 2:
                t.set(label, dcol, ours=fmt_num(vals[1] - vals[0], sign=True), paper=dpaper)
            else:
                t.set(label, dcol, paper=dpaper, note="needs both scores of this row")
    t.footnotes = [
        "delta = (general + Agent-FLAN data) - (general data only), in points, computed from the "
        "two printed scores. The paper prints only the deltas; its absolute scores are unknown (??).",
        "MMLU/GSM8K = accuracy, HumanEval = pass@1 (%).",
    ]
    comps = s.comparisons("table4")
    shown = [r for c in comps for b in T4_BENCH
             if (r := _delta_cell(t, s, c, f"{b} delta", t4_metric_key(s.experiments, b), replace=True))]
    t.footnotes += _bootstrap_notes(s, comps, shown, tuple(METRICS[t4_metric_key(s.experiments, b)][0]
                                                           for b in T4_BENCH))
    t.footnotes += _general_notes(s)
    if shown:
        t.footnotes.append("The CSV column delta is the bootstrap's estimate, from unrounded scores; "
                           "it can differ in the last digit from ours (the difference of the printed scores).")
    return t


# --------------------------------------------------------------------------------------------
# Table 5
# --------------------------------------------------------------------------------------------

T5_COLUMNS = ("learning rate", "warmup LR", "warmup ratio", "LR schedule", "batch size", "epochs",
              "GPUs", "max sequence length", "method")
T5_SOURCE = {"learning rate": "learning_rate", "warmup LR": "warmup_start_lr",
             "warmup ratio": "warmup_ratio",
             "LR schedule": "lr_scheduler", "batch size": "batch_size", "epochs": "epochs",
             "GPUs": "devices", "max sequence length": "max_length", "method": "method"}


def _fmt_cfg(column: str, raw: str) -> str:
    raw = raw.strip()
    if column in ("LR schedule", "method"):
        return raw
    try:
        x = float(raw)
    except ValueError:
        return raw
    return fmt_sci(x) if column in ("learning rate", "warmup LR") else fmt_plain(x)


def _table5(s: Summary, entries: list[rep.Entry]) -> Table:
    idx = rep.index(entries)
    cfg = _entries(s.config("tables", "table5"), s, "table5", ("label", "model_id"))
    by_label = {e["label"]: e["model_id"] for e in cfg}
    t = Table("table5", list(T5_COLUMNS))
    paper_rows = [r for r in rep.rows_of(entries, "table5") if r != "all"]
    lengths: dict[str, str] = {}
    for label in _row_order(paper_rows, list(by_label)):
        mid = by_label.get(label)
        row = s.train_config(mid, f"Table 5 row {label!r}") if mid is not None else None
        for c in T5_COLUMNS:
            paper = _paper(idx, "table5", label, c)
            if row is None:
                t.set(label, c, paper=paper, note=DEFAULT_ROW_REASON)
            elif c == "warmup LR" and not (row.get("warmup_start_lr") or "").strip():
                t.set(label, c, paper=paper,
                      note="train_config.csv has no warmup_start_lr; the warm-up is set by "
                           "'warmup ratio'", md="n/a (not configured: see warmup ratio)")
            else:
                v = _fmt_cfg(c, row[T5_SOURCE[c]])
                t.set(label, c, ours=v, paper=paper)
                if c == "max sequence length":
                    lengths[label] = v
    paper_all = _paper(idx, "table5", "all", "max sequence length")
    values = sorted(set(lengths.values()))
    if len(values) == 1:
        t.set("all", "max sequence length", ours=values[0], paper=paper_all,
              note="paper: maintainer statement (GitHub issue #4), not in the table")
    elif values:
        t.set("all", "max sequence length", paper=paper_all,
              note="differs between rows: " + ", ".join(f"{k}={v}" for k, v in lengths.items()),
              md="varies by row")
    else:
        t.set("all", "max sequence length", paper=paper_all, note=DEFAULT_ROW_REASON)
    t.footnotes = [
        "Ours from train_config.csv; batch size is the global batch, GPUs = devices used.",
        "The paper's max sequence length (8192) is the maintainer's statement in GitHub issue #4, "
        "shown in the row 'all'.",
    ]
    return t


# --------------------------------------------------------------------------------------------
# Table 6
# --------------------------------------------------------------------------------------------

T6_TASKS = (("OS", ("os",)), ("DB", ("db", "database", "dbbench")),
            ("KG", ("kg", "knowledgegraph")), ("WebShop", ("webshop",)),
            ("ALFWorld", ("alfworld",)), ("Mind2Web", ("mind2web",)))


RELEASE_PREFIXES = ("agent_instruct", "toolbench")


def _norm(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch.isalnum())


def _table6(s: Summary, entries: list[rep.Entry]) -> Table:
    idx = rep.index(entries)
    cfg = s.config("tables", "table6")
    cfg = cfg if isinstance(cfg, dict) else {}
    card = s.data_card
    card_path = s.path("data_card.json")
    ai_src = cfg.get("agentinstruct_source", "agent_instruct_react")
    if ai_src not in card:
        cands = sorted(k for k in card if k.startswith("agent_instruct"))
        if not cands:
            raise DataError(card_path, f"no AgentInstruct source ({ai_src!r}) for Table 6")
        ai_src = cands[0]
    tb_srcs = cfg.get("toolbench_sources") or sorted(k for k in card if k.startswith("toolbench"))
    for src in tb_srcs:
        if src not in card:
            raise DataError(card_path, f"source {src!r} (Table 6 ToolBench row) is missing")
    tasks = card[ai_src].get("tasks") or {}
    if not isinstance(tasks, dict):
        raise DataError(card_path, f"{ai_src}.tasks must be an object {{task: rows}}")
    by_norm = {_norm(k): v for k, v in tasks.items()}
    t = Table("table6", ["samples"])
    ai_total = 0
    for name, aliases in T6_TASKS:
        row = f"AgentInstruct {name}"
        paper = _paper(idx, "table6", row, "samples")
        hit = next((a for a in aliases if a in by_norm), None)
        if hit is None:
            t.set(row, "samples", paper=paper, note=f"no task {name} in {ai_src}.tasks of data_card.json")
        else:
            ai_total += int(by_norm[hit])
            t.set(row, "samples", ours=str(int(by_norm[hit])), paper=paper,
                  note=f"rows of task {name} in {ai_src}")
    ai_paper = [rep.paper_number(idx, "table6", f"AgentInstruct {name}", "samples")
                for name, _ in T6_TASKS]
    t.set("AgentInstruct subtotal", "samples", ours=str(ai_total),
          paper=str(int(sum(ai_paper))) if None not in ai_paper else "",
          note=f"sum of the six tasks in {ai_src}; paper value derived [D] from its task rows")
    tb_total = sum(int(card[k]["rows"]) for k in tb_srcs)
    t.set("ToolBench", "samples", ours=str(tb_total), paper=_paper(idx, "table6", "ToolBench", "samples"),
          note="sum of rows over " + ", ".join(tb_srcs))
    t.set("Total", "samples", ours=str(ai_total + tb_total),
          paper=_paper(idx, "table6", "Total", "samples"), note="AgentInstruct subtotal + ToolBench")
    release = [k for k in sorted(card) if k.startswith(RELEASE_PREFIXES)]
    for src in release:
        t.set(f"file {src}", "samples", ours=str(int(card[src]["rows"])), paper="??",
              note="rows of the release file; per-file counts are unknown in the paper")
    t.set("release files total", "samples", ours=str(sum(int(card[k]["rows"]) for k in release)),
          paper=_paper(idx, "release", "HF internlm/Agent-FLAN", "total rows (7 splits)"),
          note="sum of rows over the Agent-FLAN release files; paper value: third-party conversion log")
    for src in (k for k in sorted(card) if k not in release):
        t.set(f"file {src}", "samples", ours=str(int(card[src]["rows"])),
              note="not an Agent-FLAN release file (general data); the paper gives no count")
    t.footnotes = [
        f"AgentInstruct task counts come from {ai_src} (the ReAct and chat-aligned AgentInstruct "
        "files hold the same trajectories); ToolBench = sum over " + ", ".join(tb_srcs) + ".",
        "Which release files make up the paper's ToolBench count (22,867) is not stated in the paper.",
    ]
    return t


BUILDERS: dict[str, Callable[[Summary, list[rep.Entry]], Table]] = {
    "table1": _table1, "table2": _table2, "table3": _table3,
    "table4": _table4, "table5": _table5, "table6": _table6,
}


def make_table(table_id: str, summary_dir: str | Path, reported_path: str | Path) -> tuple[Table, str]:
    """Build one table in memory: ``(table, markdown)``."""
    if table_id not in BUILDERS:
        raise ValueError(f"unknown table id {table_id!r}; expected one of {TABLE_IDS}")
    s = Summary(summary_dir)
    entries = rep.load_reported(reported_path)
    t = BUILDERS[table_id](s, entries)
    t.footnotes += _seed_notes(s, t)
    ours = {c for (_, c), cell in t.cells.items() if cell["ours"]}   # columns with a number of ours
    for column, notes in (("T-Eval", _teval_notes), ("HotpotQA", _hotpotqa_notes)):
        if column in ours:
            t.footnotes += notes(s)
    if table_id == "table1":
        md = _md_table1(s, t)
    else:
        first = {"table5": "Model", "table6": "Source / task", "table4": "Model"}.get(table_id, "Method")
        md = _caption(s, table_id) + "\n" + _md_paired(t, first=first) \
            + _notes_md(t)
    t.inputs = s.inputs() + [Path(reported_path)]
    return t, md


def build_table(table_id: str, summary_dir: Path, reported_path: Path, out_csv: Path,
                out_md: Path) -> None:
    """Write ``out_csv`` (long form: row,column,ours,paper,note) and ``out_md`` for one table.

    Provenance (:mod:`agentflan.provenance`): the CSV gets the sidecar ``<out_csv>.provenance.json``,
    the Markdown one footer line ``code <hash12> · config <hash12> · inputs <hash12>``; the config
    subset is ``{"table_id"}`` (the job's parameters minus paths), the inputs are the summary files
    the table read and the paper's numbers."""
    t, md = make_table(table_id, summary_dir, reported_path)
    stamp = prov.stamp({"table_id": table_id}, t.inputs)
    write_text(out_csv, t.to_csv())
    prov.write_sidecar(out_csv, stamp)
    write_text(out_md, md.rstrip("\n") + "\n\n" + prov.footer(stamp) + "\n")


def read_table_csv(path: str | Path) -> dict[tuple[str, str], dict[str, str]]:
    """Read a table CSV written by :func:`build_table`: ``{(row, column): {ours, paper, note}}``."""
    path = Path(path)
    rows = _read_csv(path, ("row", "column", "ours", "paper", "note"))
    return {(r["row"], r["column"]): {"ours": r["ours"], "paper": r["paper"], "note": r["note"]}
            for r in rows}
