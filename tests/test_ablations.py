"""Ablation data sets: capability weights in both modes, ShareGPT mixing, fractions, negatives."""
import json

import pytest

from agentflan.ablations import audit_dump, build_dataset, dataset_stats, negative_case
from agentflan.template import SegmentTokenizer

CAPS = ("reasoning", "retrieval", "understanding", "instruction")


class CharTokenizer:
    """One token per character: token counts are exact and easy to reason about."""
    bos_token_id = None

    def __call__(self, texts, add_special_tokens=False, return_offsets_mapping=False, **kwargs):
        batch = [texts] if isinstance(texts, str) else list(texts)
        out = {"input_ids": [[ord(c) for c in t] for t in batch]}
        if return_offsets_mapping:
            out["offset_mapping"] = [[(i, i + 1) for i in range(len(t))] for t in batch]
        return {k: v[0] for k, v in out.items()} if isinstance(texts, str) else out


def _turn(role, content, train=False, cap=None):
    return {"role": role, "content": content, "train": train, "capability": cap}


def _chat(i):
    return {"id": f"chat_{i}", "source": "toolbench_tflan_60p_r10r5u7", "turns": [
        _turn("system", "Input parameters are as follows: {}"), _turn("user", "q"),
        _turn("assistant", "think" * 2, True, "reasoning"), _turn("user", "Which API?"),
        _turn("assistant", "api", True, "retrieval"), _turn("user", "Arguments?"),
        _turn("assistant", "{}", True, "understanding")]}


def _instr(i):
    return {"id": f"ins_{i}", "source": "toolbench_instruct_j1s1_3k", "turns": [
        _turn("system", "You have access to the following API:"), _turn("user", "q"),
        _turn("assistant", "{'a': 1}", True, "instruction")]}


CONVERTED = {
    "agent_instruct_react": [{"id": "air_0", "source": "agent_instruct_react",
                              "turns": [_turn("user", "q"), _turn("assistant", "Act: bash", True)]}],
    "agent_instruct_tflan": [], "toolbench_tflan_cot_30p": [],
    "toolbench_react_10p": [{"id": "r_0", "source": "toolbench_react_10p",
                             "turns": [_turn("user", "q"), _turn("assistant", "Thought: x", True)]}],
    "toolbench_tflan_60p_r10r5u7": [_chat(i) for i in range(400)],
    "toolbench_instruct_j1s1_3k": [_instr(i) for i in range(400)],
    "toolbench_negative": [{"id": f"neg_{i}", "source": "toolbench_negative", "turns": [
        _turn("system", "Input parameters are as follows: {}" if i % 2 else "You are a helpful assistant."),
        _turn("user", "book a flight"), _turn("assistant", "Sorry, I cannot.", True)]} for i in range(10)],
}
GENERAL = [{"id": f"g{i}", "source": "sharegpt", "turns": [_turn("user", "hi"), _turn("assistant", "hello", True)]}
           for i in range(50)]
SEG = SegmentTokenizer(CharTokenizer())


def trained_by_cap(records):
    st = dataset_stats(records, SEG, max_length=10_000)
    return st["tokens_trained_by_capability"], st


@pytest.fixture(scope="module")
def base_counts():
    caps, _ = trained_by_cap(build_dataset({"format": "chat"}, CONVERTED, GENERAL, seed=0))
    return caps


@pytest.mark.parametrize("mode", ["mask", "sample"])
@pytest.mark.parametrize("weights", [{"reasoning": 1, "retrieval": 0.25, "understanding": 0.75, "instruction": 1},
                                     {"reasoning": 0.5, "retrieval": 1, "understanding": 1, "instruction": 0.5}])
def test_trained_tokens_scale_with_weights(base_counts, mode, weights):
    caps, _ = trained_by_cap(build_dataset({"format": "chat", "weights": weights}, CONVERTED, GENERAL, seed=0,
                                           capability_mode=mode))
    for cap in CAPS:
        expected = base_counts[cap] * weights[cap]
        assert abs(caps[cap] - expected) <= 0.12 * base_counts[cap] + 1, (cap, caps[cap], expected)
    assert caps["other"] == base_counts["other"]  # ReAct turns are outside the decomposition


def test_sample_mode_copies_records_and_mask_mode_keeps_them(base_counts):
    w = {"reasoning": 1, "retrieval": 0.5, "understanding": 1, "instruction": 1}
    masked = build_dataset({"format": "chat", "weights": w}, CONVERTED, GENERAL, seed=0, capability_mode="mask")
    sampled = build_dataset({"format": "chat", "weights": w}, CONVERTED, GENERAL, seed=0, capability_mode="sample")
    assert len(masked) == 1 + 400 + 400  # toolbench_react_10p is the ReAct share kept in the chat mix
    n_views = sum(1 for r in sampled if r["id"].startswith("chat_"))
    assert 400 * 2.5 - 40 <= n_views <= 400 * 2.5 + 40  # reasoning + understanding + half of retrieval
    assert all(sum(t["train"] for t in r["turns"] if t["capability"]) >= 1 for r in sampled
               if r["id"].startswith("chat_"))


def test_upsampling_needs_sample_mode():
    with pytest.raises(ValueError, match="sample"):
        build_dataset({"format": "chat", "weights": {"retrieval": 2}}, CONVERTED, GENERAL, seed=0)
    up = build_dataset({"format": "chat", "weights": {"retrieval": 2}}, CONVERTED, GENERAL, seed=0,
                       capability_mode="sample")
    assert sum(1 for r in up if r["id"].endswith("#retrieval#1")) == 400


def test_sharegpt_concat_and_ratio():
    agent = build_dataset({"format": "react"}, CONVERTED, GENERAL, seed=0)
    concat = build_dataset({"format": "react", "sharegpt": True}, CONVERTED, GENERAL, seed=0)
    assert len(agent) == 2 and len(concat) == 2 + 50  # plain concatenation, no resampling
    ratio = build_dataset({"format": "chat", "sharegpt": True}, CONVERTED, GENERAL, seed=0,
                          sharegpt_mode="ratio", sharegpt_ratio=0.1)
    assert sum(r["source"] == "sharegpt" for r in ratio) == round(0.1 * 801)
    up = build_dataset({"format": "chat", "sharegpt": True}, CONVERTED, GENERAL, seed=0,
                       sharegpt_mode="ratio", sharegpt_ratio=1.0)
    assert sum(r["source"] == "sharegpt" for r in up) == 801


def test_fraction_negatives_and_cases():
    full = build_dataset({"format": "chat", "negatives": True}, CONVERTED, GENERAL, seed=0)
    quarter = build_dataset({"format": "chat", "negatives": True, "fraction": 0.25}, CONVERTED, GENERAL, seed=0)
    assert len(full) == 811 and len(quarter) == 203
    assert {r["id"] for r in quarter} <= {r["id"] for r in full}
    _, st = trained_by_cap(build_dataset({"format": "chat", "negatives": True, "sharegpt": True},
                                         CONVERTED, GENERAL, seed=0))
    assert st["cases"] == {"a": 50, "b": 5, "c": 5, "d": 801}


def test_same_seed_same_dataset_and_turn_fate_is_local():
    w = {"reasoning": 0.5, "retrieval": 0.5, "understanding": 0.5, "instruction": 0.5}
    a = build_dataset({"format": "chat", "weights": w}, CONVERTED, GENERAL, seed=3)
    b = build_dataset({"format": "chat", "weights": w}, CONVERTED, GENERAL, seed=3)
    assert a == b
    smaller = dict(CONVERTED, toolbench_tflan_60p_r10r5u7=CONVERTED["toolbench_tflan_60p_r10r5u7"][:10])
    c = {r["id"]: r for r in build_dataset({"format": "chat", "weights": w}, smaller, GENERAL, seed=3)}
    for r in a:
        if r["id"] in c:
            assert r == c[r["id"]]


def test_negative_cases_and_audit_dump():
    assert negative_case(CONVERTED["toolbench_negative"][0]) == "c"
    assert negative_case(CONVERTED["toolbench_negative"][1]) == "b"
    assert negative_case(GENERAL[0]) == "a"
    dump = audit_dump([_chat(0)], 1, "demo")
    assert "⟦api\u0d3f\n ⟧{retrieval}" in dump and "⟦{}\u0d3f\n ⟧{understanding}" in dump


# ----------------------------------------------------------------------------- the ablation job
# The rule builds every data set in one job (stage `ablations`, forked workers); its outputs must be
# those of one `ablation` job per data set, provenance stamps included.

@pytest.fixture(scope="module")
def corpus_dirs(tmp_path_factory):
    """A generated corpus in the DAG's layout, the Llama-2 tokenizer and its token counts."""
    import shutil

    import sptokenizers
    from agentflan import miniworld, stages
    from agentflan.convert import convert_release
    from agentflan.download import AGENTFLAN_STEMS, agentflan_files
    from agentflan.io import write_jsonl
    from agentflan.sharegpt import load_sharegpt
    root = tmp_path_factory.mktemp("ablation_job")
    raw = root / "raw"
    miniworld.generate(raw, seed=5, scale={"toolbench_pool": 120, "toolbench_wiki": 20, "instruct": 30,
                                           "negative": 20, "agentinstruct_per_task": 3, "sharegpt": 60})
    files = agentflan_files(raw / "internlm" / "Agent-FLAN")
    convert_release({s: files[s] for s in AGENTFLAN_STEMS}, root / "converted")
    write_jsonl(root / "general" / "sharegpt.jsonl", load_sharegpt(
        raw / "anon8231489123/ShareGPT_Vicuna_unfiltered/ShareGPT_V3_unfiltered_cleaned_split.json"))
    shutil.copytree(sptokenizers.llama2_tokenizer_dir(), root / "tokenizer")
    d = dict(converted_dir=str(root / "converted"), sharegpt_path=str(root / "general" / "sharegpt.jsonl"),
             tokenizer_dir=str(root / "tokenizer"), max_length=256)
    stages.token_counts(**d, out=str(root / "token_counts.jsonl"))
    return root, {**d, "token_counts": str(root / "token_counts.jsonl")}


def _paper_datasets():
    from pathlib import Path

    from agentflan.config import datasets, load_config
    specs = datasets(load_config(Path(__file__).parents[1] / "config" / "paper.yaml"))
    specs["sampled"] = {"format": "chat", "weights": {"reasoning": 1.5, "retrieval": 0.5}, "sharegpt": True}
    return specs


def _outputs(root, tag, names):
    return {n: {"data": str(root / tag / n / "train.jsonl"), "stats": str(root / tag / n / "stats.json"),
                "audit": str(root / tag / n / "audit.md")} for n in names}


@pytest.mark.parametrize("mode", ["mask", "sample"])
def test_one_job_writes_what_one_job_per_data_set_writes(corpus_dirs, mode, monkeypatch):
    import json

    from agentflan import provenance as prov
    from agentflan import stages
    root, d = corpus_dirs
    specs = _paper_datasets()
    if mode == "mask":
        del specs["sampled"]
    common = dict(**d, seed=3, capability_mode=mode, sharegpt_mode="concat", sharegpt_ratio=1.0, audit_samples=2)
    for workers in (1, 2):
        tag = f"{mode}-all-{workers}"
        stages.ablations(datasets=specs, outputs=_outputs(root, tag, specs), workers=workers,
                         logs={n: str(root / tag / n / "job.log") for n in specs},
                         benchmarks={n: str(root / tag / n / "job.tsv") for n in specs}, **common)
    one = _outputs(root, f"{mode}-one", specs)
    for name, spec in specs.items():
        stages.ablation(dataset_id=name, spec=spec, out_data=one[name]["data"], out_stats=one[name]["stats"],
                        out_audit=one[name]["audit"], **common)
    for name in specs:
        for f in ("train.jsonl", "train.jsonl.provenance.json", "stats.json", "audit.md"):
            want = (root / f"{mode}-one" / name / f).read_bytes()
            assert (root / f"{mode}-all-1" / name / f).read_bytes() == want, (name, f)
            assert (root / f"{mode}-all-2" / name / f).read_bytes() == want, (name, f)
        # the stamp is the one the stage's own parameters give (as @_stamped records them)
        params = json.loads(json.dumps({"dataset_id": name, "spec": specs[name], **common,
                                        "out_data": one[name]["data"], "out_stats": one[name]["stats"],
                                        "out_audit": one[name]["audit"]}, sort_keys=True))
        stamp = prov.stamp(prov.config_subset(params), [d["converted_dir"], d["sharegpt_path"], d["tokenizer_dir"]])
        assert json.loads((root / f"{mode}-one" / name / "stats.json").read_text())["provenance"] == stamp
        assert "0 records tokenised again" in (root / f"{mode}-all-2" / name / "job.log").read_text()
        head, row = (root / f"{mode}-all-2" / name / "job.tsv").read_text().splitlines()
        assert head.split("\t")[0] == "s" and head.split("\t")[-1] == "cpu_time" and float(row.split("\t")[0]) >= 0


def test_file_index_of_the_token_counts_job(corpus_dirs, tmp_path):
    """The ablation job reads a file the token_counts job indexed (same bytes) without checking it
    again, with the keys of the index; a file that changed since is read and keyed as usual."""
    import shutil

    from agentflan import stages
    from agentflan.tokcache import TokenCounts
    root, d = corpus_dirs
    counts = TokenCounts.load(d["token_counts"])
    assert len(counts.files) == 8 and all(w for _, w in counts.files.values())
    specs = {"react": {"format": "react", "sharegpt": True}, "chat": {"format": "chat", "weights": {"reasoning": 0.5}}}
    common = dict(**d, seed=0, capability_mode="mask", sharegpt_mode="concat", sharegpt_ratio=1.0, audit_samples=1)
    stages.ablations(datasets=specs, outputs=_outputs(tmp_path, "indexed", specs), workers=1, **common)
    changed = tmp_path / "converted"
    shutil.copytree(d["converted_dir"], changed)
    for f in changed.glob("*.jsonl"):   # the same records, other bytes: no longer in the index
        f.write_bytes(f.read_bytes().replace(b'{"id"', b'{ "id"'))
    stages.ablations(datasets=specs, outputs=_outputs(tmp_path, "read", specs), workers=1,
                     **{**common, "converted_dir": str(changed)})
    for name in specs:
        for f in ("train.jsonl", "audit.md"):
            assert (tmp_path / "indexed" / name / f).read_bytes() == (tmp_path / "read" / name / f).read_bytes()
        a, b = (json.loads((tmp_path / t / name / "stats.json").read_text()) for t in ("indexed", "read"))
        assert {**a, "provenance": None} == {**b, "provenance": None}


def test_one_job_without_the_cache_and_bad_input(corpus_dirs, tmp_path):
    import shutil

    from agentflan import stages
    from agentflan.io import DataError
    root, d = corpus_dirs
    specs = {"react": {"format": "react", "sharegpt": True}}
    common = dict(**{**d, "token_counts": None}, seed=0, capability_mode="mask", sharegpt_mode="concat",
                  sharegpt_ratio=1.0, audit_samples=1)
    stages.ablations(datasets=specs, outputs=_outputs(tmp_path, "a", specs), workers=2, **common)
    stages.ablations(datasets=specs, outputs=_outputs(tmp_path, "b", specs), workers=1, **{**common, **d})
    for f in ("train.jsonl", "audit.md"):
        assert (tmp_path / "a" / "react" / f).read_bytes() == (tmp_path / "b" / "react" / f).read_bytes()
    # a bad line of a file a data set reads: one line naming file, line and record
    bad = tmp_path / "converted"
    shutil.copytree(d["converted_dir"], bad)
    lines = (bad / "toolbench_react_10p.jsonl").read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"train":true', b'"train":true,"train":false', 1)
    (bad / "toolbench_react_10p.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(DataError) as e:
        stages.ablations(datasets=specs, outputs=_outputs(tmp_path, "c", specs), workers=2,
                         **{**common, **d, "converted_dir": str(bad)})
    assert str(e.value).startswith(f"{bad / 'toolbench_react_10p.jsonl'}:2 (record 'toolbench_react_10p_1'): "
                                   "duplicate key 'train'"), str(e.value)
    assert not (tmp_path / "c").exists()
    # an error inside a worker reaches the job as itself
    with pytest.raises(ValueError, match="unknown format"):
        stages.ablations(datasets={**specs, "odd": {"format": "toolformer"}},
                         outputs=_outputs(tmp_path, "d", [*specs, "odd"]), workers=2, **{**common, **d})


@pytest.mark.parametrize("mode", ["mask", "sample"])
@pytest.mark.parametrize("max_length", [256, 64, None])
def test_source_counts_give_dataset_stats(corpus_dirs, mode, max_length, tmp_path):
    """The one job's stats from per-source arrays (SourceCounts) are dataset_stats' own, with
    truncation, copies made by the weights, and records the cache lacks (then: None)."""
    from pathlib import Path

    from agentflan import stages
    from agentflan.ablations import SourceCounts
    from agentflan.io import read_jsonl
    from agentflan.tokcache import TokenCounts, tokenizer_hash
    root, d = corpus_dirs
    counts_path = d["token_counts"]
    if max_length != 256:
        counts_path = tmp_path / "c.jsonl"
        args = {**d, "max_length": max_length}
        del args["token_counts"]
        stages.token_counts(**args, out=str(counts_path))
    counts = TokenCounts.load(counts_path, tokenizer_hash(d["tokenizer_dir"]), max_length)
    converted = {p.stem: read_jsonl(p) for p in sorted(Path(d["converted_dir"]).glob("*.jsonl"))}
    general = read_jsonl(d["sharegpt_path"])
    table = SourceCounts([r for recs in (*converted.values(), general) for r in recs], counts, max_length)
    specs = _paper_datasets()
    if mode == "mask":
        del specs["sampled"]
    for name, spec in sorted(specs.items()):
        origin = {}
        records = build_dataset(spec, converted, general, seed=1, capability_mode=mode, origin=origin)
        assert table.stats(records, origin) == dataset_stats(records, None, max_length, counts=counts), name
    if max_length == 64:   # truncation is exercised
        assert any(table.stats([r], {})["truncated_samples"] for r in converted["toolbench_tflan_60p_r10r5u7"])
    # a record the cache lacks: the table cannot give the stats
    del counts.rows[sorted(counts.rows)[0]]
    lacking = SourceCounts([r for recs in (*converted.values(), general) for r in recs], counts, max_length)
    records = build_dataset({"format": "chat", "sharegpt": True}, converted, general, seed=1)
    assert lacking.stats(records, {}) is None
