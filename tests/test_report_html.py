"""The HTML tables page with per-cell provenance (agentflan.reporting.html, rule html_tables),
opened in a real headless browser (Chromium; .ci/run installs it).

Fast tests build the page from a small synthetic run (a table CSV with its provenance sidecar,
experiments.json and score files with their provenance blocks); the slow test runs
`snakemake --report` on the shared reference run and checks the report embeds the page."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentflan.io import DataError
from agentflan.reporting.html import build_html

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (.ci/run installs it: apt-get install chromium)")

CODE = "c0de" * 16
PRED_SHA = "ab" * 32


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _scores(root: Path, model: str, bench: str, metrics: dict) -> str:
    rel = f"results/t/eval/{model}/{bench}.scores.json"
    pred = f"results/t/eval/{model}/{bench}.predictions.jsonl"
    _write(root / pred, "{}\n")
    doc = {"benchmark": bench, "model_id": model, "metrics": metrics, "n": 3,
           "provenance": {"code_hash": CODE, "config": {"model_id": model, "options": {"teval": {"protocol": "v1"}}},
                          "config_hash": "cf" * 32, "format": 1, "inputs": {pred: PRED_SHA, "data/t/eval/x.jsonl": "00" * 32},
                          "inputs_hash": "11" * 32, "packages": {}}}
    _write(root / rel, json.dumps(doc, sort_keys=True))
    return rel


def _run(root: Path, teval_agentflan: float = 40.2567) -> list[str]:
    """A two-table synthetic run under ``root``; returns the score files."""
    tables = root / "paper_tables"
    _write(tables / "table1.csv",
           "row,column,ours,paper,note,ours_lo,ours_hi,n_seeds\n"
           "GPT-4,T-Eval,,86.4,proprietary API model <&>,,,\n"
           "Agent-FLAN,T-Eval,40.26,66.0,,33.65,47.01,1\n"
           "Agent-FLAN,Agent-H,100.00,89.1,,100.00,100.00,1\n")
    _write(tables / "table3.csv",
           "row,column,ours,paper,note,ours_lo,ours_hi,n_seeds,vs,delta,delta_lo,delta_hi,excludes_0\n"
           "Agent-FLAN w/o NS,H_Score,85.00,84.5,,77.50,91.25,1,,,,,\n"
           "Agent-FLAN,H_Score,100.00,89.1,,100.00,100.00,1,Agent-FLAN w/o NS,+15.00,+8.75,+22.50,true\n")
    for t in ("table1", "table3"):
        _write(tables / f"{t}.csv.provenance.json", json.dumps(
            {"code_hash": CODE, "config": {"table_id": t}, "config_hash": "dd" * 32, "format": 1,
             "inputs": {"results/t/summary/scores.csv": "ee" * 32}, "inputs_hash": "ff" * 32, "packages": {}}))
    _write(root / "results/t/summary/experiments.json", json.dumps({"run": "t", "tables": {
        "table1": [{"label": "Agent-FLAN", "model_id": "agentflan-xs"}],
        "table3": [{"label": "Agent-FLAN w/o NS", "model_id": "agentflan_wo_ns-xs"},
                   {"label": "Agent-FLAN", "model_id": "agentflan-xs"}]}}))
    return [_scores(root, "agentflan-xs", "teval", {"overall": teval_agentflan}),
            _scores(root, "agentflan-xs", "agenth", {"h_score": 100.0}),
            _scores(root, "agentflan_wo_ns-xs", "agenth", {"h_score": 85.0})]


def _build(root: Path, **kw) -> Path:
    scores = kw.pop("scores", None)
    scores = scores if scores is not None else _run(root, **kw)
    cwd = os.getcwd()
    os.chdir(root)   # paths in the page are relative to the working directory (Snakemake's: the repo root)
    try:
        build_html("paper_tables", "results/t/summary", scores, "results/t/report/tables.html",
                   table_ids=["table1", "table3"])
    finally:
        os.chdir(cwd)
    return root / "results/t/report/tables.html"


def _dom(page: Path) -> str:
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def _cell(dom: str, anchor: str) -> tuple[str, str]:
    """The ``title`` tooltip and the inner HTML of the table cell that links to ``#anchor``."""
    m = re.search(r'<td[^>]*?title="([^"]*)"[^>]*>((?:(?!</td>).)*href="#' + anchor + r'"(?:(?!</td>).)*)</td>', dom, re.S)
    assert m, f"no cell linking to #{anchor}"
    return m.group(1), m.group(2)


def _li(dom: str, anchor: str) -> str:
    m = re.search(r'<li id="' + anchor + r'"[^>]*>(.*?)</li>', dom, re.S)
    assert m, f"no provenance entry #{anchor}"
    return m.group(1)


@needs_chromium
def test_page_in_headless_chromium_shows_every_table_with_per_cell_provenance(tmp_path):
    dom = _dom(_build(tmp_path))
    # every table, by its title
    assert "Table 1: main results" in dom and "Table 3: Agent-H hallucination results" in dom
    # Table 1, Agent-FLAN / T-Eval (cell 2): our value, the paper's, the interval, and its provenance
    title, inner = _cell(dom, "table1-2")
    assert "40.26" in inner and "paper 66.0" in inner and "[33.65, 47.01]" in inner
    for needle in ("scores: results/t/eval/agentflan-xs/teval.scores.json",
                   "predictions: results/t/eval/agentflan-xs/teval.predictions.jsonl",
                   f"code: {CODE}", '"protocol":"v1"'):
        assert needle in title.replace("&quot;", '"'), needle
    li = _li(dom, "table1-2")
    assert "results/t/eval/agentflan-xs/teval.scores.json" in li
    assert "results/t/eval/agentflan-xs/teval.predictions.jsonl" in li and PRED_SHA[:12] in li
    assert CODE in li and "protocol" in li
    assert 'href="../eval/agentflan-xs/teval.scores.json"' in li   # relative to the page
    # a cell that was not run: its reason, escaped, and no provenance files
    title, inner = _cell(dom, "table1-1")
    assert "not run: proprietary API model &lt;&amp;&gt;" in title and "paper 86.4" in inner
    # Table 3's paired delta, with the reference row's files as well
    title, inner = _cell(dom, "table3-2")
    assert "Δ +15.00 [+8.75, +22.50]*" in inner and "vs Agent-FLAN w/o NS" in inner
    assert "results/t/eval/agentflan_wo_ns-xs/agenth.scores.json" in title
    assert str(tmp_path) not in dom   # no absolute paths


def test_page_bytes_are_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _build(a).read_bytes() == _build(b).read_bytes()


def test_cell_that_disagrees_with_its_score_file_is_one_error_line(tmp_path):
    with pytest.raises(DataError) as exc:
        _build(tmp_path, teval_agentflan=41.0)
    msg = str(exc.value)
    assert "paper_tables/table1.csv:3" in msg and "'Agent-FLAN'" in msg and "'T-Eval'" in msg
    assert "teval.scores.json" in msg and "\n" not in msg


def test_missing_score_file_is_an_error(tmp_path):
    scores = _run(tmp_path)
    with pytest.raises(DataError, match="score file missing"):
        _build(tmp_path, scores=scores[1:])


def test_cli_stage_writes_page_and_sidecar(tmp_path):
    scores = _run(tmp_path)
    params = {"tables_dir": "paper_tables", "summary_dir": "results/t/summary", "scores": scores,
              "out": "results/t/report/tables.html", "table_ids": ["table1", "table3"]}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-m", "agentflan.cli", "html_tables", "--params", json.dumps(params)],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    side = json.loads((tmp_path / "results/t/report/tables.html.provenance.json").read_text())
    assert "results/t/eval/agentflan-xs/teval.scores.json" in side["inputs"]
    assert side["config"] == {"table_ids": ["table1", "table3"], "from_bundle": False}


@pytest.mark.skipif(os.environ.get("AGENTFLAN_SKIP_DAG") == "1", reason="AGENTFLAN_SKIP_DAG=1")
@pytest.mark.slow
@pytest.mark.xdist_group("dag")  # the shared reference run of tests/dag_runs.py: one worker
def test_snakemake_report_embeds_the_page(tmp_path_factory):
    """`snakemake --report` on the finished reference run: the report carries the page byte for byte,
    and the page, opened in Chromium, shows all six tables with provenance."""
    import dag_runs
    workdir, cfg = dag_runs.reference_run(tmp_path_factory, fast=True)
    page = workdir / "results" / dag_runs.RUN / "report" / "tables.html"
    assert page.exists(), "the default target builds the HTML tables"
    report = workdir / "report.html"
    proc = dag_runs.snakemake(workdir, cfg, "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-3000:]
    embedded = re.findall(r"data:text/html;charset=[^;]*;filename=tables\.html;base64,([A-Za-z0-9+/=]+)",
                          report.read_text(encoding="utf-8"))
    assert [base64.b64decode(e) for e in embedded] == [page.read_bytes()]
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (.ci/run installs it)")
    dom = _dom(page)
    for i in range(1, 7):
        assert f"<section id=\"table{i}\">" in dom and f"Table {i}:" in dom
    assert f"results/{dag_runs.RUN}/eval/" in dom and ".predictions.jsonl" in dom and "code: " in dom
