"""The paper preset: its dry run lists every experiment, and with data.mirror pointed at fixture
files in the real shapes its `ablations` target builds every ablation data set on a CPU."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from agentflan import config as cfg

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "tests" / "fixtures" / "release"


def _snakemake(workdir, *args):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def test_dry_run_lists_every_experiment(tmp_path):
    proc = _snakemake(tmp_path, "-n", "-p", "--configfile", str(ROOT / "config" / "paper.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    paper = cfg.load_config(ROOT / "config" / "paper.yaml")
    for model in cfg.model_ids(paper):
        if not model.startswith("base-") and model not in cfg.evaluated_only_ids(paper):
            assert f"results/paper/models/{model}" in out, model
        assert f"results/paper/eval/{model}/" in out, model
    for source in ("agentflan", "sharegpt", "teval", "glaive", "hotpotqa", "mmlu", "gsm8k", "humaneval"):
        assert f"data/paper/raw/{source}.manifest.json" in out
    assert "meta-llama/Llama-2-70b-hf" in out
    # HotpotQA under AgentTuning's protocol: the pinned wiki corpus is fetched, indexed, and the
    # store reaches the generate jobs
    assert "data/paper/raw/hotpotwiki.manifest.json" in out
    assert "rule hotpotqa_wiki" in out and "data/paper/eval/hotpotqa_wiki.sqlite" in out
    assert '"wiki_db": "data/paper/eval/hotpotqa_wiki.sqlite"' in out


def test_paper_recipes_keep_portable_deepspeed_paths():
    """DeepSpeed configs are named relative to the repository, so rule params and train_config.json
    do not change when the checkout moves; the named files exist."""
    paper = cfg.load_config(ROOT / "config" / "paper.yaml")
    seen = {size: cfg.training_recipe(paper, size)["deepspeed"] for size in cfg.sizes(paper)}
    assert seen == {"7b": "workflow/deepspeed/zero2.json", "13b": "workflow/deepspeed/zero3.json",
                    "70b": "workflow/deepspeed/zero3.json"}
    for path in seen.values():
        assert json.loads((ROOT / path).read_text())["zero_optimization"]["stage"] in (2, 3)


def test_ablations_from_a_mirror(tmp_path):
    from agentflan.modeling import train_bpe_tokenizer
    mirror = tmp_path / "mirror"
    shutil.copytree(RELEASE, mirror)
    texts = [line for p in sorted(RELEASE.rglob("*.json*")) for line in p.read_text().splitlines()]
    train_bpe_tokenizer(texts, mirror / "meta-llama" / "Llama-2-7b-hf", vocab_size=400)
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"run": "paperfix", "data": {"mirror": str(mirror)}}))
    work = tmp_path / "work"
    work.mkdir()
    proc = _snakemake(work, "--configfile", str(ROOT / "config" / "paper.yaml"), str(override), "--", "ablations")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    paper = cfg.load_config(ROOT / "config" / "paper.yaml")
    for dataset in cfg.datasets(paper):
        d = work / "data" / "paperfix" / "ablations" / dataset
        stats = json.loads((d / "stats.json").read_text())
        assert stats["n_samples"] > 0 and stats["tokens_trained"] > 0
        assert "⟦" in (d / "audit.md").read_text()
    lock = json.loads((work / "data" / "paperfix" / "sources.lock.json").read_text())
    files = lock["agentflan"]["files"]
    assert "data/data_toolbench_negative.jsonl" in files and len(files["data/toolbench_react_10p.jsonl"]["sha256"]) == 64
    # chat vs react data sets really differ, and negatives only where configured
    react = json.loads((work / "data/paperfix/ablations/react/stats.json").read_text())
    flan = json.loads((work / "data/paperfix/ablations/agentflan/stats.json").read_text())
    assert "toolbench_negative" in flan["samples_by_source"] and "toolbench_negative" not in react["samples_by_source"]
