"""Paper Figures 1-8 rebuilt from the result summaries (PNG, deterministic bytes).

Determinism: the Agg backend, a fixed figure size and dpi, fixed rc parameters, no seaborn error
bars (its bootstrap is random; Figure 4's error bars are the seeded intervals of
``summary/bootstrap.csv``, :mod:`agentflan.reporting.bootstrap`; Figures 1, 7 and 8 draw that
file's interval for a score that is a mean over several training seeds), and
``metadata={"Software": None}`` so the PNG carries neither a version string nor a timestamp.
Same summaries -> same bytes. The one text chunk is the provenance stamp
(``agentflan-provenance``: code hash, config subset, package versions, input hashes;
:mod:`agentflan.provenance`), which holds no time, host or absolute path either.
"""
from __future__ import annotations

import io as _io
import json
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .. import provenance as prov  # noqa: E402
from ..io import DataError, atomic_open  # noqa: E402
from . import reported as rep  # noqa: E402
from .tables import METRICS, Summary, fmt_num  # noqa: E402

FIGURE_IDS = tuple(f"fig{i}" for i in range(1, 9))
DPI = 100
RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "svg.hashsalt": "agentflan",
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "path.simplify": True,
}
# Agent metrics plotted in the scaling figures: (label, column key in tables.METRICS).
AGENT_METRICS = (("T-Eval", "T-Eval"), ("HotpotQA", "HotpotQA"), ("Agent-H (H_Score)", "Agent-H"))
LOSS_FORMAT = ("format", "content")
LOSS_CAPS = ("reasoning", "retrieval", "understanding", "instruction")
FIG5_MAX_CHARS = 180
FIG5_MAX_TURNS = 9
FIG5_WRAP = 62


#: PNG text chunk holding the provenance stamp (canonical JSON, ASCII).
PNG_PROVENANCE_KEY = "agentflan-provenance"


def _save(fig: Any, out_png: Path, stamp: dict | None = None) -> None:
    buf = _io.BytesIO()
    fig.tight_layout()
    metadata: dict[str, Any] = {"Software": None}
    if stamp is not None:
        metadata[PNG_PROVENANCE_KEY] = json.dumps(stamp, sort_keys=True, ensure_ascii=True,
                                                  separators=(",", ":"))
    fig.savefig(buf, format="png", dpi=DPI, metadata=metadata)
    plt.close(fig)
    with atomic_open(out_png, "wb", encoding=None) as fh:
        fh.write(buf.getvalue())


def _caption(s: Summary, text: str) -> str:
    return f"{text}\n(run {s.run}, preset {s.preset})"


def _score(s: Summary, model_id: str, column: str, what: str) -> float | None:
    s.require_model(model_id, what)
    return s.score(model_id, column)


def _seed_interval(s: Summary, model_id: str, column: str) -> tuple[float, float] | None:
    """``(lo, hi)`` of a score that is a mean over several training seeds (training.seeds): its
    bootstrap interval over items and seeds (``bootstrap.csv``); None for one seed (Figures 1, 7
    and 8 then draw no bar, as before seeds existed)."""
    b = s.bootstrap
    r = b.cell(model_id, *METRICS[column]) if b is not None else None
    if r is None or r["n_seeds"] < 2:
        return None
    return r["lo"], r["hi"]


def _interval_title(s: Summary) -> str:
    b = s.bootstrap
    return f"means over training seeds; error bars: {b.level:.0%} bootstrap intervals (items and seeds)"


def _draw_intervals(ax, pts: list[tuple[float, float, float]]) -> None:
    """Vertical bars ``[lo, hi]`` at ``x`` (drawn around the interval's midpoint: a percentile
    interval need not be centred on the mean), for ``(x, lo, hi)``."""
    if pts:
        ax.errorbar([x for x, _, _ in pts], [(lo + hi) / 2 for _, lo, hi in pts],
                    yerr=[(hi - lo) / 2 for _, lo, hi in pts], fmt="none", ecolor="black",
                    elinewidth=0.8, capsize=2)


# ---------------------------------------------------------------------------------------------
# Figure 1: grouped bars normalised to a reference, Agent-FLAN-minus-best-other labels
# ---------------------------------------------------------------------------------------------

def figure1_data(s: Summary, entries: list[rep.Entry], reference: str | None = None) -> dict:
    """Normalised bars and labels: ``{"reference", "columns", "not_run", "bars": {(series, col):
    value}, "labels": {col: value}, "highlight": series, "series": [labels]}``.

    ``reference`` overrides the configured one (the diff always compares against GPT-4)."""
    cfg = s.config("figures", "fig1")
    series = cfg.get("series") if isinstance(cfg, dict) else None
    if not series:
        raise DataError(s.path("experiments.json"), "figures.fig1.series is empty or missing")
    reference = str(reference or cfg.get("reference", "best"))
    labels_ = [e["label"] for e in series]
    highlight = next((lab for lab in labels_ if lab.startswith(rep.FIG1_HIGHLIGHT)), labels_[-1])
    columns = [c for c in rep.FIG1_COLUMNS if s.has_column(c)]
    not_run = [c for c in rep.FIG1_COLUMNS if c not in columns]
    raw: dict[tuple[str, str], float] = {}
    for e in series:
        for c in columns:
            v = _score(s, e["model_id"], c, f"Figure 1 series {e['label']!r}")
            if v is not None:
                raw[(e["label"], c)] = v
    refs: dict[str, float] = {}
    if reference == "best":
        for c in columns:
            vals = [raw[(lab, c)] for lab in labels_ if (lab, c) in raw]
            if vals and max(vals) > 0:
                refs[c] = max(vals)
    elif reference.startswith("paper:"):
        row = reference.split(":", 1)[1]
        idx = rep.index(entries)
        for c in columns:
            v = rep.paper_number(idx, "table1", row, c)
            if v:
                refs[c] = v
    else:
        raise DataError(s.path("experiments.json"),
                        f"figures.fig1.reference {reference!r}: expected 'best' or 'paper:<Table 1 row>'")
    columns = [c for c in columns if c in refs]
    bars = {(lab, c): raw[(lab, c)] / refs[c] * 100.0 for lab in labels_ for c in columns
            if (lab, c) in raw}
    # several training seeds: the bar is the mean, its interval normalised like the bar
    intervals = {}
    for e in series:
        for c in columns:
            iv = _seed_interval(s, e["model_id"], c) if (e["label"], c) in bars else None
            if iv is not None:
                intervals[(e["label"], c)] = (iv[0] / refs[c] * 100.0, iv[1] / refs[c] * 100.0)
    labels = {}
    for c in columns:
        others = [bars[(lab, c)] for lab in labels_ if lab != highlight and (lab, c) in bars]
        if (highlight, c) in bars and others:
            labels[c] = bars[(highlight, c)] - max(others)
    return {"reference": reference, "columns": columns, "not_run": not_run, "bars": bars,
            "labels": labels, "highlight": highlight, "series": labels_, "intervals": intervals}


def _fig1(s: Summary, entries: list[rep.Entry]) -> Any:
    d = figure1_data(s, entries)
    if not d["columns"]:
        raise DataError(s.path("scores.csv"), "Figure 1: no column has scores for every reference")
    df = pd.DataFrame([{"column": c, "series": lab, "value": d["bars"][(lab, c)]}
                       for c in d["columns"] for lab in d["series"] if (lab, c) in d["bars"]])
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    sns.barplot(data=df, x="column", y="value", hue="series", order=d["columns"],
                hue_order=d["series"], errorbar=None, ax=ax, palette="Blues")
    ymax = max(df["value"].max(), *(h for _, h in d["intervals"].values()), 1.0)
    hi = d["series"].index(d["highlight"])
    width = 0.8 / len(d["series"])
    _draw_intervals(ax, [(i - 0.4 + width * (j + 0.5), *d["intervals"][(lab, c)])
                         for i, c in enumerate(d["columns"]) for j, lab in enumerate(d["series"])
                         if (lab, c) in d["intervals"]])
    for i, c in enumerate(d["columns"]):
        if c in d["labels"] and (d["highlight"], c) in d["bars"]:
            x = i - 0.4 + width * (hi + 0.5)
            top = max(d["bars"][(d["highlight"], c)], d["intervals"].get((d["highlight"], c), (0, 0))[1])
            ax.text(x, top + ymax * 0.02,
                    fmt_num(d["labels"][c], 1, sign=True), ha="center", va="bottom",
                    color="green", fontweight="bold")
    ref = "the best series per column" if d["reference"] == "best" \
        else f"the paper's {d['reference'].split(':', 1)[1]} (Table 1)"
    ax.set_ylim(0, ymax * 1.18)
    ax.set_ylabel("Rel. score (%)")
    ax.set_xlabel("")
    title = f"Scores normalised to {ref} = 100%; label: {d['highlight']} minus best other"
    if d["intervals"]:
        title += "\n" + _interval_title(s)
    if d["not_run"]:
        title += "\nnot run: " + ", ".join(d["not_run"])
    ax.set_title(_caption(s, title), fontsize=8)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(d["series"]),
              frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------
# Figures 2-3: loss curves
# ---------------------------------------------------------------------------------------------

def _loss_fig(s: Summary, fig_id: str, categories: tuple[str, ...], title: str,
              reference: dict[str, float] | None = None) -> Any:
    cfg = s.config("figures", fig_id)
    mid = cfg.get("model_id") if isinstance(cfg, dict) else None
    if not mid:
        raise DataError(s.path("experiments.json"), f"figures.{fig_id}.model_id is missing")
    df = pd.DataFrame(s.curves(mid, categories, f"Figure {fig_id[3:]}"))
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    sns.lineplot(data=df, x="step", y="loss", hue="category", hue_order=list(categories),
                 errorbar=None, ax=ax, estimator=None, sort=True)
    for cat, val in (reference or {}).items():
        ax.axhline(val, ls=":", lw=0.8, color="grey")
        ax.text(df["step"].min(), val, f" paper ({cat}, inferred): {val:g}", fontsize=6,
                color="grey", va="bottom", ha="left")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (trained tokens)")
    ax.set_title(_caption(s, f"{title} - model {mid}"), fontsize=8)
    return fig


def _fig2(s: Summary, entries: list[rep.Entry]) -> Any:
    idx = rep.index(entries)
    ref = {}
    for cat, row in (("content", "loss (content/reasoning, inferred)"),
                     ("format", "loss (format, inferred)")):
        v = rep.paper_number(idx, "figure2", row, "value")
        if v is not None:
            ref[cat] = v
    return _loss_fig(s, "fig2", LOSS_FORMAT, "Format vs content loss on ReAct-format data", ref)


def _fig3(s: Summary, entries: list[rep.Entry]) -> Any:
    return _loss_fig(s, "fig3", LOSS_CAPS, "Loss per capability")


# ---------------------------------------------------------------------------------------------
# Figure 4: Agent-H hallucination rates
# ---------------------------------------------------------------------------------------------

FIG4_METRICS = ("H_ReAct", "H_General")


def figure4_intervals(s: Summary, models: list[dict]) -> tuple[dict, list[str]]:
    """Figure 4's error bars and delta line from ``bootstrap.csv`` (empty without it):
    ``({(label, metric): (lo, hi)}, ["H_ReAct Δ ... [lo, hi]*", ...])``, the lines for the
    paper's comparison with/without negative samples (Table 3) when both models are shown."""
    b = s.bootstrap
    if b is None:
        return {}, []
    bars = {}
    for m in models:
        for col in FIG4_METRICS:
            r = b.cell(m["model_id"], *METRICS[col])
            if r is not None:
                bars[(m["label"], col)] = (r["lo"], r["hi"])
    shown = {m["model_id"] for m in models}
    lines = []
    for c in s.comparisons("table3"):
        if c.model_id not in shown or c.ref_model_id not in shown:
            continue
        parts = []
        for col in FIG4_METRICS:
            r = b.paired(c.model_id, c.ref_model_id, *METRICS[col])
            if r is not None:
                parts.append(f"{col} Δ {fmt_num(r['estimate'], 1, sign=True)} "
                             f"[{fmt_num(r['lo'], 1, sign=True)}, {fmt_num(r['hi'], 1, sign=True)}]"
                             + ("*" if r["excludes_0"] else ""))
        if parts:
            lines.append(f"{c.row} vs {c.vs}: " + ", ".join(parts))
    return bars, lines


def _fig4(s: Summary, entries: list[rep.Entry]) -> Any:
    cfg = s.config("figures", "fig4")
    models = cfg.get("models") if isinstance(cfg, dict) else None
    if not models:
        raise DataError(s.path("experiments.json"), "figures.fig4.models is empty or missing")
    rows = []
    for m in models:
        for col in FIG4_METRICS:
            v = _score(s, m["model_id"], col, f"Figure 4 model {m['label']!r}")
            if v is None:
                bench, metric = METRICS[col]
                raise DataError(s.path("scores.csv"),
                                f"model_id {m['model_id']!r} has no {bench}/{metric} (Figure 4)")
            rows.append({"model": m["label"], "metric": col, "rate": v})
    df = pd.DataFrame(rows)
    order = [m["label"] for m in models]
    bars, lines = figure4_intervals(s, models)
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    sns.barplot(data=df, x="model", y="rate", hue="metric", hue_order=list(FIG4_METRICS),
                order=order, errorbar=None, ax=ax)
    for col, cont in zip(FIG4_METRICS, ax.containers):
        ax.bar_label(cont, fmt="%.1f", fontsize=7, label_type="center" if bars else "edge")
        # the interval [lo, hi] itself (drawn around its midpoint: it need not contain the bar's top)
        pts = [(p.get_x() + p.get_width() / 2, bars[(lab, col)]) for lab, p in zip(order, cont.patches)
               if (lab, col) in bars]
        if pts:
            ax.errorbar([x for x, _ in pts], [(lo + hi) / 2 for _, (lo, hi) in pts],
                        yerr=[(hi - lo) / 2 for _, (lo, hi) in pts],
                        fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_ylabel("hallucination rate (%), lower is better")
    ax.set_xlabel("")
    title = "Agent-H hallucination rates"
    if bars:
        b = s.bootstrap
        title += f"; error bars: {b.level:.0%} bootstrap intervals over items ({b.resamples} resamples)"
    title = _caption(s, title)
    for line in lines:
        title += "\n" + textwrap.fill(line + " (paired bootstrap; * = excludes 0)", 110)
    ax.set_title(title, fontsize=7)
    return fig


# ---------------------------------------------------------------------------------------------
# Figure 5: ReAct vs chat-aligned example as text panels
# ---------------------------------------------------------------------------------------------

def _turn_text(turn: dict) -> str:
    """``role [capability]: content``; long turns truncated, line breaks (ReAct fields) kept."""
    content = str(turn.get("content", "")).strip()
    if len(content) > FIG5_MAX_CHARS:
        content = content[:FIG5_MAX_CHARS - 1].rstrip() + "…"
    tag = f" [{turn['capability']}]" if turn.get("capability") else ""
    lines = f"{turn.get('role', '?')}{tag}: {content}".splitlines()
    return "\n".join(textwrap.fill(" ".join(line.split()), FIG5_WRAP, initial_indent=" " * 4 * (i > 0),
                                   subsequent_indent="    ") for i, line in enumerate(lines)
                     if line.strip())


def _panel_text(turns: list) -> str:
    shown = [_turn_text(t if isinstance(t, dict) else {"content": t}) for t in turns[:FIG5_MAX_TURNS]]
    if len(turns) > FIG5_MAX_TURNS:
        shown.append(f"… ({len(turns) - FIG5_MAX_TURNS} more turns)")
    return "\n\n".join(shown)


def _fig5(s: Summary, entries: list[rep.Entry]) -> Any:
    ex = s.examples
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 5.5))
    for ax, key, title in ((axes[0], "react", "ReAct format (original)"),
                           (axes[1], "chat", "Aligned to chat (Agent-FLAN)")):
        ax.axis("off")
        rid = ex[key].get("id")
        ax.set_title(title + (f"\n{rid}" if rid else ""), fontsize=9)
        ax.text(0.0, 1.0, _panel_text(ex[key]["turns"]), va="top", ha="left", family="DejaVu Sans Mono",
                fontsize=7, transform=ax.transAxes)
    sim = ex.get("similarity")
    pairing = "" if sim is None else f" (paired by content: Jaccard {sim:.2f} of non-assistant words)"
    fig.suptitle(_caption(s, "Figure 5: a ReAct record and its chat-aligned rewrite" + pairing), fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------
# Figure 6: negative-sample cases a-d
# ---------------------------------------------------------------------------------------------

def _fig6(s: Summary, entries: list[rep.Entry]) -> Any:
    cfg = s.config("figures", "fig6")
    ds = cfg.get("dataset_id") if isinstance(cfg, dict) else None
    if not ds:
        raise DataError(s.path("experiments.json"), "figures.fig6.dataset_id is missing")
    st = s.ablation(ds, "Figure 6")
    grid = [["a", "b"], ["c", "d"]]
    for row in grid:
        for k in row:
            if f"case_{k}" not in st:
                raise DataError(s.path("ablation_stats.csv"), f"dataset_id {ds!r} has no case_{k}")
    values = [[st[f"case_{k}"] for k in row] for row in grid]
    annot = [[f"({k})\n{int(st[f'case_{k}'])}" for k in row] for row in grid]
    df = pd.DataFrame(values, index=["general query", "tool-needing query"],
                      columns=["no tools given", "tools given"])
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    sns.heatmap(df, annot=annot, fmt="", cmap="Blues", cbar=True, ax=ax, linewidths=0.5)
    ax.set_title(_caption(s, f"Negative-sample cases, dataset {ds}"), fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# Figures 7-8: scaling
# ---------------------------------------------------------------------------------------------

def _metric_rows(s: Summary, model_id: str, what: str, extra: dict) -> list[dict]:
    """A point per agent metric; ``lo``/``hi``: its interval when it is a mean over seeds."""
    rows = []
    s.require_model(model_id, what)
    for label, col in AGENT_METRICS:
        v = s.score(model_id, col)
        if v is not None:
            iv = _seed_interval(s, model_id, col)
            rows.append({**extra, "metric": label, "score": v,
                         **({"lo": iv[0], "hi": iv[1]} if iv is not None else {})})
    return rows


def _point_intervals(ax, df: pd.DataFrame, x: str) -> bool:
    """Draw the rows' ``[lo, hi]`` (several seeds) at column ``x``; True when any was drawn."""
    if "lo" not in df.columns:
        return False
    sub = df[df["lo"].notna()]
    _draw_intervals(ax, [(float(r[x]), float(r["lo"]), float(r["hi"])) for _, r in sub.iterrows()])
    return not sub.empty


def _fig7(s: Summary, entries: list[rep.Entry]) -> Any:
    cfg = s.config("figures", "fig7")
    points = cfg.get("points") if isinstance(cfg, dict) else None
    if not points:
        raise DataError(s.path("experiments.json"), "figures.fig7.points is empty or missing")
    rows = []
    for p in points:
        rows += _metric_rows(s, p["model_id"], f"Figure 7 fraction {p['fraction']}",
                             {"fraction": float(p["fraction"]) * 100.0})
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    sns.lineplot(data=df, x="fraction", y="score", hue="metric", marker="o", errorbar=None,
                 estimator=None, sort=True, ax=ax,
                 hue_order=[m for m, _ in AGENT_METRICS if m in set(df["metric"])])
    seeded = _point_intervals(ax, df, "fraction")
    ax.axvline(25, ls=":", lw=0.8, color="grey")
    ax.text(25, ax.get_ylim()[1], " paper: 25% gives most of the gain", fontsize=6, color="grey",
            va="top")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xlabel("fraction of Agent-FLAN training data (%)")
    ax.set_ylabel("score (%)")
    ax.set_title(_caption(s, "Data scaling" + ("\n" + _interval_title(s) if seeded else "")), fontsize=8)
    return fig


def _fig8(s: Summary, entries: list[rep.Entry]) -> Any:
    cfg = s.config("figures", "fig8")
    series = cfg.get("series") if isinstance(cfg, dict) else None
    if not series:
        raise DataError(s.path("experiments.json"), "figures.fig8.series is empty or missing")
    rows = []
    for ser in series:
        for p in ser["points"]:
            rows += _metric_rows(s, p["model_id"], f"Figure 8 series {ser['label']!r} size {p['size']}",
                                 {"series": ser["label"], "size": str(p["size"]),
                                  "params": float(p["params"]) if p.get("params") else None})
    df = pd.DataFrame(rows)
    metrics = [m for m, _ in AGENT_METRICS if m in set(df["metric"])]
    # x: parameter count on a log axis when every point gives one, else the sizes in config order
    log_x = df["params"].notna().all()
    if not log_x:
        order = list(dict.fromkeys(df["size"]))
        df["params"] = [float(order.index(sz)) for sz in df["size"]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.4), squeeze=False)
    ticks = df.drop_duplicates("params").sort_values("params")
    seeded = False
    for ax, m in zip(axes[0], metrics):
        sub = df[df["metric"] == m]
        sns.lineplot(data=sub, x="params", y="score", hue="series", marker="o", errorbar=None,
                     estimator=None, sort=True, ax=ax, hue_order=[x["label"] for x in series])
        seeded = _point_intervals(ax, sub, "params") or seeded
        if log_x:
            ax.set_xscale("log")
        ax.set_xticks(list(ticks["params"]), list(ticks["size"]))
        ax.minorticks_off()
        ax.set_title(m, fontsize=8)
        ax.set_xlabel("model size")
        ax.set_ylabel("score (%)")
    fig.suptitle(_caption(s, "Model scaling" + ("\n" + _interval_title(s) if seeded else "")), fontsize=8)
    return fig


BUILDERS = {"fig1": _fig1, "fig2": _fig2, "fig3": _fig3, "fig4": _fig4,
            "fig5": _fig5, "fig6": _fig6, "fig7": _fig7, "fig8": _fig8}


def build_figure(fig_id: str, summary_dir: Path, reported_path: Path, out_png: Path) -> None:
    """Render one paper figure from the summaries into ``out_png``; its provenance stamp (config
    subset ``{"fig_id"}``, inputs: the summary files read and the paper's numbers) goes into the
    PNG text chunk :data:`PNG_PROVENANCE_KEY`."""
    if fig_id not in BUILDERS:
        raise ValueError(f"unknown figure id {fig_id!r}; expected one of {FIGURE_IDS}")
    s = Summary(summary_dir)
    entries = rep.load_reported(reported_path)
    with matplotlib.rc_context(RC), sns.axes_style("whitegrid"):
        fig = BUILDERS[fig_id](s, entries)
        _save(fig, Path(out_png), prov.stamp({"fig_id": fig_id}, s.inputs() + [Path(reported_path)]))


__all__ = ["build_figure", "figure1_data", "FIGURE_IDS"]
