"""Benchmark of the data build near the tokenizer floor (issue 12; results in docs/benchmarks.md).

Generates a release-sized corpus (the miniworld generator at a large scale: the seven Agent-FLAN
files and ShareGPT in the released files' shapes, about 40k records at ``--fraction 1``), converts
it, and times, side by side in one run on the real Llama-2 tokenizer (tests/sptokenizers.py):

* **floor**: one batched tokenisation of every rendered conversation, in this process, without
  loading or start-up time, batches of 512, ``split_special_tokens``, with offsets: through the
  ``transformers`` call the template makes (``tok(texts, return_offsets_mapping=True, ...)``)
  and through the ``tokenizers`` backend directly (``encode_batch``, what the ``token_counts``
  job calls; the lower of the two is the floor of the ratio). Each is timed twice, the faster
  run counts, and all of it again after the new path's jobs: the ratios use the mean of the two
  (the load of a shared machine drifts);
* **the ablations work** as the DAG runs it, each job a ``python -m agentflan.cli`` process as
  Snakemake starts it: the ``token_counts`` job (``--jobs`` workers), then the ``ablations`` job that builds every
  ablation data set of config/paper.yaml (build + stats + writing the data set, stats and audit
  dump) in ``--jobs`` forked workers (``snakemake --cores 2``: two);
* **per data set** (``--per-dataset``): the same data sets as twelve ``ablation`` jobs, one per
  data set, ``--jobs`` at a time (the DAG's shape before this change);
* **before** (``--before SRC``): the token_counts job and the twelve per-data-set ``ablation`` jobs
  run with the package at ``SRC`` (the ``src`` directory of an earlier checkout, e.g. from
  ``git archive``) first on ``PYTHONPATH``;
* **no cache** (``--baseline``): the per-data-set jobs without the token-count cache (every job
  tokenises its records).

Every variant's outputs are compared with the new path's: train.jsonl and audit.md byte for
byte, stats.json byte for byte apart from its provenance stamp, token_counts.jsonl's rows byte
for byte (its header's format version and the file index that version 2 adds aside). Each job's
wall time and CPU time (user + system, its worker processes included) are printed; the machine
(CPU model, cores, load average), the corpus, and the ratios to the floor.

* **release bytes** (``--release-bytes``): the generator's records are about 1.3 KB, the
  release's about 6.4 KB (219 MB in 34,442 rows); this lengthens the seven Agent-FLAN files'
  untrained turns (tool documentation, queries, observations) with the file's own texts until
  each file has its released size scaled to the generated rows (:func:`lengthen`). ShareGPT is
  left as generated (the paper's ShareGPT share is not known in bytes).

    python bench/data_build.py --out /tmp/agentflan-bench [--fraction 1.0] [--jobs 2]
                               [--per-dataset] [--before /tmp/old/src] [--baseline] [--release-bytes]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# Released-size scale: 20,000 ToolBench trajectories (10/60/30 % react/tflan/cot), 3,000 instruct,
# 2,000 negatives, 300 per AgentInstruct task and file (6 tasks, 2 files), 12,000 ShareGPT.
SCALE = {"toolbench_pool": 20000, "toolbench_wiki": 1000, "instruct": 3000, "negative": 2000,
         "agentinstruct_per_task": 300, "sharegpt": 12000, "teval_per_file": 0, "glaive": 0,
         "hotpotqa_per_level": 0, "mmlu": 0, "gsm8k": 0, "humaneval": 0, "pretrain": 0}
SHAREGPT = "anon8231489123/ShareGPT_Vicuna_unfiltered/ShareGPT_V3_unfiltered_cleaned_split.json"
# The released files' sizes (Hugging Face internlm/Agent-FLAN, in MB of 10^6 bytes) and its rows in
# all (34,442): ../shared/paper/experiments.md section 3.2. --release-bytes lengthens the generated
# records to the release's bytes per record (below).
RELEASE_MB = {"agent_instruct_react": 6.64, "agent_instruct_tflan": 8.44, "toolbench_instruct_j1s1_3k": 17.6,
              "toolbench_negative": 0.925, "toolbench_react_10p": 18.2, "toolbench_tflan_60p_r10r5u7": 120.0,
              "toolbench_tflan_cot_30p": 47.5}
RELEASE_ROWS = 34442


def lengthen(records: list[dict], target_bytes: float) -> list[dict]:
    """``records`` with their untrained turns (system prompts with tool documentation, user
    queries, tool observations: most of the release's bytes) lengthened until the file's JSON
    lines reach about ``target_bytes``. Each such turn gets other records' turns of the same role
    appended (a walk over the file's own texts that starts where a hash of the record's turns
    says, so the vocabulary and the tokens per byte stay the corpus's, and records with the same
    turns stay the same); trained turns, ids and capabilities are untouched, so every record keeps
    its structure and its trained tokens."""
    import zlib

    from agentflan.io import dumps
    size = sum(len(dumps(r).encode("utf-8")) + 1 for r in records)
    if size >= target_bytes:
        return records
    pools: dict[str, list[str]] = {}
    for r in records:
        for t in r["turns"]:
            if not t["train"]:
                pools.setdefault(t["role"], []).append(t["content"])
    untrained = sum(len(dumps(text).encode("utf-8")) - 2 for pool in pools.values() for text in pool)
    grow = 1 + (target_bytes - size) / max(1, untrained)   # only the untrained texts grow
    out = []
    for r in records:
        i = zlib.crc32(dumps(r["turns"]).encode("utf-8"))
        turns = []
        for j, t in enumerate(r["turns"]):
            if not t["train"]:
                pool, text = pools[t["role"]], t["content"]
                want, k = len(text) * grow, 0
                while len(text) < want:
                    text += "\n" + pool[(i * 7919 + j * 104729 + k * 15485863) % len(pool)]
                    k += 1
                t = {**t, "content": text}
            turns.append(t)
        out.append({**r, "turns": turns})
    return out


def prepare(out: Path, fraction: float, release_bytes: bool = False) -> dict:
    """Corpus in the DAG's layout under ``out`` (converted/ with its skip list,
    general/sharegpt.jsonl, tokenizer/). ``release_bytes``: the Agent-FLAN files lengthened to the
    release's bytes per record (:func:`lengthen`; each file to its released size scaled by the
    generated rows over the release's)."""
    from agentflan import miniworld
    from agentflan.convert import SKIPPED_NAME, convert_records
    from agentflan.download import agentflan_files
    from agentflan.io import write_json, write_jsonl
    from agentflan.sharegpt import load_sharegpt
    from agentflan.tokcache import recorded_view, write_view
    from sptokenizers import llama2_tokenizer_dir

    scale = {k: (max(1, round(v * fraction)) if v else 0) for k, v in SCALE.items()}
    marker = out / "corpus.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info["scale"] == scale and info.get("release_bytes", False) == release_bytes:
            if recorded_view(out / "tokenizer") is None:   # a corpus prepared by an older version
                write_view(out / "tokenizer")
            return info
    shutil.rmtree(out, ignore_errors=True)
    raw = out / "raw"
    miniworld.generate(raw, seed=0, scale=scale)
    files = agentflan_files(raw / "internlm" / "Agent-FLAN")
    n, size, skipped, converted = 0, 0, {}, {}
    for stem, path in sorted(files.items()):
        converted[stem], skipped[stem] = convert_records(path, stem)
    rows = sum(len(recs) for recs in converted.values())
    for stem, recs in sorted(converted.items()):
        if release_bytes:
            recs = lengthen(recs, RELEASE_MB[stem] * 1e6 * rows / RELEASE_ROWS)
        write_jsonl(out / "converted" / f"{stem}.jsonl", recs)
        n += len(recs)
        size += (out / "converted" / f"{stem}.jsonl").stat().st_size
    write_json(out / "converted" / SKIPPED_NAME, skipped)
    general = load_sharegpt(raw / SHAREGPT, english_only=True)
    write_jsonl(out / "general" / "sharegpt.jsonl", general)
    n += len(general)
    size += (out / "general" / "sharegpt.jsonl").stat().st_size
    shutil.copytree(llama2_tokenizer_dir(), out / "tokenizer")
    write_view(out / "tokenizer")   # as the tokenizer job does (token_counts reads the record)
    shutil.rmtree(raw)
    info = {"scale": scale, "records": n, "bytes": size, "release_bytes": release_bytes}
    marker.write_text(json.dumps(info, sort_keys=True))
    return info


def floor(out: Path) -> dict[str, float]:
    """Seconds for one batched tokenisation of every rendered conversation: through the
    transformers call and through the tokenizers backend (the faster of two runs each)."""
    from agentflan.io import read_jsonl
    from agentflan.modeling import load_tokenizer
    from agentflan.template import render
    records = [r for p in sorted((out / "converted").glob("*.jsonl")) for r in read_jsonl(p)]
    records += read_jsonl(out / "general" / "sharegpt.jsonl")
    texts = [render(r["turns"]) for r in records]
    tok = load_tokenizer(str(out / "tokenizer"))
    backend = tok.backend_tokenizer

    def wrapper() -> int:
        n = 0
        for k in range(0, len(texts), 512):
            enc = tok(texts[k:k + 512], add_special_tokens=False, return_offsets_mapping=True,
                      split_special_tokens=True)
            n += sum(len(ids) for ids in enc["input_ids"])
        return n

    def raw() -> int:
        n = 0
        before, backend.encode_special_tokens = backend.encode_special_tokens, True
        try:
            for k in range(0, len(texts), 512):
                n += sum(len(e.offsets) for e in backend.encode_batch(texts[k:k + 512], add_special_tokens=False))
        finally:
            backend.encode_special_tokens = before
        return n

    times = {}
    for name, fn in (("transformers call", wrapper), ("tokenizers backend", raw)) * 2:
        t0, c0 = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
        n = fn()
        dt, cpu = time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - c0
        if dt < times.get(name, (float("inf"), 0))[0]:
            times[name] = (dt, cpu)
        print(f"floor, {name}: {len(texts)} texts, {n} tokens, {dt:.1f} s (CPU {cpu:.1f} s)", flush=True)
    return times


def _cpu(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_job(stage: str, params: dict, log: Path, src: Path | None = None) -> float:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "agentflan.cli", stage, "--params", json.dumps(params)],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{stage} failed (exit {proc.returncode}); log: {log}")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def _spec_params(cfg: dict) -> dict:
    ab = cfg["ablations"]
    return dict(max_length=cfg["data"]["max_length"], seed=cfg["seed"], capability_mode=ab["capability_mode"],
                sharegpt_mode=ab["sharegpt_mode"], sharegpt_ratio=ab["sharegpt_ratio"],
                audit_samples=ab["audit_samples"])


def _inputs(out: Path) -> dict:
    return dict(converted_dir=str(out / "converted"), sharegpt_path=str(out / "general" / "sharegpt.jsonl"),
                tokenizer_dir=str(out / "tokenizer"))


def ablation_jobs(out: Path, tag: str, counts: Path | None, jobs: int, src: Path | None = None
                  ) -> tuple[float, float, dict]:
    """The twelve per-data-set ``ablation`` jobs, ``jobs`` at a time: wall, CPU, {name: wall}."""
    from agentflan.config import datasets, load_config
    cfg = load_config(ROOT / "config" / "paper.yaml")

    def one(name_spec):
        name, spec = name_spec
        d = out / tag / name
        d.mkdir(parents=True, exist_ok=True)
        params = dict(dataset_id=name, spec=spec, **_inputs(out), **_spec_params(cfg), out_data=str(d / "train.jsonl"),
                      out_stats=str(d / "stats.json"), out_audit=str(d / "audit.md"))
        if counts is not None:
            params["token_counts"] = str(counts)
        return name, run_job("ablation", params, d / "job.log", src)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        per = dict(pool.map(one, sorted(datasets(cfg).items())))
    return time.perf_counter() - t0, sum(c for _, c in per.values()), {k: w for k, (w, _) in per.items()}


def ablations_job(out: Path, tag: str, counts: Path, workers: int) -> tuple[float, float, dict]:
    """The one ``ablations`` job of the DAG (every data set, ``workers`` forked workers): wall, CPU,
    {name: wall of that data set within the job}."""
    from agentflan.config import datasets, load_config
    cfg = load_config(ROOT / "config" / "paper.yaml")
    names = sorted(datasets(cfg))
    params = dict(datasets=datasets(cfg), **_inputs(out), **_spec_params(cfg), token_counts=str(counts),
                  workers=workers,
                  outputs={n: {"data": str(out / tag / n / "train.jsonl"), "stats": str(out / tag / n / "stats.json"),
                               "audit": str(out / tag / n / "audit.md")} for n in names},
                  benchmarks={n: str(out / tag / n / "benchmark.tsv") for n in names})
    wall, cpu = run_job("ablations", params, out / tag / "ablations.log")
    per = {n: float((out / tag / n / "benchmark.tsv").read_text().splitlines()[1].split("\t")[0]) for n in names}
    return wall, cpu, per


def token_counts_job(out: Path, counts: Path, max_length: int, log: Path, src: Path | None = None,
                     workers: int = 1) -> tuple[float, float]:
    params = dict(**_inputs(out), max_length=max_length, out=str(counts))
    if src is None:   # the rule gives the job its cores (an earlier version's rule gave it one)
        params["workers"] = workers
    return run_job("token_counts", params, log, src)


def _count_rows(path: Path) -> tuple:
    """A token_counts.jsonl without what its format version adds: the header without its format
    and file count, and the rows byte for byte (version 2 adds an index of the files read)."""
    lines = path.read_bytes().split(b"\n")
    head = json.loads(lines[0])
    n = head["records"]
    return {k: v for k, v in head.items() if k not in ("format", "files")}, lines[1:1 + n]


def same_outputs(out: Path, a: str, b: str, names) -> None:
    """Every output under ``out/a`` equals the one under ``out/b`` (token_counts.jsonl, and per
    data set train.jsonl and audit.md byte for byte, stats.json apart from its provenance stamp);
    exits if not."""
    if (out / a / "token_counts.jsonl").exists() and (out / b / "token_counts.jsonl").exists():
        if _count_rows(out / a / "token_counts.jsonl") != _count_rows(out / b / "token_counts.jsonl"):
            raise SystemExit(f"token_counts.jsonl differs between {a} and {b}")
    for name in names:
        for fname in ("train.jsonl", "audit.md", "stats.json"):
            x, y = (out / tag / name / fname for tag in (a, b))
            if fname == "stats.json":
                x, y = (json.loads(p.read_text()) for p in (x, y))
                x.pop("provenance", None)
                y.pop("provenance", None)
                same = json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)
            else:
                same = x.read_bytes() == y.read_bytes()
            if not same:
                raise SystemExit(f"{name}/{fname} differs between {a} and {b}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/agentflan-bench"))
    ap.add_argument("--fraction", type=float, default=1.0, help="share of the release-sized scale")
    ap.add_argument("--jobs", type=int, default=2, help="cores (snakemake --cores): ablation workers or jobs")
    ap.add_argument("--per-dataset", action="store_true", help="also time one ablation job per data set")
    ap.add_argument("--before", type=Path, help="src directory of an earlier version to time as well")
    ap.add_argument("--baseline", action="store_true", help="also time the ablation jobs without the cache")
    ap.add_argument("--release-bytes", action="store_true",
                    help="lengthen the Agent-FLAN files' records to the release's bytes per record")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    from agentflan.config import datasets, load_config
    cfg = load_config(ROOT / "config" / "paper.yaml")
    names = sorted(datasets(cfg))
    max_length = cfg["data"]["max_length"]
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    info = prepare(out, args.fraction, args.release_bytes)
    print(f"corpus: {info['records']} records, {info['bytes'] / 1e6:.1f} MB of converted JSON lines "
          f"(miniworld scale x{args.fraction}"
          f"{', lengthened to the release bytes per record' if args.release_bytes else ''}), "
          f"Llama-2 tokenizer, max_length {max_length}", flush=True)
    floors = [floor(out)]   # measured again after the new path's jobs; the ratios use the mean
    rows = []

    def report(tag: str, what: str, t_counts, t_jobs, per: dict) -> None:
        total, cpu = t_counts[0] + t_jobs[0], t_counts[1] + t_jobs[1]
        print(f"[{tag}] {what}: {t_jobs[0]:.1f} s (CPU {t_jobs[1]:.1f} s); per data set "
              + ", ".join(f"{k} {v:.1f}" for k, v in sorted(per.items())), flush=True)
        print(f"[{tag}] ablations work (token_counts + {what}): {total:.1f} s (CPU {cpu:.1f} s); "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        rows.append((tag, what, t_counts, t_jobs, total, cpu))

    def counts_job(tag: str, src: Path | None) -> tuple[float, float]:
        log = out / tag / "token_counts.log"
        t = token_counts_job(out, out / tag / "token_counts.jsonl", max_length, log, src, args.jobs)
        print(f"[{tag}] token_counts job: {t[0]:.1f} s (CPU {t[1]:.1f} s) "
              f"({log.read_text().strip().splitlines()[-1]})", flush=True)
        return t

    if args.before is not None:
        t_counts = counts_job("before", args.before.resolve())
        wall, cpu, per = ablation_jobs(out, "before", out / "before" / "token_counts.jsonl", args.jobs,
                                       args.before.resolve())
        report("before", f"12 ablation jobs, {args.jobs} at a time", t_counts, (wall, cpu), per)
    t_counts = counts_job("new", None)
    wall, cpu, per = ablations_job(out, "new", out / "new" / "token_counts.jsonl", args.jobs)
    report("new", f"one ablations job, {args.jobs} workers", t_counts, (wall, cpu), per)
    floors.append(floor(out))
    if args.per_dataset:
        wall, cpu, per = ablation_jobs(out, "per-dataset", out / "new" / "token_counts.jsonl", args.jobs)
        report("per-dataset", f"12 ablation jobs, {args.jobs} at a time", t_counts, (wall, cpu), per)
    if args.baseline:
        wall, cpu, per = ablation_jobs(out, "nocache", None, args.jobs)
        print(f"[nocache] 12 ablation jobs without the cache: {wall:.1f} s (CPU {cpu:.1f} s); "
              + ", ".join(f"{k} {v:.1f}" for k, v in per.items()), flush=True)
    for tag, ran in (("before", args.before is not None), ("per-dataset", args.per_dataset),
                     ("nocache", args.baseline)):
        if ran:
            same_outputs(out, tag, "new", names)
            print(f"outputs of {tag} and new: the same (stats.json apart from its provenance stamp)", flush=True)
    # the floor: the faster way of tokenising, the mean of its measurements before and after the
    # new path's jobs (the load of a shared machine drifts)
    kind = min(floors[0], key=lambda k: floors[0][k][0])
    t_floor = sum(f[kind][0] for f in floors) / len(floors)
    c_floor = sum(f[kind][1] for f in floors) / len(floors)
    print(f"\nsummary (load average {os.getloadavg()[0]:.1f} at the end)", flush=True)
    for k in floors[0]:
        print(f"floor, {k}: " + ", then ".join(f"{f[k][0]:.1f} s (CPU {f[k][1]:.1f} s)" for f in floors), flush=True)
    print("| version | token_counts job | ablation data sets | in all | x floor | CPU in all | x floor's CPU |",
          flush=True)
    print(f"| floor: one batch tokenisation ({kind}, mean of {len(floors)}) | | | {t_floor:.1f} | 1.00 "
          f"| {c_floor:.1f} | 1.00 |", flush=True)
    for tag, what, t_counts, t_jobs, total, cpu in rows:
        print(f"| {tag} | {t_counts[0]:.1f} | {what}: {t_jobs[0]:.1f} | {total:.1f} | {total / t_floor:.2f} "
              f"| {cpu:.1f} | {cpu / c_floor:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
