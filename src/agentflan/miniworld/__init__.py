"""The offline mini-world: a deterministic miniature stand-in for every raw source.

:func:`generate` writes, under ``out_dir/<repo_id>/<path>`` (docs/CONTRACTS.md, "Raw sources"),
a small synthetic copy of each public source in exactly the real files' schema
(../shared/paper/data_formats.md), built from one procedural tool world that a tiny transformer
can learn at CPU scale: eight tools (one listed in most system prompts), one query template per
tool, about 20 training and 10 held-out values per entity type, short records (median about 150
tokens of a 1,536-token BPE, p95 about 315), and evaluation prompts in exactly the training
formats (only the entity values are held out). Because a tiny model memorises 20 values instead
of learning to copy them, half of the ToolBench-derived training records and 70 % of the
pretraining copy transcripts use generated "copy-drill" names (:data:`pools.SYNTH`, disjoint from
both pools) in the entity slots:

========================================  ====================================================
module                                    content
========================================  ====================================================
:mod:`.pools`                             fixed vocabularies; TRAIN / EVAL entity pools,
                                          generated copy-drill names (SYNTH); query /
                                          thought templates, elicit statements,
                                          randomised key names
:mod:`.world`                             8 tools, seeded wiki tables, deterministic
                                          observations, the observation envelope
:mod:`.trajectories`                      abstract trajectories (single, multi, wiki two-hop)
:mod:`.toolbench`                         the five ToolBench-derived Agent-FLAN files
:mod:`.agentinstruct`                     the two AgentInstruct-derived Agent-FLAN files
:mod:`.general`                           ShareGPT, MMLU, GSM8K, HumanEval, pretraining corpus
:mod:`.evalsets`                          T-Eval, glaive (Agent-H source), HotpotQA
========================================  ====================================================

Determinism: only ``random.Random`` instances seeded with strings
``"miniworld/<seed>/<source>"`` (stable across processes), hash-based observations, no set
iteration, no timestamps; all files go through :mod:`agentflan.io` (atomic, sorted keys). Same
seed + same scale give byte-identical files. Each source has its own random stream, so changing
the count of one source leaves the others unchanged.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

from ..download import AGENTFLAN_STEMS
from .. import io
from . import agentinstruct, evalsets, general, toolbench
from .trajectories import trajectory_pool
from .world import TOOLS, WIKI_SEARCH_TOOL, WIKI_TOOLS, World, render_observation, render_wiki_observation

DEFAULT_SCALE: dict[str, int] = {
    "toolbench_pool": 500,         # abstract ToolBench trajectories, split 10/60/30
    "toolbench_wiki": 80,          # of which wiki two-hop trajectories (all go to the ReAct file)
    "instruct": 200,               # toolbench_instruct_j1s1_3k rows (incl. review / plan rows)
    "negative": 120,               # toolbench_negative rows (half case b, half case c)
    "agentinstruct_per_task": 10,  # per task (6 tasks) in agent_instruct_{react,tflan}
    "sharegpt": 700,               # 150 multiple choice, 250 arithmetic, 150 functions, 150 chat
    "teval_per_file": 15,          # per T-Eval v2 file (8 files)
    "glaive": 80,
    "hotpotqa_per_level": 30,      # easy / medium / hard
    "mmlu": 40,
    "gsm8k": 40,
    "humaneval": 15,               # at most 30 (3 families x 10 held-out constants)
    "pretrain": 3000,
}

AGENT_FLAN = "internlm/Agent-FLAN/data"
AGENT_FLAN_STEMS = AGENTFLAN_STEMS
PATHS = {
    "sharegpt": "anon8231489123/ShareGPT_Vicuna_unfiltered/ShareGPT_V3_unfiltered_cleaned_split.json",
    "teval_dir": "lovesnowbest/T-Eval/data",
    "glaive": "glaiveai/glaive-function-calling-v2/glaive-function-calling-v2.json",
    "hotpotqa": "hotpotqa/hotpot_qa/distractor/validation.jsonl",
    "mmlu": "cais/mmlu/all/test.jsonl",
    "mmlu_dev": general.MMLU_DEV_PATH,     # lm-evaluation-harness's 5 shots per subject
    "gsm8k": "openai/gsm8k/main/test.jsonl",
    "humaneval": "openai/openai_humaneval/openai_humaneval/test.jsonl",
    "pretrain": "miniworld/pretrain/pretrain.jsonl",
}
MANIFEST = "MANIFEST.json"

__all__ = ["DEFAULT_SCALE", "generate", "build", "World", "TOOLS", "WIKI_SEARCH_TOOL", "WIKI_TOOLS",
           "render_observation", "render_wiki_observation", "AGENT_FLAN_STEMS", "PATHS"]


def _rng(seed: int, name: str) -> random.Random:
    return random.Random(f"miniworld/{seed}/{name}")


def _records(stem: str, convs: list[list[dict]]) -> list[dict]:
    return [{"id": f"{stem}_{i}", "conversation": c} for i, c in enumerate(convs)]


def build(seed: int = 0, scale: dict | None = None) -> dict[str, Any]:
    """All sources in memory: ``{relative_path: list | dict}`` (what :func:`generate` writes)."""
    sc = dict(DEFAULT_SCALE)
    unknown = set(scale or {}) - set(sc)
    if unknown:
        raise ValueError(f"unknown miniworld scale keys {sorted(unknown)}; known: {sorted(sc)}")
    sc.update(scale or {})
    for k, v in sc.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"miniworld scale {k!r} must be a non-negative int, got {v!r}")
    w = World(seed)
    out: dict[str, Any] = {}

    # ---- ToolBench-derived Agent-FLAN files: one pool, three renderings, plus j1s1 and negatives
    n_pool = sc["toolbench_pool"]
    pool = trajectory_pool(w, _rng(seed, "toolbench_pool"), n_pool, sc["toolbench_wiki"],
                           toolbench.SYNTH_SHARE)
    react_part, tflan_part, cot_part = toolbench.partition(pool)
    out["toolbench_react_10p"] = toolbench.render_react_part(react_part, _rng(seed, "toolbench_react_10p"))
    r = _rng(seed, "toolbench_tflan_60p_r10r5u7")
    out["toolbench_tflan_60p_r10r5u7"] = [toolbench.render_tflan(t, r) for t in tflan_part]
    r = _rng(seed, "toolbench_tflan_cot_30p")
    out["toolbench_tflan_cot_30p"] = [toolbench.render_cot(t, r) for t in cot_part]
    r, kr = _rng(seed, "toolbench_instruct_j1s1_3k"), _rng(seed, "toolbench_instruct_j1s1_3k/kinds")
    out["toolbench_instruct_j1s1_3k"] = [toolbench.render_instruct(w, r, kr, kind)
                                         for kind in toolbench.instruct_kinds(r, sc["instruct"])]
    r, kr = _rng(seed, "toolbench_negative"), _rng(seed, "toolbench_negative/kinds")
    out["toolbench_negative"] = [toolbench.render_negative(w, r, kr, case, kind, tool)
                                 for case, kind, tool in toolbench.negative_plan(r, sc["negative"])]

    # ---- AgentInstruct-derived files: same episodes, two renderings
    eps = agentinstruct.episodes(w, _rng(seed, "agent_instruct"), sc["agentinstruct_per_task"])
    out["agent_instruct_react"] = [agentinstruct.render_react(ep, st) for ep, st in eps]
    out["agent_instruct_tflan"] = [agentinstruct.render_tflan(ep, st) for ep, st in eps]

    files: dict[str, Any] = {}
    for stem in AGENT_FLAN_STEMS:
        files[f"{AGENT_FLAN}/{stem}.jsonl"] = _records(stem, out[stem])

    # ---- general sources
    files[PATHS["sharegpt"]] = general.sharegpt(_rng(seed, "sharegpt"), sc["sharegpt"])
    files[PATHS["mmlu"]] = general.mmlu(_rng(seed, "mmlu"), sc["mmlu"])
    files[PATHS["mmlu_dev"]] = general.mmlu_dev(_rng(seed, "mmlu_dev"))
    files[PATHS["gsm8k"]] = general.gsm8k(_rng(seed, "gsm8k"), sc["gsm8k"])
    files[PATHS["humaneval"]] = general.humaneval(_rng(seed, "humaneval"), sc["humaneval"])
    files[PATHS["pretrain"]] = general.pretrain(w, _rng(seed, "pretrain"), sc["pretrain"])

    # ---- agent evaluation sources (EVAL pools)
    for stem, samples in evalsets.teval(w, _rng(seed, "teval"), sc["teval_per_file"]).items():
        files[f"{PATHS['teval_dir']}/{stem}.json"] = samples
    files[PATHS["glaive"]] = evalsets.glaive(w, _rng(seed, "glaive"), sc["glaive"])
    files[PATHS["hotpotqa"]] = evalsets.hotpotqa(w, _rng(seed, "hotpotqa"), sc["hotpotqa_per_level"])
    return files


def _writer(rel: str) -> Callable[[Path, Any], None]:
    return io.write_jsonl if rel.endswith(".jsonl") else io.write_json


def generate(out_dir, seed: int = 0, scale: dict | None = None) -> dict:
    """Write all raw sources under ``out_dir``; return the manifest
    ``{relative_path: {"rows": int, "sha256": str}}`` (also written to ``out_dir/MANIFEST.json``).

    ``scale`` overrides entries of :data:`DEFAULT_SCALE`. Same ``seed`` and ``scale`` give
    byte-identical files.
    """
    out_dir = Path(out_dir)
    manifest: dict[str, dict] = {}
    for rel, data in sorted(build(seed, scale).items()):
        path = out_dir / rel
        _writer(rel)(path, data)
        manifest[rel] = {"rows": len(data), "sha256": io.sha256_file(path)}
    io.write_json(out_dir / MANIFEST, manifest)
    return manifest
