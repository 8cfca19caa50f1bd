"""Training seeds (training.seeds, issue 11 item 3): config, the DAG's seeded fine-tunes, and the
summaries, tables and figures of a model trained with several seeds."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import dag_runs  # tests/ is on sys.path (pytest's default "prepend" import mode)
import yaml

from agentflan import config as cfg
from agentflan import stages
from agentflan.io import DataError, write_json, write_jsonl
from agentflan.reporting import build_figure, build_table

ROOT = Path(__file__).resolve().parents[1]
REPORTED = ROOT / "paper" / "paper_reported.yaml"


def _mini_raw() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def _invalid(config: dict, tmp_path: Path) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(DataError) as exc:
        cfg.load_config(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    return msg


# ---------------------------------------------------------------------------- config
def test_default_seeds_and_ids_are_unchanged():
    mini = cfg.load_config(ROOT / "config" / "config.yaml")
    assert cfg.seeds(mini) == [0] and cfg.seed_model_ids(mini) == []
    assert "seeds" not in mini["training"] or mini["training"]["seeds"] == [0]
    assert cfg.split_seed(mini, "agentflan-xs") == ("agentflan-xs", 0)
    assert cfg.split_seed(mini, "base-xs") == ("base-xs", None)
    assert cfg.split_seed(mini, "standin-xs") == ("standin-xs", None)
    assert cfg.training_recipe(mini, "xs")["seed"] == mini["training"]["default"]["seed"]


def test_several_seeds_give_suffixed_ids_and_recipes():
    raw = _mini_raw()
    raw["training"]["seeds"] = [0, 1, 2]
    c = cfg.validate(raw)
    extra = cfg.seed_model_ids(c)
    assert "agentflan_s1-xs" in extra and "agentflan_f25_s2-xs" in extra and "general_s2-s" in extra
    assert not any(m.startswith(("base", "standin")) for m in extra)
    assert set(extra) <= set(cfg.model_ids(c))
    trained = [m for m in cfg.model_ids(c) if cfg.split_seed(c, m)[1] is not None]
    assert len(trained) == 3 * len([m for m in trained if cfg.split_seed(c, m)[1] == 0])
    assert cfg.split_seed(c, "agentflan_f25_s2-xs") == ("agentflan_f25-xs", 2)
    assert cfg.seeded_model_id("agentflan-xs", 0, c) == "agentflan-xs"
    assert cfg.seeded_model_id("agentflan-xs", 2, c) == "agentflan_s2-xs"
    assert cfg.training_recipe(c, "xs", seed=2)["seed"] == 2
    assert cfg.training_recipe(c, "xs", pretrain=True, seed=2)["seed"] == c["training"]["default"]["seed"]
    # the experiments (tables, figures) name the seeds' shared model ids only
    assert "_s1-" not in json.dumps(cfg.experiments(c))


def test_seed_config_errors_are_one_line(tmp_path):
    for seeds, want in (([0, 0], "distinct"), ([], "non-empty"), ([-1], "integer >= 0"),
                        ([True], "integer"), (0, "training.seeds")):
        raw = _mini_raw()
        raw["training"]["seeds"] = seeds
        msg = _invalid(raw, tmp_path)
        assert "training.seeds" in msg and want in msg, (seeds, msg)
    raw = _mini_raw()
    raw.setdefault("ablations", {})["datasets"] = {"react_s1": {"format": "react"}}
    assert "_s<digits>" in _invalid(raw, tmp_path)


def test_paper_preset_trains_three_seeds():
    paper = cfg.load_config(ROOT / "config" / "paper.yaml")
    assert cfg.seeds(paper) == [0, 1, 2]
    assert "agentflan_s2-70b" in cfg.model_ids(paper)
    assert not any(cfg.split_seed(paper, m)[1] for m in cfg.evaluated_only_ids(paper))


# ---------------------------------------------------------------------------- the DAG
def _dry(tmp_path, *args):
    return dag_runs.dry_run(tmp_path, *args)


def test_dry_run_plans_every_seed(tmp_path):
    override = tmp_path / "seeds.yaml"
    override.write_text(yaml.safe_dump({"training": {"seeds": [0, 1]}}))
    out = _dry(tmp_path, "--configfile", str(ROOT / "config" / "config.yaml"), str(override))
    c = cfg.validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()) | {})
    c["training"]["seeds"] = [0, 1]
    trained = [m for m in cfg.model_ids(c) if cfg.split_seed(c, m)[1] is not None]
    for m in trained:
        assert f"results/mini/models/{m}" in out, m
        assert f"results/mini/eval/{m}/teval.predictions.jsonl" in out, m
        assert f"results/mini/eval/{m}/teval.scores.json" in out, m
    for m in ("base-xs", "standin-xs"):
        assert f"results/mini/eval/{m}/teval.scores.json" in out
        assert f"results/mini/eval/{m.replace('-', '_s1-')}/" not in out
    assert "models/base_s1" not in out and "init-xs_s1" not in out
    blocks = out.split("\nrule ")
    train = [b for b in blocks if b.startswith("finetune:")]
    assert len(train) == len(trained)
    s1 = next(b for b in train if "wildcards: dataset=agentflan_s1, size=xs" in b)
    assert "data/mini/ablations/agentflan/train.jsonl" in s1 and '"seed": 1' in s1
    assert '"model_id": "agentflan_s1-xs"' in s1
    s0 = next(b for b in train if "wildcards: dataset=agentflan, size=xs" in b)
    assert '"seed": 0' in s0
    score = next(b for b in blocks if b.startswith("score:") and "wildcards: model=agentflan_s1-xs" in b)
    assert '"model_id": "agentflan-xs"' in score and '"seed": 1' in score
    assert len([b for b in blocks if b.startswith("pretrain:")]) == len(c["models"]["sizes"])


# ---------------------------------------------------------------------------- summaries and tables
def _items(n):
    items = [{"id": f"gsm8k/{i}", "benchmark": "gsm8k", "subset": "main",
              "messages": [{"role": "user", "content": f"{i} + 1?"}], "reference": {"answer": str(i + 1)},
              "meta": {}} for i in range(n)]
    write_jsonl("eval/gsm8k.jsonl", items)
    return items


def _score(model_dir: str, model_id: str, items, right, seed=None) -> str:
    preds = [{"id": it["id"], "prediction": f"It is {i + 1 if right(i) else 0}"} for i, it in enumerate(items)]
    write_jsonl(f"res/{model_dir}/gsm8k.predictions.jsonl", preds)
    out = f"res/{model_dir}/gsm8k.scores.json"
    stages.score(model_id=model_id, items={"gsm8k": "eval/gsm8k.jsonl"},
                 predictions={"gsm8k": f"res/{model_dir}/gsm8k.predictions.jsonl"}, options={},
                 out={"gsm8k": out}, per_sample={"gsm8k": f"res/{model_dir}/gsm8k.per_sample.jsonl"},
                 **({"seed": seed} if seed is not None else {}))
    return out


EXPERIMENTS = {"run": "t", "preset": "miniature", "main_size": "xs", "size_labels": {"xs": "Llama2-7B"},
               "bootstrap": {"resamples": 400, "seed": 5},
               "tables": {"table4": [{"label": "Llama2-7B", "size": "xs", "general_model_id": "general-xs",
                                      "agent_model_id": "agentflan-xs"}],
                          "table5": [{"label": "Llama2-7B", "model_id": "agentflan-xs"}]}}


def _two_seed_run(n=40):
    """agentflan-xs and general-xs with seeds 0 and 1 (different per-item answers), base-xs unseeded."""
    items = _items(n)
    scores = [_score("agentflan-xs", "agentflan-xs", items, lambda i: i % 4, 0),
              _score("agentflan_s1-xs", "agentflan-xs", items, lambda i: i % 5, 1),
              _score("general-xs", "general-xs", items, lambda i: i % 2, 0),
              _score("general_s1-xs", "general-xs", items, lambda i: i % 3, 1),
              _score("base-xs", "base-xs", items, lambda i: i % 7 == 0)]
    write_json("card.json", {"files": {}})
    turns = [{"role": "user", "content": "Find it"}, {"role": "assistant", "content": "Action: s\nAction Input: {}"}]
    write_jsonl("react.jsonl", [{"id": "r1", "turns": turns}])
    write_jsonl("chat.jsonl", [{"id": "c1", "turns": turns}])
    return scores


def _summarize(scores, out_dir="summary"):
    stages.summarize(scores=scores, models={}, ablation_stats=[], metrics=[], train_configs=[],
                     card_json="card.json", experiments=EXPERIMENTS,
                     example_source={"react_path": "react.jsonl", "chat_path": "chat.jsonl"}, out_dir=out_dir)


def test_scores_csv_has_a_row_per_seed_and_tables_print_the_mean_and_interval(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scores = _two_seed_run()
    assert json.loads(Path(scores[1]).read_text())["seed"] == 1
    assert "seed" not in json.loads(Path(scores[4]).read_text())
    _summarize(scores)
    with open("summary/scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["model_id", "benchmark", "metric", "seed", "value"]
    keys = [(r["model_id"], r["benchmark"], r["metric"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys))
    acc = {(r["model_id"], r["seed"]): float(r["value"]) for r in rows if r["metric"] == "accuracy"}
    assert acc == {("agentflan-xs", "0"): 75.0, ("agentflan-xs", "1"): 80.0, ("general-xs", "0"): 50.0,
                   ("general-xs", "1"): 65.0, ("base-xs", ""): pytest.approx(15.0)}
    with open("summary/bootstrap.csv", newline="") as fh:
        boot = list(csv.DictReader(fh))
    cell = next(r for r in boot if r["kind"] == "cell" and r["model_id"] == "agentflan-xs")
    assert cell["n_seeds"] == "2" and float(cell["estimate"]) == pytest.approx(77.5)
    assert float(cell["lo"]) < 77.5 < float(cell["hi"])

    build_table("table4", Path("summary"), REPORTED, Path("t4.csv"), Path("t4.md"))
    with open("t4.csv", newline="") as fh:
        t4 = {(r["row"], r["column"]): r for r in csv.DictReader(fh)}
    c = t4[("Llama2-7B", "GSM8K general+agent")]
    assert c["ours"] == "77.50" and c["n_seeds"] == "2"
    assert (c["ours_lo"], c["ours_hi"]) == (f"{float(cell['lo']):.2f}", f"{float(cell['hi']):.2f}")
    assert t4[("Llama2-7B", "GSM8K general-only")]["ours"] == "57.50"
    assert t4[("Llama2-7B", "GSM8K general-only")]["n_seeds"] == "2"
    d = t4[("Llama2-7B", "GSM8K delta")]
    assert float(d["delta"]) == pytest.approx(77.5 - (50 + 65) / 2, abs=0.01)
    md = Path("t4.md").read_text()
    assert f"77.50 [{c['ours_lo']}, {c['ours_hi']}]" in md
    assert "Models trained with 2 seeds" in md and "mean over the seeds" in md
    assert "95% bootstrap percentile interval (400 resamples" in md
    assert "every resample also draws the seeds" in md


def test_same_input_gives_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scores = _two_seed_run()
    _summarize(scores, "a")
    _summarize(list(reversed(scores)), "b")
    for name in ("scores.csv", "bootstrap.csv"):
        assert Path("a", name).read_bytes() == Path("b", name).read_bytes(), name
    build_table("table4", Path("a"), REPORTED, Path("a.csv"), Path("a.md"))
    build_table("table4", Path("b"), REPORTED, Path("b.csv"), Path("b.md"))
    assert Path("a.csv").read_bytes() == Path("b.csv").read_bytes()
    assert Path("a.md").read_text().split("code ")[0] == Path("b.md").read_text().split("code ")[0]


def test_duplicate_seed_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scores = _two_seed_run()
    items = _items(40)
    scores.append(_score("agentflan_s9-xs", "agentflan-xs", items, lambda i: i % 6, 1))   # seed 1 again
    with pytest.raises(DataError, match="agentflan-xs"):
        _summarize(scores)


SEEDED = ("agentflan-7b", "agentflan-small")


def _seeded_fixture(dst: Path) -> None:
    """The reporting fixture's summaries with the Agent-FLAN models of Figures 1, 7 and 8 as two
    seeds each (value ± 1) and a bootstrap cell of two seeds for each of their metrics."""
    import shutil
    from agentflan.reporting import bootstrap as B
    shutil.copytree(Path(__file__).parent / "fixtures" / "summary", dst)
    with open(dst / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out, cells = [], []
    for r in rows:
        if r["model_id"] not in SEEDED:
            out.append({**r, "seed": ""})
            continue
        v = float(r["value"])
        out += [{**r, "seed": "0", "value": f"{v - 1:g}"}, {**r, "seed": "1", "value": f"{v + 1:g}"}]
        cells.append({"kind": "cell", "model_id": r["model_id"], "ref_model_id": "", "benchmark": r["benchmark"],
                      "metric": r["metric"], "estimate": f"{v:.6f}", "lo": f"{v - 3:.6f}", "hi": f"{v + 2:.6f}",
                      "excludes_0": "", "n_items": "50", "n_seeds": "2", "n_seeds_ref": "", "resamples": "400",
                      "level": "0.95", "seed": "0"})
    with open(dst / "scores.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["model_id", "benchmark", "metric", "seed", "value"], lineterminator="\n")
        w.writeheader()
        w.writerows(out)
    (dst / "bootstrap.csv").write_text(B.to_csv(cells))


def test_figures_draw_intervals_only_for_several_seeds(tmp_path):
    _seeded_fixture(tmp_path / "seeded")
    fixture = Path(__file__).parent / "fixtures" / "summary"
    from agentflan.reporting.tables import Summary
    s = Summary(tmp_path / "seeded")
    assert s.score("agentflan-7b", "T-Eval") == pytest.approx(float(next(
        r["value"] for r in csv.DictReader(open(fixture / "scores.csv")) if r["model_id"] == "agentflan-7b"
        and r["benchmark"] == "teval" and r["metric"] == "overall")))
    assert s.n_seeds("agentflan-7b", "T-Eval") == 2 and s.n_seeds("base-7b", "T-Eval") == 1
    import matplotlib.pyplot as plt
    from agentflan.reporting.figures import figure1_data
    d = figure1_data(s, [])
    assert ("Agent-FLAN", "T-Eval") in d["intervals"] and ("Llama2-7B", "T-Eval") not in d["intervals"]
    assert figure1_data(Summary(fixture), [])["intervals"] == {}
    for fig in ("fig1", "fig7", "fig8"):
        build_figure(fig, tmp_path / "seeded", REPORTED, tmp_path / f"{fig}-a.png")
        build_figure(fig, tmp_path / "seeded", REPORTED, tmp_path / f"{fig}-b.png")
        build_figure(fig, fixture, REPORTED, tmp_path / f"{fig}-one.png")
        assert (tmp_path / f"{fig}-a.png").read_bytes() == (tmp_path / f"{fig}-b.png").read_bytes()
        # drawn: the pixels differ from the one-seed figure's (not only the provenance chunk)
        a, one = (plt.imread(tmp_path / f"{fig}-{k}.png") for k in ("a", "one"))
        assert a.shape != one.shape or (a != one).any(), fig
