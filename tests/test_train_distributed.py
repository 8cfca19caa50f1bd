"""The paper preset's training path at toy scale on the CPU: 2 ranks under torchrun (gloo),
DeepSpeed ZeRO-2 and ZeRO-3, the package's optimizer and schedule, loss normalisation, metrics,
checkpoints, kill and resume, bf16 master weights. Each test names the defect it guards against
(issue: paper preset dress rehearsal)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentflan.io import write_jsonl

torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_train import RECORDS  # noqa: E402

RECIPE = {"method": "full", "learning_rate": 5e-3, "warmup_start_lr": 1e-3, "warmup_ratio": 0.25,
          "min_lr_ratio": 0.1, "batch_size": 8, "per_device_batch_size": 2, "epochs": 2, "max_length": 64,
          "seed": 0, "logging_steps": 1}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from agentflan.modeling import init_tiny_llama, load_tokenizer, train_bpe_tokenizer
    from agentflan.template import render
    root = tmp_path_factory.mktemp("dist")
    train_bpe_tokenizer((render(r["turns"]) for r in RECORDS), root / "tok", vocab_size=300)
    tok = load_tokenizer(str(root / "tok"))
    init_tiny_llama({"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2},
                    tok, seed=0, out_dir=root / "init")
    write_jsonl(root / "train.jsonl", RECORDS)
    return root


def _params(root: Path, name: str, recipe: dict, probe: bool = False) -> dict:
    return {"base_model": str(root / "init"), "data": str(root / "train.jsonl"),
            "out_dir": str(root / name / "model"), "metrics": str(root / name / "metrics.jsonl"),
            "config_out": str(root / name / "train_config.json"), "recipe": recipe, "model_id": name,
            "checkpoint_dir": str(root / name / "ck"), "threads": 1,
            **({"probe_out": str(root / name / "probe.safetensors")} if probe else {})}


def _cmd(params: dict, nproc: int) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    return [*launcher, "-m", "agentflan.cli", "train", "--params", json.dumps(params)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_train(root: Path, name: str, recipe: dict, nproc: int = 1, probe: bool = False) -> dict:
    params = _params(root, name, recipe, probe)
    proc = subprocess.run(_cmd(params, nproc), capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = root / name
    return {"config": json.loads((out / "train_config.json").read_text()),
            "metrics": [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()],
            "log": proc.stdout + proc.stderr, "dir": out}


@pytest.fixture(scope="module")
def runs(toy):
    """One single-process reference run and 2-rank DeepSpeed ZeRO-2 / ZeRO-3 runs of the same recipe."""
    return {
        "single": run_train(toy, "single", RECIPE),
        "zero2": run_train(toy, "zero2", {**RECIPE, "deepspeed": "workflow/deepspeed/zero2.json"}, nproc=2),
        "zero3": run_train(toy, "zero3", {**RECIPE, "deepspeed": "workflow/deepspeed/zero3.json"}, nproc=2,
                           probe=True),
    }


def test_deepspeed_configs_leave_optimizer_and_schedule_to_the_package():
    """Finding: zero{2,3}.json fixed betas [0.9, 0.95] against TrainingArguments' 0.999 (ValueError at
    start) and brought DeepSpeed's WarmupCosineLR, which replaced the package's schedule."""
    for name in ("zero2", "zero3"):
        cfg = json.loads((ROOT / "workflow" / "deepspeed" / f"{name}.json").read_text())
        assert "optimizer" not in cfg and "scheduler" not in cfg


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_deepspeed_steps_with_the_package_optimizer_and_schedule(runs, name):
    from agentflan.train import lr_lambda_factory
    run = runs[name]
    cfg = run["config"]
    assert cfg["devices"] == 2 and cfg["zero_stage"] == int(name[-1])
    assert cfg["optimizer"]["betas"] == [0.9, 0.95] and cfg["optimizer"]["eps"] == 1e-8
    fn = lr_lambda_factory(cfg["warmup_steps"], cfg["steps"], 1e-3 / 5e-3, 0.1)
    logged = [row["learning_rate"] for row in run["metrics"]]
    # HF logs the rate of the step just taken (the scheduler has stepped once after it)
    expected = [5e-3 * fn(step) for step in range(cfg["steps"])]
    assert logged == pytest.approx(expected, rel=1e-6)
    assert logged[0] == pytest.approx(1e-3)  # warm-up starts at warmup_start_lr, not ~0


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_two_ranks_give_the_single_process_losses(runs, name):
    """Finding: every rank wrote the same metrics file and category losses were rank-local. Now only the
    main process writes, each step once, with category losses reduced over ranks: the same numbers as
    one process running the same global batches."""
    single, multi = runs["single"]["metrics"], runs[name]["metrics"]
    assert [r["step"] for r in multi] == list(range(1, runs[name]["config"]["steps"] + 1))
    for a, b in zip(single, multi):
        assert a.keys() == b.keys()
        for key in a:
            if key.startswith("loss") or key == "grad_norm":
                assert b[key] == pytest.approx(a[key], rel=2e-4, abs=2e-5), (b["step"], key)


def test_zero3_loads_partitioned_and_saves_the_trained_model(runs):
    """Finding: the model was loaded before the DeepSpeed config existed (no zero.Init, every rank held
    the whole model) and rank 0 alone saved partitioned parameters (an empty checkpoint). The saved model
    reloads and gives the in-memory model's logits."""
    from safetensors.torch import load_file

    from agentflan.modeling import load_causal_lm
    run = runs["zero3"]
    assert run["config"]["zero_init"] is True and "loaded under zero.Init" in run["log"]
    probe = load_file(str(run["dir"] / "probe.safetensors"))
    model = load_causal_lm(str(run["dir"] / "model"), dtype="fp32").eval()
    with torch.no_grad():
        logits = model(input_ids=probe["input_ids"]).logits
    assert logits.shape == probe["logits"].shape and logits.abs().sum() > 0
    assert torch.allclose(logits, probe["logits"], atol=1e-4), (logits - probe["logits"]).abs().max()
    # ... and it is the same model ZeRO-2 trained
    z2 = load_file(str(runs["zero2"]["dir"] / "model" / "model.safetensors"))
    z3 = load_file(str(run["dir"] / "model" / "model.safetensors"))
    for key in z3:
        assert z3[key].numel() > 0 and torch.allclose(z3[key], z2[key], atol=1e-5), key


@pytest.mark.parametrize("normalization", ["token", "sample"])
def test_loss_normalisation_does_not_depend_on_how_the_global_batch_is_split(toy, normalization):
    """One global batch of 4 as 1 x 4, 2 x 2 and 4 x 1 (micro-batch x accumulation): same loss and
    gradient norm."""
    seen = []
    for per_device in (1, 2, 4):
        recipe = {**RECIPE, "batch_size": 4, "per_device_batch_size": per_device, "max_steps": 1,
                  "loss_normalization": normalization}
        run = run_train(toy, f"norm-{normalization}-{per_device}", recipe)
        assert run["config"]["gradient_accumulation_steps"] == 4 // per_device
        seen.append((run["metrics"][0]["loss"], run["metrics"][0]["grad_norm"]))
    for loss, norm in seen[1:]:
        assert loss == pytest.approx(seen[0][0], rel=1e-5) and norm == pytest.approx(seen[0][1], rel=1e-4)


def test_token_and_sample_normalisation_differ_on_unequal_samples():
    from agentflan.train import keep_mask, loss_terms
    labels = torch.tensor([[-100, 1, 1, 1, 1], [-100, 1, -100, -100, -100]])
    keep = keep_mask(labels)
    ce = torch.tensor([1.0, 1.0, 1.0, 1.0, 3.0])  # four tokens of sample 0, one of sample 1
    assert float(loss_terms(ce, keep, "token")) == pytest.approx(7.0)        # / 5 tokens
    assert float(loss_terms(ce, keep, "sample")) == pytest.approx(1.0 + 3.0)  # / 2 samples


def test_bf16_without_deepspeed_keeps_fp32_master_weights(toy):
    """Finding: bf16 weights were stepped by plain AdamW; at lr 2e-5 most updates round away (the bf16
    spacing near 0.02 is 1.2e-4). With fp32 master weights 30 small steps add up."""
    from safetensors.torch import load_file
    recipe = {**RECIPE, "dtype": "bf16", "learning_rate": 2e-5, "warmup_start_lr": 2e-5, "min_lr_ratio": 1.0,
              "batch_size": 4, "per_device_batch_size": 4, "epochs": 30, "max_steps": 30}
    run = run_train(toy, "bf16", recipe)
    assert run["config"]["master_weights"] == "fp32"
    init = load_file(str(toy / "init" / "model.safetensors"))
    trained = load_file(str(run["dir"] / "model" / "model.safetensors"))
    w0, w1 = init["model.layers.0.mlp.up_proj.weight"], trained["model.layers.0.mlp.up_proj.weight"]
    assert w1.dtype == torch.bfloat16
    changed = (w0.to(torch.bfloat16) != w1).float().mean().item()
    assert changed > 0.5, f"only {changed:.0%} of the weights moved"


def test_only_complete_checkpoints_are_resumed_and_metrics_keep_their_rows(tmp_path):
    from agentflan.train import COMPLETE_MARKER, _latest_checkpoint, _open_metrics
    ck = tmp_path / "ck"
    for step in (2, 4, 6):
        (ck / f"checkpoint-{step}").mkdir(parents=True)
    for step in (2, 4):
        (ck / f"checkpoint-{step}" / COMPLETE_MARKER).write_text(f"{step}\n")
    assert _latest_checkpoint(ck) == str(ck / "checkpoint-4")  # 6 was left half-written
    metrics = tmp_path / "m.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    fh = _open_metrics(metrics, keep_until=4)
    fh.write(json.dumps({"step": 5, "loss": 0.5}) + "\n")
    fh.close()
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_training_killed_mid_run_resumes_to_the_same_model(toy):
    """SIGKILL after the second complete checkpoint, rerun the same command: the final loss, metrics and
    weights equal an uninterrupted run's."""
    from safetensors.torch import load_file
    recipe = {**RECIPE, "per_device_batch_size": 4, "epochs": 6, "save_steps": 3, "keep_checkpoints": False}
    ref = run_train(toy, "ref", recipe)
    params = _params(toy, "killed", recipe)
    ck = Path(params["checkpoint_dir"])
    proc = subprocess.Popen(_cmd(params, 1), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    from agentflan.train import complete_checkpoints
    while time.time() < deadline and len(complete_checkpoints(ck)) < 2 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (toy / "killed" / "model").exists()
    rerun = run_train(toy, "killed", recipe)
    assert "resuming from checkpoint-" in rerun["log"]
    assert [r["step"] for r in rerun["metrics"]] == [r["step"] for r in ref["metrics"]]
    for key in ("train_loss", "final_loss"):
        assert rerun["config"][key] == pytest.approx(ref["config"][key], rel=1e-5), key
    a = load_file(str(ref["dir"] / "model" / "model.safetensors"))
    b = load_file(str(rerun["dir"] / "model" / "model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
