"""Benchmark of the data build near the tokenizer floor (issue 12; results in docs/benchmarks.md).

Generates a release-sized corpus (the miniworld generator at a large scale: the seven Agent-FLAN
files and ShareGPT in the released files' shapes, about 40k records at ``--fraction 1``), converts
it, and times, side by side in one run on the real Llama-2 tokenizer (tests/sptokenizers.py):

* **floor**: one batched tokenisation of every rendered conversation (the template's tokenizer
  call: fast tokenizer, offsets, ``split_special_tokens``, batches of 512), in this process;
* **new**: the ``ablations`` work as the DAG runs it: the ``token_counts`` job (timed with each
  ``--workers`` count; the last one enters the ratio), then the ablation
  jobs of config/paper.yaml (build + stats + writing the data set, stats and audit dump), each a
  ``python -m agentflan.cli`` process as Snakemake starts them, ``--jobs`` at a time;
* **old** (``--baseline``): the same ablation jobs without the token-count cache (every job
  tokenises its records), and a check that every stats.json equals the new one's (provenance aside).

It prints the machine (CPU model, cores), the corpus, every time and the ratio new / floor.

    python bench/data_build.py --out /tmp/agentflan-bench [--fraction 1.0] [--jobs 2] [--workers 1 2] [--baseline]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# Released-size scale: 20,000 ToolBench trajectories (10/60/30 % react/tflan/cot), 3,000 instruct,
# 2,000 negatives, 300 per AgentInstruct task and file (6 tasks, 2 files), 12,000 ShareGPT.
SCALE = {"toolbench_pool": 20000, "toolbench_wiki": 1000, "instruct": 3000, "negative": 2000,
         "agentinstruct_per_task": 300, "sharegpt": 12000, "teval_per_file": 0, "glaive": 0,
         "hotpotqa_per_level": 0, "mmlu": 0, "gsm8k": 0, "humaneval": 0, "pretrain": 0}
SHAREGPT = "anon8231489123/ShareGPT_Vicuna_unfiltered/ShareGPT_V3_unfiltered_cleaned_split.json"


def machine() -> str:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores, Python {platform.python_version()}, {platform.system()}"


def prepare(out: Path, fraction: float) -> dict:
    """Corpus in the DAG's layout under ``out`` (converted/, general/sharegpt.jsonl, tokenizer/)."""
    from agentflan import miniworld
    from agentflan.convert import convert_records
    from agentflan.download import agentflan_files
    from agentflan.io import write_jsonl
    from agentflan.sharegpt import load_sharegpt
    from sptokenizers import llama2_tokenizer_dir

    scale = {k: (max(1, round(v * fraction)) if v else 0) for k, v in SCALE.items()}
    marker = out / "corpus.json"
    if marker.exists() and json.loads(marker.read_text())["scale"] == scale:
        return json.loads(marker.read_text())
    shutil.rmtree(out, ignore_errors=True)
    raw = out / "raw"
    miniworld.generate(raw, seed=0, scale=scale)
    files = agentflan_files(raw / "internlm" / "Agent-FLAN")
    n, size = 0, 0
    for stem, path in sorted(files.items()):
        recs = convert_records(path, stem)[0]
        write_jsonl(out / "converted" / f"{stem}.jsonl", recs)
        n += len(recs)
        size += (out / "converted" / f"{stem}.jsonl").stat().st_size
    general = load_sharegpt(raw / SHAREGPT, english_only=True)
    write_jsonl(out / "general" / "sharegpt.jsonl", general)
    n += len(general)
    size += (out / "general" / "sharegpt.jsonl").stat().st_size
    shutil.copytree(llama2_tokenizer_dir(), out / "tokenizer")
    shutil.rmtree(raw)
    info = {"scale": scale, "records": n, "bytes": size}
    marker.write_text(json.dumps(info, sort_keys=True))
    return info


def floor(out: Path) -> float:
    """Seconds for one batched tokenisation of every rendered conversation."""
    from agentflan.io import read_jsonl
    from agentflan.modeling import load_tokenizer
    from agentflan.template import render
    records = [r for p in sorted((out / "converted").glob("*.jsonl")) for r in read_jsonl(p)]
    records += read_jsonl(out / "general" / "sharegpt.jsonl")
    texts = [render(r["turns"]) for r in records]
    tok = load_tokenizer(str(out / "tokenizer"))
    t0 = time.perf_counter()
    n = 0
    for k in range(0, len(texts), 512):
        enc = tok(texts[k:k + 512], add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
        n += sum(len(ids) for ids in enc["input_ids"])
    dt = time.perf_counter() - t0
    print(f"floor: {len(texts)} texts, {n} tokens, {dt:.1f} s", flush=True)
    return dt


def run_job(stage: str, params: dict, log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.call([sys.executable, "-m", "agentflan.cli", stage, "--params", json.dumps(params)],
                             stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    if rc:
        raise SystemExit(f"{stage} failed (exit {rc}); log: {log}")
    return time.perf_counter() - t0


def ablation_jobs(out: Path, tag: str, counts: Path | None, jobs: int) -> tuple[float, dict]:
    from agentflan.config import datasets, load_config
    cfg = load_config(ROOT / "config" / "paper.yaml")
    ab = cfg["ablations"]

    def one(name_spec):
        name, spec = name_spec
        d = out / tag / name
        d.mkdir(parents=True, exist_ok=True)
        params = dict(dataset_id=name, spec=spec, converted_dir=str(out / "converted"),
                      sharegpt_path=str(out / "general" / "sharegpt.jsonl"), tokenizer_dir=str(out / "tokenizer"),
                      max_length=cfg["data"]["max_length"], seed=cfg["seed"], capability_mode=ab["capability_mode"],
                      sharegpt_mode=ab["sharegpt_mode"], sharegpt_ratio=ab["sharegpt_ratio"],
                      audit_samples=ab["audit_samples"], out_data=str(d / "train.jsonl"),
                      out_stats=str(d / "stats.json"), out_audit=str(d / "audit.md"))
        if counts is not None:
            params["token_counts"] = str(counts)
        return name, run_job("ablation", params, d / "job.log")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        per = dict(pool.map(one, sorted(datasets(cfg).items())))
    return time.perf_counter() - t0, per


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/agentflan-bench"))
    ap.add_argument("--fraction", type=float, default=1.0, help="share of the release-sized scale")
    ap.add_argument("--jobs", type=int, default=2, help="ablation jobs at a time (snakemake --cores)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                    help="token_counts worker processes to time (the last one counts in the ratio)")
    ap.add_argument("--baseline", action="store_true", help="also time the ablation jobs without the cache")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    from agentflan.config import load_config
    max_length = load_config(ROOT / "config" / "paper.yaml")["data"]["max_length"]
    print(f"machine: {machine()}", flush=True)
    info = prepare(out, args.fraction)
    print(f"corpus: {info['records']} records, {info['bytes'] / 1e6:.1f} MB of converted JSON lines "
          f"(miniworld scale x{args.fraction}), Llama-2 tokenizer, max_length {max_length}", flush=True)
    t_floor = floor(out)
    counts = out / "token_counts.jsonl"
    times = {}
    for workers in sorted(set(args.workers)):
        log = out / f"token_counts.w{workers}.log"
        times[workers] = run_job("token_counts", dict(converted_dir=str(out / "converted"),
                                                      sharegpt_path=str(out / "general" / "sharegpt.jsonl"),
                                                      tokenizer_dir=str(out / "tokenizer"), max_length=max_length,
                                                      out=str(counts), workers=workers), log)
        print(f"token_counts job, {workers} worker process(es): {times[workers]:.1f} s "
              f"({log.read_text().strip().splitlines()[-1]})", flush=True)
    t_counts = times[args.workers[-1]]
    t_new, per_new = ablation_jobs(out, "new", counts, args.jobs)
    print(f"ablation jobs with the cache ({len(per_new)} jobs, {args.jobs} at a time): {t_new:.1f} s wall; "
          + ", ".join(f"{k} {v:.1f}" for k, v in per_new.items()), flush=True)
    total = t_counts + t_new
    print(f"ablations work (token_counts + ablation jobs): {total:.1f} s = {total / t_floor:.2f}x the floor "
          f"({t_floor:.1f} s)", flush=True)
    if args.baseline:
        t_old, per_old = ablation_jobs(out, "old", None, args.jobs)
        print(f"ablation jobs without the cache: {t_old:.1f} s wall = {t_old / t_floor:.2f}x the floor; "
              + ", ".join(f"{k} {v:.1f}" for k, v in per_old.items()), flush=True)
        for name in per_new:
            a, b = (json.loads((out / tag / name / "stats.json").read_text()) for tag in ("new", "old"))
            a.pop("provenance", None)
            b.pop("provenance", None)
            if a != b:
                raise SystemExit(f"stats of {name} differ with and without the cache")
        print("stats.json of every ablation: equal with and without the cache (provenance aside)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
