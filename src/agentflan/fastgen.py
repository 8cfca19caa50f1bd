"""Fast generation backends for :class:`agentflan.generate.Generator`.

* :class:`FastDecoder` (backend ``fast``, the default): greedy decoding of a Llama-architecture
  model in this process with continuous batching over a slot KV cache. Plain ``model.generate``
  runs a fixed batch until its slowest row is done and pays transformers' per-step machinery
  (logits processors, stopping criteria, cache objects, mask builders) at every token; on the
  miniature's tiny models that overhead, not arithmetic, is most of a step. Here:

  - the prompts of a *group* (the caller's unit, a deterministic function of the prompts and
    settings) share ``slots`` decode rows; a row leaves as soon as it is finished (EOS, the
    assistant end tag, or ``max_new_tokens``), its slot is filled from the group's next prompts
    (prefilled together, in sub-batches of at most ``prefill_tokens`` padded tokens), and the
    decode step runs only over live rows (``refill`` sets how many slots must be free before a
    refill prefill runs: fewer, larger prefills against rows idling);
  - prompt prefixes shared within the group (system prompts, few-shot examples, an episode's
    history) are computed once (:class:`PrefixPlan`: the branching points of the group's prefix
    tree, at least ``min_shared_prefix`` tokens); a prompt copies its prefix's K/V and computes
    only its own tail, whose queries attend to the prefix and to the tail's earlier tokens;
  - a prefill runs the layers' token-wise parts (norms, projections, rotary, MLP) on its rows'
    tokens packed end to end, without padding; only attention lays them out in rows, in calls
    over rows of like lengths (admitted in order of the tokens each computes;
    :func:`attention_chunks` weighs padding against the cost of a call);
  - the cache is one preallocated ``[slots, kv_heads, capacity, head_dim]`` tensor pair per layer,
    each row holding its own sequence from column 0 (its length is its next position); a finished
    row's slot is taken by the last live row (two row copies per layer), so live rows stay in
    ``[:n]`` and a step reads a view of the cache, never a copy;
  - a step uses the model's own weights (q/k/v and gate/up projections concatenated into one
    matmul each), its RMSNorm (``F.rms_norm`` in fp32, which gives the same bits), its rotary
    table and LM head, and ``scaled_dot_product_attention`` over the live rows' columns with a
    mask of each row's length; no logits processors and no stopping-criteria objects;
  - the end tag is found on token ids: only a token whose text can finish the stop string
    (precomputed over the vocabulary) triggers a decode of the row's last few tokens;
  - greedy is ``torch.argmax`` over the last position's logits (ties: the first index, as
    ``generate``).

  The replies are plain ``generate``'s up to floating-point reduction order: batch shapes differ
  (right-aligned rows of several lengths here, left-padded fixed batches there), so a near-tie can
  flip an argmax; the agreement share on the miniature is in docs/benchmarks.md and
  tests/test_generate_fast.py. Everything here is a deterministic function of the group's prompts
  and the settings, so a rerun (and a resumed run, which regenerates whole groups) gives the same
  bytes.

* :class:`VllmDecoder` (backend ``vllm``, optional, GPU): an adapter to vLLM's offline
  ``LLM.generate``: prompts passed as token ids (the template stays token-exact), greedy
  (temperature 0), stop at the end tag and EOS, ``tensor_parallel_size`` GPUs. Imported lazily;
  environment in envs/vllm.yaml.
"""
from __future__ import annotations

import time
from typing import Sequence

#: bumped when the fast engine's arithmetic changes (part of the resume side file's settings key)
ENGINE_FORMAT = 2
#: model types whose decoder layers have the Llama layout this module drives
SUPPORTED_MODEL_TYPES = ("llama",)
#: rotary variants that depend on the sequence length at run time (the table here is static)
_DYNAMIC_ROPE = ("dynamic", "longrope")
#: generation-config fields that make plain ``generate`` change the logits or stop differently
_LOGITS_FIELDS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
                  "bad_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None,
                  "forced_bos_token_id": None, "forced_eos_token_id": None, "sequence_bias": None,
                  "min_length": 0, "min_new_tokens": None, "exponential_decay_length_penalty": None,
                  "renormalize_logits": False}


class BackendError(ValueError):
    """A generation setting is invalid, or the backend cannot run this model (the message says
    what to change)."""


class StopScanner:
    """Finds the stop string in a row's generated tokens without decoding every step.

    ``triggers`` holds every token whose own text could complete the stop string: its decoded
    text contains the stop string's last character, or a replacement character (a token holding
    part of a multi-byte character). Only when a row emits such a token is its tail (the last
    ``tail`` tokens) decoded, the same way as the final reply (``skip_special_tokens=True``), and
    searched. A stop string found in the tail is in the full text too (UTF-8 is
    self-synchronising: a cut character at the start of the tail only yields replacement
    characters), and a stop string completed by the newest token lies within the last
    ``len(stop bytes)`` tokens, so ``tail`` has a margin for skipped special tokens."""

    def __init__(self, tokenizer, stop: str, vocab_size: int):
        if not stop:
            raise BackendError("the stop string is empty")
        self.tok = tokenizer
        self.stop = stop
        self.tail = len(stop.encode("utf-8")) + 8
        last = stop[-1]
        texts = tokenizer.batch_decode([[i] for i in range(vocab_size)], skip_special_tokens=True)
        self.triggers = frozenset(i for i, t in enumerate(texts) if last in t or "\ufffd" in t)

    def hit(self, ids: list[int]) -> bool:
        """True if the stop string is in the decoded text of ``ids``' last tokens."""
        return self.stop in self.tok.decode(ids[-self.tail:], skip_special_tokens=True)


def check_model(model) -> None:
    """Raise :class:`BackendError` unless ``model`` is a causal LM the fast backend drives exactly."""
    cfg = model.config
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED_MODEL_TYPES:
        raise BackendError(f"the fast generation backend drives {', '.join(SUPPORTED_MODEL_TYPES)} models, "
                           f"not {kind!r}; set evaluation.generation.backend: plain")
    rope = (getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    if isinstance(rope, dict) and rope.get("rope_type", rope.get("type")) in _DYNAMIC_ROPE:
        raise BackendError(f"the fast generation backend has a static rotary table; rope type "
                           f"{rope.get('rope_type', rope.get('type'))!r} is dynamic; set "
                           "evaluation.generation.backend: plain")
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        changed = sorted(k for k, default in _LOGITS_FIELDS.items()
                         if getattr(gc, k, None) not in (None, default) and getattr(gc, k) not in ([], {}))
        if changed:
            raise BackendError(f"the model's generation_config sets {', '.join(changed)}, which plain generate "
                               "applies and the fast backend does not; set evaluation.generation.backend: plain")


class FastDecoder:
    """Greedy continuous-batching decoder over a slot KV cache (see the module docstring).

    ``run(prompts)`` returns each prompt's generated token ids (the stop tokens included, as
    ``generate`` returns them); decode them with ``skip_special_tokens=True`` and cut at the stop
    string for the reply."""

    #: the fixed cost of one attention call in a prefill, in query-key pairs (a row's attention
    #: costs its queries x its keys): rows are split into calls where padding costs more
    CALL_COST = 3000

    def __init__(self, model, tokenizer, *, max_new_tokens: int, stop: str | None, slots: int,
                 prefill_tokens: int = 16384, refill: int | None = None, share_prefixes: bool = True,
                 min_shared_prefix: int = 16):
        import torch
        check_model(model)
        if slots < 1 or max_new_tokens < 1 or prefill_tokens < 1:
            raise BackendError("slots, max_new_tokens and prefill_tokens must be at least 1")
        self.torch = torch
        self.model = model
        self.tok = tokenizer
        self.max_new_tokens = max_new_tokens
        self.slots = slots
        self.prefill_tokens = prefill_tokens
        self.refill = max(1, slots // 4) if refill is None else max(1, min(int(refill), slots))
        self.share_prefixes = share_prefixes
        self.min_shared_prefix = max(1, int(min_shared_prefix))
        cfg = model.config
        self.layers = list(model.model.layers)
        attn = self.layers[0].self_attn
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = attn.head_dim
        self.scaling = attn.scaling
        self.gqa = self.heads != self.kv_heads
        self.device = next(model.parameters()).device
        self.dtype = model.model.embed_tokens.weight.dtype
        self.eos = tokenizer.eos_token_id
        vocab = model.get_output_embeddings().weight.shape[0]
        # stop None: a chat format whose reply ends at EOS only (llama2-chat)
        self.stop = StopScanner(tokenizer, stop, max(vocab, len(tokenizer))) if stop else None
        self._rope: tuple | None = None
        self.fused = self._fuse()
        self.embed = model.model.embed_tokens.weight
        self._zero = torch.zeros((), dtype=self.dtype, device=self.device)
        self._ninf = torch.full((), float("-inf"), dtype=self.dtype, device=self.device)
        # counters of the last run (bench/generation.py prints them)
        self.steps = self.prefills = self.new_tokens = 0
        self.prompt_tokens = self.computed_prompt_tokens = 0
        self.prefill_s = self.decode_s = self.seconds = 0.0

    # ------------------------------------------------------------------ pieces
    def _rope_table(self, length: int):
        """``(cos, signed sin)`` of positions ``0..length-1`` from the model's own rotary module
        (bit-identical to what it computes per position inside ``forward``). The sine's first
        half is negated so that ``rotate_half(x) * sin == roll(x, half) * signed_sin`` (a sign
        flip is exact)."""
        if self._rope is None or self._rope[0].shape[0] < length:
            torch = self.torch
            pos = torch.arange(length, device=self.device)[None]
            probe = torch.empty(0, device=self.device, dtype=self.dtype)
            cos, sin = self.model.model.rotary_emb(probe, pos)
            half = self.head_dim // 2
            ssin = torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)
            self._rope = (cos[0], ssin, torch.stack((cos[0], ssin), dim=1))
        return self._rope

    def _rotate(self, x, cos, ssin):
        """Rotary embedding of ``x`` [..., head_dim]: ``x * cos + rotate_half(x) * sin``."""
        return self.torch.addcmul(x * cos, self.torch.roll(x, self.head_dim // 2, -1), ssin)

    def _norm(self, x, weight, eps):
        """RMSNorm as transformers' ``LlamaRMSNorm`` (``F.rms_norm`` in fp32, where it gives the
        same bits; the explicit form, with its casts, in other dtypes)."""
        torch = self.torch
        if x.dtype == torch.float32:
            return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, eps)
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        return weight * h.to(x.dtype)

    def _fuse(self):
        """Per layer: the q/k/v projections as one matrix and gate/up as one (one matmul each
        instead of three and two; the same products per output column)."""
        torch = self.torch
        fused = []
        for layer in self.layers:
            a, m = layer.self_attn, layer.mlp

            def cat_bias(*mods):
                if all(mod.bias is None for mod in mods):
                    return None
                return torch.cat([mod.bias if mod.bias is not None else
                                  torch.zeros(mod.out_features, device=mod.weight.device, dtype=mod.weight.dtype)
                                  for mod in mods])
            act = getattr(self.model.config, "hidden_act", None)
            fused.append({
                "n1": (layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon),
                "qkv": (torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).contiguous(),
                        cat_bias(a.q_proj, a.k_proj, a.v_proj)),
                "o": (a.o_proj.weight, a.o_proj.bias),
                "n2": (layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon),
                "gu": (torch.cat([m.gate_proj.weight, m.up_proj.weight]).contiguous(), cat_bias(m.gate_proj, m.up_proj)),
                "act": torch.nn.functional.silu if act == "silu" else m.act_fn,
                "down": (m.down_proj.weight, m.down_proj.bias),
                "split": [m.gate_proj.out_features, m.up_proj.out_features],
            })
        return fused

    def _layer(self, w, x, cos, ssin, attend):
        """One decoder layer on ``x`` [rows, seq, hidden]. ``cos``/``ssin`` broadcast against
        [rows, seq, heads, head_dim]; ``attend(q, k, v)`` (each [rows, heads, seq, head_dim])
        stores k/v in the cache and returns the attention output in the same layout."""
        F = self.torch.nn.functional
        rows, seq = x.shape[0], x.shape[1]
        H, Hkv = self.heads, self.kv_heads
        qkv = F.linear(self._norm(x, *w["n1"]), *w["qkv"]).view(rows, seq, H + 2 * Hkv, self.head_dim)
        qk, v = qkv.split([H + Hkv, Hkv], dim=2)
        q, k = self._rotate(qk, cos, ssin).transpose(1, 2).split([H, Hkv], dim=1)
        o = attend(q, k, v.transpose(1, 2))
        x = x + F.linear(o.transpose(1, 2).reshape(rows, seq, H * self.head_dim), *w["o"])
        g, u = F.linear(self._norm(x, *w["n2"]), *w["gu"]).split(w["split"], dim=-1)
        return x + F.linear(w["act"](g) * u, *w["down"])

    def _logits_argmax(self, h):
        """Greedy next token of hidden states ``h`` [rows, hidden] (final norm, LM head, argmax)."""
        norm = self.model.model.norm
        logits = self.model.lm_head(self._norm(h, norm.weight, norm.variance_epsilon))
        return self.torch.argmax(logits, dim=-1)

    def _additive(self, keep):
        """A boolean attention mask as the additive float mask SDPA converts it to (built once
        per step for every layer instead of once per layer)."""
        return self.torch.where(keep, self._zero, self._ninf)

    # ------------------------------------------------------------------ decode
    def _decode_step(self, K, V, pos, cur, n: int, width: int):
        """One greedy step of live rows ``[:n]``: row ``r`` feeds ``cur[r]`` at position
        ``pos[r]`` and attends to its cache columns ``0..pos[r]`` (``width`` = the longest + 1).
        Returns the next token of every row."""
        torch = self.torch
        F = torch.nn.functional
        p = pos[:n]
        cos, sin = self._rope[2][p][:, None, None].unbind(3)
        mask = self._additive((self._cols[:width][None, :] <= p[:, None])[:, None, None, :])
        r_idx = self._rows[:n]

        def attend(li, q, k, v):
            K[li][r_idx, :, p] = k[:, :, 0]
            V[li][r_idx, :, p] = v[:, :, 0]
            return F.scaled_dot_product_attention(q, K[li][:n, :, :width], V[li][:n, :, :width],
                                                  attn_mask=mask, scale=self.scaling, enable_gqa=self.gqa)
        with torch.inference_mode():
            x = F.embedding(cur[:n], self.embed)[:, None, :]
            for li, w in enumerate(self.fused):
                x = self._layer(w, x, cos, sin, lambda q, k, v, li=li: attend(li, q, k, v))
            return self._logits_argmax(x[:, 0])

    # ------------------------------------------------------------------ prefill
    def _extend(self, seqs, bases, store, dK, dV, row0: int, logits: bool):
        """Prefill ``seqs`` (token ids) into rows ``row0..`` of the per-layer caches ``dK``/``dV``.

        Row ``i`` starts from the cached prefix ``store[bases[i]]`` (its first ``lp`` tokens'
        K/V, copied in) or from nothing (``bases[i]`` None); only the remaining tokens are
        computed. The token-wise parts of a layer (norms, projections, rotary, MLP) run on the
        rows' tokens packed end to end, without padding; only attention lays them out in rows,
        right-padded to the longest, each query attending to its row's prefix and its own earlier
        tokens. Returns the greedy next token of every row (a tensor) when ``logits``, else None."""
        torch = self.torch
        F = torch.nn.functional
        rows = len(seqs)
        lps = [0 if b is None else store[b][0] for b in bases]
        suf = [len(sq) - lp for sq, lp in zip(seqs, lps)]
        S, W = max(suf), max(len(sq) for sq in seqs)
        ids = torch.tensor([t for sq, lp in zip(seqs, lps) for t in sq[lp:]], device=self.device)
        cos_t, sin_t, _ = self._rope_table(W)
        dst = slice(row0, row0 + rows)
        j = torch.arange(S, device=self.device)
        valid = j[None, :] < torch.tensor(suf, device=self.device)[:, None]                # [rows, S]
        ri, ji = valid.nonzero(as_tuple=True)          # row-major: the packed tokens' order
        H, Hkv, D = self.heads, self.kv_heads, self.head_dim

        chunks = attention_chunks(suf, [len(sq) for sq in seqs], self.CALL_COST)

        def padded(t, heads):
            """Packed [1, heads, T, D] -> rows [rows, heads, S, D] (zeros on padding)."""
            out = t.new_zeros(rows, S, heads, D)
            out[ri, ji] = t[0].transpose(0, 1)
            return out.transpose(1, 2)

        def packed(o):
            """Rows [rows, heads, S, D] -> packed [1, heads, T, D]."""
            return o.transpose(1, 2)[ri, ji].transpose(0, 1)[None]
        if not any(lps):
            # from scratch: plain causal attention over the (right-padded) rows themselves
            positions = ji

            def attend(li, q, k, v):
                q, k, v = padded(q, H), padded(k, Hkv), padded(v, Hkv)
                dK[li][dst, :, :S] = k
                dV[li][dst, :, :S] = v
                o = torch.zeros_like(q)
                for a, b, s_, _ in chunks:
                    o[a:b, :, :s_] = F.scaled_dot_product_attention(
                        q[a:b, :, :s_], k[a:b, :, :s_], v[a:b, :, :s_], is_causal=True, scale=self.scaling,
                        enable_gqa=self.gqa)
                return packed(o)
        else:
            for i, b in enumerate(bases):
                if b is not None:
                    lp, Ks, Vs = store[b]
                    for li in range(len(self.layers)):
                        dK[li][row0 + i, :, :lp] = Ks[li]
                        dV[li][row0 + i, :, :lp] = Vs[li]
            lp_t = torch.tensor(lps, device=self.device)
            pos_rows = torch.where(valid, lp_t[:, None] + j[None, :], 0)                  # [rows, S]
            positions = pos_rows[ri, ji]
            mask = self._additive((torch.arange(W, device=self.device)[None, None, :] <= pos_rows[:, :, None])[:, None])
            ri_dst = ri + row0

            def attend(li, q, k, v):
                dK[li][ri_dst, :, positions] = k[0].transpose(0, 1)
                dV[li][ri_dst, :, positions] = v[0].transpose(0, 1)
                q = padded(q, H)
                o = torch.zeros_like(q)
                for a, b, s_, w_ in chunks:
                    o[a:b, :, :s_] = F.scaled_dot_product_attention(
                        q[a:b, :, :s_], dK[li][row0 + a:row0 + b, :, :w_], dV[li][row0 + a:row0 + b, :, :w_],
                        attn_mask=mask[a:b, :, :s_, :w_], scale=self.scaling, enable_gqa=self.gqa)
                return packed(o)
        cos, sin = cos_t[positions][:, None, :], sin_t[positions][:, None, :]
        with torch.inference_mode():
            x = F.embedding(ids, self.embed)[None]
            for li, w in enumerate(self.fused):
                x = self._layer(w, x, cos, sin, lambda q, k, v, li=li: attend(li, q, k, v))
            if not logits:
                return None
            last = torch.tensor(suf, device=self.device).cumsum(0) - 1
            return self._logits_argmax(x[0, last])

    def _budget_split(self, todo, length):
        """Cut ``todo`` (in order) into sub-batches of at most ``prefill_tokens`` padded tokens."""
        out, cur, longest = [], [], 0
        for t in todo:
            n_ = length(t)
            if cur and (len(cur) + 1) * max(longest, n_) > self.prefill_tokens:
                out.append(cur)
                cur, longest = [], 0
            cur.append(t)
            longest = max(longest, n_)
        if cur:
            out.append(cur)
        return out

    # ------------------------------------------------------------------ one group
    def run(self, prompts: Sequence[Sequence[int]]) -> list[list[int]]:
        """Generated token ids of every prompt, in order. Prompts are admitted in the given order."""
        torch = self.torch
        n_prompts = len(prompts)
        out: list[list[int] | None] = [None] * n_prompts
        if not n_prompts:
            return []
        if min(len(p) for p in prompts) < 1:
            raise BackendError("an empty prompt cannot be generated from")
        t_start = time.perf_counter()
        plan = PrefixPlan(prompts, self.min_shared_prefix if self.share_prefixes else None)
        cap = max(len(p) for p in prompts) + self.max_new_tokens
        self._rope_table(cap)
        self._cols = torch.arange(cap, device=self.device)
        self._rows = torch.arange(self.slots, device=self.device)
        shape = (self.slots, self.kv_heads, cap, self.head_dim)
        K = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        V = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        pos = torch.zeros(self.slots, dtype=torch.long, device=self.device)   # next position per row
        cur = torch.zeros(self.slots, dtype=torch.long, device=self.device)   # last token per row
        lens = [0] * self.slots             # host copy of pos
        owner = [-1] * self.slots           # prompt index per row
        gen: list[list[int]] = [[] for _ in range(self.slots)]
        store: dict[int, tuple] = {}        # prefix node -> (length, [K per layer], [V per layer])
        refs = list(plan.refs)              # users (prompts, child nodes) not yet served, per node
        n = 0
        nxt = 0
        steps = prefills = prefix_tokens = 0
        prefill_s = decode_s = 0.0

        def release(node: int | None) -> None:
            if node is not None:
                refs[node] -= 1
                if refs[node] == 0:
                    del store[node]

        def compute_nodes(nodes: list[int]) -> None:
            """Compute the K/V of prefix nodes (and of their missing ancestors), shallowest first."""
            nonlocal prefills, prefix_tokens
            need, seen = [], set()
            for node in nodes:
                chain = []
                while node is not None and node not in store and node not in seen:
                    chain.append(node)
                    seen.add(node)
                    node = plan.parent[node]
                need.extend(reversed(chain))
            while need:
                level = [x for x in need if plan.parent[x] is None or plan.parent[x] in store]
                need = [x for x in need if x not in level]
                for sub in self._budget_split(level, lambda x: plan.length[x]):
                    W = max(plan.length[x] for x in sub)
                    shp = (len(sub), self.kv_heads, W, self.head_dim)
                    tK = [torch.zeros(shp, device=self.device, dtype=self.dtype) for _ in self.layers]
                    tV = [torch.zeros(shp, device=self.device, dtype=self.dtype) for _ in self.layers]
                    bases = [plan.parent[x] for x in sub]
                    self._extend([plan.tokens(x) for x in sub], bases, store, tK, tV, 0, logits=False)
                    prefills += 1
                    prefix_tokens += sum(plan.length[x] - (0 if b is None else plan.length[b])
                                         for x, b in zip(sub, bases))
                    for i, x in enumerate(sub):
                        L_ = plan.length[x]
                        store[x] = (L_, [t[i, :, :L_].clone() for t in tK], [t[i, :, :L_].clone() for t in tV])
                    for b in bases:
                        release(b)

        def finished(r: int, tok: int) -> bool:
            g = gen[r]
            return tok == self.eos or len(g) >= self.max_new_tokens or \
                (self.stop is not None and tok in self.stop.triggers and self.stop.hit(g))

        def compact(done: list[int]) -> None:
            """Drop rows ``done`` (ascending) from ``[:n]``: the live rows of the tail ``[n', n)``
            move into the finished rows' slots below ``n'``."""
            nonlocal n
            n_new = n - len(done)
            done_set = set(done)
            holes = [r for r in done if r < n_new]
            movers = [r for r in range(n_new, n) if r not in done_set]
            if holes:
                dst = torch.tensor(holes, device=self.device)
                src = torch.tensor(movers, device=self.device)
                width = max(lens[r] for r in movers)
                for t in K + V:
                    t[dst, :, :width] = t[src, :, :width]
                pos[dst] = pos[src]
                cur[dst] = cur[src]
                for h_, m in zip(holes, movers):
                    lens[h_], owner[h_], gen[h_] = lens[m], owner[m], gen[m]
            n = n_new

        # shared prefixes first, in order of first use, as many as fit in the slot cache's size
        # (tokens: their K/V take at most as much memory as the slot cache); the others when
        # their first prompt is admitted (computing them ahead in smaller bulks cost 45 % more
        # prefill forwards on the miniature)
        eager, budget = [], self.slots * cap
        for k in dict.fromkeys(k for k in plan.node_of if k is not None):
            budget -= plan.length[k]
            if budget < 0:
                break
            eager.append(k)
        t0 = time.perf_counter()
        compute_nodes(eager)
        prefill_s += time.perf_counter() - t0
        while nxt < n_prompts or n:
            free = self.slots - n
            if nxt < n_prompts and (n == 0 or free >= min(self.refill, n_prompts - nxt)):
                # ---- admit new prompts into slots [n, n + take), from their shared prefixes
                t0 = time.perf_counter()
                # in order of the tokens each computes, so that a prefill's attention calls
                # (attention_chunks) group rows of like lengths
                take = sorted(range(nxt, min(n_prompts, nxt + free)), key=lambda i: (len(prompts[i]) - plan.shared(i), i))
                nxt += len(take)
                compute_nodes([plan.node_of[i] for i in take if plan.node_of[i] is not None])
                for sub in self._budget_split(take, lambda i: len(prompts[i]) - plan.shared(i)):
                    base = n
                    first = self._extend([prompts[i] for i in sub], [plan.node_of[i] for i in sub], store,
                                         K, V, base, logits=True)
                    prefills += 1
                    prefix_tokens += sum(len(prompts[i]) - plan.shared(i) for i in sub)
                    for i in sub:
                        release(plan.node_of[i])
                    firsts = first.tolist()
                    done = []
                    for j, i in enumerate(sub):
                        r = base + j
                        owner[r], lens[r], gen[r] = i, len(prompts[i]), [firsts[j]]
                        if finished(r, firsts[j]):
                            done.append(r)
                    pos[base:base + len(sub)] = torch.tensor([len(prompts[i]) for i in sub], device=self.device)
                    cur[base:base + len(sub)] = first
                    n += len(sub)
                    for r in done:
                        out[owner[r]] = gen[r]
                    if done:
                        compact(done)
                prefill_s += time.perf_counter() - t0
                continue
            # ---- one decode step over the live rows [:n]
            t0 = time.perf_counter()
            tok = self._decode_step(K, V, pos, cur, n, max(lens[:n]) + 1)
            steps += 1
            cur[:n] = tok
            pos[:n] += 1
            toks = tok.tolist()
            decode_s += time.perf_counter() - t0
            done = []
            for r in range(n):
                lens[r] += 1
                gen[r].append(toks[r])
                if finished(r, toks[r]):
                    done.append(r)
            for r in done:
                out[owner[r]] = gen[r]
            if done:
                compact(done)
        if store:
            raise AssertionError("prefix store not empty at the end of a group")
        self.steps, self.prefills, self.prefill_s, self.decode_s = steps, prefills, prefill_s, decode_s
        self.prompt_tokens = sum(len(p) for p in prompts)
        self.computed_prompt_tokens = prefix_tokens
        self.new_tokens = sum(len(g) for g in out if g is not None)
        self.seconds = time.perf_counter() - t_start
        return out  # type: ignore[return-value]


def attention_chunks(queries: Sequence[int], keys: Sequence[int], call_cost: int) -> list[tuple[int, int, int, int]]:
    """Consecutive rows ``[a, b)`` of a prefill, each with its widest query and key count, that
    minimise the attention work: the sum over chunks of rows x queries x keys (padding
    included) plus ``call_cost`` per chunk (a deterministic dynamic programme)."""
    n = len(queries)
    best = [0] + [None] * n
    cut = [0] * (n + 1)
    for i in range(1, n + 1):
        mq = mk = 0
        for a in range(i - 1, -1, -1):
            mq, mk = max(mq, queries[a]), max(mk, keys[a])
            c = best[a] + (i - a) * mq * mk + call_cost
            if best[i] is None or c < best[i]:
                best[i], cut[i] = c, a
    out, i = [], n
    while i > 0:
        a = cut[i]
        out.append((a, i, max(queries[a:i]), max(keys[a:i])))
        i = a
    return out[::-1]


class PrefixPlan:
    """Which prompt prefixes of a group are computed once and shared (a deterministic function of
    the prompts).

    The nodes are the branching points of the prompts' prefix tree: the longest common prefix of
    each pair of neighbours in lexicographic order (at least ``min_shared`` tokens), cut so that
    both neighbours keep at least one token of their own to compute. A prompt starts from the
    longest node that is a proper prefix of it; a node is computed from the longest node that is
    a proper prefix of it (its parent). ``refs[node]`` counts its users (prompts and child
    nodes). ``min_shared`` None: no sharing."""

    def __init__(self, prompts: Sequence[Sequence[int]], min_shared: int | None):
        self.prompts = [tuple(p) for p in prompts]
        n = len(self.prompts)
        self.node_of: list[int | None] = [None] * n
        self.length: list[int] = []
        self.parent: list[int | None] = []
        self.refs: list[int] = []
        self._tokens: list[tuple] = []
        if min_shared is None or n < 2:
            return
        order = sorted(range(n), key=lambda i: self.prompts[i])
        found: set[tuple] = set()
        for a, b in zip(order, order[1:]):
            pa, pb = self.prompts[a], self.prompts[b]
            m = _lcp(pa, pb)
            m = min(m, len(pa) - 1, len(pb) - 1)
            if m >= min_shared:
                found.add(pa[:m])
        self._tokens = sorted(found, key=lambda t: (len(t), t))
        self.length = [len(t) for t in self._tokens]
        index = {t: k for k, t in enumerate(self._tokens)}
        lengths = sorted(set(self.length), reverse=True)

        def longest_proper(seq: tuple, below: int) -> int | None:
            for L_ in lengths:
                if L_ < below:
                    k = index.get(seq[:L_])
                    if k is not None:
                        return k
            return None
        self.parent = [longest_proper(t, len(t)) for t in self._tokens]
        self.node_of = [longest_proper(p, len(p)) for p in self.prompts]
        # users of each node: the prompts that start from it and the used nodes computed from it
        self.refs = [0] * len(self._tokens)
        used: set[int] = set()
        for k in self.node_of:
            while k is not None and k not in used:
                used.add(k)
                k = self.parent[k]
        for k in self.node_of + [self.parent[u] for u in sorted(used)]:
            if k is not None:
                self.refs[k] += 1

    def tokens(self, node: int) -> tuple:
        return self._tokens[node]

    def shared(self, i: int) -> int:
        """Tokens of prompt ``i`` taken from a shared prefix."""
        k = self.node_of[i]
        return 0 if k is None else self.length[k]


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    m = min(len(a), len(b))
    if a[:m] == b[:m]:
        return m
    lo, hi = 0, m          # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class VllmDecoder:
    """Adapter to vLLM's offline engine (backend ``vllm``).

    Prompts go in as token ids (``TokensPrompt``), so vLLM never re-tokenises the template;
    sampling is greedy (``temperature=0``), ``max_tokens`` is ``max_new_tokens``, generation stops
    at the stop string (kept out of the text, as the reply is cut there anyway) and at EOS.
    ``max_num_seqs`` is the batch size. ``tensor_parallel_size`` ``None`` uses every GPU the
    job sees (``torch.cuda.device_count()``)."""

    def __init__(self, model_path: str, tokenizer, *, max_new_tokens: int, stop: str | None, batch_size: int,
                 max_model_len: int, dtype: str, tensor_parallel_size: int | None = None, seed: int = 0):
        try:
            import vllm
        except ImportError:
            raise BackendError("evaluation.generation.backend is vllm but vllm is not installed "
                               "(conda env create -f envs/vllm.yaml)") from None
        if tensor_parallel_size is None:
            import torch
            tensor_parallel_size = max(1, torch.cuda.device_count())
        self.vllm = vllm
        self.version = getattr(vllm, "__version__", "unknown")
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.tok = tokenizer
        self.llm = vllm.LLM(model=model_path, tokenizer=model_path, dtype={"bf16": "bfloat16", "fp16": "float16",
                                                                           "fp32": "float32"}.get(dtype, dtype),
                            tensor_parallel_size=self.tensor_parallel_size, max_num_seqs=batch_size,
                            max_model_len=max_model_len, seed=seed, trust_remote_code=False)
        self.params = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=[stop] if stop else [],
                                          stop_token_ids=[tokenizer.eos_token_id], skip_special_tokens=True)
        self.new_tokens = 0     # tokens generated by the last run (bench/generation.py)

    def run(self, prompts: Sequence[Sequence[int]]) -> list[str]:
        """The decoded text of every prompt's reply, in order (not yet cut or stripped)."""
        from vllm.inputs import TokensPrompt
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], self.params,
                                 use_tqdm=False)
        if len(outs) != len(prompts):
            raise BackendError(f"vllm returned {len(outs)} outputs for {len(prompts)} prompts")
        self.new_tokens = sum(len(getattr(o.outputs[0], "token_ids", ()) or ()) for o in outs)
        return [o.outputs[0].text for o in outs]
