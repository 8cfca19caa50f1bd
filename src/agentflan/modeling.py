"""Tokenizers and models: a locally trained BPE and tiny Llama models for the miniature, the
Llama-2 checkpoints named in config for the paper preset. Never ``trust_remote_code``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .template import ASSISTANT_BEGIN, ASSISTANT_END, USER_BEGIN, USER_END

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_bpe_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int = 2048, seed: int = 0) -> None:
    """Train a byte-level BPE on ``texts`` and save it as a transformers tokenizer in ``out_dir``.

    The template tags are part of the training text, so they merge into few tokens. The
    ``tokenizers`` trainer is deterministic for a fixed input order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[SPECIAL["pad_token"], SPECIAL["bos_token"],
                                                  SPECIAL["eos_token"], SPECIAL["unk_token"]],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tags = [USER_BEGIN, USER_END, ASSISTANT_BEGIN, ASSISTANT_END] * 50

    def corpus():
        yield from tags
        yield from texts

    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    fast.model_max_length = 1 << 20
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    fast.save_pretrained(tmp)
    if out_dir.exists():
        import shutil
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def load_tokenizer(path_or_name: str, revision: str | None = None):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path_or_name, revision=revision, trust_remote_code=False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def tiny_llama_config(arch: dict, tokenizer):
    from transformers import LlamaConfig
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"],
        num_key_value_heads=arch.get("num_kv_heads", arch["num_heads"]),
        max_position_embeddings=arch.get("max_position_embeddings", 1024),
        rms_norm_eps=1e-5,
        tie_word_embeddings=arch.get("tie_word_embeddings", True),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def init_tiny_llama(arch: dict, tokenizer, seed: int, out_dir: Path) -> int:
    """Create a randomly initialised Llama-architecture model with a fixed seed; returns #params."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(arch, tokenizer))
    save_model(model, tokenizer, out_dir)
    return sum(p.numel() for p in model.parameters())


def save_model(model, tokenizer, out_dir: Path, state_dict: dict | None = None) -> None:
    """Save model + tokenizer atomically (temp dir, then rename); ``state_dict`` overrides the
    model's own tensors (gathered ZeRO-3 weights, or weights cast to the training dtype)."""
    import shutil
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def load_causal_lm(path_or_name: str, revision: str | None = None, dtype: str = "auto", device: str = "cpu",
                   attn_implementation: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM
    torch_dtype = {"auto": "auto", "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(path_or_name, revision=revision, dtype=torch_dtype,
                                                 trust_remote_code=False, use_safetensors=True, **extra)
    return model.to(device)


def count_params(path: str) -> int:
    model = load_causal_lm(path)
    return sum(p.numel() for p in model.parameters())
