"""Benchmark of generation (issue 12; results in docs/benchmarks.md, "Generation").

Side by side in one run, on the same model and prompts at one batch size (32 by default): plain
``model.generate`` (``evaluation.generation.backend: plain``), the fast path (``fast``) and, with
``--gpu`` when vllm is installed, vLLM (``vllm``). Each backend runs through
:class:`agentflan.generate.Generator` exactly as the generate job does: one call per benchmark,
prompts tokenised with the template, replies cut at the end tag. Printed per backend: wall time
(best of ``--reps`` rounds, every round listed) and process CPU time (best round; on a shared
machine the steadier of the two), new tokens, new tokens/s (wall), speed-up over plain (wall and
CPU), and the share of items whose reply equals plain generate's (greedy).

* **new tokens** are the tokens each reply took until it stopped (the end tag's tokens or EOS
  included, padding and the rows a finished batch row keeps computing in plain ``generate``
  excluded); the same count for every backend whose replies agree.
* **model**: ``--model DIR`` (e.g. ``results/mini/models/<model_id>`` of a miniature run), else a
  randomly initialised Llama of the miniature's ``xs`` shape (config/config.yaml, seed 0) with a
  byte-level BPE of the miniature's vocabulary size trained here on the miniworld pretraining
  texts and the prompts. ``--gpu``: a Llama-2-7B-shaped model (32 layers, hidden 4096, 32k
  vocabulary; random weights, seed 0, bf16 on CUDA; ``--layers`` cuts it) with the Llama-2
  tokenizer of tests/sptokenizers.py; a random model never writes the end tag, so every reply
  runs to ``--max-new-tokens``.
* **prompts**: the miniature's evaluation sets (miniworld at config/config.yaml's scale, loaded
  with the config's benchmark options): T-Eval, Agent-H, HotpotQA (first step of every episode),
  MMLU, GSM8K, HumanEval.

The CPU runs pin the package's determinism settings with ``--threads`` torch threads, as a job
does, and alternate the backends round by round; with ``--gpu`` each backend runs its rounds in
turn and is unloaded before the next (one bf16 7B copy, or vLLM's memory pool, per card). The machine line and the load average before and after go to the output: on a shared
machine other processes take CPU time from every backend alike, so read the ratios.

    python bench/generation.py [--model DIR] [--reps 3] [--threads 1] [--out /tmp/agentflan-genbench]
    python bench/generation.py --gpu [--max-new-tokens 128] [--layers 32]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchlib import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
BENCHMARKS = ("teval", "agenth", "hotpotqa", "mmlu", "gsm8k", "humaneval")
LLAMA2_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_layers": 32, "num_heads": 32,
             "max_position_embeddings": 4096, "tie_word_embeddings": False}


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def eval_prompts(out: Path, benchmarks: list[str]) -> dict[str, list[list[dict]]]:
    """Each benchmark's prompts (message lists) from the miniworld sources at the config's scale."""
    from agentflan import miniworld
    from agentflan.config import load_config
    from agentflan.evaluation import registry
    cfg = load_config(ROOT / "config" / "config.yaml")
    mw = cfg["data"]["miniworld"]
    raw = out / "raw"
    if not (raw / miniworld.MANIFEST).exists():
        miniworld.generate(raw, seed=mw["seed"], scale=mw["scale"])
    opts = cfg["evaluation"]["benchmarks"]
    return {b: [it["messages"] for it in registry.load_items(b, raw, opts.get(b, {}))] for b in benchmarks}


def build_model(out: Path, prompts: dict, gpu: bool, layers: int | None) -> Path:
    """A random-weight model directory (see the module docstring); reused if already built."""
    import torch

    from agentflan.config import load_config
    from agentflan.io import read_jsonl
    from agentflan.modeling import init_tiny_llama, load_tokenizer, save_model, tiny_llama_config, train_bpe_tokenizer
    from agentflan.template import render
    if gpu:
        from sptokenizers import llama2_tokenizer_dir
        tok = load_tokenizer(str(llama2_tokenizer_dir()))
        arch = {**LLAMA2_7B, "num_layers": layers or LLAMA2_7B["num_layers"]}
        target = out / f"llama2-7b-shape-{arch['num_layers']}l"
        if not (target / "config.json").exists():
            from transformers import LlamaForCausalLM
            torch.manual_seed(0)
            with torch.device("cuda"):
                model = LlamaForCausalLM(tiny_llama_config(arch, tok)).to(torch.bfloat16)
            save_model(model, tok, target)
            del model
            torch.cuda.empty_cache()
        return target
    cfg = load_config(ROOT / "config" / "config.yaml")
    arch = cfg["models"]["sizes"]["xs"]["arch"]
    target = out / "random-xs"
    if not (target / "config.json").exists():
        texts = [r["text"] for r in read_jsonl(out / "raw" / "miniworld" / "pretrain" / "pretrain.jsonl")]
        texts += [render([{**m, "train": False} for m in msgs]) for ps in prompts.values() for msgs in ps]
        train_bpe_tokenizer(texts, out / "tokenizer", vocab_size=cfg["tokenizer"]["vocab_size"])
        init_tiny_llama(arch, load_tokenizer(str(out / "tokenizer")), seed=0, out_dir=target)
    return target


def plain_new_tokens(rows: list[list[int]], tok) -> int:
    """Tokens of plain ``generate``'s rows up to where each stopped (EOS, or the token that
    completed the end tag; else all of them)."""
    from agentflan.template import ASSISTANT_STOP
    total = 0
    for ids in rows:
        n = len(ids)
        for t in range(len(ids)):
            if ids[t] == tok.eos_token_id or ASSISTANT_STOP in tok.decode(ids[max(0, t - 15):t + 1],
                                                                          skip_special_tokens=True):
                n = t + 1
                break
        total += n
    return total


class Counted:
    """A Generator of one backend whose generated tokens are counted."""

    def __init__(self, backend: str, model_dir: Path, args):
        from agentflan.generate import Generator
        t = time.perf_counter()
        self.gen = Generator(str(model_dir), backend=backend, threads=args.threads, batch_size=args.batch_size,
                             max_new_tokens=args.max_new_tokens, max_prompt_length=args.max_prompt_length,
                             **({"tensor_parallel_size": 1} if backend == "vllm" else {}))
        self.load_s = time.perf_counter() - t
        self.backend = backend
        self.plain_rows: list[list[int]] = []
        self.tokens = 0
        self.stats = {"prompt_tokens": 0, "computed_prompt_tokens": 0, "steps": 0, "prefills": 0}
        if backend == "plain":
            real = self.gen.model.generate

            def generate(*a, **kw):
                out = real(*a, **kw)
                self.plain_rows.extend(out[:, kw["input_ids"].shape[1]:].tolist())
                return out
            self.gen.model.generate = generate
        else:
            eng = self.gen.engine
            real_run = eng.run

            def run(prompts):
                res = real_run(prompts)
                self.tokens += eng.new_tokens
                if backend == "fast":
                    for k in self.stats:
                        self.stats[k] += getattr(eng, k)
                return res
            eng.run = run

    def __call__(self, msgs):
        return self.gen(msgs)

    def new_tokens(self) -> int:
        if self.backend == "plain":
            n, self.plain_rows = plain_new_tokens(self.plain_rows, self.gen.tok), []
            return n
        n, self.tokens = self.tokens, 0
        return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model directory (default: a random-init model of the miniature's xs shape)")
    ap.add_argument("--gpu", action="store_true", help="Llama-2-7B-shaped random model, bf16, CUDA")
    ap.add_argument("--layers", type=int, help="--gpu: decoder layers (default 32)")
    ap.add_argument("--reps", type=int, default=3, help="rounds; the best wall time per backend is reported")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, help="default 80 (the miniature), 128 with --gpu")
    ap.add_argument("--max-prompt-length", type=int, default=512)
    ap.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=BENCHMARKS)
    ap.add_argument("--backends", nargs="+", help="default: plain fast (and vllm with --gpu when installed)")
    ap.add_argument("--out", default="/tmp/agentflan-genbench", help="work directory (sources, tokenizer, model)")
    args = ap.parse_args(argv)
    if args.max_new_tokens is None:
        args.max_new_tokens = 128 if args.gpu else 80

    from agentflan import determinism
    determinism.pin(args.threads)
    import torch
    import transformers
    if args.gpu and not torch.cuda.is_available():
        print("error: --gpu needs a CUDA device", file=sys.stderr)
        return 2
    backends = args.backends
    if backends is None:
        backends = ["plain", "fast"]
        if args.gpu:
            import importlib.util
            if importlib.util.find_spec("vllm") is not None:
                backends.append("vllm")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load0 = load_average()
    prompts = eval_prompts(out, args.benchmarks)
    model_dir = Path(args.model) if args.model else build_model(out, prompts, args.gpu, args.layers)

    print(f"machine: {machine()}; load average {load0} (1/5/15 min) at start")
    if args.gpu:
        print(f"gpu: {torch.cuda.get_device_name(0)}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {args.threads}")
    mcfg = json.loads((model_dir / "config.json").read_text())
    print(f"model: {model_dir} ({'given' if args.model else 'random weights, seed 0'}; hidden {mcfg['hidden_size']}, "
          f"{mcfg['num_hidden_layers']} layers, {mcfg['num_attention_heads']} heads, vocab {mcfg['vocab_size']}, "
          f"{mcfg.get('dtype', mcfg.get('torch_dtype'))} weights)")
    n_items = sum(len(p) for p in prompts.values())
    print(f"prompts: {n_items} ({', '.join(f'{b} {len(p)}' for b, p in prompts.items())}); batch {args.batch_size}, "
          f"max_new_tokens {args.max_new_tokens}, max_prompt_length {args.max_prompt_length}")

    walls: dict[str, list[float]] = {b: [] for b in backends}
    cpus: dict[str, list[float]] = {b: [] for b in backends}
    per_bench: dict[str, dict[str, float]] = {b: {} for b in backends}
    replies: dict[str, list[str]] = {}
    tokens: dict[str, int] = {}
    fast_stats: dict[str, int] = {}

    def load(b: str) -> Counted:
        r = Counted(b, model_dir, args)
        print(f"  {b}: loaded in {r.load_s:.1f} s; settings {json.dumps(r.gen.describe())}", flush=True)
        return r

    def one_round(rep: int, b: str, r: Counted) -> None:
        total, got, c0 = 0.0, [], time.process_time()
        for bench, msgs in prompts.items():
            if args.gpu:
                torch.cuda.synchronize()
            t = time.perf_counter()
            got += r(msgs)
            if args.gpu:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
            total += dt
            per_bench[b][bench] = min(per_bench[b].get(bench, dt), dt)
        tok_count = r.new_tokens()
        if b in replies and (got != replies[b] or tok_count != tokens[b]):
            print(f"warning: {b} gave other replies in round {rep + 1} than in round 1")
        replies.setdefault(b, got)
        tokens.setdefault(b, tok_count)
        walls[b].append(total)
        cpus[b].append(time.process_time() - c0)
        print(f"  round {rep + 1}: {b} {total:.2f} s wall, {cpus[b][-1]:.2f} s CPU", flush=True)

    if args.gpu:
        # one backend at a time (two bf16 7B copies and vLLM's memory pool do not share a card)
        import gc
        for b in backends:
            r = load(b)
            for rep in range(args.reps):
                one_round(rep, b, r)
            if b == "fast":
                fast_stats = dict(r.stats)
            del r
            gc.collect()
            torch.cuda.empty_cache()
    else:
        # rounds interleaved, so that the load of a shared machine falls on every backend alike
        runners = {b: load(b) for b in backends}
        for rep in range(args.reps):
            for b, r in runners.items():
                one_round(rep, b, r)
        if "fast" in runners:
            fast_stats = dict(runners["fast"].stats)

    ref = replies.get("plain")
    print()
    print(f"| backend | wall s (best of {args.reps}) | all rounds | CPU s (best) | new tokens | new tokens/s | "
          f"vs plain (wall) | vs plain (CPU) | agreement with plain |")
    print("|---|---|---|---|---|---|---|---|---|")
    for b in backends:
        best, cpu = min(walls[b]), min(cpus[b])
        if "plain" in walls:
            ratio = f"{tokens[b] / best / (tokens['plain'] / min(walls['plain'])):.2f}x"
            ratio_cpu = f"{tokens[b] / cpu / (tokens['plain'] / min(cpus['plain'])):.2f}x"
        else:
            ratio = ratio_cpu = "n/a"
        agree = "n/a" if ref is None else \
            f"{sum(x == y for x, y in zip(replies[b], ref))}/{n_items} " \
            f"({sum(x == y for x, y in zip(replies[b], ref)) / n_items:.1%})"
        print(f"| {b} | {best:.2f} | {', '.join(f'{w:.2f}' for w in walls[b])} | {cpu:.2f} | {tokens[b]} | "
              f"{tokens[b] / best:.0f} | {ratio} | {ratio_cpu} | {agree} |")
    print()
    print("| benchmark | items | " + " | ".join(f"{b} s" for b in backends) + " |")
    print("|---|---|" + "---|" * len(backends))
    for bench, msgs in prompts.items():
        print(f"| {bench} | {len(msgs)} | " + " | ".join(f"{per_bench[b][bench]:.2f}" for b in backends) + " |")
    if fast_stats:
        st = {k: v // args.reps for k, v in fast_stats.items()}
        print(f"\nfast path per round: {st['prompt_tokens']} prompt tokens, {st['computed_prompt_tokens']} computed "
              f"(the rest from shared prefixes), {st['steps']} decode steps, {st['prefills']} prefill forwards")
    print(f"load average {load_average()} (1/5/15 min) at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
