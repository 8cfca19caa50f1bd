"""Paired bootstrap over per-item scores (agentflan.reporting.bootstrap): the metrics it recomputes
equal the scorers', it is deterministic, it gives the known answers, it equals a direct numpy
reimplementation, and summarize writes summary/bootstrap.csv that the tables print."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from agentflan import stages
from agentflan.evaluation import registry
from agentflan.io import DataError, read_jsonl, write_json, write_jsonl
from agentflan.reporting import bootstrap as B
from agentflan.reporting import build_table
from agentflan.reporting.tables import read_table_csv

ROOT = Path(__file__).resolve().parents[1]
RAW = Path(__file__).parent / "fixtures" / "eval" / "raw"
REPORTED = ROOT / "paper" / "paper_reported.yaml"
BOW = {"similarity": "bow"}
RUN = {"resamples": 300, "seed": 0, "level": 0.95}


def _teval_preds(items, variant: int = 0):
    from test_eval_teval import PRED     # the hand-checked T-Eval predictions
    keys = sorted(PRED)
    out = []
    for i, it in enumerate(items):
        k = it["id"].split("/", 1)[1]
        # variant 1: every third item answered with another item's prediction
        text = PRED[keys[(keys.index(k) + 5) % len(keys)]] if variant and i % 3 == 0 else PRED[k]
        out.append({"id": it["id"], "prediction": text})
    return out


AGENTH_REPLIES = ["I can help with that in words.",
                  "Thought: use a tool\nAction: get_weather\nAction Input: {\"city\": \"Paris\"}",
                  "<functioncall> {\"name\": \"book_ticket\", \"arguments\": {}}",
                  "Sorry, I cannot do that."]


def _scored(benchmark: str, variant: int = 0):
    items = registry.load_items(benchmark, RAW, {})
    if benchmark == "teval":
        preds = _teval_preds(items, variant)
        opts = BOW
    elif benchmark == "agenth":
        preds = [{"id": it["id"], "prediction": AGENTH_REPLIES[(i + variant) % 4]} for i, it in enumerate(items)]
        opts = {}
    elif benchmark == "hotpotqa":
        preds = [{"id": it["id"], "prediction": ["France", "Paris", "no idea"][(i + variant) % 3],
                  "stop_reason": "finish"} for i, it in enumerate(items)]
        opts = {}
    elif benchmark == "mmlu":
        preds = [{"id": it["id"], "prediction": f"Answer: {'ABCD'[(i + variant) % 4]}"} for i, it in enumerate(items)]
        opts = {}
    else:
        preds = [{"id": it["id"], "prediction": f"The answer is {7 + (i + variant) % 2}"} for i, it in enumerate(items)]
        opts = {}
    metrics, rows = registry.score(benchmark, items, preds, opts)
    return items, preds, opts, metrics, rows


# ------------------------------------------------------------------------------- per-item units

@pytest.mark.parametrize("bench", ["teval", "agenth", "hotpotqa", "mmlu", "gsm8k"])
def test_point_estimate_is_the_scorers_metric(bench):
    benchmark = bench
    _, _, _, metrics, rows = _scored(benchmark)
    items = B.items_from_rows(benchmark, rows)
    got = B.point(items)
    headline = [m for m in registry.HEADLINE[benchmark] if metrics.get(m) is not None]
    assert sorted(got) == sorted(headline)
    for m in headline:
        assert got[m] == pytest.approx(metrics[m], abs=1e-9), m


def test_teval_strata_are_runs_and_formats():
    _, _, _, _, rows = _scored("teval")
    items = B.items_from_rows("teval", rows)
    runs = sorted(name.split(":")[0] for name in items.strata)
    assert runs == sorted(["instruct", "instruct", "plan_json", "plan_str", "reason_str", "retrieve_str",
                           "understand_str", "rru_json", "review_str"])
    assert items.n == len(rows)


def test_humaneval_not_executed_has_no_units():
    rows = [{"id": "h/0", "passed": None, "status": "not executed"}]
    assert B.items_from_rows("humaneval", rows) is None
    it = B.items_from_rows("humaneval", [{"id": "h/0", "passed": True}, {"id": "h/1", "passed": False}])
    assert B.point(it) == {"pass@1": 50.0}


@pytest.mark.parametrize("bench", ["teval", "agenth"])
def test_every_resample_is_the_scorer_on_the_resampled_items(bench):
    """Each resample's metrics equal the benchmark's own scorer run on the resampled items
    (items drawn with the same generators, stratum by stratum)."""
    benchmark = bench
    items, preds, opts, _, rows = _scored(benchmark)
    it = B.items_from_rows(benchmark, rows)
    R = 12
    (got,) = B.resampled_metrics([[it]], R, 3, ("k",))
    by_item = {i["id"]: i for i in items}
    by_pred = {p["id"]: p for p in preds}
    draws = {name: B.rng_for(3, "k", "items", name).integers(0, len(st.ids), size=(R, len(st.ids)))
             for name, st in it.strata.items()}
    for r in range(R):
        rs_items, rs_preds = [], []
        for name, st in it.strata.items():
            for pos, j in enumerate(draws[name][r]):
                new_id = f"{st.ids[j]}#{name}#{pos}"
                rs_items.append({**by_item[st.ids[j]], "id": new_id})
                rs_preds.append({**by_pred[st.ids[j]], "id": new_id})
        ref, _ = registry.score(benchmark, rs_items, rs_preds, opts)
        for m in got:
            assert got[m][r] == pytest.approx(ref[m], abs=1e-9), (r, m)


# ------------------------------------------------------------------------------- known answers

def _acc_items(bits, bench="mmlu"):
    return B.items_from_rows(bench, [{"id": f"q/{i:03d}", "correct": bool(b)} for i, b in enumerate(bits)])


def test_identical_models_give_zero():
    _, _, _, _, rows = _scored("teval")
    a = B.items_from_rows("teval", rows)
    res = B.paired([a], [a], key=("x",), **RUN)
    assert set(res) == {"overall", "instruct", "plan", "reason", "retrieve", "understand", "review"}
    for r in res.values():
        assert r["estimate"] == 0.0 and r["lo"] <= 0.0 <= r["hi"] and not r["excludes_0"]


def test_better_on_every_item_excludes_zero():
    rng = np.random.default_rng(0)
    base = rng.random(40) < 0.5
    res = B.paired([_acc_items(np.ones(40))], [_acc_items(base)], key=("y",), **RUN)["accuracy"]
    assert res["estimate"] == pytest.approx(100 * (1 - base.mean()))
    assert 0 < res["lo"] <= res["estimate"] <= res["hi"] and res["excludes_0"]
    # a constant shift on every item: every resample gives exactly that delta
    rows_a = [{"id": f"h/{i}", "reward": float(x), "em": 0.0} for i, x in enumerate(rng.random(30) * 50)]
    rows_b = [{**r, "reward": r["reward"] + 5.0} for r in rows_a]
    res = B.paired([B.items_from_rows("hotpotqa", rows_b)], [B.items_from_rows("hotpotqa", rows_a)],
                   key=("z",), **RUN)
    assert res["reward"]["lo"] == pytest.approx(5.0) and res["reward"]["hi"] == pytest.approx(5.0)
    assert res["reward"]["excludes_0"] and not res["em"]["excludes_0"]


def test_worse_model_interval_below_zero_and_noise_contains_zero():
    rng = np.random.default_rng(1)
    a = rng.random(200) < 0.6
    flip = rng.random(200) < 0.5
    b = np.where(flip, ~a, a)       # half the items flipped at random: about as good, noisy
    res = B.paired([_acc_items(np.zeros(200))], [_acc_items(a)], key=("w",), **RUN)["accuracy"]
    assert res["hi"] < 0 and res["excludes_0"]
    res = B.paired([_acc_items(b)], [_acc_items(a)], key=("w",), **RUN)["accuracy"]
    assert res["lo"] < 0 < res["hi"] or abs(res["estimate"]) > 5


def test_matches_a_direct_numpy_reimplementation(monkeypatch):
    rng = np.random.default_rng(2)
    a, b = rng.random(25) < 0.4, rng.random(25) < 0.7
    R, seed = 500, 11
    # direct: one generator for the one stratum, R x n indices, mean of the drawn items
    gen = B.rng_for(seed, "paired", "mmlu", "b", "a", "items", "all")
    idx = gen.integers(0, 25, size=(R, 25))
    deltas = 100 * (b[idx].mean(axis=1) - a[idx].mean(axis=1))
    lo, hi = np.quantile(deltas, [0.025, 0.975])
    for chunk in (B.CHUNK_ELEMENTS, 7, 25 * 3 + 1):     # chunked draws give the same numbers
        monkeypatch.setattr(B, "CHUNK_ELEMENTS", chunk)
        res = B.paired([_acc_items(b)], [_acc_items(a)], key=("mmlu", "b", "a"), resamples=R, seed=seed,
                       level=0.95)["accuracy"]
        assert res["estimate"] == pytest.approx(100 * (b.mean() - a.mean()))
        assert (res["lo"], res["hi"]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))


def test_seeds_are_resampled_with_the_items():
    rng = np.random.default_rng(3)
    seeds_a = [rng.random(20) < p for p in (0.3, 0.4, 0.5)]
    seeds_b = [rng.random(20) < p for p in (0.6, 0.7)]
    R, seed = 400, 5
    res = B.paired([_acc_items(x) for x in seeds_b], [_acc_items(x) for x in seeds_a], key=("s",),
                   resamples=R, seed=seed, level=0.9)["accuracy"]
    assert res["estimate"] == pytest.approx(100 * (np.mean([x.mean() for x in seeds_b])
                                                   - np.mean([x.mean() for x in seeds_a])))
    idx = B.rng_for(seed, "paired", "s", "items", "all").integers(0, 20, size=(R, 20))
    per_a = np.stack([100 * x[idx].mean(axis=1) for x in seeds_a], axis=1)     # (R, 3)
    per_b = np.stack([100 * x[idx].mean(axis=1) for x in seeds_b], axis=1)     # (R, 2)
    sa = B.rng_for(seed, "paired", "s", "seeds", "0").integers(0, 2, size=(R, 2))   # group 0: the model
    sb = B.rng_for(seed, "paired", "s", "seeds", "1").integers(0, 3, size=(R, 3))   # group 1: the reference
    deltas = np.take_along_axis(per_b, sa, 1).mean(1) - np.take_along_axis(per_a, sb, 1).mean(1)
    lo, hi = np.quantile(deltas, [0.05, 0.95])
    assert (res["lo"], res["hi"]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    cell = B.cell([_acc_items(x) for x in seeds_a], key=("c",), resamples=R, seed=seed, level=0.95)["accuracy"]
    assert cell["lo"] < cell["estimate"] < cell["hi"]


def test_deterministic_and_seeded():
    _, _, _, _, rows_a = _scored("agenth")
    _, _, _, _, rows_b = _scored("agenth", variant=1)
    a, b = B.items_from_rows("agenth", rows_a), B.items_from_rows("agenth", rows_b)
    one = B.paired([b], [a], key=("k",), **RUN)
    assert one == B.paired([b], [a], key=("k",), **RUN)
    assert set(one) == {"h_react", "h_general", "h_score"}
    draws = [B.resampled_metrics([[b], [a]], 50, seed, ("k",))[0]["h_react"] for seed in (0, 0, 1)]
    assert np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0], draws[2])
    # another key (comparison) draws independently; a comparison does not depend on the others
    x = _acc_items(np.random.default_rng(4).random(60) < 0.5)
    y = _acc_items(np.random.default_rng(5).random(60) < 0.5)
    rows = B.compute({("m1", "mmlu"): {0: x}, ("m2", "mmlu"): {0: y}}, {"bootstrap": {"resamples": 100}})
    rows2 = B.compute({("m0", "mmlu"): {0: y}, ("m1", "mmlu"): {0: x}, ("m2", "mmlu"): {0: y}},
                      {"bootstrap": {"resamples": 100}})
    assert rows == [r for r in rows2 if r["model_id"] != "m0"]
    m1, m2 = rows
    assert (m1["lo"], m1["hi"]) != (m2["lo"], m2["hi"])
    assert B.to_csv(rows) == B.to_csv(B.compute({("m2", "mmlu"): {0: y}, ("m1", "mmlu"): {0: x}},
                                                {"bootstrap": {"resamples": 100}}))


def test_mismatched_items_are_refused():
    with pytest.raises(DataError, match="same evaluation items"):
        B.paired([_acc_items([1, 0, 1])], [_acc_items([1, 0])], key=("m",), **RUN)


def test_settings_defaults_and_errors():
    assert B.settings({}) == {"resamples": 2000, "seed": 0, "level": 0.95}
    assert B.settings({"bootstrap": {"resamples": 10}})["resamples"] == 10
    for bad in ({"resamples": 0}, {"seed": -1}, {"level": 1.0}, {"resamples": True}):
        with pytest.raises(DataError, match="bootstrap"):
            B.settings({"bootstrap": bad})


def test_comparisons_of_the_paper():
    exp = json.loads((ROOT / "tests" / "fixtures" / "summary" / "experiments.json").read_text())
    comps = B.comparisons(exp)
    t2 = [c for c in comps if c.table == "table2"]
    assert len(t2) == 6 and {c.ref_model_id for c in t2} == {"weighted-7b"}
    assert [(c.row, c.model_id, c.ref_model_id) for c in comps if c.table == "table3"] == \
        [("Agent-FLAN", "agentflan-7b", "weighted-7b")]
    assert [(c.row, c.model_id, c.ref_model_id) for c in comps if c.table == "table4"] == \
        [("Llama2-7B", "agentflan-7b", "general-7b")]
    # the miniature's experiments as configured
    import yaml

    from agentflan import config as cfg
    conf = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.validate(conf)
    e = cfg.experiments(conf)
    assert e["bootstrap"] == {"resamples": 2000, "seed": 0, "level": 0.95}
    assert {c.table for c in B.comparisons(e)} == {"table2", "table3", "table4"}


# ------------------------------------------------------------------------------- summarize and tables

def _score_model(model_id: str, benchmark: str, preds: list[dict], items_path: str) -> str:
    out = f"res/{model_id}/{benchmark}.scores.json"
    stages.score(model_id=model_id, items={benchmark: items_path},
                 predictions={benchmark: _write_preds(model_id, benchmark, preds)}, options={},
                 out={benchmark: out}, per_sample={benchmark: f"res/{model_id}/{benchmark}.per_sample.jsonl"})
    return out


def _write_preds(model_id, benchmark, preds):
    path = f"res/{model_id}/{benchmark}.predictions.jsonl"
    write_jsonl(path, preds)
    return path


def _summarize(scores, experiments, per_sample=None):
    write_json("card.json", {"files": {}})
    react = [{"role": "user", "content": "Find it"}, {"role": "assistant", "content": "Action: s\nAction Input: {}"}]
    write_jsonl("react.jsonl", [{"id": "r1", "turns": react}])
    write_jsonl("chat.jsonl", [{"id": "c1", "turns": [{"role": "user", "content": "Find it"},
                                                       {"role": "assistant", "content": "ok"}]}])
    stages.summarize(scores=scores, models={}, ablation_stats=[], metrics=[], train_configs=[],
                     card_json="card.json", experiments=experiments,
                     example_source={"react_path": "react.jsonl", "chat_path": "chat.jsonl"}, out_dir="summary",
                     per_sample=per_sample)


def _gsm8k_setup(n=40):
    items = [{"id": f"gsm8k/{i}", "benchmark": "gsm8k", "subset": "main",
              "messages": [{"role": "user", "content": f"{i} + 1?"}], "reference": {"answer": str(i + 1)},
              "meta": {}} for i in range(n)]
    write_jsonl("eval/gsm8k.jsonl", items)
    agent = [{"id": it["id"], "prediction": f"It is {i + 1 if i % 4 else 0}"} for i, it in enumerate(items)]
    general = [{"id": it["id"], "prediction": f"It is {i + 1 if i % 2 else 0}"} for i, it in enumerate(items)]
    return [_score_model("agentflan-xs", "gsm8k", agent, "eval/gsm8k.jsonl"),
            _score_model("general-xs", "gsm8k", general, "eval/gsm8k.jsonl")]


EXPERIMENTS = {"run": "t", "preset": "miniature", "bootstrap": {"resamples": 500, "seed": 3},
               "tables": {"table4": [{"label": "Llama2-7B", "size": "xs", "general_model_id": "general-xs",
                                      "agent_model_id": "agentflan-xs"}]}}


def test_summarize_writes_bootstrap_csv_and_table4_prints_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scores = _gsm8k_setup()
    _summarize(scores, EXPERIMENTS)
    text = Path("summary/bootstrap.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == list(B.COLUMNS)
    paired = [r for r in rows if r["kind"] == "paired"]
    assert [(r["model_id"], r["ref_model_id"], r["benchmark"], r["metric"]) for r in paired] == \
        [("agentflan-xs", "general-xs", "gsm8k", "accuracy")]
    p = paired[0]
    assert float(p["estimate"]) == pytest.approx(75.0 - 50.0)
    assert float(p["lo"]) > 0 and p["excludes_0"] == "true"
    assert (p["resamples"], p["seed"], p["level"], p["n_items"]) == ("500", "3", "0.95", "40")
    cells = {r["model_id"]: r for r in rows if r["kind"] == "cell"}
    assert float(cells["general-xs"]["estimate"]) == pytest.approx(50.0)
    side = json.loads(Path("summary/bootstrap.csv.provenance.json").read_text())
    assert sorted(side["inputs"]) == sorted(scores + [s.replace(".scores.json", ".per_sample.jsonl")
                                                      for s in scores])
    # same bytes on a second run
    _summarize(scores, EXPERIMENTS)
    assert Path("summary/bootstrap.csv").read_text() == text

    build_table("table4", Path("summary"), REPORTED, Path("t4.csv"), Path("t4.md"))
    with open("t4.csv", newline="") as fh:
        t4 = {(r["row"], r["column"]): r for r in csv.DictReader(fh)}
    d = t4[("Llama2-7B", "GSM8K delta")]
    assert d["ours"] == "+25.00" and d["vs"] == "general data only" and d["excludes_0"] == "true"
    assert float(d["delta_lo"]) > 0 and float(d["delta_hi"]) >= 25.0 and d["delta"] == "+25.00"
    assert t4[("Llama2-7B", "GSM8K general-only")]["n_seeds"] == "1"
    assert t4[("Llama2-7B", "MMLU delta")]["delta"] == ""      # no MMLU scores in this run
    md = Path("t4.md").read_text()
    assert f"+25.00 [{d['delta_lo']}, {d['delta_hi']}]*" in md
    assert "500 resamples" in md and "seed 3" in md and "paired bootstrap" in md
    assert read_table_csv("t4.csv")[("Llama2-7B", "GSM8K delta")]["ours"] == "+25.00"


def test_summarize_checks_per_sample_against_scores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scores = _gsm8k_setup(8)
    ps = "res/general-xs/gsm8k.per_sample.jsonl"
    rows = read_jsonl(ps)
    rows[1]["correct"] = not rows[1]["correct"]
    write_jsonl(ps, rows)
    with pytest.raises(DataError, match="per-item scores give gsm8k accuracy"):
        _summarize(scores, EXPERIMENTS)
    with pytest.raises(DataError, match="not among the per_sample inputs"):
        _summarize(scores, EXPERIMENTS, per_sample=["res/agentflan-xs/gsm8k.per_sample.jsonl"])


def test_summarize_pools_seeds_of_a_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scores = _gsm8k_setup(12)
    extra = "res/general-xs-s1/gsm8k.scores.json"      # a second training seed of general-xs
    Path(extra).parent.mkdir(parents=True)
    rec = json.loads(Path(scores[1]).read_text())
    rec["seed"] = 1
    Path(extra).write_text(json.dumps(rec))
    Path(B.per_sample_path(extra)).write_text(Path(B.per_sample_path(scores[1])).read_text())
    rows, _ = B.from_score_files(scores + [extra], None, EXPERIMENTS)
    cell = next(r for r in rows if r["kind"] == "cell" and r["model_id"] == "general-xs")
    assert cell["n_seeds"] == "2"
    pair = next(r for r in rows if r["kind"] == "paired")
    assert (pair["n_seeds"], pair["n_seeds_ref"]) == ("1", "2")
