"""Token-count cache (agentflan.tokcache): counts derived per turn equal tokenising the (masked)
record, ablation stats and the data card are byte-identical with and without the cache, the file
is deterministic and bad cache files fail with one line."""
import codecs
import json
import random
from collections import Counter
from pathlib import Path

import pytest

import sptokenizers
from agentflan import miniworld
from agentflan.ablations import apply_weights_sample, build_dataset, dataset_stats
from agentflan.config import datasets, load_config
from agentflan.convert import build_card, convert_records
from agentflan.download import agentflan_files
from agentflan.io import DataError, dumps, read_json
from agentflan.modeling import load_tokenizer, train_bpe_tokenizer
from agentflan.sharegpt import load_sharegpt
from agentflan.template import TemplateTokenizer, render
from agentflan.tokcache import (TokenCounts, build, build_rows, derive, record_key, tokenizer_hash,
                                write_counts)

FIXTURES = Path(__file__).parent / "fixtures" / "release"
SHAREGPT = "anon8231489123/ShareGPT_Vicuna_unfiltered/ShareGPT_V3_unfiltered_cleaned_split.json"


def _corpus(root: Path) -> tuple[dict[str, list[dict]], list[dict]]:
    files = agentflan_files(root / "internlm" / "Agent-FLAN")
    converted = {stem: convert_records(path, stem)[0] for stem, path in sorted(files.items())}
    return converted, load_sharegpt(root / SHAREGPT)


@pytest.fixture(scope="module")
def fixture_corpus():
    return _corpus(FIXTURES)


@pytest.fixture(scope="module")
def mini_corpus(tmp_path_factory):
    """A generated corpus (miniworld, small scale) and the miniature's byte-level BPE trained on it
    (it can merge across an assistant begin tag, so the template splits some texts)."""
    root = tmp_path_factory.mktemp("mini")
    miniworld.generate(root, seed=3, scale={"toolbench_pool": 150, "toolbench_wiki": 20, "instruct": 40, "negative": 30,
                                            "agentinstruct_per_task": 4, "sharegpt": 120})
    converted, general = _corpus(root)
    tok_dir = root / "tokenizer"
    texts = [render(r["turns"]) for recs in [*converted.values(), general] for r in recs]
    train_bpe_tokenizer(texts, tok_dir, 768)
    return converted, general, tok_dir


def _all_records(converted, general):
    return [r for stem in sorted(converted) for r in converted[stem]] + list(general)


def _slow_counts(enc, max_length):
    by_cap = Counter(c for lab, c in zip(enc.labels[:max_length], enc.capability[:max_length]) if lab != -100)
    full = sum(1 for lab in enc.labels if lab != -100)
    return len(enc), full, sum(by_cap.values()), dict(by_cap)


def _random_masks(records, seed):
    rng = random.Random(seed)
    out = []
    for r in records:
        m = json.loads(json.dumps(r))
        for t in m["turns"]:
            if t["role"] == "assistant" and t.get("train") and rng.random() < 0.5:
                t["train"] = False
        out.append(m)
    return out


@pytest.mark.parametrize("max_length", [None, 96, 8192])
def test_derived_counts_equal_tokenising_masked_records(fixture_corpus, llama2_tokenizer, max_length):
    records = _all_records(*fixture_corpus)
    seg_tok = TemplateTokenizer(llama2_tokenizer)
    rows = build_rows(records, seg_tok, max_length)
    assert all(row["x"] for row in rows.values())
    masked = _random_masks(records, 1) + apply_weights_sample(records, {"reasoning": 1, "retrieval": 2}, 0)
    assert any(m["turns"] != r["turns"] for m, r in zip(masked, records))
    for rec, enc in zip(records + masked, seg_tok.encode_records(records + masked)):
        assert derive(rows[record_key(rec)], rec) == _slow_counts(enc, max_length), rec["id"]


def test_derived_counts_with_a_bpe_that_splits_at_begin_tags(mini_corpus):
    converted, general, tok_dir = mini_corpus
    records = _all_records(converted, general)
    seg_tok = TemplateTokenizer(load_tokenizer(str(tok_dir)))
    rows = build_rows(records, seg_tok, 200)
    assert all(row["x"] for row in rows.values())
    assert seg_tok.split_texts > 0   # the case the template handles by splitting the text
    masked = _random_masks(records, 2)
    fresh = TemplateTokenizer(seg_tok.tok)
    for rec, enc in zip(records + masked, fresh.encode_records(records + masked)):
        assert derive(rows[record_key(rec)], rec) == _slow_counts(enc, 200), rec["id"]


@pytest.mark.parametrize("max_length", [None, 40, 8192])
def test_batched_rows_equal_per_record_rows(fixture_corpus, mini_corpus, llama2_tokenizer, mistral_tokenizer,
                                            max_length):
    """The batched path (whole batches in numpy, the backend called directly) gives the rows of the
    per-record path, own-mask check included, with Llama-2, Mistral (byte-fallback begin tags) and
    the miniature's BPE (texts split at begin tags: those records take the per-record path)."""
    fixtures = _all_records(*fixture_corpus)
    converted, general, tok_dir = mini_corpus
    mini = _all_records(converted, general)
    for records, tok in ((fixtures, llama2_tokenizer), (fixtures, mistral_tokenizer),
                         (mini, load_tokenizer(str(tok_dir)))):
        records = _random_masks(records, 5) + records   # the first record of a key makes its row
        for batch in (512, 7):
            fast_tok, slow_tok = TemplateTokenizer(tok), TemplateTokenizer(tok)
            fast = build_rows(records, fast_tok, max_length, batch=batch)
            assert fast == build_rows(records, slow_tok, max_length, batch=batch, batched=False)
            assert fast_tok.split_texts == slow_tok.split_texts
    assert slow_tok.split_texts > 0


def _check_stats_identical(converted, general, tok_dir, tmp_path, max_length, modes):
    cache = tmp_path / "token_counts.jsonl"
    records = _all_records(converted, general)
    summary = build(records, tok_dir, max_length, cache)
    assert summary["inexact"] == 0 and summary["distinct"] <= len(records)
    counts = TokenCounts.load(cache, tokenizer_hash(tok_dir), max_length)
    seg_tok = TemplateTokenizer(load_tokenizer(str(tok_dir)))
    specs = datasets(load_config(Path(__file__).parents[1] / "config" / "paper.yaml"))
    for mode in modes:
        for name, spec in sorted(specs.items()):
            recs = build_dataset(spec, converted, general, seed=0, capability_mode=mode)
            if mode == "sample":
                spec_w = spec.get("weights") or {}
                if any(w > 1 for w in spec_w.values()):
                    continue
            slow = dataset_stats(recs, seg_tok, max_length)
            fast = dataset_stats(recs, None, max_length, counts=counts)
            assert dumps(fast) == dumps(slow), (mode, name)
    assert counts.fallbacks == 0
    return counts, seg_tok


def test_ablation_stats_byte_identical_on_fixtures(fixture_corpus, tmp_path):
    converted, general = fixture_corpus
    tok_dir = sptokenizers.llama2_tokenizer_dir()
    _check_stats_identical(converted, general, tok_dir, tmp_path, 8192, ["mask", "sample"])
    _check_stats_identical(converted, general, tok_dir, tmp_path, 128, ["mask"])  # truncation matters


def test_ablation_stats_byte_identical_on_generated_corpus(mini_corpus, tmp_path):
    converted, general, tok_dir = mini_corpus
    _check_stats_identical(converted, general, tok_dir, tmp_path, 160, ["mask", "sample"])


def test_missing_records_are_tokenised_and_counted(fixture_corpus, tmp_path):
    converted, general = fixture_corpus
    tok_dir = sptokenizers.llama2_tokenizer_dir()
    cache = tmp_path / "c.jsonl"
    build(converted["agent_instruct_react"], tok_dir, 8192, cache)   # covers one file only
    counts = TokenCounts.load(cache, tokenizer_hash(tok_dir), 8192)
    seg_tok = TemplateTokenizer(load_tokenizer(str(tok_dir)))
    recs = build_dataset({"format": "react", "sharegpt": True}, converted, general, seed=0)
    assert dumps(dataset_stats(recs, seg_tok, 8192, counts=counts)) == dumps(dataset_stats(recs, seg_tok, 8192))
    assert counts.fallbacks == len(recs) - len(converted["agent_instruct_react"])
    with pytest.raises(ValueError, match="max_length 8192, not 4096"):
        dataset_stats(recs, seg_tok, 4096, counts=counts)


def test_data_card_identical_with_counts(fixture_corpus, tmp_path):
    converted, general = fixture_corpus
    tok_dir = sptokenizers.llama2_tokenizer_dir()
    allc = {**converted, "sharegpt": general}
    seg_tok = TemplateTokenizer(load_tokenizer(str(tok_dir)))
    build(_all_records(converted, general), tok_dir, 64, tmp_path / "c.jsonl")
    counts = TokenCounts.load(tmp_path / "c.jsonl", tokenizer_hash(tok_dir), 64)
    build_card(allc, seg_tok, 64, tmp_path / "slow.json", tmp_path / "slow.md", {"description": "x"})
    build_card(allc, None, 64, tmp_path / "fast.json", tmp_path / "fast.md", {"description": "x"}, counts=counts)
    assert (tmp_path / "fast.json").read_bytes() == (tmp_path / "slow.json").read_bytes()
    assert (tmp_path / "fast.md").read_bytes() == (tmp_path / "slow.md").read_bytes()
    assert read_json(tmp_path / "fast.json")["files"]["agent_instruct_react"]["over_max_length"] > 0
    assert counts.fallbacks == 0


def test_cache_file_is_deterministic_and_independent_of_order(fixture_corpus, llama2_tokenizer, tmp_path):
    records = _all_records(*fixture_corpus)
    seg_tok = TemplateTokenizer(llama2_tokenizer)
    write_counts(tmp_path / "a", build_rows(records, seg_tok, 512), "h", 512)
    write_counts(tmp_path / "b", build_rows(records[::-1] + records[:3], seg_tok, 512), "h", 512)
    write_counts(tmp_path / "c", build_rows(records, seg_tok, 512, batch=3, workers=2, batched=False), "h", 512)
    write_counts(tmp_path / "d", build_rows(records, seg_tok, 512, batch=3), "h", 512)
    a = (tmp_path / "a").read_bytes()
    assert a == (tmp_path / "b").read_bytes() == (tmp_path / "c").read_bytes() == (tmp_path / "d").read_bytes()
    head = json.loads(a.splitlines()[0])
    assert head["records"] == len({record_key(r) for r in records}) and head["max_length"] == 512
    assert set(head) == {"columns", "files", "format", "max_length", "records", "tokenizer_sha256"}


def test_key_covers_content_capability_and_general_flag_not_train_flags(fixture_corpus):
    rec = fixture_corpus[0]["toolbench_tflan_60p_r10r5u7"][0]
    k = record_key(rec)
    other = json.loads(json.dumps(rec))
    for t in other["turns"]:
        t["train"] = not t.get("train")
    assert record_key(other) == k
    for change in ("content", "capability", "source"):
        other = json.loads(json.dumps(rec))
        if change == "source":
            other["source"] = "sharegpt"
        else:
            t = next(t for t in other["turns"] if t["role"] == "assistant")
            t[change] = t[change] + "x" if change == "content" else "retrieval" if t.get(change) != "retrieval" else "reasoning"
        assert record_key(other) != k, change


def test_bad_cache_files_fail_with_one_line(fixture_corpus, llama2_tokenizer, tmp_path):
    records = _all_records(*fixture_corpus)[:5]
    assert len({record_key(r) for r in records}) == 5
    path = tmp_path / "c.jsonl"
    write_counts(path, build_rows(records, TemplateTokenizer(llama2_tokenizer), 64), "abc", 64)
    with pytest.raises(DataError, match=r"c\.jsonl:1: token counts were made with another tokenizer"):
        TokenCounts.load(path, "def", 64)
    with pytest.raises(DataError, match=r"c\.jsonl:1: token counts are for max_length 64, not 65"):
        TokenCounts.load(path, "abc", 65)
    lines = path.read_text().splitlines()
    row = json.loads(lines[2])
    row["t"] = [[1, 2, 3]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:2] + [json.dumps(row)] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:3 \(record '[0-9a-f]+'\): malformed token-counts row") as e:
        TokenCounts.load(bad)
    assert "\n" not in str(e.value)
    bad.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="header says 5 records, file holds 4"):
        TokenCounts.load(bad)
    bad.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        TokenCounts.load(bad)
    with pytest.raises(DataError, match="file not found"):
        TokenCounts.load(tmp_path / "missing.jsonl")
    bad.write_text('{"x": 1}\n')
    with pytest.raises(DataError, match=r":1: not a token-counts file"):
        TokenCounts.load(bad)
    # the file index after the rows
    keys = sorted({record_key(r) for r in records})
    write_counts(path, build_rows(records, TemplateTokenizer(llama2_tokenizer), 64), "abc", 64,
                 [("f" * 64, [keys[2], keys[0]], True)])
    assert TokenCounts.load(path).files == {"f" * 64: ([keys[2], keys[0]], True)}
    lines = path.read_text().splitlines()
    for line in ('{"f": "x", "r": [5], "w": true}', '{"f": "x", "r": [0]}', "[]"):
        bad.write_text("\n".join(lines[:-1] + [line]) + "\n")
        with pytest.raises(DataError, match=r"bad\.jsonl:7: malformed file index line"):
            TokenCounts.load(bad)
    bad.write_text("\n".join(lines[:-1]) + "\n")   # the header counts one file line more
    with pytest.raises(DataError, match="header says 5 records, file holds 4"):
        TokenCounts.load(bad)
    head = json.loads(lines[0])
    head.update(format="agentflan-token-counts/1")
    del head["files"]
    bad.write_text("\n".join([json.dumps(head)] + lines[1:-1]) + "\n")   # version 1: no index
    assert TokenCounts.load(bad).files == {} and len(TokenCounts.load(bad).rows) == 5


# ----------------------------------------------------------------------------- fast reading and writing
# agentflan.io.read_jsonl takes lines in canonical form as read (orjson) and sends every other line
# through the strict checks: same values, same errors as iter_jsonl. dumps_bytes gives dumps' bytes.

def _line(obj) -> bytes:
    return dumps(obj).encode("utf-8")


_GOOD = _line({"id": "a", "turns": [{"content": "x\n\"y\" \u0d46 \U0001f600 \x7f \x00", "train": True}]})
_READ_CASES = {
    "canonical": _GOOD + b"\n" + _line({"b": [1, -2, 2 ** 64 - 1, -(2 ** 63), None, False]}) + b"\n",
    "unsorted_and_spaced": b'{"z": 1, "a": [1, 2]}\n{"b":1,"a":2}\n',
    "crlf_and_blank": _GOOD + b"\r\n\r\n   \n" + _GOOD + b"\r\n",
    "bom": codecs.BOM_UTF8 + _GOOD + b"\n",
    "bom_inside": _GOOD + b"\n" + codecs.BOM_UTF8 + _GOOD + b"\n",
    "duplicate_key": _GOOD + b'\n{"a":1,"a":2}\n',
    "nan": b'{"a":NaN}\n',
    "infinity": b'{"a":-Infinity}\n',
    "overflow": b'{"a":1e400}\n',
    "big_int": b'{"a":123456789012345678901234567890}\n',
    "huge_int": b'{"a":' + b"9" * 5000 + b"}\n",
    "floats": b'{"a":1e-05,"b":0.5,"c":1e16,"d":-0.0,"e":1E5}\n{"a":1e-5}\n-0\n0.5\n',
    "lone_surrogate": _GOOD + b'\n{"id":"s","a":"\\ud800"}\n',
    "surrogate_pair": b'{"a":"\\ud83d\\ude00"}\n',
    "bad_utf8": _GOOD + b'\n{"id":"u","a":"\xe9"}\n',
    "nul": b'{"id":"n","a":"\x00"}\n',
    "control_char": b'{"id":"c","a":"x\ty"}\n',
    "deep": b"[" * 65 + b"]" * 65 + b"\n",
    "deep_dicts": b'{"a":' * 70 + b"1" + b"}" * 70 + b"\n",
    "brackets_in_strings": _line({"a": "[{" * 100, "b": [[1]]}) + b"\n",
    "very_deep": b"[" * 3000 + b"]" * 3000 + b"\n",
    "truncated_last": _GOOD + b'\n{"id":"t","a":"x',
    "last_without_newline": _GOOD + b"\n" + _GOOD,
    "truncated_utf8": _GOOD + b'\n{"id":"t","a":"\xe0\xb5',
    "empty": b"",
    "blank_only": b"\n  \n",
    "scalars": b'"x"\n1\n[1,2]\nnull\ntrue\n',
    "html": b"<html><body>error</body></html>\n",
    "json_array": b'[{"a":1},\n{"a":2}]\n',
    "two_per_line": b'{"a":1}{"a":2}\n',
    "utf16": codecs.BOM_UTF16_LE + "{}".encode("utf-16-le"),
    "gzip": b"\x1f\x8b\x08\x00rest",
    "long_line": _GOOD + b"\n" + _line({"id": "long", "a": "x" * 5000}) + b"\n",
    "long_last_line": _GOOD + b"\n" + _line({"id": "long", "a": "x" * 5000}),
}


def _outcome(fn, path):
    try:
        return "ok", [json.dumps(v, sort_keys=True) + type(v).__name__ for v in fn(path)]
    except DataError as e:
        return "error", str(e)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("case", sorted(_READ_CASES))
def test_read_jsonl_same_values_and_errors_as_the_strict_reader(case, fast, tmp_path, monkeypatch):
    from agentflan import io as afio
    monkeypatch.setattr(afio, "MAX_LINE_BYTES", 4096)
    if not fast:
        monkeypatch.setattr(afio, "_orjson", None)
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(_READ_CASES[case])
    strict = _outcome(lambda p: [v for _, v in afio.iter_jsonl(p)], path)
    assert _outcome(afio.read_jsonl, path) == strict
    if strict[0] == "ok":
        values, lines = afio.read_jsonl_lines(path)
        assert len(values) == len(lines)
        for v, raw in zip(values, lines):
            assert raw is None or raw == _line(v)
        if case == "canonical" and fast:
            assert all(raw is not None for raw in lines)


def test_read_jsonl_missing_file_and_directory(tmp_path):
    from agentflan.io import read_jsonl
    with pytest.raises(DataError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="is a directory"):
        read_jsonl(tmp_path)


@pytest.mark.parametrize("obj", [
    {"b": 1, "a": [True, None, "é\u2028\x1f\x7f\"\\/", {"z": {}, "é": [], "\U0001f600": 0}]},
    [2 ** 63 - 1, -(2 ** 63), 2 ** 64 - 1, 2 ** 64, -(2 ** 63) - 1],
    {"f": 1e-05}, {"f": 0.1}, {"f": 1e16}, {"f": float("nan")}, {"f": float("inf")},
    {1: "int key"}, {None: 1}, {"t": (1, 2)}, "\ud800", {"s": "\udfff"}, [[[[]]]],
])
def test_dumps_bytes_is_dumps(obj):
    from agentflan.io import dumps_bytes
    try:
        want = _line(obj)
    except Exception as e:   # noqa: BLE001 - the same exception either way
        with pytest.raises(type(e)):
            dumps_bytes(obj)
        return
    assert dumps_bytes(obj) == want


def test_dumps_bytes_escapes_every_code_point_as_dumps():
    from agentflan.io import dumps_bytes
    chars = [chr(i) for i in range(0x110000) if not 0xD800 <= i < 0xE000]
    for k in range(0, len(chars), 8192):
        s = "".join(chars[k:k + 8192])
        assert dumps_bytes({s: [s]}) == _line({s: [s]})


# ----------------------------------------------------------------------------- loading the tokenizer fast
# The token_counts job tokenises with tokenizer.json read by `tokenizers` (no transformers import)
# while a forked process loads the directory with transformers, torch kept out; if the two differ
# in anything that fixes the tokens, it tokenises again with transformers' tokenizer.

def _fresh_python(code: str) -> str:
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parent).stdout


@pytest.mark.parametrize("which", ["llama2", "mistral", "bpe"])
def test_loading_without_torch_and_from_tokenizer_json_give_transformers_tokenizer(which, mini_corpus):
    from agentflan.tokcache import _FileTokenizer, _fingerprint
    tok_dir = {"llama2": sptokenizers.llama2_tokenizer_dir, "mistral": sptokenizers.mistral_tokenizer_dir,
               "bpe": lambda: mini_corpus[2]}[which]()
    got = json.loads(_fresh_python(
        "import json, sys\n"
        "from agentflan.tokcache import _fingerprint, load_tokenizer_without_torch\n"
        f"tok = load_tokenizer_without_torch({str(tok_dir)!r})\n"
        "print(json.dumps([list(_fingerprint(tok.backend_tokenizer, tok.bos_token_id)), 'torch' in sys.modules]))\n"))
    tok = load_tokenizer(str(tok_dir))
    want = list(_fingerprint(tok.backend_tokenizer, tok.bos_token_id))
    assert got == [want, False]
    assert list(_FileTokenizer.read(tok_dir)[1]) == want


def test_tokenizer_json_unlike_transformers_load_is_tokenised_again(fixture_corpus, tmp_path):
    """A tokenizer_config.json that adds a token tokenizer.json does not have: transformers' load
    differs, and the counts are those of transformers' tokenizer."""
    import shutil
    records = _all_records(*fixture_corpus)
    tok_dir = tmp_path / "tok"
    shutil.copytree(sptokenizers.llama2_tokenizer_dir(), tok_dir)
    conf = json.loads((tok_dir / "tokenizer_config.json").read_text())
    conf["added_tokens_decoder"] = {"32000": {"content": "Thought:", "lstrip": False, "normalized": False,
                                              "rstrip": False, "single_word": False, "special": False}}
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(conf))
    summary = build(records, tok_dir, 8192, tmp_path / "c.jsonl")
    assert summary["tokenizer"].startswith("transformers (tokenizer.json differs")
    tok = load_tokenizer(str(tok_dir))
    assert tok.convert_tokens_to_ids("Thought:") == 32000   # the case is real: the token splits text
    write_counts(tmp_path / "want.jsonl", build_rows(records, TemplateTokenizer(tok), 8192), tokenizer_hash(tok_dir), 8192)
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "want.jsonl").read_bytes()
    summary = build(records, sptokenizers.llama2_tokenizer_dir(), 8192, tmp_path / "d.jsonl")
    assert summary["tokenizer"] == "tokenizer.json (the same as transformers loads)"


def test_batched_rows_in_worker_processes(fixture_corpus, mini_corpus, llama2_tokenizer):
    converted, general, tok_dir = mini_corpus
    for records, tok in ((_all_records(*fixture_corpus), llama2_tokenizer),
                         (_all_records(converted, general), load_tokenizer(str(tok_dir)))):
        records = _random_masks(records, 7) + records
        one, two = TemplateTokenizer(tok), TemplateTokenizer(tok)
        assert build_rows(records, one, 100, batch=5) == build_rows(records, two, 100, batch=5, workers=2)
        assert one.split_texts == two.split_texts


def test_recorded_view_spares_the_forked_check_and_stops_holding_when_anything_changes(
        fixture_corpus, tmp_path, monkeypatch):
    """The tokenizer job's record of how transformers loads its directory (write_view): the
    token_counts job then starts no check process and writes the same counts; another file or
    another transformers/tokenizers version voids the record (the forked check runs again)."""
    import shutil

    from agentflan import tokcache
    records = _all_records(*fixture_corpus)
    tok_dir = tmp_path / "tok"
    shutil.copytree(sptokenizers.llama2_tokenizer_dir(), tok_dir)
    assert tokcache.recorded_view(tok_dir) is None
    fp = tokcache.write_view(tok_dir)
    tok = load_tokenizer(str(tok_dir))
    assert fp == tokcache._fingerprint(tok.backend_tokenizer, tok.bos_token_id)
    assert tokcache.recorded_view(tok_dir) == fp
    check = tokcache.TokenizerCheck.start(tok_dir)
    assert check.proc is None and check.result() == fp
    summary = build(records, tok_dir, 8192, tmp_path / "a.jsonl")
    assert summary["tokenizer"] == "tokenizer.json (the same as transformers loads, as the tokenizer job recorded)"
    # the counts equal those of a directory without the record, but for the tokenizer hash
    plain = build(records, sptokenizers.llama2_tokenizer_dir(), 8192, tmp_path / "b.jsonl")
    assert plain["tokenizer"] == "tokenizer.json (the same as transformers loads)"
    a = (tmp_path / "a.jsonl").read_text().splitlines()
    b = (tmp_path / "b.jsonl").read_text().splitlines()
    assert a[1:] == b[1:] and a[0] != b[0]
    assert tokenizer_hash(tok_dir) in a[0]

    (tok_dir / "tokenizer_config.json").write_text((tok_dir / "tokenizer_config.json").read_text() + "\n")
    assert tokcache.recorded_view(tok_dir) is None
    assert tokcache.TokenizerCheck.start(tok_dir).proc is not None
    tokcache.write_view(tok_dir)
    assert tokcache.recorded_view(tok_dir) == fp
    monkeypatch.setattr(tokcache, "_versions", lambda: {"transformers": "0.0", "tokenizers": "0.0"})
    assert tokcache.recorded_view(tok_dir) is None


def test_tokenizer_job_records_transformers_view(mini_corpus, tmp_path):
    """stages.tokenizer leaves the record in the directory it writes (the miniature's BPE)."""
    from agentflan import stages, tokcache
    from agentflan.io import write_jsonl
    converted, general, _ = mini_corpus
    for stem, recs in converted.items():
        write_jsonl(tmp_path / "converted" / f"{stem}.jsonl", recs)
    write_jsonl(tmp_path / "sharegpt.jsonl", general)
    out = tmp_path / "tok"
    stages.tokenizer("bpe", str(out), str(tmp_path / "converted"), str(tmp_path / "sharegpt.jsonl"), None, 600,
                     None, None)
    tok = load_tokenizer(str(out))
    assert tokcache.recorded_view(out) == tokcache._fingerprint(tok.backend_tokenizer, tok.bos_token_id)
    names = sorted(p.name for p in out.iterdir())
    assert tokcache.VIEW_FILE in names and "tokenizer.json" in names and not any(n.endswith(".tmp") for n in names)
