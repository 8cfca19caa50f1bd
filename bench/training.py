"""Training throughput, side by side in one run (issue 12; results in docs/benchmarks.md).

Three trainers on the same model, data and optimizer settings, each in its own process (clean
peak memory), timed over the same number of optimizer steps after a short warm-up:

* **hf-padded**: the plain Hugging Face ``Trainer``: random sample order, dynamic padding to the
  longest sample of each micro-batch, the model's own loss (LM head at every position);
* **ours-padded**: the package's trainer (``agentflan.train``) without packing: length-grouped
  order, LM head only at trained positions;
* **ours-packed**: the same with ``packing: true`` (samples share rows; position ids restart per
  sample; attention block-diagonal).

Figures: real (non-pad) tokens/s, the padding share of the computed tokens, peak memory (host RSS
on CPU, ``max_memory_allocated`` on GPU) and on GPU the MFU (6N FLOPs per token for full
fine-tuning, 4N for LoRA, plus attention, against the card's bf16 peak; recomputation not counted).

CPU (default): the miniature's main-size model and fine-tuning data. Build them first with
``snakemake --cores 2 results/mini/models/base-xs data/mini/ablations/agentflan/train.jsonl``
(or pass ``--model``/``--data``). ``--gpu``: a Llama-2-7B-shaped model with random weights in
bf16 (``--layers`` cut to fit one card for full fine-tuning; ``--method lora`` for LoRA r=64),
the same records tokenised with Llama-2's tokenizer (tests/sptokenizers.py).

    python bench/training.py [--steps 30] [--model DIR] [--data JSONL]
    python bench/training.py --gpu --method lora --steps 20
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchlib import machine

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("hf-padded", "ours-padded", "ours-packed")
# bf16 dense peak of the card, by name fragment (NVIDIA data sheets, without sparsity)
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def describe_machine(gpu: bool) -> str:
    desc = machine()
    if gpu:
        import torch
        desc += f", {torch.cuda.get_device_name(0)}"
    return desc


# ----------------------------------------------------------------------------- one variant (child)
def _gpu_model(out: Path, layers: int) -> str:
    """A Llama-2-7B-shaped model (hidden 4096, 32 heads, MLP 11008) with ``layers`` layers, random
    bf16 weights, saved with Llama-2's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    sys.path.insert(0, str(ROOT / "tests"))
    import sptokenizers
    from agentflan.modeling import load_tokenizer
    tok = load_tokenizer(str(sptokenizers.llama2_tokenizer_dir()))
    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return str(out)


def run_variant(a) -> dict:
    from agentflan import determinism
    if not a.gpu:
        determinism.pin(1)
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from agentflan import train as T
    from agentflan.io import read_jsonl
    from agentflan.modeling import load_causal_lm, load_tokenizer

    tok = load_tokenizer(a.model)
    examples, _ = T.encode_dataset(read_jsonl(a.data), tok, a.max_length)
    n_micro = a.batch_size // a.micro
    counts: list[tuple[int, int]] = []     # (real, computed) tokens per micro-batch, in call order
    times: list[float] = []                # wall clock at each optimizer step's end

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if a.gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    recipe = {"method": a.method, "learning_rate": 2e-5, "warmup_start_lr": 4e-6, "warmup_ratio": 0.0,
              "batch_size": a.batch_size, "per_device_batch_size": a.micro, "epochs": 100,
              "max_steps": a.steps + a.warmup, "max_length": a.max_length, "seed": 0, "logging_steps": 10 ** 6,
              "dtype": "bf16" if a.gpu else "fp32", "packing": a.variant == "ours-packed",
              "lora": {"r": 64, "alpha": 128, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"]},
              "gradient_checkpointing": a.gpu and a.method == "full"}
    if a.variant == "hf-padded":
        model = load_causal_lm(a.model, dtype="bf16" if a.gpu else "fp32", device="cuda" if a.gpu else "cpu",
                               attn_implementation="sdpa")
        if a.method == "lora":
            from peft import LoraConfig, get_peft_model
            model = get_peft_model(model, LoraConfig(r=64, lora_alpha=128, target_modules=recipe["lora"]["target_modules"],
                                                     task_type="CAUSAL_LM"))

        def collate(batch):
            width = max(len(e.input_ids) for e in batch)
            counts.append((sum(len(e) for e in batch), width * len(batch)))
            pad = tok.pad_token_id
            return {"input_ids": torch.tensor([e.input_ids + [pad] * (width - len(e)) for e in batch]),
                    "attention_mask": torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in batch]),
                    "labels": torch.tensor([e.labels + [-100] * (width - len(e)) for e in batch])}

        args = TrainingArguments(output_dir=str(a.work / "ck-hf"), per_device_train_batch_size=a.micro,
                                 gradient_accumulation_steps=n_micro, max_steps=a.steps + a.warmup,
                                 learning_rate=2e-5, lr_scheduler_type="constant", logging_steps=10 ** 6,
                                 save_strategy="no", report_to=[], use_cpu=not a.gpu, bf16=a.gpu, seed=0,
                                 remove_unused_columns=False, disable_tqdm=True,
                                 gradient_checkpointing=recipe["gradient_checkpointing"])
        trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collate,
                          callbacks=[Clock()])
        trainer.train()
    else:
        # The package's own train(): count what its collator builds, time its steps.
        orig_collate = T.collate

        def counting(batch, pad_id):
            out = orig_collate(batch, pad_id)
            real = int((out["sample"] >= 0).sum()) if "sample" in out else int(out["attention_mask"].sum())
            counts.append((real, out["input_ids"].numel()))
            return out
        T.collate = counting
        Trainer.__init__ = _with_callback(Trainer.__init__, Clock())
        T.train(base_model=a.model, data_path=Path(a.data), out_dir=a.work / f"model-{a.variant}",
                metrics_path=a.work / f"{a.variant}.metrics.jsonl", config_path=a.work / f"{a.variant}.json",
                recipe=recipe, model_id=a.variant, checkpoint_dir=a.work / f"ck-{a.variant}", threads=1)
    timed = counts[a.warmup * n_micro:(a.warmup + a.steps) * n_micro]
    real = sum(r for r, _ in timed)
    computed = sum(c for _, c in timed)
    seconds = times[a.warmup + a.steps - 1] - times[a.warmup - 1]
    if a.gpu:
        peak = torch.cuda.max_memory_allocated() / 2 ** 30
    else:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    res = {"variant": a.variant, "steps": a.steps, "seconds": round(seconds, 3), "real_tokens": real,
           "computed_tokens": computed, "tokens_per_s": round(real / seconds, 1),
           "padding_share": round(1 - real / computed, 4), "peak_gib": round(peak, 3)}
    if a.gpu:
        cfg = json.loads((Path(a.model) / "config.json").read_text())
        n_params = _n_params(cfg)
        per_token = (6 if a.method == "full" else 4) * n_params
        # attention: 6 x 2 x layers x hidden x (mean causal context) per token, fwd+bwd (QK^T and AV)
        ctx = sum(len(e) ** 2 for e in examples) / max(1, sum(len(e) for e in examples)) / 2
        per_token += 12 * cfg["num_hidden_layers"] * cfg["hidden_size"] * ctx
        name = torch.cuda.get_device_name(0)
        peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        if peak_tflops:
            res["mfu"] = round(per_token * real / seconds / (peak_tflops * 1e12), 4)
    return res


def _with_callback(init, callback):
    def wrapped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(callback)
    return wrapped


def _n_params(cfg: dict) -> int:
    h, i, layers, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    return layers * (4 * h * h + 3 * h * i + 2 * h) + 2 * v * h + h


# ----------------------------------------------------------------------------- driver
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "results/mini/models/base-xs"))
    ap.add_argument("--data", default=str(ROOT / "data/mini/ablations/agentflan/train.jsonl"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16, help="samples per optimizer step")
    ap.add_argument("--micro", type=int, default=16, help="samples per micro-batch")
    ap.add_argument("--max-length", type=int, default=448)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--method", choices=("full", "lora"), default="full")
    ap.add_argument("--layers", type=int, default=8, help="--gpu, full fine-tuning: layers of the 7B shape")
    ap.add_argument("--work", type=Path, default=Path("/tmp/agentflan-bench-train"))
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.variant:
        print("RESULT " + json.dumps(run_variant(a)), flush=True)
        return 0
    if a.gpu and a.model == ap.get_default("model"):
        layers = a.layers if a.method == "full" else 32
        a.model = _gpu_model(a.work / f"llama2-7b-shape-{layers}l", layers)
    for path in (a.model, a.data):
        if not Path(path).exists():
            print(f"error: {path} does not exist (see this script's docstring for how to build it)", file=sys.stderr)
            return 2
    print(f"machine: {describe_machine(a.gpu)}")
    print(f"model: {a.model}  data: {a.data}  method: {a.method}  steps: {a.steps} (+{a.warmup} warm-up)  "
          f"batch: {a.batch_size} samples, micro-batch {a.micro}")
    rows = []
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant, "--model", a.model, "--data", a.data,
               "--steps", str(a.steps), "--warmup", str(a.warmup), "--batch-size", str(a.batch_size),
               "--micro", str(a.micro), "--max-length", str(a.max_length), "--method", a.method,
               "--work", str(a.work)] + (["--gpu"] if a.gpu else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{variant}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(line[len("RESULT "):]))
    base = rows[0]["tokens_per_s"]
    cols = ["variant", "seconds", "real_tokens", "tokens_per_s", "padding_share", "peak_gib"] + \
        (["mfu"] if a.gpu else [])
    print("| " + " | ".join(cols + ["speed-up"]) + " |")
    print("|" + " --- |" * (len(cols) + 1))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + f" | {r['tokens_per_s'] / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
