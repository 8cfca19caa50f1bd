"""Fine-tuning: one job per (model size, ablation dataset, seed).

HF ``Trainer`` with full fine-tuning (the paper's method) or LoRA (peft), optional DeepSpeed
(``recipe['deepspeed']``: a ZeRO config path), CPU when no GPU is present. The loss is the mean
cross-entropy over trained tokens; the per-category means (ReAct format/content tokens; the
capabilities) are logged beside it for Figures 2 and 3.

Learning-rate schedule (paper Table 5): linear warm-up from ``warmup_start_lr`` (4e-6 in the
paper) to ``learning_rate`` (2e-5), then cosine decay to ``min_lr_ratio`` x learning_rate.

Crash safety: checkpoints go to ``checkpoint_dir`` (not a Snakemake output, so it survives a
failed job) and ``resume: auto`` continues from the newest one; the final model, metrics and
config are written atomically at the end.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

from .io import dumps, read_jsonl, write_json
from .template import CAPABILITY_IDS, PART_IDS, SegmentTokenizer, Encoded

CATEGORY_NAMES = {**{f"cap{v}": k for k, v in CAPABILITY_IDS.items()},
                  **{f"part{v}": k for k, v in PART_IDS.items()}}


def encode_dataset(records: list[dict], tokenizer, max_length: int) -> tuple[list[Encoded], dict]:
    """Canonical records (or ``{"text"}`` pretraining documents) -> encoded examples."""
    seg = SegmentTokenizer(tokenizer)
    out, dropped, truncated = [], 0, 0
    for rec in records:
        if "text" in rec and "turns" not in rec:
            ids = [tokenizer.bos_token_id] + tokenizer(rec["text"], add_special_tokens=False)["input_ids"] \
                + [tokenizer.eos_token_id]
            ids = ids[:max_length]
            enc = Encoded(ids, [-100] + ids[1:], [CAPABILITY_IDS["general"]] * len(ids), [0] * len(ids))
        else:
            enc = seg.encode_record(rec)
            if len(enc) > max_length:
                truncated += 1
                enc = seg.encode_record(rec, max_length)
        if all(x == -100 for x in enc.labels):
            dropped += 1
            continue
        out.append(enc)
    return out, {"examples": len(out), "dropped_no_trained_tokens": dropped, "truncated": truncated}


def length_grouped_order(lengths: list[int], batch: int, seed: int, mega: int = 16) -> list[int]:
    """Seeded order that puts examples of similar length in the same batch (less padding):
    shuffle, sort inside mega-batches of ``batch * mega``, cut into batches, shuffle the batches."""
    import random
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches = []
    for start in range(0, len(idx), batch * mega):
        chunk = sorted(idx[start:start + batch * mega], key=lambda i: -lengths[i])
        batches += [chunk[k:k + batch] for k in range(0, len(chunk), batch)]
    rng.shuffle(batches)
    return [i for b in batches for i in b]


class _DS:
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        e = self.items[i]
        return {"input_ids": e.input_ids, "labels": e.labels, "capability": e.capability, "part": e.part}


def collate(batch, pad_id: int):
    import torch
    n = max(len(b["input_ids"]) for b in batch)

    def pad(key, value):
        return torch.tensor([b[key] + [value] * (n - len(b[key])) for b in batch], dtype=torch.long)
    ids = pad("input_ids", pad_id)
    mask = torch.tensor([[1] * len(b["input_ids"]) + [0] * (n - len(b["input_ids"])) for b in batch])
    return {"input_ids": ids, "attention_mask": mask, "labels": pad("labels", -100),
            "capability": pad("capability", 0), "part": pad("part", 0)}


def lr_lambda_factory(warmup_steps: int, total_steps: int, start_ratio: float, min_ratio: float):
    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return start_ratio + (1 - start_ratio) * step / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return fn


def trained_position_head(model):
    """``(decoder, lm_head)`` of a Llama causal LM (plain, or wrapped by peft), else ``None``.

    Fine-tuning trains on assistant tokens only (about a fifth of all positions in the
    miniature), so the trainer runs the decoder, keeps the hidden states at trained positions and
    applies the LM head to those alone: the same loss and gradients as full logits, without
    computing and soft-maxing a vocabulary-sized row for every masked position (about a third
    less CPU time per step for the tiny models, less activation memory for large ones).
    Other architectures and DeepSpeed engines take the plain ``model(**inputs)`` path."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(getattr(base, "config", None), "model_type", None) != "llama":
        return None
    decoder = getattr(base, "model", None)
    lm_head = base.get_output_embeddings()
    if decoder is None or lm_head is None:
        return None
    return decoder, lm_head


def _make_trainer_cls():
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class CategoryTrainer(Trainer):
        """Trainer whose loss is the token mean over trained tokens, with per-category sums."""

        def __init__(self, *args, metrics_path=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = False  # we return a per-micro-batch mean
            self._sums: dict[str, list[float]] = {}
            self._metrics_fh = open(metrics_path, "w", encoding="utf-8") if metrics_path else None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            cap = inputs.pop("capability")
            part = inputs.pop("part")
            labels = inputs.pop("labels")
            tgt = labels[:, 1:]
            mask = tgt != -100
            head = None if self.is_deepspeed_enabled or return_outputs else trained_position_head(model)
            if head is not None:
                decoder, lm_head = head
                hidden = decoder(**inputs).last_hidden_state[:, :-1][mask]
                ce = F.cross_entropy(lm_head(hidden).float(), tgt[mask], reduction="none")
                out = None
            else:
                out = model(**inputs)
                logits = out.logits[:, :-1, :]
                ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), tgt.reshape(-1),
                                     ignore_index=-100, reduction="none").view_as(tgt)[mask]
            loss = ce.sum() / mask.sum().clamp(min=1)
            with torch.no_grad():
                ce_d = ce.detach().double()
                for prefix, cats in (("cap", cap[:, 1:][mask]), ("part", part[:, 1:][mask])):
                    sums = torch.bincount(cats, weights=ce_d).tolist()
                    counts = torch.bincount(cats).tolist()
                    for cid, (total, count) in enumerate(zip(sums, counts)):
                        if count:
                            s = self._sums.setdefault(f"{prefix}{cid}", [0.0, 0])
                            s[0] += total
                            s[1] += count
            return (loss, out) if return_outputs else loss

        def _get_train_sampler(self, *args, **kwargs):
            # The dataset is already in a seeded, length-grouped order (length_grouped_order).
            return torch.utils.data.SequentialSampler(self.train_dataset)

        def log(self, logs, *args, **kwargs):
            if "loss" in logs and self._sums:
                for key, (total, count) in sorted(self._sums.items()):
                    name = CATEGORY_NAMES.get(key, key)
                    if name != "none" and count:
                        logs[f"loss_{name}"] = round(total / count, 6)
                self._sums = {}
            if self._metrics_fh is not None and "loss" in logs:
                row = {"step": self.state.global_step, **{k: v for k, v in logs.items()}}
                self._metrics_fh.write(dumps(row) + "\n")
                self._metrics_fh.flush()
            super().log(logs, *args, **kwargs)

        def close_metrics(self):
            if self._metrics_fh is not None:
                self._metrics_fh.close()

    return CategoryTrainer


def _latest_checkpoint(ckpt_dir: Path) -> str | None:
    if not ckpt_dir.exists():
        return None
    cks = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir()),
                 key=lambda p: int(p.name.split("-")[-1]))
    return str(cks[-1]) if cks else None


def train(*, base_model: str, data_path: Path, out_dir: Path, metrics_path: Path, config_path: Path,
          recipe: dict, model_id: str, checkpoint_dir: Path, threads: int = 1) -> dict:
    """Train ``base_model`` on the records in ``data_path``; write the model, metrics.jsonl and
    the effective training configuration (Table 5)."""
    import torch
    from transformers import TrainingArguments, set_seed

    from .modeling import load_causal_lm, load_tokenizer, save_model

    torch.set_num_threads(max(1, threads))
    seed = int(recipe.get("seed", 0))
    set_seed(seed)
    cuda = torch.cuda.is_available()
    tokenizer = load_tokenizer(base_model)
    records = read_jsonl(data_path)
    max_length = int(recipe["max_length"])
    examples, enc_stats = encode_dataset(records, tokenizer, max_length)
    if not examples:
        raise ValueError(f"{data_path}: no example has a trained token")

    dtype = recipe.get("dtype", "bf16" if cuda else "fp32")
    model = load_causal_lm(base_model, dtype=dtype if dtype != "auto" else "auto")
    method = recipe.get("method", "full")
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        lcfg = recipe.get("lora", {})
        model = get_peft_model(model, LoraConfig(
            r=int(lcfg.get("r", 16)), lora_alpha=int(lcfg.get("alpha", 32)),
            lora_dropout=float(lcfg.get("dropout", 0.0)),
            target_modules=list(lcfg.get("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"])),
            task_type="CAUSAL_LM"))
    elif method != "full":
        raise ValueError(f"training method must be 'full' or 'lora', not {method!r}")

    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_device = int(recipe.get("per_device_batch_size", recipe["batch_size"]))
    accum = max(1, int(recipe["batch_size"]) // (per_device * world))
    epochs = float(recipe.get("epochs", 1))
    steps_per_epoch = math.ceil(len(examples) / (per_device * world * accum))
    total_steps = max(1, math.ceil(steps_per_epoch * epochs))
    if recipe.get("max_steps"):
        total_steps = min(total_steps, int(recipe["max_steps"]))
    warmup_steps = int(round(float(recipe.get("warmup_ratio", 0.03)) * total_steps))
    lr = float(recipe["learning_rate"])

    deepspeed = recipe.get("deepspeed") or None
    if deepspeed and not Path(deepspeed).is_absolute():
        from .config import ROOT
        deepspeed = str(ROOT / deepspeed)
    checkpoint_dir = Path(checkpoint_dir)
    args = TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        num_train_epochs=epochs,
        max_steps=total_steps,
        learning_rate=lr,
        weight_decay=float(recipe.get("weight_decay", 0.0)),
        max_grad_norm=float(recipe.get("max_grad_norm", 1.0)),
        logging_steps=int(recipe.get("logging_steps", 1)),
        save_strategy="steps" if recipe.get("save_steps") else "no",
        save_steps=int(recipe.get("save_steps") or 500),
        save_total_limit=2,
        seed=seed,
        data_seed=seed,
        bf16=(dtype == "bf16" and cuda),
        fp16=(dtype == "fp16" and cuda),
        use_cpu=not cuda,
        dataloader_num_workers=0,
        report_to=[],
        remove_unused_columns=False,
        deepspeed=deepspeed,
        disable_tqdm=False,
        **({"gradient_checkpointing": True} if recipe.get("gradient_checkpointing") else {}),
    )
    trainer_cls = _make_trainer_cls()
    metrics_path = Path(metrics_path)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_metrics = metrics_path.with_name("." + metrics_path.name + ".partial")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  betas=(0.9, 0.95), weight_decay=float(recipe.get("weight_decay", 0.0)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda_factory(
        warmup_steps, total_steps, float(recipe.get("warmup_start_lr", lr * 0.2)) / lr,
        float(recipe.get("min_lr_ratio", 0.0))))
    order = length_grouped_order([len(e) for e in examples], per_device * world, seed,
                                 mega=int(recipe.get("length_group_window", 16)))
    trainer = trainer_cls(model=model, args=args, train_dataset=_DS([examples[i] for i in order]),
                          data_collator=lambda b: collate(b, tokenizer.pad_token_id),
                          optimizers=(None, None) if deepspeed else (optimizer, scheduler),
                          metrics_path=tmp_metrics)
    resume = _latest_checkpoint(checkpoint_dir) if recipe.get("resume", "auto") == "auto" else None
    t0 = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    finally:
        trainer.close_metrics()
    wall = time.time() - t0
    model = trainer.model
    if method == "lora":
        model = model.merge_and_unload()
    if trainer.is_world_process_zero():
        save_model(model, tokenizer, Path(out_dir))
        os.replace(tmp_metrics, metrics_path)
        effective = {
            "model_id": model_id, "base_model": base_model, "method": method, "learning_rate": lr,
            "warmup_start_lr": float(recipe.get("warmup_start_lr", lr * 0.2)),
            "warmup_ratio": float(recipe.get("warmup_ratio", 0.03)), "lr_scheduler": "cosine",
            "batch_size": per_device * world * accum, "per_device_batch_size": per_device,
            "gradient_accumulation_steps": accum, "epochs": epochs, "steps": total_steps,
            "devices": world, "device_type": "cuda" if cuda else "cpu", "max_length": max_length,
            "seed": seed, "deepspeed": recipe.get("deepspeed"), "dtype": dtype,
            "encoding": enc_stats, "train_loss": round(float(result.training_loss), 6),
            "tokens_trained": sum(sum(1 for x in e.labels if x != -100) for e in examples),
        }
        write_json(config_path, effective)
        # Wall time is not written into artifacts (determinism); it goes to the job log.
        print(f"[train] {model_id}: {total_steps} steps in {wall:.1f}s, final loss {result.training_loss:.4f}")
        if recipe.get("keep_checkpoints", False) is False and checkpoint_dir.exists():
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return effective
    return {}


def load_metrics(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
