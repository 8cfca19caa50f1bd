"""One function per Snakemake job. Each takes plain paths and options (the rule's ``params``) and
calls into the stage modules; the rules in workflow/rules/*.smk do nothing else.

Run one by hand with ``python -m agentflan.cli <stage> --params '<json>'``.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import shutil
from pathlib import Path

from . import provenance as prov
from .download import AGENTFLAN_STEMS
from .io import DataError, read_json, read_jsonl, write_json, write_jsonl, write_text

log = logging.getLogger("agentflan")

SOURCE_REPOS = {
    "agentflan": "internlm/Agent-FLAN",
    "sharegpt": "anon8231489123/ShareGPT_Vicuna_unfiltered",
    "teval": "lovesnowbest/T-Eval",
    "glaive": "glaiveai/glaive-function-calling-v2",
    "hotpotqa": "hotpotqa/hotpot_qa",
    "mmlu": "cais/mmlu",
    "gsm8k": "openai/gsm8k",
    "humaneval": "openai/openai_humaneval",
    "pretrain": "miniworld/pretrain",
}

# ----------------------------------------------------------------------------- provenance
# Every result a stage writes carries a stamp (agentflan.provenance, docs/CONTRACTS.md "Provenance"):
# JSON results a top-level "provenance" object, JSONL and CSV results a <file>.provenance.json
# sidecar. The config subset is the stage's own parameters minus the paths (bound on entry by
# @_stamped, so a direct call from Python records the same as the cli).
_PARAMS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("agentflan_stage_params", default=None)


def _stamped(fn):
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        params = json.loads(json.dumps(dict(bound.arguments), sort_keys=True, default=str))
        token = _PARAMS.set(params)
        try:
            prov.log_revision(f"[{fn.__name__}]")
            return fn(*args, **kwargs)
        finally:
            _PARAMS.reset(token)
    return wrapper


def _prov(*inputs) -> dict:
    """The stamp of an output of the running stage, from its parameters and these input paths."""
    params = _PARAMS.get()
    if params is None:
        raise RuntimeError("stages._prov outside a @_stamped stage function")
    return prov.stamp(prov.config_subset(params), inputs)


def _with_prov(obj: dict, st: dict) -> dict:
    return {**obj, "provenance": st}


# ----------------------------------------------------------------------------- data
def miniworld(raw_dir: str, seed: int, scale: dict, manifests: dict) -> None:
    """Generate every raw source of the miniature, then one manifest per source."""
    from . import miniworld as mw
    manifest = mw.generate(Path(raw_dir), seed=seed, scale=scale or None)
    for source, out in manifests.items():
        repo = SOURCE_REPOS[source]
        files = {k: v for k, v in manifest.items() if k.startswith(repo + "/")}
        if not files:
            raise DataError(raw_dir, f"miniworld wrote no file for source {source!r} ({repo})")
        write_json(out, {"source": source, "repo_id": repo, "origin": "miniworld", "seed": seed, "files": files})


def fetch(source: str, spec: dict, raw_dir: str, lock: str, mirror: str | None, update_lock: bool,
          manifest: str) -> None:
    """Download (or copy from the mirror) one source at its pinned revision, verified by sha256."""
    from .download import SourceSpec, fetch_source
    s = SourceSpec(name=source, repo_id=spec["repo_id"], repo_type=spec.get("repo_type", "dataset"),
                   revision=spec.get("revision", "main"), files=list(spec["files"]),
                   required=list(spec["files"]))
    info = fetch_source(s, Path(raw_dir), Path(lock), mirror=Path(mirror) if mirror else None,
                        update_lock=update_lock)
    write_json(manifest, {"source": source, "repo_id": spec["repo_id"], "origin": "mirror" if mirror else "hub",
                          "lock": info})


def convert(raw_dir: str, out_dir: str) -> None:
    from .convert import convert_release
    from .download import agentflan_files
    files = agentflan_files(Path(raw_dir) / SOURCE_REPOS["agentflan"])
    convert_release({stem: files[stem] for stem in AGENTFLAN_STEMS}, Path(out_dir))


@_stamped
def sharegpt(raw_dir: str, out: str, stats: str, english_only: bool, max_conversations: int | None,
             seed: int) -> None:
    from .sharegpt import load_sharegpt_with_stats
    path = Path(raw_dir) / SOURCE_REPOS["sharegpt"] / "ShareGPT_V3_unfiltered_cleaned_split.json"
    records, st = load_sharegpt_with_stats(path, english_only=english_only,
                                           max_conversations=max_conversations, seed=seed)
    for r in records:
        r["task"] = "general"
    stamp = _prov(path)
    write_jsonl(out, records)
    prov.write_sidecar(out, stamp)
    write_json(stats, _with_prov(st, stamp))


@_stamped
def wiki_store(raw_dir: str, files: list[str], out: str, expected_pages: int | None = None) -> None:
    """Build HotpotQA's local Wikipedia (SQLite FTS5) from a downloaded page corpus."""
    import glob as _glob
    from .evaluation import wikistore
    paths = sorted({Path(p) for pat in files for p in _glob.glob(str(Path(raw_dir) / pat))})
    if not paths:
        raise DataError(raw_dir, f"no wiki page file matches {files}")
    info = wikistore.build(paths, out, expected_pages=expected_pages)
    log.info("wiki store %s: %d pages from %s", out, info["pages"], [p.name for p in paths])


@_stamped
def eval_items(benchmark: str, raw_dir: str, options: dict, out: str) -> None:
    from .evaluation.registry import load_items
    items = load_items(benchmark, Path(raw_dir), options)
    if not items:
        raise DataError(raw_dir, f"benchmark {benchmark!r} produced no evaluation item")
    write_jsonl(out, items)
    repo = SOURCE_REPOS.get({"agenth": "glaive"}.get(benchmark, benchmark))
    prov.write_sidecar(out, _prov(Path(raw_dir) / repo if repo else None))


def _corpus_texts(converted_dir: str, sharegpt_path: str, pretrain_path: str | None):
    from .template import render
    for path in sorted(Path(converted_dir).glob("*.jsonl")):
        for rec in read_jsonl(path):
            yield render(rec["turns"])
    for rec in read_jsonl(sharegpt_path):
        yield render(rec["turns"])
    if pretrain_path:
        for rec in read_jsonl(pretrain_path):
            yield rec["text"]


def tokenizer(kind: str, out_dir: str, converted_dir: str, sharegpt_path: str, pretrain_path: str | None,
              vocab_size: int, name_or_path: str | None, revision: str | None) -> None:
    """Train the miniature's BPE or save the configured pretrained tokenizer; either must pass
    :func:`agentflan.validation.check_tokenizer` (else no tokenizer directory is left). The
    directory also records how transformers loads it (:func:`agentflan.tokcache.write_view`), so
    the ``token_counts`` job can tokenise from ``tokenizer.json`` without loading transformers."""
    from .modeling import load_tokenizer, train_bpe_tokenizer
    from .tokcache import write_view
    from .validation import check_tokenizer
    if kind == "bpe":
        train_bpe_tokenizer(_corpus_texts(converted_dir, sharegpt_path, pretrain_path), Path(out_dir), vocab_size)
        try:
            check_tokenizer(load_tokenizer(out_dir), name=out_dir)
            write_view(out_dir)
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
    else:
        tok = load_tokenizer(name_or_path, revision=revision)
        check_tokenizer(tok, name=name_or_path)
        tmp = Path(out_dir + ".tmp")
        tok.save_pretrained(tmp)
        write_view(tmp)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)


def _load_converted(converted_dir: str, stems=None, lines: dict | None = None, counts=None,
                    keys: dict | None = None) -> dict[str, list[dict]]:
    """The converted files (only ``stems`` where given; a missing one is left out). ``lines``, if
    given, receives ``{id(record): its line}`` for the records whose line can be written again as
    it is, and ``keys`` their cache keys (see :func:`_read_records`)."""
    out = {}
    for p in sorted(Path(converted_dir).glob("*.jsonl")):
        if stems is None or p.stem in stems:
            if lines is None:
                out[p.stem] = read_jsonl(p)
            else:
                out[p.stem] = _read_records(p, lines, counts, keys)
    return out


def _read_records(path, lines: dict, counts=None, keys: dict | None = None) -> list[dict]:
    """The records of a JSON Lines file; ``lines`` receives ``{id(record): its line}`` for those
    whose line can be written again as it is, ``keys`` (if given) their cache keys. A file the
    token_counts job read (the same bytes: its sha256 is in ``counts.files``) and found all in
    that form is parsed without checking again, its keys taken from the index."""
    import hashlib

    from .io import _orjson, read_file_bytes, read_jsonl_lines
    from .tokcache import record_key
    data = read_file_bytes(path)
    known = counts.files.get(hashlib.sha256(data).hexdigest()) if counts is not None else None
    if known is not None and known[1] and _orjson is not None:
        raws = data.split(b"\n")
        raws.pop()   # after the last newline
        records = [_orjson.loads(raw) for raw in raws]
        if len(records) == len(known[0]):
            lines.update(zip(map(id, records), raws))
            if keys is not None:
                keys.update(zip(map(id, records), known[0]))
            return records
    records, raws = read_jsonl_lines(path, data=data)
    lines.update((id(r), raw) for r, raw in zip(records, raws) if raw is not None)
    if keys is not None:
        keys.update((id(r), record_key(r)) for r in records)
    return records


@_stamped
def card(converted_dir: str, sharegpt_path: str, tokenizer_dir: str, max_length: int, out_json: str,
         out_md: str, provenance: dict, token_counts: str | None = None) -> None:
    from .convert import build_card, load_skipped
    from .tokcache import LazyTemplateTokenizer, load_for
    converted = _load_converted(converted_dir)
    converted["sharegpt"] = read_jsonl(sharegpt_path)
    counts = load_for(token_counts, tokenizer_dir, max_length)
    build_card(converted, LazyTemplateTokenizer(tokenizer_dir), max_length, Path(out_json),
               Path(out_md), provenance, skipped=load_skipped(Path(converted_dir)), counts=counts)
    # The card's own "provenance" key is the data's origin (the rule's parameter): the stamp is a sidecar.
    prov.write_sidecar(out_json, _prov(converted_dir, sharegpt_path, tokenizer_dir))
    if counts is not None:
        print(f"[card] token counts from {token_counts}; {counts.fallbacks} records tokenised again")


def token_counts(converted_dir: str, sharegpt_path: str, tokenizer_dir: str, max_length: int, out: str,
                 workers: int = 1) -> None:
    """Tokenise every converted and ShareGPT record once; per-turn counts for stats and card."""
    import hashlib

    from .io import read_file_bytes, read_jsonl_lines
    from .tokcache import TokenizerCheck, build, record_key
    check = TokenizerCheck.start(tokenizer_dir)   # transformers' view of the tokenizer, meanwhile
    records: list[dict] = []
    keys: list[str] = []
    files = []   # the index the ablation job reads these files by (tokcache.write_counts)
    for path in [*sorted(Path(converted_dir).glob("*.jsonl")), Path(sharegpt_path)]:
        data = read_file_bytes(path)
        recs, raws = read_jsonl_lines(path, data=data)
        ks = [record_key(r) for r in recs]
        reusable = None not in raws and b"\n".join(raws) + b"\n" == data
        files.append((hashlib.sha256(data).hexdigest(), ks, reusable))
        records += recs
        keys += ks
    summary = build(records, tokenizer_dir, max_length, out, workers=workers, check=check, keys=keys, files=files)
    print(f"[token_counts] {summary}")


@_stamped
def ablation(dataset_id: str, spec: dict, converted_dir: str, sharegpt_path: str, tokenizer_dir: str,
             max_length: int, seed: int, capability_mode: str, sharegpt_mode: str, sharegpt_ratio: float,
             audit_samples: int, out_data: str, out_stats: str, out_audit: str,
             token_counts: str | None = None) -> None:
    """One ablation data set (the rule builds them all in one job: :func:`ablations`)."""
    _ablation_sets({dataset_id: spec}, {dataset_id: {"data": out_data, "stats": out_stats, "audit": out_audit}},
                   dict(converted_dir=converted_dir, sharegpt_path=sharegpt_path, tokenizer_dir=tokenizer_dir,
                        max_length=max_length, seed=seed, capability_mode=capability_mode,
                        sharegpt_mode=sharegpt_mode, sharegpt_ratio=sharegpt_ratio, audit_samples=audit_samples,
                        token_counts=token_counts))


@_stamped
def ablations(datasets: dict, outputs: dict, converted_dir: str, sharegpt_path: str, tokenizer_dir: str,
              max_length: int, seed: int, capability_mode: str, sharegpt_mode: str, sharegpt_ratio: float,
              audit_samples: int, token_counts: str | None = None, workers: int = 1,
              logs: dict | None = None, benchmarks: dict | None = None) -> None:
    """Every ablation data set (``datasets``: id -> spec) in one job: the records are read, and
    their token-count keys computed, once; the data sets are built in ``workers`` forked processes.
    Each data set's outputs (``outputs``: id -> {data, stats, audit}) are what :func:`ablation`
    writes for it alone, provenance stamp included; ``logs`` and ``benchmarks`` (id -> path), if
    given, receive each data set's log lines and its time within the job (Snakemake's benchmark
    columns; those not measured per data set are NA)."""
    _ablation_sets(datasets, outputs,
                   dict(converted_dir=converted_dir, sharegpt_path=sharegpt_path, tokenizer_dir=tokenizer_dir,
                        max_length=max_length, seed=seed, capability_mode=capability_mode,
                        sharegpt_mode=sharegpt_mode, sharegpt_ratio=sharegpt_ratio, audit_samples=audit_samples,
                        token_counts=token_counts),
                   workers=workers, logs=logs, benchmarks=benchmarks)


# What the forked workers of _ablation_sets share (set before the pool forks, read in the children).
_SETS: dict = {}


def _ablation_sets(datasets: dict, outputs: dict, common: dict, workers: int = 1, logs: dict | None = None,
                   benchmarks: dict | None = None) -> None:
    import gc
    import multiprocessing as mp
    import os
    from datetime import timedelta

    from .ablations import SourceCounts, mask_units, source_stems
    from .tokcache import LazyTemplateTokenizer, load_for
    c = common
    counts = load_for(c["token_counts"], c["tokenizer_dir"], c["max_length"])
    # Only the files the data sets draw from. Records a data set does not change are written back
    # as the lines they were read from (the same bytes as dumping them again). What every data
    # set would work out again for the records it shares is worked out once: their cache keys
    # (from the token_counts job's index where it read the same files), counts, sources and
    # cases (SourceCounts), and the hash draws of the capability weights.
    lines: dict[int, bytes] = {}
    keys: dict[int, str] | None = {} if counts is not None else None
    converted = _load_converted(c["converted_dir"], set().union(*map(source_stems, datasets.values())), lines,
                                counts, keys)
    general: list[dict] = []
    if any(spec.get("sharegpt") for spec in datasets.values()):
        general = _read_records(Path(c["sharegpt_path"]), lines, counts, keys)
    table = (SourceCounts([r for recs in (*converted.values(), general) for r in recs], counts, c["max_length"], keys)
             if counts is not None else None)
    units: dict = {}
    if c["capability_mode"] == "mask" and any(spec.get("weights") for spec in datasets.values()):
        for recs in converted.values():
            mask_units(recs, c["seed"], units)
    inputs = (c["converted_dir"], c["sharegpt_path"], c["tokenizer_dir"])
    # Every data set's stamp is the one ablation() gives it: its own parameters, these inputs.
    base = prov.stamp({}, inputs)
    params = {name: json.loads(json.dumps({"dataset_id": name, "spec": spec, **c, "out_data": outputs[name]["data"],
                                           "out_stats": outputs[name]["stats"],
                                           "out_audit": outputs[name]["audit"]}, sort_keys=True, default=str))
              for name, spec in datasets.items()}
    _SETS.update(datasets=datasets, outputs=outputs, common=c, counts=counts, converted=converted, general=general,
                 lines=lines, table=table, units=units, base=base, params=params,
                 seg_tok=LazyTemplateTokenizer(c["tokenizer_dir"]))
    # Largest first, so that the workers finish together.
    order = sorted(datasets, key=lambda n: (-sum(len(converted.get(s, ())) for s in source_stems(datasets[n]))
                                            - (len(general) if datasets[n].get("sharegpt") else 0), n))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(workers, len(order), cpus))
    # The records stay alive to the end: keep the garbage collector from scanning them again and
    # again (and, in forked workers, from copying every page it touches).
    gc.freeze()
    try:
        if workers > 1 and "fork" in mp.get_all_start_methods():
            with mp.get_context("fork").Pool(workers) as pool:
                done = {r["name"]: r for r in pool.imap_unordered(_ablation_set, order)}
        else:
            done = {name: _ablation_set(name) for name in order}
    finally:
        _SETS.clear()
        gc.unfreeze()
    for name in sorted(done):
        r = done[name]
        line = (f"[ablation] {name}: {r['samples']} samples in {r['s']:.1f} s"
                + (f"; token counts from {c['token_counts']}; {r['fallbacks']} records tokenised again"
                   if counts is not None else ""))
        print(line, flush=True)
        if logs and name in logs:
            write_text(logs[name], f"{line}\n")
        if benchmarks and name in benchmarks:
            s = r["s"]
            write_text(benchmarks[name],
                       "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                       f"{s:.4f}\t{timedelta(seconds=round(s, 4))}\t{r['max_rss']:.2f}"
                       f"\tNA\tNA\tNA\tNA\tNA\tNA\t{r['cpu_s']:.2f}\n")


def _ablation_set(name: str) -> dict:
    """Build, count and write one data set of _ablation_sets (in a forked worker or in-process)."""
    import resource
    import time

    from .ablations import audit_dump, build_dataset, dataset_stats
    from .io import dumps_bytes, write_lines
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    S = _SETS
    c, spec, out, counts = S["common"], S["datasets"][name], S["outputs"][name], S["counts"]
    origin: dict[int, dict] = {}
    records = build_dataset(spec, S["converted"], S["general"], seed=c["seed"],
                            capability_mode=c["capability_mode"], sharegpt_mode=c["sharegpt_mode"],
                            sharegpt_ratio=c["sharegpt_ratio"], origin=origin, units=S["units"])
    before = counts.fallbacks if counts is not None else 0
    table = S["table"]
    stats = table.stats(records, origin) if table is not None else None
    if stats is None:   # a record the cache lacks (or no cache): tokenised again
        keys = None
        if table is not None:
            keys = [table.keys[g] if (g := table.gid.get(id(origin.get(id(r), r)))) is not None else None
                    for r in records]
        stats = dataset_stats(records, S["seg_tok"], c["max_length"], counts=counts, keys=keys)
    stats.update({"dataset_id": name, "spec": spec, "capability_mode": c["capability_mode"],
                  "sharegpt_mode": c["sharegpt_mode"], "seed": c["seed"]})
    config = prov.config_subset(S["params"][name])
    stamp = {**S["base"], "config": config, "config_hash": prov.sha256_json(config)}
    lines = S["lines"]
    # a copy of a record read from a line that could be written again is a plain value too
    write_lines(out["data"], (lines.get(id(r)) or dumps_bytes(r, plain=id(origin.get(id(r))) in lines)
                              for r in records))
    prov.write_sidecar(out["data"], stamp)
    write_json(out["stats"], _with_prov(stats, stamp))
    write_text(out["audit"], audit_dump(records, c["audit_samples"], name))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"name": name, "samples": len(records), "fallbacks": (counts.fallbacks - before) if counts else 0,
            "s": time.perf_counter() - t0, "cpu_s": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
            "max_rss": r1.ru_maxrss / 1024}


# ----------------------------------------------------------------------------- models
def init_model(arch: dict, tokenizer_dir: str, seed: int, out_dir: str) -> None:
    from .modeling import init_tiny_llama, load_tokenizer
    n = init_tiny_llama(arch, load_tokenizer(tokenizer_dir), seed, Path(out_dir))
    print(f"[init] {out_dir}: {n} parameters")


def standin_checkpoint(model: str, out_dir: str) -> None:
    """Miniature: save the stand-in external checkpoint (a copy of ``model``'s files)."""
    from .external import save_standin
    names = save_standin(model, out_dir)
    print(f"[standin] {out_dir}: {len(names)} files from {model}")


@_stamped
def train(base_model: str, data: str, out_dir: str, metrics: str, config_out: str, recipe: dict,
          model_id: str, checkpoint_dir: str, threads: int, probe_out: str | None = None) -> None:
    from .train import train as run_train
    effective = run_train(base_model=base_model, data_path=Path(data), out_dir=Path(out_dir),
                          metrics_path=Path(metrics), config_path=Path(config_out), recipe=recipe,
                          model_id=model_id, checkpoint_dir=Path(checkpoint_dir), threads=threads,
                          probe_out=Path(probe_out) if probe_out else None)
    if effective:   # the main process (the others return {}): stamp train_config.json and metrics
        stamp = _prov(base_model, data)
        write_json(config_out, _with_prov(effective, stamp))
        prov.write_sidecar(metrics, stamp)


# ----------------------------------------------------------------------------- evaluation
@_stamped
def generate(model: str, items: dict, out: dict, generation: dict, options: dict, threads: int,
             backend: dict | None = None, chat_format: dict | None = None) -> None:
    """Generate every benchmark's predictions with one loaded model (HotpotQA: multi-step episodes).

    Resumable: finished replies go to ``<out>.partial.jsonl`` side files as they are generated; a
    rerun after a kill generates only what is missing. The side files are removed once every
    predictions file is written (Snakemake deletes all outputs of a failed job, so a benchmark
    finished before the kill is resumed from its side file too).

    ``backend`` chooses what answers: absent or ``{"kind": "local"}`` the local model at ``model``
    (:class:`agentflan.generate.Generator` with ``generation``, whose ``backend`` key picks
    ``fast``, ``plain`` or ``vllm``); ``{"kind": "api", "model": name,
    "max_tokens": n, ...}`` an OpenAI-compatible endpoint (:class:`agentflan.api_backend.ApiGenerator`,
    the other keys are its keyword arguments; ``model`` here is then only a label and
    ``generation`` is not used). The API backend keeps its reply cache ``<out>.api-cache.jsonl``
    (never removed: a rerun never pays twice) and writes the run record ``<out>.api.json``.

    ``chat_format`` (local backend; external checkpoints, ``evaluation.external_models``):
    ``{"name": "agentflan" | "llama2-chat" | "fireact", "system_prompt": str | None}``, how prompts are
    rendered (:mod:`agentflan.chat_formats`); absent: ``agentflan``. It is part of the settings
    key of the resume side files and, as a stage parameter, of the predictions' provenance.
    A local model directory must hold safetensors weights (:func:`agentflan.external.check_checkpoint`).

    Every predictions row carries ``"backend"``: the local generation backend (``fast``,
    ``plain``, ``vllm``) or ``api``."""
    import time

    from .evaluation.registry import is_episodic, run_episodes
    from .generate import Generator, ResumeLog, side_path
    from .io import iter_jsonl
    backend = dict(backend or {"kind": "local"})
    kind = backend.pop("kind", "local")
    message_errors: tuple = ()
    if kind == "api":
        from .api_backend import ApiGenerator, MessageError, write_run_record
        message_errors = (MessageError,)
        if not isinstance(backend.get("model"), str):
            raise DataError("params", f"generate: the API backend of {model!r} needs a 'model' name")
        try:
            gen = ApiGenerator(backend.pop("model"), **backend)
        except TypeError as exc:    # an option ApiGenerator does not take
            raise DataError("params", f"generate: API backend of {model!r}: {exc}") from None
        key = gen.settings_key()
        print(f"[generate] {model}: API model {gen.model!r} at {gen.endpoint}, settings key {key}", flush=True)
    elif kind == "local":
        if backend:
            raise DataError("params", f"generate: the local backend takes no options, got {sorted(backend)}")
        from .external import check_checkpoint
        from .fastgen import BackendError
        known = set(inspect.signature(Generator).parameters) - {"model_path", "threads", "chat_format", "system_prompt"}
        if set(generation) - known:
            raise DataError("params", f"generate: unknown evaluation.generation keys {sorted(set(generation) - known)}; "
                                      f"known: {sorted(known)}")
        fmt = dict(chat_format or {"name": "agentflan"})
        if set(fmt) - {"name", "system_prompt"}:
            raise DataError("params", f"generate: chat_format takes name and system_prompt, got {sorted(fmt)}")
        if Path(model).is_dir():
            check_checkpoint(model)
        try:
            gen = Generator(model, threads=threads, **generation, chat_format=fmt.get("name", "agentflan"),
                            system_prompt=fmt.get("system_prompt"))
        except BackendError as exc:     # a bad evaluation.generation value, or a backend that cannot run
            raise DataError("params", f"generate: evaluation.generation of {model!r}: {exc}") from None
        key = gen.settings_key()
        print(f"[generate] settings key {key} ({len(gen.settings()['model'])} model files hashed); "
              f"backend {gen.describe()}; chat format {gen.fmt.describe()}", flush=True)
    else:
        raise DataError("params", f"generate: backend kind {kind!r} is not 'local' or 'api'")
    sides = []
    for benchmark in sorted(items):
        rows = []
        for lineno, row in iter_jsonl(items[benchmark]):
            if not isinstance(row, dict) or not isinstance(row.get("id"), str) \
                    or not isinstance(row.get("messages"), list):
                rid = row.get("id") if isinstance(row, dict) and isinstance(row.get("id"), str) else None
                raise DataError(items[benchmark], "evaluation item needs a string 'id' and a 'messages' list",
                                line=lineno, record=rid)
            rows.append(row)
        if kind == "api":
            rlog = gen.open_log(out[benchmark])
            http0 = (gen.requests, gen.retries)
        else:
            side = side_path(out[benchmark])
            sides.append(side)
            rlog = ResumeLog(side, key)
        r0, g0, t0 = gen.resumed, gen.generated, time.monotonic()
        with rlog:
            print(f"[generate] {benchmark}: {rlog.summary()}", flush=True)
            try:
                if is_episodic(benchmark):
                    preds = run_episodes(rows, gen.keyed_fn(rlog, benchmark), options.get(benchmark, {}),
                                         step_ids=True, benchmark=benchmark)
                else:
                    texts = gen([r["messages"] for r in rows], progress=True, ids=[r["id"] for r in rows],
                                log=rlog, desc=benchmark)
                    preds = [{"id": r["id"], "prediction": t} for r, t in zip(rows, texts)]
            except message_errors as exc:       # a message the chat API cannot take
                raise DataError(items[benchmark], str(exc)) from None
        label = gen.backend if kind == "local" else "api"
        preds = [{**row, "backend": label} for row in preds]
        write_jsonl(out[benchmark], preds)
        prov.write_sidecar(out[benchmark], _prov(items[benchmark], model if kind == "local" else None))
        resumed, generated, secs = gen.resumed - r0, gen.generated - g0, time.monotonic() - t0
        if kind == "api":
            write_run_record(out[benchmark], gen, rlog, n=len(preds), requests=gen.requests - http0[0],
                             retries=gen.retries - http0[1], generated=generated, resumed=resumed)
        rate = f"{generated / secs:.2f}" if secs > 0 else "n/a"
        print(f"[generate] {benchmark}: {len(preds)} predictions; replies: {resumed} resumed, "
              f"{generated} generated in {secs:.1f} s ({rate} items/s)", flush=True)
    for side in sides:
        side.unlink(missing_ok=True)
    if gen.truncated_prompts:
        print(f"[generate] {gen.truncated_prompts} prompts were cut to max_prompt_length (from the left)")


@_stamped
def score(model_id: str, items: dict, predictions: dict, options: dict, out: dict, per_sample: dict,
          seed: int | None = None) -> None:
    """Score every benchmark's predictions (never re-generates). ``seed``: the training seed of a
    model trained with several (training.seeds), recorded in the score file; ``model_id`` is then
    the table's model id, shared by all its seeds."""
    from .evaluation.registry import score as run_score, scoring_info
    for benchmark in sorted(items):
        metrics, rows = run_score(benchmark, read_jsonl(items[benchmark]), read_jsonl(predictions[benchmark]),
                                  options.get(benchmark, {}))
        stamp = _prov(items[benchmark], predictions[benchmark])
        record = {"benchmark": benchmark, "model_id": model_id, "n": len(rows), "metrics": metrics,
                  "provenance": stamp}
        if seed is not None:
            record["seed"] = seed
        # protocol, prompt variant, similarity model and its hash, store: the tables' notes
        record["scoring"] = scoring_info(benchmark, options.get(benchmark, {}))
        write_json(out[benchmark], record)
        write_jsonl(per_sample[benchmark], rows)
        prov.write_sidecar(per_sample[benchmark], stamp)


@_stamped
def harness(model: str, model_id: str, raw_dir: str, options: dict, out: dict, per_sample: dict, results: str,
            threads: int, seed: int | None = None) -> None:
    """Table 4's MMLU, GSM8K and HumanEval of one model through lm-evaluation-harness
    (:mod:`agentflan.evaluation.harness`) on the locked raw files: per benchmark ``lmeval_<b>`` a
    score file and per-sample rows like the score jobs' (metrics from lm-eval's results object),
    and lm-eval's results object itself (``results``)."""
    import tempfile

    from .evaluation import harness as lmh
    from .evaluation.general import split_files
    from .external import check_checkpoint
    if Path(model).is_dir():
        check_checkpoint(model)
    from .config import HARNESS_PREFIX, harness_source
    names = {b: harness_source(b) for b in out}
    if sorted(names.values()) != sorted(lmh.BENCHMARKS) or not all(b.startswith(HARNESS_PREFIX) for b in out):
        raise DataError("params", f"harness: outputs {sorted(out)} are not {HARNESS_PREFIX}<b> for b in {lmh.BENCHMARKS}")
    files: dict = {}
    for b in lmh.BENCHMARKS:
        files[b] = {"test": [str(f) for f in split_files(b, Path(raw_dir))]}
        if b == "mmlu":
            files[b]["dev"] = [str(f) for f in split_files(b, Path(raw_dir), "dev")]
    with tempfile.TemporaryDirectory(prefix="agentflan-harness-") as work:
        done = lmh.run(model, files, options, work, threads=threads)
    inputs = [f for spec in files.values() for paths in spec.values() for f in paths]
    record_all = {}
    for name, b in sorted(names.items()):
        metrics, rows, record = done[b]
        stamp = _prov(*files[b]["test"], *files[b].get("dev", []), model)
        score = {"benchmark": name, "model_id": model_id, "n": len(rows), "metrics": metrics, "provenance": stamp,
                 "scoring": lmh.scoring_info(b, options)}
        if seed is not None:
            score["seed"] = seed
        write_json(out[name], score)
        write_jsonl(per_sample[name], rows)
        prov.write_sidecar(per_sample[name], stamp)
        record_all[b] = record
        print(f"[harness] {name}: {metrics} on {len(rows)} items", flush=True)
    write_json(results, record_all)
    prov.write_sidecar(results, _prov(*inputs, model))


# ----------------------------------------------------------------------------- summaries
@_stamped
def summarize(scores: list[str], models: dict, ablation_stats: list[str], metrics: list[str],
              train_configs: list[str], card_json: str, experiments: dict, example_source: dict,
              out_dir: str, per_sample: list[str] | None = None, api_records: dict | None = None) -> None:
    """Collect every computed result into the summary files the tables and figures read.

    ``per_sample``: the score jobs' ``<benchmark>.per_sample.jsonl`` (default: the file next to
    each score file), for ``bootstrap.csv`` (agentflan.reporting.bootstrap).
    ``api_records``: ``{model_id: [<predictions>.api.json, ...]}`` of the API models; what served
    them and when (:func:`agentflan.external.served_summary`) goes into ``models.csv``."""
    import pandas as pd

    from .external import served_summary
    models = {k: dict(v) for k, v in models.items()}
    for model_id, paths in sorted((api_records or {}).items()):
        models.setdefault(model_id, {}).update(served_summary([read_json(p) for p in sorted(paths)]))

    from .train import load_metrics
    out = Path(out_dir)
    # scores.csv: one row per model, benchmark and metric; with several training seeds (score files
    # with a "seed", training.seeds) one row per seed as well, in a seed column (the tables show
    # the mean over seeds and bootstrap.csv's interval)
    rows = []
    seeded = False
    for path in sorted(scores):
        s = read_json(path)
        seeded = seeded or "seed" in s
        for metric, value in sorted(s["metrics"].items()):
            if value is None or isinstance(value, (int, float)):
                rows.append({"model_id": s["model_id"], "benchmark": s["benchmark"], "metric": metric,
                             "seed": s.get("seed"), "value": value})
    columns = ["model_id", "benchmark", "metric", *(["seed"] if seeded else []), "value"]
    keys = [tuple(r[c] for c in columns[:-1]) for r in rows]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1}, key=str)[0]
        raise DataError("scores", f"two score files give {' / '.join(map(str, dup))}")
    if seeded:   # base, external and API models have no seed (empty)
        rows.sort(key=lambda r: (r["model_id"], r["benchmark"], r["metric"], -1 if r["seed"] is None else r["seed"]))
        for r in rows:
            r["seed"] = "" if r["seed"] is None else str(r["seed"])
    _write_csv(pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns), out / "scores.csv",
               *sorted(scores))
    # how each score was computed where it depends on more than the predictions (T-Eval: protocol,
    # files, similarity model and its sha256), {benchmark: {model_id: info}}, printed in table notes
    scoring: dict = {}
    for path in sorted(scores):
        s = read_json(path)
        if isinstance(s.get("scoring"), dict):
            scoring.setdefault(s["benchmark"], {})[s["model_id"]] = s["scoring"]
    write_json(out / "scoring.json", scoring)
    prov.write_sidecar(out / "scoring.json", _prov(*sorted(scores)))
    # paired bootstrap of the paper's ablation comparisons, intervals of every cell (per-item scores)
    from .reporting import bootstrap as boot
    boot_rows, boot_inputs = boot.from_score_files(scores, per_sample, experiments)
    write_text(out / boot.FILE, boot.to_csv(boot_rows))
    prov.write_sidecar(out / boot.FILE, _prov(*sorted(scores), *boot_inputs))
    _write_csv(pd.DataFrame([{"model_id": k, **v} for k, v in sorted(models.items())]), out / "models.csv",
               *sorted(p for paths in (api_records or {}).values() for p in paths))
    st_rows = []
    for path in sorted(ablation_stats):
        st = read_json(path)
        caps = st["tokens_trained_by_capability"]
        st_rows.append({"dataset_id": st["dataset_id"], "n_samples": st["n_samples"],
                        "tokens_total": st["tokens_total"], "tokens_trained": st["tokens_trained"],
                        **{f"tokens_trained_{c}": caps[c] for c in caps},
                        **{f"case_{c}": st["cases"][c] for c in "abcd"}})
    _write_csv(pd.DataFrame(st_rows), out / "ablation_stats.csv", *sorted(ablation_stats))
    curves = []
    for path in sorted(metrics):
        model_id = Path(path).parent.name
        for row in load_metrics(Path(path)):
            curves.append({"model_id": model_id, "step": row["step"], "category": "all", "loss": row["loss"]})
            for key, value in sorted(row.items()):
                if key.startswith("loss_"):
                    curves.append({"model_id": model_id, "step": row["step"], "category": key[5:], "loss": value})
    _write_csv(pd.DataFrame(curves, columns=["model_id", "step", "category", "loss"]), out / "train_curves.csv",
               *sorted(metrics))
    cfg_rows = []
    for path in sorted(train_configs):
        c = read_json(path)
        cfg_rows.append({"model_id": c["model_id"], "size": models.get(c["model_id"], {}).get("size"),
                         "learning_rate": c["learning_rate"], "warmup_start_lr": c["warmup_start_lr"],
                         "warmup_ratio": c["warmup_ratio"], "lr_scheduler": c["lr_scheduler"],
                         "batch_size": c["batch_size"], "epochs": c["epochs"], "devices": c["devices"],
                         "max_length": c["max_length"], "method": c["method"], "steps": c["steps"]})
    _write_csv(pd.DataFrame(cfg_rows), out / "train_config.csv", *sorted(train_configs))
    # The JSON summaries keep their layout (a copy of the data card, the experiments as configured):
    # their provenance is a sidecar as well, like every file of the summary directory.
    shutil.copyfile(card_json, out / "data_card.json")
    prov.write_sidecar(out / "data_card.json", _prov(card_json))
    write_json(out / "experiments.json", experiments)
    prov.write_sidecar(out / "experiments.json", _prov())
    write_json(out / "examples.json", _examples(**example_source))
    prov.write_sidecar(out / "examples.json", _prov(*(example_source[k] for k in sorted(example_source)
                                                      if k.endswith("_path"))))


def _examples(react_path: str, chat_path: str, scan: int = 200, fallback_react: int = 50,
              fallback_chat: int = 2000) -> dict:
    """The ReAct record and the chat-aligned record that render the same trajectory, for Figure 5.

    The release does not link a ReAct record to its rewrite, so the pair is found by content. First
    choice: the first ReAct record (among the first ``scan`` that call a tool) whose user query is
    also a user turn of some chat-aligned record. Otherwise the pair with the highest Jaccard
    similarity of non-assistant words (first ``fallback_react`` of those ReAct records, first
    ``fallback_chat`` chat records). The similarity is kept in the summary and printed in the
    figure, so an unrelated pair is visible as such."""
    import re

    def norm(text: str) -> str:
        return " ".join(text.split())

    def words(rec: dict) -> frozenset:
        text = " ".join(t["content"] for t in rec["turns"] if t["role"] != "assistant")
        return frozenset(re.findall(r"\w+", text.lower()))

    def jaccard(a: frozenset, b: frozenset) -> float:
        return len(a & b) / max(1, len(a | b))

    react = [r for r in read_jsonl(react_path) if any("Action Input" in t["content"] for t in r["turns"])][:scan]
    chat = read_jsonl(chat_path)
    if not react or not chat:
        raise DataError(react_path if not react else chat_path, "no record to show in Figure 5")
    by_query: dict[str, int] = {}
    for ci, rec in enumerate(chat):
        for t in rec["turns"]:
            if t["role"] == "user":
                by_query.setdefault(norm(t["content"]), ci)
    best = None
    for ri, rec in enumerate(react):
        query = next((norm(t["content"]) for t in rec["turns"] if t["role"] == "user"), None)
        if query and query in by_query:
            best = (ri, by_query[query])
            break
    if best is None:
        chat_words = [words(c) for c in chat[:fallback_chat]]
        scored = max((jaccard(w, cw), -ri, -ci) for ri, w in enumerate(words(r) for r in react[:fallback_react])
                     for ci, cw in enumerate(chat_words))
        best = (-scored[1], -scored[2])
    r, c = react[best[0]], chat[best[1]]
    sim = jaccard(words(r), words(c))
    return {"react": {"id": r["id"], "turns": r["turns"]}, "chat": {"id": c["id"], "turns": c["turns"]},
            "similarity": round(sim, 4)}


def _write_csv(df, path: Path, *inputs) -> None:
    """Write ``df`` and its provenance sidecar (inputs: the files it was collected from)."""
    from .io import atomic_open
    with atomic_open(path) as fh:
        df.to_csv(fh, index=False, float_format="%.6g", lineterminator="\n")
    prov.write_sidecar(path, _prov(*inputs))


# ----------------------------------------------------------------------------- reporting
def table(table_id: str, summary_dir: str, reported: str, out_csv: str, out_md: str,
          from_bundle: bool = False) -> None:
    from .reporting import build_table
    build_table(table_id, Path(summary_dir), Path(reported), Path(out_csv), Path(out_md))
    if from_bundle:  # the table's first line says where its numbers came from
        from .bundle import header_note
        note = header_note(Path(summary_dir))
        if note is None:
            raise DataError(summary_dir, "from_bundle is set but this summary was not unpacked from a bundle")
        title, _, rest = Path(out_md).read_text(encoding="utf-8").partition("\n")
        write_text(out_md, f"{title}\n\n{note}\n{rest}")


def bundle(roots: dict, files: list, config: dict, out: str) -> None:
    """Pack the results the tables and figures are computed from into one archive (no weights)."""
    from . import bundle as bundle_mod
    from .provenance import code_hash, git_commit
    manifest = bundle_mod.write_bundle(bundle_mod.members_of(roots, files), config, Path(out),
                                       code_hash=code_hash(), commit=git_commit())
    print(f"[bundle] {out}: {len(manifest['files'])} files, config sha256 {manifest['config_sha256'][:12]}, "
          f"code {manifest['code_hash'][:12]}")


def unbundle(bundle: str, summary_dir: str, expected: list, run: str) -> None:
    """Check a results bundle against its manifest and unpack its summaries (from_bundle runs)."""
    from .bundle import unpack_summary
    note = unpack_summary(Path(bundle), Path(summary_dir), list(expected), run)
    print(f"[unbundle] {bundle}: sha256 {note['bundle_sha256'][:12]}, results of code {note['code_hash'][:12]}")


def figure(fig_id: str, summary_dir: str, reported: str, out_png: str) -> None:
    from .reporting import build_figure
    build_figure(fig_id, Path(summary_dir), Path(reported), Path(out_png))


@_stamped
def diff(summary_dir: str, reported: str, tables_dir: str, out_md: str, out_csv: str) -> None:
    from .reporting import build_diff
    build_diff(Path(summary_dir), Path(reported), Path(tables_dir), Path(out_md), Path(out_csv))
    # Inputs: the summaries, the paper's numbers and the tables (never this job's own outputs).
    stamp = _prov(summary_dir, reported, *sorted(Path(tables_dir).glob("table[0-9]*.csv")))
    prov.write_sidecar(out_csv, stamp)
    write_text(out_md, Path(out_md).read_text(encoding="utf-8").rstrip("\n") + "\n\n" + prov.footer(stamp) + "\n")


@_stamped
def html_tables(tables_dir: str, summary_dir: str, scores: list, out: str, table_ids: list,
                from_bundle: bool = False) -> None:
    """The paper tables as one HTML page with per-cell provenance (agentflan.reporting.html)."""
    from .reporting.html import build_html
    read = build_html(Path(tables_dir), Path(summary_dir), scores, Path(out), table_ids=table_ids,
                      require_scores=not from_bundle)
    prov.write_sidecar(out, _prov(*read))


@_stamped
def decontaminate(converted_dir: str, sharegpt_path: str, eval_files: dict, ngram: int, action: str,
                  max_overlap_ratio: float, out_json: str, out_md: str) -> None:
    """n-gram overlap between training data and every evaluation set (warn or fail)."""
    from . import decontam
    train = _load_converted(converted_dir)
    train["sharegpt"] = read_jsonl(sharegpt_path)
    items = {b: read_jsonl(p) for b, p in sorted(eval_files.items())}
    report = decontam.check(train, items, n=ngram)
    warnings = decontam.enforce(report, action, max_overlap_ratio, out_md)
    write_json(out_json, _with_prov(report, _prov(converted_dir, sharegpt_path,
                                                  *(eval_files[b] for b in sorted(eval_files)))))
    write_text(out_md, decontam.render_md(report, warnings))
    for w in warnings:
        print(f"[decontamination] WARNING {w}")


STAGES = {name: fn for name, fn in globals().items()
          if callable(fn) and not name.startswith("_") and getattr(fn, "__module__", "") == __name__}


def run_stage(name: str, params: dict) -> None:
    if name not in STAGES:
        raise SystemExit(f"unknown stage {name!r}; known: {', '.join(sorted(STAGES))}")
    STAGES[name](**params)


def params_from(arg: str) -> dict:
    if arg.startswith("@"):
        return json.loads(Path(arg[1:]).read_text())
    return json.loads(arg)
