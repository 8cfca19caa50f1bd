"""The fast generation backend (agentflan.fastgen) against plain ``model.generate``, and the vLLM
adapter against a fake ``vllm`` module.

* agreement: on the evaluation fixtures (T-Eval, Agent-H, HotpotQA, MMLU, GSM8K, HumanEval
  prompts), greedy replies of the fast path equal plain ``generate``'s on at least
  ``MIN_AGREEMENT`` of the items, for a randomly initialised tiny Llama and for the same model
  briefly trained on the rendered prompts (the printed share is what the docs quote; exact
  equality is not promised: the batch shapes differ, so a near-tie can flip an argmax);
* stopping: at the assistant end tag (the reply cut before it, nothing generated after it) and at
  EOS, on a model forced to emit a chosen chain of tokens;
* determinism: two runs give the same replies; a run killed after one group and resumed from the
  side file gives the uninterrupted run's replies, generating only what was missing;
* shared prefixes: the plan's nodes and the engine's computed-token count;
* vLLM: prompt token ids, sampling parameters, engine options and the settings key, with a fake
  ``vllm`` module in ``sys.modules``; a missing vllm is one clear error.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from agentflan.evaluation import registry
from agentflan.template import ASSISTANT_STOP, render
from forcing import force_chain

torch = pytest.importorskip("torch")

RAW = Path(__file__).parent / "fixtures" / "eval" / "raw"
GEN = {"max_new_tokens": 32, "batch_size": 8, "max_prompt_length": 256}
# Documented threshold (docs/benchmarks.md "Generation"): the fast path may differ from plain
# generate on a near-tie argmax; on these fixtures the measured share is printed by each run.
MIN_AGREEMENT = 0.9


def _items() -> list[dict]:
    out = []
    for bench in registry.BENCHMARKS:
        out += registry.load_items(bench, RAW, {})
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A BPE tokenizer and two tiny Llamas: random (seed 0) and briefly trained on the prompts."""
    from agentflan.modeling import init_tiny_llama, load_causal_lm, load_tokenizer, save_model, train_bpe_tokenizer
    root = tmp_path_factory.mktemp("fastgen")
    items = _items()
    texts = [render([{**m, "train": False} for m in it["messages"]]) for it in items]
    replies = [f"Thought: I should answer.\nAction: Finish[{i}]" for i in range(len(items))]
    train_bpe_tokenizer(texts + replies * 2, root / "tok", vocab_size=600)
    tok = load_tokenizer(str(root / "tok"))
    arch = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4, "tie_word_embeddings": False}
    init_tiny_llama(arch, tok, seed=0, out_dir=root / "random")
    # brief training: next-token loss on rendered prompt + reply, 40 AdamW steps, fixed seed
    from agentflan.template import SegmentTokenizer
    seg = SegmentTokenizer(tok)
    convs = [seg.encode_prompt(it["messages"])[-200:] + tok.encode(r + ASSISTANT_STOP, add_special_tokens=False)
             for it, r in zip(items, replies)]
    torch.manual_seed(0)
    model = load_causal_lm(str(root / "random"), dtype="fp32").train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(40):
        batch = [convs[(step * 4 + j) % len(convs)] for j in range(4)]
        width = max(map(len, batch))
        ids = torch.tensor([b + [tok.pad_token_id] * (width - len(b)) for b in batch])
        labels = torch.tensor([b + [-100] * (width - len(b)) for b in batch])
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_model(model.eval(), tok, root / "trained")
    return root, tok, items


def _gen(model_dir: Path, backend: str, **kw):
    from agentflan.generate import Generator
    return Generator(str(model_dir), threads=1, **{**GEN, "backend": backend, **kw})


# ---------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("which", ["random", "trained"])
def test_fast_agrees_with_plain_generate(tiny, which, capsys):
    root, _, items = tiny
    msgs = [it["messages"] for it in items]
    plain = _gen(root / which, "plain")(msgs)
    fast_gen = _gen(root / which, "fast")
    fast = fast_gen(msgs)
    same = sum(a == b for a, b in zip(plain, fast))
    share = same / len(items)
    with capsys.disabled():
        print(f"\n[fastgen] {which} model: fast == plain on {same}/{len(items)} items ({share:.1%})")
    assert share >= MIN_AGREEMENT
    assert len(set(fast)) > 3                              # not a degenerate constant reply
    # the shared-prefix path and the from-scratch path give the same replies here too
    noshare = _gen(root / which, "fast", share_prefixes=False)(msgs)
    assert sum(a == b for a, b in zip(noshare, fast)) / len(items) >= MIN_AGREEMENT
    assert fast_gen.engine.computed_prompt_tokens <= fast_gen.engine.prompt_tokens


# ---------------------------------------------------------------------------- stopping
@pytest.mark.parametrize("end", ["tag", "eos"])
def test_stops_at_end_tag_and_eos(tiny, tmp_path, end):
    from agentflan.template import SegmentTokenizer
    root, tok, items = tiny
    seg = SegmentTokenizer(tok)
    msgs = [it["messages"] for it in items[:12]]
    ends = {seg.encode_prompt(m)[-1] for m in msgs}
    body = tok.encode("Action: Go", add_special_tokens=False)
    stop = tok.encode(ASSISTANT_STOP, add_special_tokens=False) if end == "tag" else [tok.eos_token_id]
    after = tok.encode(" Observation", add_special_tokens=False)   # must never be generated
    chain = body + stop + after
    force_chain(root / "random", tmp_path / "m", tok, ends, chain)
    fast = _gen(tmp_path / "m", "fast", max_new_tokens=len(chain) + 5)
    replies = fast(msgs)
    assert replies == ["Action: Go"] * len(msgs)
    assert _gen(tmp_path / "m", "plain", max_new_tokens=len(chain) + 5)(msgs) == replies
    ids = fast.engine.run([seg.encode_prompt(m) for m in msgs])
    assert ids == [body + stop] * len(msgs)                # nothing generated after the stop


# ---------------------------------------------------------------------------- determinism and resume
def test_two_runs_give_the_same_replies(tiny):
    root, _, items = tiny
    msgs = [it["messages"] for it in items]
    a = _gen(root / "trained", "fast", group_batches=2)
    first = a(msgs)
    assert a(msgs) == first
    assert _gen(root / "trained", "fast", group_batches=2)(msgs) == first


def test_resume_after_a_kill_gives_the_same_output(tiny, tmp_path):
    from agentflan.generate import ResumeLog
    root, _, items = tiny
    msgs, ids = [it["messages"] for it in items], [it["id"] for it in items]
    full = _gen(root / "trained", "fast", group_batches=2)(msgs)

    gen = _gen(root / "trained", "fast", group_batches=2)
    unit = gen.unit                                          # 16 prompts per group
    real, calls = gen._generate, []

    def killed_after_one_group(prompts, width):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(len(prompts))
        return real(prompts, width)
    gen._generate = killed_after_one_group
    side = tmp_path / "x.predictions.jsonl.partial.jsonl"
    with pytest.raises(KeyboardInterrupt), ResumeLog(side, gen.settings_key()) as log:
        gen(msgs, ids=ids, log=log)
    assert calls == [unit] and len(side.read_text().splitlines()) == unit

    again = _gen(root / "trained", "fast", group_batches=2)
    sent = []
    real2 = again._generate
    again._generate = lambda prompts, width: sent.append(len(prompts)) or real2(prompts, width)
    with ResumeLog(side, again.settings_key()) as log:
        out = again(msgs, ids=ids, log=log)
    assert out == full
    assert sum(sent) == len(msgs) - unit and again.resumed == unit


# ---------------------------------------------------------------------------- shared prefixes
def test_prefix_plan_nodes_parents_and_users():
    from agentflan.fastgen import PrefixPlan
    sys_a = list(range(100, 130))            # a 30-token "system prompt"
    prompts = [sys_a + [1, 2, 3], sys_a + [1, 2, 4], sys_a + [5], list(range(200, 240)), sys_a[:10] + [7]]
    plan = PrefixPlan(prompts, min_shared=16)
    nodes = {plan.tokens(k) for k in range(len(plan.length))}
    assert nodes == {tuple(sys_a), tuple(sys_a + [1, 2])}
    deep = [k for k in range(len(plan.length)) if plan.length[k] == 32][0]
    top = plan.parent[deep]
    assert plan.tokens(top) == tuple(sys_a) and plan.parent[top] is None
    assert [plan.node_of[i] for i in range(5)] == [deep, deep, top, None, None]
    assert plan.refs[deep] == 2 and plan.refs[top] == 2      # prompt 2 and the child node
    assert [plan.shared(i) for i in range(5)] == [32, 32, 30, 0, 0]
    # identical prompts keep at least one token of their own to compute
    twin = PrefixPlan([sys_a, sys_a], min_shared=16)
    assert twin.length == [29] and twin.shared(0) == twin.shared(1) == 29
    assert PrefixPlan(prompts, min_shared=None).node_of == [None] * 5


def test_shared_prefixes_are_computed_once(tiny):
    root, _, items = tiny
    teval = [it["messages"] for it in items if it["benchmark"] == "teval"]
    gen = _gen(root / "trained", "fast", group_batches=4)
    gen(teval)
    eng = gen.engine
    assert eng.computed_prompt_tokens < 0.8 * eng.prompt_tokens, (eng.computed_prompt_tokens, eng.prompt_tokens)


def test_attention_chunks_minimise_the_cost_over_every_split():
    import itertools
    from agentflan.fastgen import attention_chunks
    queries, keys = [3, 5, 40, 41, 44, 90, 2], [60, 62, 70, 80, 80, 120, 30]
    for call_cost in (0, 500, 5000, 10 ** 9):
        chunks = attention_chunks(queries, keys, call_cost)
        assert [a for a, *_ in chunks] == [0] + [b for _, b, *_ in chunks[:-1]] and chunks[-1][1] == len(queries)

        def cost(cuts):
            bounds = [0, *cuts, len(queries)]
            return sum((b - a) * max(queries[a:b]) * max(keys[a:b]) + call_cost for a, b in zip(bounds, bounds[1:]))
        best = min(cost(c) for r in range(len(queries)) for c in itertools.combinations(range(1, len(queries)), r))
        assert cost([a for a, *_ in chunks[1:]]) == best
        assert all(q == max(queries[a:b]) and k == max(keys[a:b]) for a, b, q, k in chunks)
    assert len(attention_chunks(queries, keys, 10 ** 9)) == 1
    assert len(attention_chunks(queries, keys, 0)) > 1


@pytest.mark.parametrize("share", [True, False])
def test_prefill_split_into_attention_calls_gives_the_same_tokens(tiny, monkeypatch, share):
    """Rows of a prefill split into several attention calls (each padded to its own widest row)
    give the tokens of one call over all rows."""
    from agentflan.fastgen import FastDecoder
    root, _, items = tiny
    msgs = [it["messages"] for it in items]
    monkeypatch.setattr(FastDecoder, "CALL_COST", 10 ** 12)
    one = _gen(root / "trained", "fast", share_prefixes=share)
    whole = one(msgs)
    monkeypatch.setattr(FastDecoder, "CALL_COST", 0)
    split = _gen(root / "trained", "fast", share_prefixes=share)
    assert split(msgs) == whole


def test_model_settings_the_fast_path_cannot_apply_are_an_error(tiny, tmp_path):
    import shutil

    from agentflan.fastgen import BackendError
    root, _, _ = tiny
    shutil.copytree(root / "random", tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps({**cfg, "repetition_penalty": 1.3}))
    with pytest.raises(BackendError, match="repetition_penalty.*backend: plain"):
        _gen(tmp_path / "m", "fast")
    _gen(tmp_path / "m", "plain")                            # plain applies it, as before


# ---------------------------------------------------------------------------- vLLM adapter
class _FakeVllm:
    """A stand-in ``vllm`` module that records what the adapter passes and answers every prompt
    with ``"<n> tokens"`` plus the end tag and more text (the adapter cuts at the tag)."""

    def __init__(self):
        self.llm_kwargs = None
        self.params = None
        self.calls = []
        fake = self

        class SamplingParams:
            def __init__(self, **kw):
                fake.params = kw

        class LLM:
            def __init__(self, **kw):
                fake.llm_kwargs = kw

            def generate(self, prompts, params, use_tqdm=True):
                fake.calls.append([dict(p) for p in prompts])
                assert params is not None and use_tqdm is False
                return [types.SimpleNamespace(outputs=[types.SimpleNamespace(
                    text=f" {len(p['prompt_token_ids'])} tokens" + ASSISTANT_STOP + "more")]) for p in prompts]

        def TokensPrompt(prompt_token_ids):
            return {"prompt_token_ids": prompt_token_ids}

        self.module = types.ModuleType("vllm")
        self.module.__version__ = "0.0-fake"
        self.module.LLM = LLM
        self.module.SamplingParams = SamplingParams
        self.inputs = types.ModuleType("vllm.inputs")
        self.inputs.TokensPrompt = TokensPrompt
        self.module.inputs = self.inputs


def test_vllm_adapter_passes_token_ids_and_greedy_stop_settings(tiny, monkeypatch):
    from agentflan.template import SegmentTokenizer
    root, tok, items = tiny
    fake = _FakeVllm()
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", fake.inputs)
    gen = _gen(root / "random", "vllm", tensor_parallel_size=2, group_batches=2)
    assert fake.llm_kwargs == {"model": str(root / "random"), "tokenizer": str(root / "random"), "dtype": "bfloat16",
                               "tensor_parallel_size": 2, "max_num_seqs": GEN["batch_size"],
                               "max_model_len": GEN["max_prompt_length"] + GEN["max_new_tokens"], "seed": 0,
                               "trust_remote_code": False}
    assert fake.params == {"temperature": 0.0, "max_tokens": GEN["max_new_tokens"], "stop": [ASSISTANT_STOP],
                           "stop_token_ids": [tok.eos_token_id], "skip_special_tokens": True}
    msgs = [it["messages"] for it in items]
    replies = gen(msgs)
    seg = SegmentTokenizer(tok)
    want = [seg.encode_prompt(m)[-GEN["max_prompt_length"]:] for m in msgs]
    sent = [p["prompt_token_ids"] for call in fake.calls for p in call]
    assert sorted(map(tuple, sent)) == sorted(map(tuple, want))     # the template's exact token ids
    assert [len(c) for c in fake.calls] == [16, 16, len(msgs) - 32]  # one engine call per group
    assert replies == [f"{len(w)} tokens" for w in want]             # cut at the end tag, stripped
    desc = gen.settings()["generation"]
    assert desc == {"backend": "vllm", "vllm": "0.0-fake", "group_batches": 2, "tensor_parallel_size": 2}
    assert gen.settings()["device"] == "cuda" and gen.settings()["dtype"] == "bf16"


def test_vllm_not_installed_is_one_clear_error(tiny, tmp_path, monkeypatch):
    from agentflan import stages
    from agentflan.fastgen import BackendError
    from agentflan.io import DataError, write_jsonl
    root, _, items = tiny
    monkeypatch.setitem(sys.modules, "vllm", None)            # import vllm raises ImportError
    with pytest.raises(BackendError, match=r"backend is vllm but vllm is not installed \(conda env create -f envs/vllm.yaml\)"):
        _gen(root / "random", "vllm")
    write_jsonl(tmp_path / "gsm8k.jsonl", [it for it in items if it["benchmark"] == "gsm8k"])
    with pytest.raises(DataError) as err:
        stages.generate(model=str(root / "random"), items={"gsm8k": str(tmp_path / "gsm8k.jsonl")},
                        out={"gsm8k": str(tmp_path / "out.jsonl")}, generation={**GEN, "backend": "vllm"},
                        options={}, threads=1)
    assert "\n" not in str(err.value) and "vllm is not installed" in str(err.value)
    with pytest.raises(DataError, match="unknown evaluation.generation keys"):
        stages.generate(model=str(root / "random"), items={"gsm8k": str(tmp_path / "gsm8k.jsonl")},
                        out={"gsm8k": str(tmp_path / "out.jsonl")}, generation={**GEN, "beams": 4},
                        options={}, threads=1)
