"""Test models wired to answer with a fixed token chain (generation tests: stopping, resume)."""
from __future__ import annotations

from pathlib import Path

import torch


def force_chain(src_dir: Path, out_dir: Path, tok, prompt_ends: set[int], chain: list[int]) -> None:
    """Copy of the model at ``src_dir`` that answers every prompt with ``chain`` first: link k
    (prompt end -> chain[0] -> ... -> chain[-1]) gets its own hidden dimension k, written only by
    the source tokens' embeddings and read only by the target token's LM-head row."""
    from agentflan.modeling import load_causal_lm, save_model
    model = load_causal_lm(str(src_dir), dtype="fp32")
    sources = [sorted(prompt_ends)] + [[t] for t in chain[:-1]]
    assert not set(chain) & prompt_ends and len(set(chain)) == len(chain)
    if model.config.tie_word_embeddings:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())
    emb, head = model.model.embed_tokens.weight, model.lm_head.weight
    with torch.no_grad():
        for d, (src, dst) in enumerate(zip(sources, chain)):
            emb[:, d] = 0.0
            emb[src, d] = 1.0
            head[:, d] = 0.0
            head[dst, d] = 50.0
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight[d, :] = 0.0
                layer.mlp.down_proj.weight[d, :] = 0.0
    save_model(model, tok, out_dir)
