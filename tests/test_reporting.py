"""Reporting: tables, figures and the diff against the paper, built from canned result summaries
(tests/fixtures/summary/)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from agentflan.io import DataError
from agentflan.reporting import (FIGURE_IDS, TABLE_IDS, build_diff, build_figure, build_table,
                                 consistency_checks, load_reported)
from agentflan.reporting.diff import compare, diff_rows
from agentflan.reporting.figures import figure1_data
from agentflan.reporting.reported import HELD_OUT, index, printed_tolerance, rows_of
from agentflan.reporting.tables import (Summary, fmt_num, fmt_sci, fmt_tokens, parse_tokens,
                                        read_table_csv)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "summary"
REPORTED = ROOT / "paper" / "paper_reported.yaml"
if not REPORTED.exists():  # before the lead copies it into the repo
    REPORTED = ROOT.parent / "shared" / "paper" / "paper_reported.yaml"


def build_all(summary: Path, out: Path) -> Path:
    for t in TABLE_IDS:
        build_table(t, summary, REPORTED, out / f"{t}.csv", out / f"{t}.md")
    for f in FIGURE_IDS:
        build_figure(f, summary, REPORTED, out / f"{f}.png")
    build_diff(summary, REPORTED, out, out / "diff_vs_paper.md", out / "diff_vs_paper.csv")
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_all(FIXTURE, tmp_path_factory.mktemp("reports"))


def cells(built: Path, table_id: str) -> dict:
    return read_table_csv(built / f"{table_id}.csv")


def ours(built: Path, table_id: str, row: str, column: str) -> str:
    return cells(built, table_id)[(row, column)]["ours"]


def edited_summary(tmp_path: Path, edit) -> Path:
    d = tmp_path / "summary"
    shutil.copytree(FIXTURE, d)
    edit(d)
    return d


def diff_status(built: Path) -> dict:
    with open(built / "diff_vs_paper.csv", newline="", encoding="utf-8") as fh:
        return {(r["id"], r["row"], r["column"]): r for r in csv.DictReader(fh)}


# ------------------------------------------------------------------------------------- format

def test_token_formatting():
    assert fmt_tokens(19_200_000) == "19.2M"
    assert fmt_tokens(37_300) == "37.3k"
    assert fmt_tokens(18_123_456) == "18.1M"
    assert fmt_tokens(512) == "512"
    assert fmt_tokens(999_960) == "1.0M"
    assert fmt_tokens(2_500_000_000) == "2.5B"
    assert parse_tokens("19.2M") == pytest.approx(19_200_000)
    assert parse_tokens("37.3k") == pytest.approx(37_300)
    assert fmt_num(-0.001) == "0.00" and fmt_num(0.2, sign=True) == "+0.20"
    assert fmt_sci(2e-5) == "2e-5" and fmt_sci(0.03) == "0.03"
    # below 0.01 in the paper's style too (the miniature's learning rates), never "0.002e0"
    assert [fmt_sci(x) for x in (0.002, 0.0004, 3.5e-4, 1.25e5, -2e-5)] == ["2e-3", "4e-4", "3.5e-4", "1.25e5", "-2e-5"]


# ------------------------------------------------------------------------------------- Table 1

def test_table1_values_from_scores(built):
    c = cells(built, "table1")
    assert c[("Agent-FLAN", "T-Eval")] == {"ours": "50.25", "paper": "66.0", "note": ""}
    assert c[("Agent-FLAN", "HotpotQA")]["ours"] == "20.00"
    assert c[("Agent-FLAN", "Agent-H")]["ours"] == "89.00"
    assert c[("Llama2-7B", "T-Eval")]["ours"] == "20.50"
    assert c[("AgentTuning*", "Agent-H")]["paper"] == "84.5"
    assert c[("Agent-FLAN", "SciWorld")]["paper"] == "20.0"  # printed as in the paper
    # an empty value in scores.csv (metric not computable) is a missing score, not an error
    assert ("base-7b", "hotpotqa", "em") not in Summary(FIXTURE).scores


def test_table1_overall_over_available_columns(built):
    col = "Overall (available: HotpotQA, T-Eval, Agent-H)"
    c = cells(built, "table1")
    assert c[("Agent-FLAN", col)]["ours"] == fmt_num((20.0 + 50.25 + 89.0) / 3) == "53.08"
    assert c[("Llama2-7B", col)]["ours"] == "35.25"
    # paper column derived from the paper's own cells, and labelled as such
    assert c[("Agent-FLAN", col)]["paper"] == fmt_num((28.5 + 66.0 + 89.1) / 3)
    assert "derived" in c[("Agent-FLAN", col)]["note"]
    # never pretends to be the paper's Overall
    assert c[("Agent-FLAN", "Overall")]["ours"] == ""
    assert "five held-out" in c[("Agent-FLAN", "Overall")]["note"]
    assert c[("Agent-FLAN", "Overall")]["paper"] == "41.7"
    md = (built / "table1.md").read_text()
    assert col in md and "not the paper's Overall" in md


def test_table1_full_overall_when_all_held_out_columns_exist(tmp_path):
    def add(d: Path):
        with open(d / "scores.csv", "a", encoding="utf-8") as fh:
            for m, sci, web in (("base-7b", 4.0, 1.0), ("react-7b", 10.0, 2.0), ("agentflan-7b", 12.0, 3.0)):
                fh.write(f"{m},sciworld,score,{sci}\n{m},webarena,success,{web}\n")
    s = edited_summary(tmp_path, add)
    build_table("table1", s, REPORTED, tmp_path / "t1.csv", tmp_path / "t1.md")
    c = read_table_csv(tmp_path / "t1.csv")
    assert c[("Agent-FLAN", "Overall")]["ours"] == fmt_num((20.0 + 12.0 + 3.0 + 50.25 + 89.0) / 5) == "34.85"
    assert not any(col.startswith("Overall (available") for _, col in c)
    assert c[("Agent-FLAN", "SciWorld")]["ours"] == "12.00"


def test_not_run_markers(built):
    c = cells(built, "table1")
    for col in ("Held-In", *HELD_OUT, "Overall"):
        cell = c[("GPT-4", col)]
        assert cell["ours"] == "" and cell["note"] == "proprietary API model"
    assert c[("FireAct-7B", "Held-In")]["paper"] == "-"
    assert c[("Agent-FLAN", "WebArena")]["ours"] == "" and "WebArena" in c[("Agent-FLAN", "WebArena")]["note"]
    md = (built / "table1.md").read_text()
    assert "n/a (not run: proprietary API model)" in md
    assert "n/a (not run: ScienceWorld switched off (evaluation.benchmarks.sciworld.enabled: false))" in md
    assert md.splitlines()[0].startswith("Table 1") and "preset `miniature`" in md.splitlines()[0]
    # every table: caption line; every empty cell has a reason
    for t in TABLE_IDS:
        first = (built / f"{t}.md").read_text().splitlines()[0]
        assert "run `fixture`" in first and "paper" in first
        for (row, col), cell in cells(built, t).items():
            assert cell["ours"] or cell["note"], (t, row, col)


def test_paper_rows_recompute_overall():
    entries = load_reported(REPORTED)
    idx = index(entries)
    for row in rows_of(entries, "table1"):
        vals = [idx[("table1", row, c)].value for c in HELD_OUT]
        printed = idx[("table1", row, "Overall")].value
        tol = 0.06 if row == "GPT-3.5" else 0.05  # GPT-3.5: documented erratum (47.852 vs 47.8)
        assert abs(sum(vals) / 5 - printed) <= tol, row
    gpt35 = [idx[("table1", "GPT-3.5", c)].value for c in HELD_OUT]
    assert sum(gpt35) / 5 == pytest.approx(47.852)
    assert abs(sum(gpt35) / 5 - 47.8) > printed_tolerance(47.8)


# ------------------------------------------------------------------------------------- Tables 2-6

def test_table2_tokens_and_scores(built):
    c = cells(built, "table2")
    assert c[("ReAct (AgentTuning* baseline)", "Tokens")] == {"ours": "19.2M", "paper": "19.2M", "note": ""}
    assert c[("Align-Chat All (equal weights)", "Tokens")]["ours"] == "37.3k"
    assert c[("All (Weighted) 1:0.25:0.75", "Tokens")]["ours"] == "18.1M"
    assert c[("Reasoning halved", "Tokens")]["paper"] == "??"
    assert c[("Reasoning halved", "T-Eval")] == {"ours": "44.00", "paper": "63.8", "note": ""}
    assert c[("Understanding halved", "HotpotQA")]["ours"] == "17.75"
    assert c[("Retrieval halved", "Tokens retrieval")]["ours"] == "4.5k"
    rows = [r for r, _ in c]
    assert rows[0] == "ReAct (AgentTuning* baseline)"


def test_table3(built):
    c = cells(built, "table3")
    assert c[("Agent-FLAN w/o NS", "H_Score")] == {"ours": "85.45", "paper": "84.5", "note": ""}
    assert c[("Llama2-7B", "T-Eval")]["paper"] == "??"
    assert c[("Agent-FLAN", "H_ReAct")]["ours"] == "10.00"
    assert "85.45" in (built / "table3.md").read_text()


def test_table4_deltas(built):
    c = cells(built, "table4")
    assert c[("Llama2-7B", "MMLU general-only")]["ours"] == "40.40"
    assert c[("Llama2-7B", "MMLU general+agent")]["ours"] == "40.10"
    assert c[("Llama2-7B", "MMLU delta")] == {"ours": "-0.30", "paper": "-0.3", "note": ""}
    assert c[("Llama2-7B", "GSM8K delta")] == {"ours": "+0.20", "paper": "+0.2", "note": ""}
    assert c[("Llama2-7B", "HumanEval delta")]["ours"] == "+0.40"
    assert c[("Llama2-7B", "MMLU general-only")]["paper"] == "??"
    assert c[("Llama2-13B", "MMLU delta")] == {"ours": "", "paper": "+1.1",
                                               "note": "row not configured for this run"}
    assert "n/a (not run:" in (built / "table4.md").read_text()


def test_table5_hyperparameters(built):
    c = cells(built, "table5")
    assert c[("Llama2-7B", "learning rate")] == {"ours": "2e-5", "paper": "2e-5", "note": ""}
    assert c[("Llama2-7B", "batch size")]["ours"] == "32"
    assert c[("Llama2-7B", "GPUs")] == {"ours": "1", "paper": "16", "note": ""}
    assert c[("Llama2-7B", "warmup LR")] == {"ours": "4e-6", "paper": "4e-6", "note": ""}
    assert c[("Llama2-7B", "warmup ratio")]["ours"] == "0.03"
    assert c[("all", "max sequence length")]["ours"] == "2048"
    assert c[("all", "max sequence length")]["paper"] == "8192"
    assert c[("Llama2-70B", "batch size")]["paper"] == "128"


def test_table6_counts(built):
    c = cells(built, "table6")
    assert c[("AgentInstruct DB", "samples")] == {"ours": "4", "paper": "538",
                                                  "note": "rows of task DB in agent_instruct_react"}
    assert c[("AgentInstruct subtotal", "samples")]["ours"] == "20"
    assert c[("AgentInstruct subtotal", "samples")]["paper"] == "1836"
    assert c[("ToolBench", "samples")]["ours"] == "46"
    assert c[("Total", "samples")] == {"ours": "66", "paper": "24703",
                                       "note": "AgentInstruct subtotal + ToolBench"}
    assert c[("release files total", "samples")]["ours"] == "86"
    assert c[("release files total", "samples")]["paper"] == "34442"
    # ShareGPT is listed but is not part of the release total
    assert c[("file sharegpt", "samples")]["ours"] == "50" and c[("file sharegpt", "samples")]["paper"] == ""


def test_table5_without_warmup_start_lr(tmp_path):
    def drop(d: Path):
        rows = list(csv.DictReader(open(d / "train_config.csv", encoding="utf-8")))
        cols = [c for c in rows[0] if c != "warmup_start_lr"]
        with open(d / "train_config.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, cols, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    s = edited_summary(tmp_path, drop)
    build_table("table5", s, REPORTED, tmp_path / "t5.csv", tmp_path / "t5.md")
    cell = read_table_csv(tmp_path / "t5.csv")[("Llama2-7B", "warmup LR")]
    assert cell["ours"] == "" and "warmup_start_lr" in cell["note"]
    assert "n/a (not configured: see warmup ratio)" in (tmp_path / "t5.md").read_text()


# ------------------------------------------------------------------------------------- figures

def test_figure1_labels_from_data():
    s = Summary(FIXTURE)
    entries = load_reported(REPORTED)
    d = figure1_data(s, entries)
    assert d["reference"] == "best" and d["columns"] == ["HotpotQA", "T-Eval"]
    assert d["not_run"] == ["Held-In", "SciWorld", "WebArena"]
    assert d["bars"][("Agent-FLAN", "HotpotQA")] == pytest.approx(100.0)
    assert d["labels"]["HotpotQA"] == pytest.approx(100.0 - 15.5 / 20.0 * 100.0)
    g = figure1_data(s, entries, reference="paper:GPT-4")
    assert g["bars"][("Agent-FLAN", "T-Eval")] == pytest.approx(50.25 / 86.4 * 100.0)
    assert g["labels"]["T-Eval"] == pytest.approx((50.25 - 40.0) / 86.4 * 100.0)


def test_figure8_axis(tmp_path):
    import matplotlib.pyplot as plt

    from agentflan.reporting import figures

    entries = load_reported(REPORTED)
    fig = figures.BUILDERS["fig8"](Summary(FIXTURE), entries)  # no params: sizes in config order
    assert [ax.get_xscale() for ax in fig.axes] == ["linear"] * 3
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["tiny", "small"]
    plt.close(fig)

    def params(d: Path):
        exp = json.loads((d / "experiments.json").read_text())
        for ser in exp["figures"]["fig8"]["series"]:
            for p, n in zip(ser["points"], (1e6, 4e6)):
                p["params"] = n
        (d / "experiments.json").write_text(json.dumps(exp))
    fig = figures.BUILDERS["fig8"](Summary(edited_summary(tmp_path, params)), entries)
    assert [ax.get_xscale() for ax in fig.axes] == ["log"] * 3
    plt.close(fig)


def test_figures_are_png(built):
    for f in FIGURE_IDS:
        data = (built / f"{f}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"Software" not in data and b"matplotlib" not in data.lower()


# ------------------------------------------------------------------------------------- diff

def test_diff_statuses(built):
    st = diff_status(built)
    assert list(next(iter(st.values())).keys()) == ["id", "row", "column", "paper", "ours", "delta", "status"]
    assert st[("table4", "Llama2-7B", "MMLU delta")]["status"] == "match"
    r = st[("table3", "Agent-FLAN", "T-Eval")]
    assert (r["paper"], r["ours"], r["delta"], r["status"]) == ("66.0", "50.25", "-15.75", "differs")
    assert st[("table3", "Agent-FLAN", "H_ReAct")]["status"] == "match"  # 10.00 vs 9.9, tol 0.5
    assert st[("table1", "GPT-4", "Held-In")]["status"] == "not produced (proprietary API model)"
    assert st[("table1", "Agent-FLAN", "SciWorld")]["status"].startswith("not produced (ScienceWorld switched off")
    assert st[("table1", "Agent-FLAN", "Overall")]["status"].startswith("not produced (Overall needs")
    assert st[("table2", "Reasoning halved", "Tokens")]["status"] == "unknown in paper"
    assert st[("table2", "ReAct (AgentTuning* baseline)", "Tokens")]["status"] == "match"
    assert st[("table2", "Align-Chat All (equal weights)", "Tokens")]["status"] == "differs"
    assert st[("table1", "FireAct-7B", "Held-In")]["status"] == "not in paper (printed '-')"
    assert st[("figure3", "per-capability loss curves", "all")]["status"] == "unknown in paper"
    assert st[("table5", "Llama2-7B", "learning rate")]["status"] == "match"
    assert st[("table5", "Llama2-7B", "LR schedule")]["status"] == "match"
    assert st[("table5", "Llama2-7B", "GPUs")]["status"] == "differs"
    assert st[("table5", "Llama2-7B", "warmup LR")]["status"] == "match"
    # Figure 1 in the diff is always normalised to the paper's GPT-4, whatever the plot uses
    assert st[("figure1", "Agent-FLAN", "T-Eval")]["ours"] == fmt_num(50.25 / 86.4 * 100)
    assert st[("figure2", "loss (format, inferred)", "value")]["ours"] == "0.115"
    # every yaml entry has exactly one row
    assert len(st) == len(load_reported(REPORTED))
    allowed = ("match", "differs", "not produced (", "unknown in paper", "not in paper (")
    assert all(r["status"].startswith(allowed) for r in st.values())


def test_diff_header_and_checks(built):
    md = (built / "diff_vs_paper.md").read_text()
    assert "preset `miniature`" in md and "not expected to match" in md
    for needle in ("47.852", "+4.0", "85.45", "84.5", "83.9"):
        assert needle in md
    assert "Paper-internal consistency checks" in md
    assert "INCONSISTENT" not in md


def test_diff_tolerance_configurable(built):
    _, _, rows = diff_rows(FIXTURE, REPORTED, built, tolerance=20.0)
    st = {(r["id"], r["row"], r["column"]): r["status"] for r in rows}
    assert st[("table3", "Agent-FLAN", "T-Eval")] == "match"
    _, _, rows = diff_rows(FIXTURE, REPORTED, built, tolerances={"table3/Agent-FLAN/H_ReAct": 0.05})
    st = {(r["id"], r["row"], r["column"]): r["status"] for r in rows}
    assert st[("table3", "Agent-FLAN", "H_ReAct")] == "differs"
    e = next(x for x in load_reported(REPORTED) if (x.id, x.row, x.column) == ("table1", "GPT-4", "T-Eval"))
    assert compare(e, "86.0") == ("-0.40", "match")
    assert compare(e, "85.8") == ("-0.60", "differs")


def test_diff_paper_preset_header(tmp_path, built):
    def paper(d: Path):
        exp = json.loads((d / "experiments.json").read_text())
        exp["preset"] = "paper"
        (d / "experiments.json").write_text(json.dumps(exp))
    s = edited_summary(tmp_path, paper)
    build_diff(s, REPORTED, built, tmp_path / "d.md", tmp_path / "d.csv")
    md = (tmp_path / "d.md").read_text()
    assert "preset `paper`" in md and "default 0.5 points" in md


def test_paper_internal_checks():
    checks = {c["check"]: c for c in consistency_checks(load_reported(REPORTED))}
    lab = checks["Figure 1 label T-Eval = Agent-FLAN bar - best other 7B bar"]
    assert round(lab["recomputed"], 2) == 4.86 and lab["printed"] == 4.0
    assert lab["status"] == "known erratum (fig1_teval_label)"
    for col, printed in (("Held-In", 1.8), ("HotpotQA", 6.0), ("SciWorld", 8.8), ("WebArena", 31.4)):
        c = checks[f"Figure 1 label {col} = Agent-FLAN bar - best other 7B bar"]
        assert c["status"] == "ok" and c["printed"] == printed
    wo = checks["Table 3 Agent-FLAN w/o NS: H_Score = 0.5*((100-H_ReAct)+(100-H_General))"]
    assert wo["recomputed"] == pytest.approx(85.45) and wo["status"].startswith("known erratum")
    g35 = checks["Table 1 GPT-3.5: Overall = mean(HotpotQA, SciWorld, WebArena, T-Eval, Agent-H)"]
    assert g35["recomputed"] == pytest.approx(47.852) and g35["status"].startswith("known erratum")
    at = checks["Table 1 AgentTuning* Agent-H = Table 3 AgentTuning H_Score"]
    assert at["status"].startswith("known erratum")
    assert checks["Table 6 Total = sum of the per-source counts"]["status"] == "ok"
    assert checks["Abstract +3.5 = Table 1 Overall Agent-FLAN - AgentTuning*"]["status"] == "ok"
    others = [c for c in checks.values() if not c["status"].startswith("known erratum")]
    assert others and all(c["status"] == "ok" for c in others)
    assert sum(c["check"].startswith("Figure 1 bar") for c in checks.values()) == 20


# ------------------------------------------------------------------------------------- determinism

def test_deterministic_outputs(built, tmp_path):
    again = build_all(FIXTURE, tmp_path / "again")
    names = sorted(p.name for p in built.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for n in names:
        assert (built / n).read_bytes() == (again / n).read_bytes(), n


# ------------------------------------------------------------------------------------- errors

def test_missing_model_id_is_a_clear_error(tmp_path):
    def ghost(d: Path):
        exp = json.loads((d / "experiments.json").read_text())
        exp["tables"]["table3"][0]["model_id"] = "ghost-7b"
        exp["figures"]["fig4"]["models"][0]["model_id"] = "ghost-7b"
        (d / "experiments.json").write_text(json.dumps(exp))
    s = edited_summary(tmp_path, ghost)
    with pytest.raises(DataError, match=r"scores\.csv.*ghost-7b"):
        build_table("table3", s, REPORTED, tmp_path / "t.csv", tmp_path / "t.md")
    with pytest.raises(DataError, match=r"scores\.csv.*ghost-7b"):
        build_figure("fig4", s, REPORTED, tmp_path / "f.png")
    assert not (tmp_path / "t.csv").exists() and not (tmp_path / "f.png").exists()


def test_missing_file_and_dataset_errors(tmp_path):
    s = edited_summary(tmp_path, lambda d: (d / "train_curves.csv").unlink())
    with pytest.raises(DataError, match=r"train_curves\.csv: file not found"):
        build_figure("fig2", s, REPORTED, tmp_path / "f.png")

    def bad_ds(d: Path):
        exp = json.loads((d / "experiments.json").read_text())
        exp["figures"]["fig6"]["dataset_id"] = "nope"
        (d / "experiments.json").write_text(json.dumps(exp))
    s2 = edited_summary(tmp_path / "b", bad_ds)
    with pytest.raises(DataError, match=r"ablation_stats\.csv.*'nope'"):
        build_figure("fig6", s2, REPORTED, tmp_path / "f.png")
    with pytest.raises(ValueError, match="unknown table id"):
        build_table("table9", FIXTURE, REPORTED, tmp_path / "x.csv", tmp_path / "x.md")


def test_diff_needs_all_tables(tmp_path):
    build_table("table1", FIXTURE, REPORTED, tmp_path / "table1.csv", tmp_path / "table1.md")
    with pytest.raises(DataError, match=r"table2\.csv"):
        build_diff(FIXTURE, REPORTED, tmp_path, tmp_path / "d.md", tmp_path / "d.csv")


def _rec(rid, system, query, answer):
    return {"id": rid, "turns": [{"role": "system", "content": system}, {"role": "user", "content": query},
                                 {"role": "assistant", "content": answer}]}


def test_figure5_pairs_a_react_record_with_its_own_rewrite(tmp_path):
    from agentflan.io import write_jsonl
    from agentflan.stages import _examples
    call = 'Thought: look it up.\nAction: get_time\nAction Input: {"city": "%s"}'
    write_jsonl(tmp_path / "react.jsonl", [_rec("r0", "tools: get_time", "Time in Oslo?", "no tool call"),
                                           _rec("r1", "tools: get_time", "Time in Lima?", call % "Lima"),
                                           _rec("r2", "tools: get_time", "Time in  Rome?", call % "Rome")])
    write_jsonl(tmp_path / "chat.jsonl", [_rec("c0", "tools: get_weather", "Weather in Lima?", "get_weather"),
                                          _rec("c1", "tools: get_time", "Time in Rome?", "get_time"),
                                          _rec("c2", "tools: get_time", "Time in Oslo?", "get_time")])
    ex = _examples(str(tmp_path / "react.jsonl"), str(tmp_path / "chat.jsonl"))
    # r0 has no tool call; r1's query has no rewrite; r2 matches c1 up to whitespace.
    assert (ex["react"]["id"], ex["chat"]["id"], ex["similarity"]) == ("r2", "c1", 1.0)
    # Without an exact query match, the most similar pair is shown and its similarity reported.
    write_jsonl(tmp_path / "chat.jsonl", [_rec("c0", "tools: get_weather", "Weather in Lima?", "x"),
                                          _rec("c1", "tools: get_time", "What time is it in Rome?", "x")])
    ex = _examples(str(tmp_path / "react.jsonl"), str(tmp_path / "chat.jsonl"))
    assert (ex["react"]["id"], ex["chat"]["id"]) == ("r2", "c1") and 0 < ex["similarity"] < 1


# ------------------------------------------------------------------------------------- bootstrap intervals

def _bootstrap_summary(tmp_path: Path) -> Path:
    """The fixture summary plus a bootstrap.csv computed from synthetic per-item scores: Reasoning
    halved far below All (Weighted) on T-Eval, the other rows noise; allchat-7b has two seeds."""
    import numpy as np

    from agentflan.reporting import bootstrap as B

    def teval(p, seed):
        bits = np.random.default_rng(seed).random(80) < p
        return B.items_from_rows("teval", [{"id": f"t/{i:02d}", "subset": "review_str", "parse_rate": 1.0,
                                            "review_quality": float(b)} for i, b in enumerate(bits)])

    def rows(bench, p, seed):
        bits = np.random.default_rng(seed).random(60) < p
        if bench == "hotpotqa":
            return B.items_from_rows(bench, [{"id": f"h/{i}", "reward": 100.0 * b, "em": 100.0 * b}
                                             for i, b in enumerate(bits)])
        if bench == "agenth":
            return B.items_from_rows(bench, [{"id": f"a/{i}", "type": "general", "react_hallucination": bool(b),
                                              "general_hallucination": bool(b) and i % 2 == 0}
                                             for i, b in enumerate(bits)])
        key = "passed" if bench == "humaneval" else "correct"
        return B.items_from_rows(bench, [{"id": f"q/{i}", key: bool(b)} for i, b in enumerate(bits)])

    exp = json.loads((FIXTURE / "experiments.json").read_text())
    exp["bootstrap"] = {"resamples": 400, "seed": 7}
    per_item = {}
    for i, e in enumerate(exp["tables"]["table2"]):
        p = 0.1 if e["model_id"] == "half-reasoning-7b" else 0.6
        per_item[(e["model_id"], "teval")] = {0: teval(p, i)} if e["model_id"] != "allchat-7b" \
            else {0: teval(p, 100), 1: teval(p, 101)}
        per_item[(e["model_id"], "hotpotqa")] = {0: rows("hotpotqa", 0.3, 50 + i)}
    for i, e in enumerate(exp["tables"]["table3"]):
        per_item.setdefault((e["model_id"], "teval"), {0: teval(0.5, 200 + i)})
        per_item[(e["model_id"], "agenth")] = {0: rows("agenth", 0.1 if e["model_id"] == "agentflan-7b" else 0.5,
                                                       300 + i)}
    for b in ("mmlu", "gsm8k", "humaneval"):
        per_item[("general-7b", b)] = {0: rows(b, 0.4, 400)}
        per_item[("agentflan-7b", b)] = {0: rows(b, 0.4, 401)}
    d = edited_summary(tmp_path, lambda d: (d / "experiments.json").write_text(json.dumps(exp)))
    (d / "bootstrap.csv").write_text(B.to_csv(B.compute(per_item, exp)))
    return d


def test_tables_print_paired_bootstrap(tmp_path):
    d = _bootstrap_summary(tmp_path)
    out = build_all(d, tmp_path / "out")
    with open(out / "table2.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["row", "column", "ours", "paper", "note", "ours_lo", "ours_hi", "n_seeds",
                                     "vs", "delta", "delta_lo", "delta_hi", "excludes_0"]
        t2 = {(r["row"], r["column"]): r for r in reader}
    r = t2[("Reasoning halved", "T-Eval")]
    assert r["ours"] == "44.00" and r["vs"] == "All (Weighted) 1:0.25:0.75" and r["excludes_0"] == "true"
    assert float(r["delta_hi"]) < 0 and float(r["delta_lo"]) <= float(r["delta"]) <= float(r["delta_hi"])
    assert t2[("All (Weighted) 1:0.25:0.75", "T-Eval")]["vs"] == ""          # the reference itself
    assert t2[("Reasoning halved", "Tokens")]["delta"] == ""
    assert float(t2[("Reasoning halved", "T-Eval")]["ours_lo"]) < float(t2[("Reasoning halved", "T-Eval")]["ours_hi"])
    # two seeds: the cell is their mean, with its interval, in the CSV and the Markdown
    a = t2[("Align-Chat All (equal weights)", "T-Eval")]
    assert a["n_seeds"] == "2" and float(a["ours_lo"]) <= float(a["ours"]) <= float(a["ours_hi"])
    md = (out / "table2.md").read_text()
    assert f"{a['ours']} [{a['ours_lo']}, {a['ours_hi']}]" in md
    assert f"44.00 (Δ {r['delta']} [{r['delta_lo']}, {r['delta_hi']}]*)" in md
    assert "400 resamples" in md and "seed 7" in md and "excludes 0" in md and "several training seeds" in md
    t3 = read_table_csv(out / "table3.csv")
    with open(out / "table3.csv", newline="", encoding="utf-8") as fh:
        rows3 = {(x["row"], x["column"]): x for x in csv.DictReader(fh)}
    assert rows3[("Agent-FLAN", "H_ReAct")]["vs"] == "Agent-FLAN w/o NS"
    assert rows3[("Agent-FLAN", "H_ReAct")]["excludes_0"] == "true"
    assert rows3[("Agent-FLAN w/o NS", "H_ReAct")]["vs"] == ""
    assert t3[("Agent-FLAN", "H_ReAct")]["ours"] == "10.00"       # scores.csv value kept
    t4md = (out / "table4.md").read_text()
    with open(out / "table4.csv", newline="", encoding="utf-8") as fh:
        rows4 = {(x["row"], x["column"]): x for x in csv.DictReader(fh)}
    m = rows4[("Llama2-7B", "MMLU delta")]
    assert m["ours"] == "-0.30" and m["vs"] == "general data only"
    assert f"-0.30 [{m['delta_lo']}, {m['delta_hi']}]" in t4md
    # Tables 5 and 6 keep their layout; the diff still reads every table
    assert (out / "table5.csv").read_text().splitlines()[0] == "row,column,ours,paper,note"
    st = diff_status(out)
    assert st[("table4", "Llama2-7B", "MMLU delta")]["status"] == "match"
    assert st[("table3", "Agent-FLAN", "T-Eval")]["ours"] == "50.25"
    # deterministic, and Figure 4 draws the intervals
    again = build_all(d, tmp_path / "again")
    for n in sorted(p.name for p in out.iterdir()):
        assert (out / n).read_bytes() == (again / n).read_bytes(), n


def test_figure4_intervals(tmp_path):
    from agentflan.reporting.figures import figure4_intervals
    d = _bootstrap_summary(tmp_path)
    s = Summary(d)
    models = s.config("figures", "fig4")["models"]
    bars, lines = figure4_intervals(s, models)
    assert set(bars) == {(m["label"], c) for m in models for c in ("H_ReAct", "H_General")}
    assert all(lo <= hi for lo, hi in bars.values())
    assert len(lines) == 1 and lines[0].startswith("Agent-FLAN vs Agent-FLAN w/o NS: H_ReAct Δ ")
    assert figure4_intervals(Summary(FIXTURE), models) == ({}, [])


def test_tables_without_bootstrap_say_so(built):
    for t in ("table2", "table3", "table4"):
        assert "No bootstrap.csv in the result summaries" in (built / f"{t}.md").read_text()
        assert (built / f"{t}.csv").read_text().splitlines()[0] == "row,column,ours,paper,note"


def test_table4_from_lmeval_scores_when_the_harness_scored_it(tmp_path):
    """experiments.json general_protocol lmeval: Table 4 reads lmeval_<benchmark> scores, not the
    chat protocol's (which the fixture also has, with other values)."""
    def add(d: Path):
        with open(d / "scores.csv", "a", encoding="utf-8") as fh:
            for m, mmlu, gsm, he in (("general-7b", 30.0, 12.0, 3.0), ("agentflan-7b", 31.5, 11.0, 6.0)):
                fh.write(f"{m},lmeval_mmlu,accuracy,{mmlu}\n{m},lmeval_gsm8k,accuracy,{gsm}\n"
                         f"{m},lmeval_humaneval,pass@1,{he}\n")
        exp = json.loads((d / "experiments.json").read_text())
        exp["general_protocol"] = "lmeval"
        (d / "experiments.json").write_text(json.dumps(exp))
        (d / "scoring.json").write_text(json.dumps({f"lmeval_{b}": {m: {
            "protocol": "lm-evaluation-harness 0.4.13", "task": b, "shots": n}
            for m in ("general-7b", "agentflan-7b")} for b, n in (("mmlu", 5), ("gsm8k", 8), ("humaneval", 0))}))
    s = edited_summary(tmp_path, add)
    build_table("table4", s, REPORTED, tmp_path / "t4.csv", tmp_path / "t4.md")
    c = read_table_csv(tmp_path / "t4.csv")
    assert c[("Llama2-7B", "MMLU general-only")]["ours"] == "30.00"
    assert c[("Llama2-7B", "MMLU delta")]["ours"] == "+1.50"
    assert c[("Llama2-7B", "GSM8K delta")]["ours"] == "-1.00"
    assert c[("Llama2-7B", "HumanEval general+agent")]["ours"] == "6.00"
    md = (tmp_path / "t4.md").read_text()
    assert "MMLU: lm-evaluation-harness 0.4.13, task mmlu, shots 5." in md
    assert "Scored by lm-evaluation-harness called as a library" in md
    assert "not lm-evaluation-harness" not in md
