"""Batched greedy generation with the Agent-FLAN template (evaluation's only model-facing code).

Prompts are tokenised segment by segment exactly as in training
(:meth:`agentflan.template.SegmentTokenizer.encode_prompt`), left-padded, and decoded greedily
until the assistant end tag (``ി\\n``), EOS or ``max_new_tokens``.
"""
from __future__ import annotations

from typing import Callable

from .template import ASSISTANT_STOP, SegmentTokenizer


class Generator:
    def __init__(self, model_path: str, *, max_new_tokens: int = 96, batch_size: int = 16,
                 max_prompt_length: int = 1024, threads: int = 1, dtype: str = "auto"):
        import torch

        from .modeling import load_causal_lm, load_tokenizer
        torch.set_num_threads(max(1, threads))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tok = load_tokenizer(model_path)
        if dtype == "auto":
            dtype = "bf16" if self.device == "cuda" else "fp32"
        self.model = load_causal_lm(model_path, dtype=dtype, device=self.device).eval()
        self.seg = SegmentTokenizer(self.tok)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.max_prompt_length = max_prompt_length
        self.truncated_prompts = 0

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        ids = self.seg.encode_prompt(messages)
        if len(ids) > self.max_prompt_length:
            self.truncated_prompts += 1
            ids = ids[-self.max_prompt_length:]
        return ids

    def __call__(self, batch_messages: list[list[dict]], progress: bool = False) -> list[str]:
        import torch
        from tqdm import tqdm

        prompts = [self._prompt_ids(m) for m in batch_messages]
        order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
        outputs: dict[int, str] = {}
        pad = self.tok.pad_token_id
        chunks = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for chunk in tqdm(chunks, desc="generate", disable=not progress, mininterval=5):
            n = max(len(prompts[i]) for i in chunk)
            ids = torch.tensor([[pad] * (n - len(prompts[i])) + prompts[i] for i in chunk], device=self.device)
            mask = torch.tensor([[0] * (n - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk],
                                device=self.device)
            with torch.no_grad():
                gen = self.model.generate(
                    input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=self.max_new_tokens,
                    pad_token_id=pad, eos_token_id=self.tok.eos_token_id,
                    stop_strings=[ASSISTANT_STOP], tokenizer=self.tok)
            for row, i in enumerate(chunk):
                text = self.tok.decode(gen[row, n:], skip_special_tokens=True)
                outputs[i] = cut_at_stop(text)
        return [outputs[i] for i in range(len(prompts))]

    def as_fn(self) -> Callable[[list[list[dict]]], list[str]]:
        return lambda batch: self(batch)


def cut_at_stop(text: str) -> str:
    """Cut a decoded continuation at the assistant end tag."""
    k = text.find(ASSISTANT_STOP)
    return (text[:k] if k >= 0 else text).strip()
