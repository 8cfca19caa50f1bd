"""Dress rehearsal of the paper preset (config/paper.yaml + config/rehearsal.yaml): the GPU run's code
path end to end on the CPU, with only the scale changed. An offline mirror holds every source in the
hub's files and layouts and tiny random Llama models with the real Llama-2 tokenizer
(tests/rehearsal.py); fine-tuning is full, bf16, DeepSpeed ZeRO-2 for 7B and ZeRO-3 for 13B/70B, 2
CPU ranks launched by the same launcher template as the cluster (torchrun, gloo); then generation,
scoring, every table and figure. Select with ``python -m pytest -k rehearsal``."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

pytest.importorskip("deepspeed")
pytestmark = [pytest.mark.skipif(os.environ.get("AGENTFLAN_SKIP_DAG") == "1", reason="AGENTFLAN_SKIP_DAG=1"),
              pytest.mark.xdist_group("rehearsal")]

RUN = "rehearsal"


def _snakemake(workdir: Path, mirror: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--configfile", str(ROOT / "config" / "paper.yaml"), str(ROOT / "config" / "rehearsal.yaml"),
           "--config", f"data_mirror={mirror}", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=2400)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    from rehearsal import build_mirror
    mirror = build_mirror(tmp_path_factory.mktemp("mirror"))
    work = tmp_path_factory.mktemp("rehearsal")
    proc = _snakemake(work, mirror)
    if proc.returncode != 0:
        logs = sorted((work / "logs" / RUN).rglob("*.log"), key=lambda p: p.stat().st_mtime)
        tail = logs[-1].read_text()[-4000:] if logs else ""
        pytest.fail(proc.stdout[-2000:] + proc.stderr[-4000:] + "\n--- newest job log ---\n" + tail)
    return work, mirror


def _train_config(work: Path, model_id: str) -> dict:
    return json.loads((work / "results" / RUN / "train" / model_id / "train_config.json").read_text())


def test_rehearsal_builds_every_table_and_figure(rehearsal):
    work, _ = rehearsal
    out = work / "results" / RUN
    for i in range(1, 7):
        assert (out / "paper_tables" / f"table{i}.md").read_text().strip()
    for i in range(1, 9):
        assert (out / "figures" / f"fig{i}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "paper_tables" / "diff_vs_paper.md").read_text().strip()
    lock = json.loads((work / "data" / RUN / "sources.lock.json").read_text())
    # every data source of config/paper.yaml, T-Eval's sentence-embedding model (sbert) and the
    # external checkpoints (evaluation.external_models)
    # the external checkpoints (evaluation.external_models) and HotpotQA's local Wikipedia (hotpotwiki)
    assert set(lock) == {"agentflan", "sharegpt", "teval", "glaive", "hotpotqa", "mmlu", "gsm8k", "humaneval", "sbert",
                         "hotpotwiki", "agentlm7b", "agentflan7b", "fireact7b"}


def test_rehearsal_trains_as_the_paper_preset_does(rehearsal):
    """Full fine-tuning in bf16, micro-batch 1 with accumulation over 2 ranks, the package's AdamW and
    schedule, ZeRO-2 for 7B and ZeRO-3 (loaded under zero.Init) for 13B and 70B."""
    work, _ = rehearsal
    for model_id, stage in (("agentflan-7b", 2), ("react-7b", 2), ("agentflan-13b", 3), ("general-70b", 3)):
        cfg = _train_config(work, model_id)
        assert cfg["method"] == "full" and cfg["dtype"] == "bf16" and cfg["master_weights"] == "fp32"
        assert cfg["devices"] == 2 and cfg["per_device_batch_size"] == 1 and cfg["gradient_accumulation_steps"] == 4
        assert cfg["zero_stage"] == stage and cfg["zero_init"] is (stage == 3)
        assert cfg["optimizer"]["betas"] == [0.9, 0.95]
        assert cfg["warmup_start_lr"] == 2.0e-4 and cfg["lr_scheduler"] == "linear warm-up + cosine"
        log = (work / "logs" / RUN / "train" / f"{model_id}.log").read_text()
        assert "[train]" in log


def test_rehearsal_zero3_models_are_saved_whole(rehearsal):
    """Every tensor of a ZeRO-3 model is saved (gathered from both ranks) and moved away from the init."""
    import torch
    from safetensors.torch import load_file
    work, mirror = rehearsal
    for model_id, base in (("agentflan-13b", "Llama-2-13b-hf"), ("agentflan-70b", "Llama-2-70b-hf")):
        trained = load_file(str(work / "results" / RUN / "models" / model_id / "model.safetensors"))
        init = load_file(str(mirror / "meta-llama" / base / "model.safetensors"))
        assert trained.keys() == init.keys()
        for key, value in init.items():
            assert trained[key].shape == value.shape and trained[key].dtype == torch.bfloat16, key
        moved = trained["model.layers.0.self_attn.q_proj.weight"].float() - init["model.layers.0.self_attn.q_proj.weight"].float()
        assert moved.abs().max() > 0


def test_rehearsal_template_is_token_exact_with_llama2(rehearsal):
    """The ablation data sets were tokenised with Llama-2's SentencePiece vocabulary, and decoding a
    training example gives the rendered conversation byte for byte."""
    from agentflan.io import read_jsonl
    from agentflan.modeling import load_tokenizer
    from agentflan.template import SegmentTokenizer, render
    work, _ = rehearsal
    tok = load_tokenizer(str(work / "data" / RUN / "tokenizer"))
    assert len(tok) == 32000
    rec = read_jsonl(work / "data" / RUN / "ablations" / "agentflan" / "train.jsonl")[0]
    enc = SegmentTokenizer(tok).encode_record(rec)
    assert tok.decode(enc.input_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == render(rec["turns"])


def test_rehearsal_evaluates_every_model(rehearsal):
    work, _ = rehearsal
    from agentflan import config as cfg
    paper = cfg.load_config(ROOT / "config" / "paper.yaml")
    # config/rehearsal.yaml trains one seed
    paper["training"]["seeds"] = yaml.safe_load((ROOT / "config" / "rehearsal.yaml").read_text())["training"]["seeds"]
    for model in cfg.model_ids(paper):
        if model.startswith("agentflan_f") and model != "agentflan_f50-7b":
            continue
        for bench in cfg.BENCHMARKS:
            assert (work / "results" / RUN / "eval" / model / f"{bench}.scores.json").exists(), (model, bench)


def test_rehearsal_second_run_has_nothing_to_do(rehearsal):
    work, mirror = rehearsal
    proc = _snakemake(work, mirror, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
