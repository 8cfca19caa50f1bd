"""Fine-tuning: one job per (model size, ablation dataset, seed).

HF ``Trainer`` with full fine-tuning (the paper's method) or LoRA (peft), optional DeepSpeed
(``recipe['deepspeed']``: a ZeRO config path), CPU when no GPU is present. The loss is the mean
cross-entropy over trained tokens; the per-category means (ReAct format/content tokens; the
capabilities) are logged beside it for Figures 2 and 3.

Learning-rate schedule (paper Table 5): linear warm-up from ``warmup_start_lr`` (4e-6 in the
paper) to ``learning_rate`` (2e-5), then cosine decay to ``min_lr_ratio`` x learning_rate.

Loss normalisation (``loss_normalization``): ``token`` (default) is the mean cross-entropy over
every trained token of the optimizer step (all micro-batches of the accumulation, all ranks); each
trained token weighs the same, as in a single large batch, and the result does not depend on how
the global batch is split (micro-batch x accumulation x ranks). ``sample`` is the mean of the
per-sample means over the step (each conversation weighs the same, short ones count more per token).
The paper does not say which it used; ``token`` is what a plain Llama fine-tune on one large batch
computes, so it is the default.

Crash safety: checkpoints go to ``checkpoint_dir`` (not a Snakemake output, so it survives a
failed job); the main process marks a checkpoint complete once every rank has written its part,
and ``resume: auto`` continues from the newest complete one. Only the main process writes
metrics; on resume the rows up to the checkpoint are kept. The final model, metrics and config
are written atomically at the end.
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


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices of ``lengths`` grouped into rows whose total is at most
    ``capacity`` (a sample longer than ``capacity`` gets a row of its own). Deterministic: ties in
    length keep the input order, ties in remaining space take the earliest row. The rows come out
    in order of their first sample's position in the input, each row's samples in input order."""
    rows: list[list[int]] = []
    space: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        best = -1
        for r, free in enumerate(space):
            if lengths[i] <= free and (best < 0 or free < space[best]):
                best = r
        if best < 0:
            rows.append([i])
            space.append(capacity - lengths[i])
        else:
            rows[best].append(i)
            space[best] -= lengths[i]
    return sorted((sorted(r) for r in rows), key=lambda r: r[0])


class _Packed:
    """Micro-batches of ``per_device`` consecutive examples (of the seeded, length-grouped order),
    each packed into rows of at most ``capacity`` tokens: one dataset item per micro-batch, so the
    Trainer's accumulation and the ranks' share of a global batch are those of the padded path."""

    def __init__(self, items, per_device: int, capacity: int | None):
        self.micro = []
        for start in range(0, len(items), per_device):
            chunk = items[start:start + per_device]
            lengths = [len(e) for e in chunk]
            rows = pack_rows(lengths, capacity or max(lengths))
            self.micro.append([[chunk[i] for i in row] for row in rows])

    def __len__(self):
        return len(self.micro)

    def __getitem__(self, i):
        return {"rows": self.micro[i]}

    def stats(self) -> dict:
        rows = [r for m in self.micro for r in m]
        real = sum(len(e) for r in rows for e in r)
        computed = sum(len(m) * max(sum(len(e) for e in r) for r in m) for m in self.micro)
        return {"rows": len(rows), "samples": sum(len(r) for r in rows), "real_tokens": real,
                "computed_tokens": computed}


def collate_packed(batch, pad_id: int):
    """One packed micro-batch -> tensors. Position ids restart at 0 for every sample (and for the
    padding at a row's end), and no attention mask is passed: transformers then derives the
    block-diagonal causal mask from the position ids (SDPA, eager, flex attention) or runs varlen
    flash attention, so no token attends across samples. ``sample`` numbers the samples of the
    micro-batch (-1 on padding) for per-sample loss normalisation."""
    import torch
    (item,) = batch
    rows = item["rows"]
    width = max(sum(len(e) for e in row) for row in rows)
    out = {k: [] for k in ("input_ids", "labels", "capability", "part", "position_ids", "sample")}
    n = 0
    for row in rows:
        vals = {k: [] for k in out}
        for e in row:
            vals["input_ids"] += e.input_ids
            vals["labels"] += e.labels
            vals["capability"] += e.capability
            vals["part"] += e.part
            vals["position_ids"] += list(range(len(e)))
            vals["sample"] += [n] * len(e)
            n += 1
        pad = width - len(vals["input_ids"])
        for key, value in (("input_ids", pad_id), ("labels", -100), ("capability", 0), ("part", 0), ("sample", -1)):
            vals[key] += [value] * pad
        vals["position_ids"] += list(range(pad))
        for k in out:
            out[k].append(vals[k])
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


def collate(batch, pad_id: int):
    import torch
    if "rows" in batch[0]:
        return collate_packed(batch, pad_id)
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


LOSS_NORMALIZATIONS = ("token", "sample")
N_CAP, N_PART = len(CAPABILITY_IDS), len(PART_IDS)
COMPLETE_MARKER = "CHECKPOINT_COMPLETE"


def keep_mask(labels):
    """Positions whose logits the loss needs: position t predicts label t+1 (a 2-D bool tensor)."""
    import torch
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    return keep


def accepts_logits_to_keep(model) -> bool:
    """True when the causal LM's forward takes ``logits_to_keep`` (Llama and most HF decoders):
    the LM head then runs only at trained positions, on every path (plain, peft, DDP, DeepSpeed)."""
    import inspect
    base = model
    while hasattr(base, "module"):  # DDP / DeepSpeed engine
        base = base.module
    if hasattr(base, "get_base_model"):  # peft
        base = base.get_base_model()
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def loss_terms(ce, keep, normalization: str, sample=None):
    """Numerator of the loss of one micro-batch under ``normalization``: the sum of the trained
    tokens' cross-entropies (``token``) or the sum of each sample's mean (``sample``). The trainer
    divides it by the matching global count of the optimizer step (tokens or samples over every
    micro-batch of the accumulation and every rank). ``sample``: the sample number of each
    position (packed rows hold several samples); without it each row is one sample."""
    import torch
    if normalization == "token":
        return ce.sum()
    if sample is None:
        rows = keep.nonzero()[:, 0]
        n = keep.size(0)
    else:
        rows = sample[keep]
        n = int(sample.max()) + 1
    sums = torch.zeros(n, dtype=ce.dtype, device=ce.device).index_add(0, rows, ce)
    counts = torch.bincount(rows, minlength=n).to(ce.dtype)
    has = counts > 0
    return (sums[has] / counts[has]).sum()


def global_count(batches, normalization: str):
    """The local denominator of one optimizer step: trained target tokens, or samples with at
    least one trained token, over the micro-batches of one accumulation."""
    total = 0
    for b in batches:
        trained = b["labels"][:, 1:] != -100
        if normalization == "token":
            total = total + trained.sum()
        elif "sample" in b:  # packed: count the samples with a trained token, not the rows
            total = total + b["sample"][:, :-1][trained].unique().numel()
        else:
            total = total + trained.any(dim=1).sum()
    return total


def _make_trainer_cls():
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class CategoryTrainer(Trainer):
        """Trainer with the package's loss, schedule, metrics and checkpoint protocol.

        * Loss: cross-entropy over trained tokens, normalised over the whole optimizer step
          (accumulation and ranks; ``loss_normalization``), so 1 x 4, 2 x 2 and 4 x 1
          (micro-batch x accumulation) and any number of ranks give the same loss and gradient.
        * The LM head runs only at trained positions (``logits_to_keep`` with a boolean mask).
        * Schedule: the package's warm-up + cosine (:func:`lr_lambda_factory`), also under
          DeepSpeed (the ZeRO configs define neither optimizer nor scheduler).
        * Per-category loss sums are reduced across ranks; only the main process writes metrics.
        * A checkpoint is marked complete only after every rank has written its part.
        """

        def __init__(self, *args, metrics_path=None, schedule=None, normalization="token",
                     metrics_keep_until=None, **kwargs):
            super().__init__(*args, **kwargs)
            if normalization not in LOSS_NORMALIZATIONS:
                raise ValueError(f"loss_normalization must be one of {LOSS_NORMALIZATIONS}, not {normalization!r}")
            self.model_accepts_loss_kwargs = False
            self.loss_is_scaled_for_ga = True  # normalised over the whole accumulated batch here
            self._schedule = schedule
            self._norm = normalization
            self._cat = torch.zeros(2, N_CAP + N_PART, dtype=torch.float64)
            self._fast_head = accepts_logits_to_keep(self.model)
            self._metrics_fh = None
            if metrics_path is not None and self.is_world_process_zero():
                self._metrics_fh = _open_metrics(Path(metrics_path), metrics_keep_until)

        # -- optimisation ------------------------------------------------------------
        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                warmup, total, start_ratio, min_ratio = self._schedule
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                    optimizer or self.optimizer, lr_lambda_factory(warmup, total, start_ratio, min_ratio))
                self._created_lr_scheduler = True
            return self.lr_scheduler

        def _get_num_items_in_batch(self, batch_samples, device):
            if not batch_samples:
                return None
            n = torch.as_tensor(global_count(batch_samples, self._norm), device=device).reshape(1)
            if self.args.world_size > 1:
                n = self.accelerator.gather(n)
            return n.sum()

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            cap = inputs.pop("capability")
            part = inputs.pop("part")
            labels = inputs.pop("labels")
            sample = inputs.pop("sample", None)
            keep = keep_mask(labels)
            tgt = labels[:, 1:][keep[:, :-1]]
            if self._fast_head and not return_outputs:
                out = model(**inputs, logits_to_keep=keep)
                logits = out.logits.reshape(-1, out.logits.size(-1))
            else:
                out = model(**inputs)
                logits = out.logits[keep]
            ce = F.cross_entropy(logits.float(), tgt, reduction="none")
            numer = loss_terms(ce, keep, self._norm, sample)
            if num_items_in_batch is None:  # evaluation or a caller outside the training loop
                denom = global_count([{"labels": labels, **({"sample": sample} if sample is not None else {})}],
                                     self._norm)
                loss = numer / torch.as_tensor(denom).clamp(min=1).to(numer.device)
            else:
                # DDP and DeepSpeed average gradients over ranks: scale back to a global mean.
                loss = numer / num_items_in_batch.to(numer.device).clamp(min=1) * self.args.world_size
            with torch.no_grad():
                ce_d = ce.detach().double().cpu()
                caps = cap[keep].cpu()
                parts = part[keep].cpu() + N_CAP
                for ids in (caps, parts):
                    self._cat[0] += torch.bincount(ids, weights=ce_d, minlength=N_CAP + N_PART)
                    self._cat[1] += torch.bincount(ids, minlength=N_CAP + N_PART).double()
            return (loss, out) if return_outputs else loss

        def _get_train_sampler(self, *args, **kwargs):
            # The dataset is already in a seeded, length-grouped order (length_grouped_order).
            return torch.utils.data.SequentialSampler(self.train_dataset)

        # -- metrics -----------------------------------------------------------------
        def log(self, logs, *args, **kwargs):
            if "loss" in logs:
                cat = self._cat.to(self.args.device)
                if self.args.world_size > 1:
                    import torch.distributed as dist
                    dist.all_reduce(cat)
                cat = cat.cpu()
                for idx in range(N_CAP + N_PART):
                    key = f"cap{idx}" if idx < N_CAP else f"part{idx - N_CAP}"
                    name = CATEGORY_NAMES[key]
                    if name != "none" and cat[1, idx] > 0:
                        logs[f"loss_{name}"] = round(float(cat[0, idx] / cat[1, idx]), 6)
                self._cat.zero_()
                if self._metrics_fh is not None:
                    row = {"step": self.state.global_step, **logs}
                    self._metrics_fh.write(dumps(row) + "\n")
                    self._metrics_fh.flush()
                    os.fsync(self._metrics_fh.fileno())
            super().log(logs, *args, **kwargs)

        def close_metrics(self):
            if self._metrics_fh is not None:
                self._metrics_fh.close()
                self._metrics_fh = None

        # -- checkpoints ---------------------------------------------------------------
        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every rank has written its shard and RNG state
            if self.is_world_process_zero():
                from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
                ckpt = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
                _write_marker(ckpt / COMPLETE_MARKER, self.state.global_step)
            self.accelerator.wait_for_everyone()

    return CategoryTrainer


def _write_marker(path: Path, step: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"{step}\n")
        fh.flush()
        os.fsync(fh.fileno())


def _open_metrics(path: Path, keep_until: int | None):
    """The running metrics file. On resume (``keep_until`` = the checkpoint's step) the rows up
    to that step are kept and later rows (logged after the checkpoint, then lost) are dropped, so
    the finished file has each step exactly once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    if keep_until is not None and path.exists():
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a torn last line from the killed run
                    break
                if row.get("step", 0) <= keep_until:
                    rows.append(line if line.endswith("\n") else line + "\n")
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(rows)
    return open(path, "a", encoding="utf-8")


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoints whose every rank finished writing (marked by the main process), oldest first."""
    if not ckpt_dir.exists():
        return []
    cks = [p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and (p / COMPLETE_MARKER).exists()]
    return sorted(cks, key=lambda p: int(p.name.split("-")[-1]))


def _latest_checkpoint(ckpt_dir: Path) -> str | None:
    cks = complete_checkpoints(Path(ckpt_dir))
    return str(cks[-1]) if cks else None


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _drop_incomplete_checkpoints(ckpt_dir: Path) -> None:
    """A checkpoint left half-written by a killed run is never resumed; the main process removes it
    so that the resumed run can write that step again."""
    if not ckpt_dir.exists() or not _is_main_process():
        return
    for p in ckpt_dir.glob("checkpoint-*"):
        if p.is_dir() and not (p / COMPLETE_MARKER).exists():
            print(f"[train] removing incomplete checkpoint {p.name}")
            shutil.rmtree(p, ignore_errors=True)


def train(*, base_model: str, data_path: Path, out_dir: Path, metrics_path: Path, config_path: Path,
          recipe: dict, model_id: str, checkpoint_dir: Path, threads: int = 1,
          probe_out: Path | None = None) -> dict:
    """Train ``base_model`` on the records in ``data_path``; write the model, metrics.jsonl and
    the effective training configuration (Table 5). ``probe_out`` (tests): the in-memory model's
    logits on the first training example, saved as safetensors, to compare with the saved model.

    Precision: ``dtype`` bf16/fp16 is mixed precision. Under DeepSpeed the model is held in that
    dtype and DeepSpeed keeps fp32 master weights in its optimizer; without DeepSpeed the model
    (the master copy) stays fp32 and the forward runs under autocast, so small updates (2e-5 x
    Adam's unit step) are not rounded away. The saved model is in ``dtype``.

    ZeRO-3: the TrainingArguments (and with them the DeepSpeed config) exist before the model is
    loaded, so ``from_pretrained`` partitions it across ranks as it loads (``zero.Init``); at the
    end every rank takes part in gathering the 16-bit weights and the main process saves them."""
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

    dtype = recipe.get("dtype", "auto")
    if dtype == "auto":
        dtype = "bf16" if cuda else "fp32"
    method = recipe.get("method", "full")
    if method not in ("full", "lora"):
        raise ValueError(f"training method must be 'full' or 'lora', not {method!r}")
    normalization = recipe.get("loss_normalization", "token")
    if normalization not in LOSS_NORMALIZATIONS:
        raise ValueError(f"loss_normalization must be one of {LOSS_NORMALIZATIONS}, not {normalization!r}")

    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_device = int(recipe.get("per_device_batch_size") or recipe["batch_size"])
    packing = packing_settings(recipe, max_length)
    accum = max(1, int(recipe["batch_size"]) // (per_device * world))
    epochs = float(recipe.get("epochs", 1))
    steps_per_epoch = math.ceil(len(examples) / (per_device * world * accum))
    total_steps = max(1, math.ceil(steps_per_epoch * epochs))
    if recipe.get("max_steps"):
        total_steps = min(total_steps, int(recipe["max_steps"]))
    warmup_steps = int(round(float(recipe.get("warmup_ratio", 0.03)) * total_steps))
    lr = float(recipe["learning_rate"])
    warmup_start_lr = float(recipe.get("warmup_start_lr", lr * 0.2))
    min_lr_ratio = float(recipe.get("min_lr_ratio", 0.0))
    betas = [float(b) for b in recipe.get("adam_betas", [0.9, 0.95])]
    eps = float(recipe.get("adam_epsilon", 1e-8))
    weight_decay = float(recipe.get("weight_decay", 0.0))

    deepspeed = recipe.get("deepspeed") or None
    ds_stage = 0
    if deepspeed:
        if not Path(deepspeed).is_absolute():
            from .config import ROOT
            deepspeed = str(ROOT / deepspeed)
        ds_cfg = json.loads(Path(deepspeed).read_text())
        ds_stage = int(ds_cfg.get("zero_optimization", {}).get("stage", 0))
        for block in ("optimizer", "scheduler"):
            if block in ds_cfg:
                raise ValueError(f"{recipe['deepspeed']}: remove the {block!r} block; the package's AdamW and "
                                 "schedule (training.default) are used under DeepSpeed too")
        if method == "lora" and ds_stage == 3:
            raise ValueError(f"{model_id}: LoRA under ZeRO-3 is not supported (use ZeRO-2 or full fine-tuning)")
    checkpoint_dir = Path(checkpoint_dir)
    mixed = dtype in ("bf16", "fp16")
    # Built before the model: with a ZeRO-3 config this makes from_pretrained load under zero.Init.
    args = TrainingArguments(
        output_dir=str(checkpoint_dir),
        # packed: one dataset item is a whole packed micro-batch of per_device samples
        per_device_train_batch_size=1 if packing else per_device,
        gradient_accumulation_steps=accum,
        num_train_epochs=epochs,
        max_steps=total_steps,
        learning_rate=lr,
        adam_beta1=betas[0],
        adam_beta2=betas[1],
        adam_epsilon=eps,
        optim="adamw_torch",
        weight_decay=weight_decay,
        max_grad_norm=float(recipe.get("max_grad_norm", 1.0)),
        warmup_steps=warmup_steps,
        logging_steps=int(recipe.get("logging_steps", 1)),
        save_strategy="steps" if recipe.get("save_steps") else "no",
        save_steps=int(recipe.get("save_steps") or 500),
        save_total_limit=2,
        seed=seed,
        data_seed=seed,
        bf16=dtype == "bf16",
        fp16=dtype == "fp16",
        use_cpu=not cuda,
        dataloader_num_workers=0,
        report_to=[],
        remove_unused_columns=False,
        deepspeed=deepspeed,
        disable_tqdm=False,
        average_tokens_across_devices=True,
        **({"gradient_checkpointing": True} if recipe.get("gradient_checkpointing") else {}),
    )
    # Sets up the process group now (lazily done otherwise): zero.Init partitions over every rank.
    _ = args.device
    if deepspeed:  # on GPUs accelerate does this; on CPU ranks (gloo) zero.Init needs it done here
        import deepspeed as ds
        ds.init_distributed(dist_backend=None if cuda else "gloo")
    # Master weights: fp32 unless DeepSpeed holds them (or LoRA, whose adapters peft keeps in fp32).
    load_dtype = dtype if (deepspeed or method == "lora") else "fp32"
    attn = attention_implementation(recipe, packing, cuda)
    model = load_causal_lm(base_model, dtype=load_dtype, attn_implementation=attn)
    zero_init = any(hasattr(p, "ds_id") for p in model.parameters())
    if zero_init:
        print(f"[train] {model_id}: loaded under zero.Init (parameters partitioned over {world} ranks)")
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        lcfg = recipe.get("lora", {})
        model = get_peft_model(model, LoraConfig(
            r=int(lcfg.get("r", 16)), lora_alpha=int(lcfg.get("alpha", 32)),
            lora_dropout=float(lcfg.get("dropout", 0.0)),
            target_modules=list(lcfg.get("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"])),
            task_type="CAUSAL_LM"))

    trainer_cls = _make_trainer_cls()
    metrics_path = Path(metrics_path)
    tmp_metrics = metrics_path.with_name("." + metrics_path.name + ".partial")
    # Grouped by optimizer step (global batch), so the samples of each step do not depend on how
    # the step is split into micro-batches, accumulation and ranks.
    order = length_grouped_order([len(e) for e in examples], per_device * world * accum, seed,
                                 mega=int(recipe.get("length_group_window", 16)))
    resume = None
    if recipe.get("resume", "auto") == "auto":
        resume = _latest_checkpoint(checkpoint_dir)
        _drop_incomplete_checkpoints(checkpoint_dir)
    resume_step = int(Path(resume).name.split("-")[-1]) if resume else None
    ordered = [examples[i] for i in order]
    dataset = _Packed(ordered, per_device, packing["max_tokens"]) if packing else _DS(ordered)
    batch_stats = dataset.stats() if packing else padded_stats([len(e) for e in ordered], per_device)
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset,
                          data_collator=lambda b: collate(b, tokenizer.pad_token_id),
                          metrics_path=tmp_metrics, metrics_keep_until=resume_step if resume else None,
                          schedule=(warmup_steps, total_steps, warmup_start_lr / lr, min_lr_ratio),
                          normalization=normalization)
    if resume:
        print(f"[train] {model_id}: resuming from {Path(resume).name}")
    t0 = time.time()
    try:
        trainer.train(resume_from_checkpoint=resume)
    finally:
        trainer.close_metrics()
    wall = time.time() - t0
    optimizer_info = _optimizer_info(trainer.optimizer)
    if probe_out:
        _write_probe(trainer, examples[0], Path(probe_out))
    state_dict = _final_state_dict(trainer, method, dtype)  # collective under DeepSpeed: every rank
    if trainer.is_world_process_zero():
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        if method == "lora":
            unwrapped = unwrapped.merge_and_unload()
            state_dict = _cast_state_dict(unwrapped.state_dict(), dtype)
        save_model(unwrapped, tokenizer, Path(out_dir), state_dict=state_dict)
        os.replace(tmp_metrics, metrics_path)
        effective = {
            "model_id": model_id, "base_model": base_model, "method": method, "learning_rate": lr,
            "warmup_start_lr": warmup_start_lr, "warmup_ratio": float(recipe.get("warmup_ratio", 0.03)),
            "warmup_steps": warmup_steps, "min_lr_ratio": min_lr_ratio, "lr_scheduler": "linear warm-up + cosine",
            "optimizer": optimizer_info, "loss_normalization": normalization,
            "batch_size": per_device * world * accum, "per_device_batch_size": per_device,
            "gradient_accumulation_steps": accum, "epochs": epochs, "steps": total_steps,
            "devices": world, "device_type": "cuda" if cuda else "cpu", "max_length": max_length,
            "seed": seed, "deepspeed": recipe.get("deepspeed"), "zero_stage": ds_stage, "zero_init": zero_init, "dtype": dtype,
            "master_weights": "fp32" if (mixed or dtype == "fp32") else dtype,
            "encoding": enc_stats, **_loss_summary(metrics_path),
            "packing": packing or False, "attn_implementation": attn,
            "batches": {**batch_stats, "padding_share": round(1 - batch_stats["real_tokens"] /
                                                              max(1, batch_stats["computed_tokens"]), 6)},
            "tokens_trained": sum(sum(1 for x in e.labels if x != -100) for e in examples),
        }
        write_json(config_path, effective)
        # Wall time is not written into artifacts (determinism); it goes to the job log.
        print(f"[train] {model_id}: {total_steps} steps in {wall:.1f}s, final loss {effective['final_loss']}")
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        if recipe.get("keep_checkpoints", False) is False and checkpoint_dir.exists():
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return effective
    return {}


def packing_settings(recipe: dict, max_length: int) -> dict | None:
    """``recipe['packing']``: false/absent (padded micro-batches), true, or ``{max_tokens: N}``.

    ``max_tokens`` is the row capacity. Left out (``null``), a micro-batch's rows are as wide as its
    longest sample: short samples share rows, and no row is wider than the padded batch would be,
    which suits SDPA and eager attention (their cost grows with the square of the row width, mask
    or not). With varlen flash or flex attention, whose cost follows the samples, set it large
    (one row per micro-batch). An explicit value is at least ``max_length``, so every sample fits."""
    raw = recipe.get("packing", False)
    if raw in (False, None):
        return None
    if raw is True:
        raw = {}
    if not isinstance(raw, dict) or set(raw) - {"max_tokens"}:
        raise ValueError(f"training packing must be true, false or {{max_tokens: N}}, not {raw!r}")
    cap = raw.get("max_tokens")
    if cap is not None:
        cap = int(cap)
        if cap < max_length:
            raise ValueError(f"packing.max_tokens ({cap}) must be at least max_length ({max_length})")
    return {"max_tokens": cap}


def attention_implementation(recipe: dict, packing: dict | None, cuda: bool) -> str:
    """``recipe['attn_implementation']`` (``auto`` by default): on a GPU with packing, varlen
    flash attention when ``flash-attn`` is installed, else flex attention (its block mask skips
    the blocks between samples); otherwise SDPA. Any transformers name may be given explicitly."""
    attn = recipe.get("attn_implementation", "auto")
    if attn != "auto":
        return attn
    if cuda and packing:
        import importlib.util
        return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "flex_attention"
    return "sdpa"


def padded_stats(lengths: list[int], per_device: int) -> dict:
    """Rows, real and computed (padded) tokens of the padded micro-batches."""
    computed = sum(max(lengths[k:k + per_device]) * len(lengths[k:k + per_device])
                   for k in range(0, len(lengths), per_device))
    return {"rows": len(lengths), "samples": len(lengths), "real_tokens": sum(lengths), "computed_tokens": computed}


def _write_probe(trainer, example, path: Path) -> None:
    """Logits of the trained in-memory model (every rank runs the forward: ZeRO-3 gathers the
    partitioned weights layer by layer) on one example; the main process saves them."""
    import torch
    from safetensors.torch import save_file
    model = trainer.model_wrapped
    model.eval()
    ids = torch.tensor([example.input_ids], device=trainer.args.device)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float().cpu()
    if trainer.is_world_process_zero():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"logits": logits.contiguous(), "input_ids": ids.cpu()}, str(path))


def _loss_summary(metrics_path: Path) -> dict:
    """Mean of the logged losses and the last one, from the metrics file (a resumed run's trainer only
    knows the steps since its checkpoint; the file holds them all)."""
    losses = [row["loss"] for row in load_metrics(metrics_path) if "loss" in row]
    return {"train_loss": round(sum(losses) / len(losses), 6) if losses else None,
            "final_loss": round(losses[-1], 6) if losses else None}


def _optimizer_info(optimizer) -> dict:
    """The settings the optimizer actually stepped with (DeepSpeed wraps the torch optimizer)."""
    inner = optimizer
    for _ in range(4):
        if type(inner).__name__ in ("AdamW", "Adam") or not hasattr(inner, "optimizer"):
            break
        inner = inner.optimizer
    group = inner.param_groups[0]
    return {"type": type(inner).__name__, "betas": [float(b) for b in group.get("betas", ())],
            "eps": float(group.get("eps", 0.0)), "weight_decay": float(group.get("weight_decay", 0.0))}


def _cast_state_dict(state_dict: dict, dtype: str) -> dict:
    import torch
    target = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    if target is None:
        return state_dict
    return {k: (v.to(target) if v.is_floating_point() else v) for k, v in state_dict.items()}


def _final_state_dict(trainer, method: str, dtype: str):
    """The trained weights for saving. Under ZeRO-3 the 16-bit weights are gathered from every
    rank's partition (all ranks must call this); otherwise the main process's copy, in ``dtype``."""
    if method == "lora":
        return None  # merged on the main process
    if trainer.is_deepspeed_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    else:
        state_dict = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    if state_dict is None:
        return None
    return _cast_state_dict(state_dict, dtype)


def load_metrics(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
