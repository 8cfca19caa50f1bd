"""Every kind of bad input ends in one error line naming the file, the 1-based line and (where it
is known) the record id, and the stage leaves no output; or it is accepted by a documented rule
(data/README.md, "Bad input").

The released files are malformed copies of tests/fixtures/release; the bad line is always line 3
of ``toolbench_react_10p.jsonl`` (two good records before it) unless the case says otherwise, and
conversion goes through the ``convert`` stage function (all seven files, all-or-nothing).
"""
from __future__ import annotations

import codecs
import gzip
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from agentflan import config as cfg
from agentflan import io as afio
from agentflan import stages
from agentflan.convert import SKIPPED_NAME, build_card, load_skipped
from agentflan.io import DataError, read_json, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "tests" / "fixtures" / "release"
REPO = "internlm/Agent-FLAN"
TARGET = "toolbench_react_10p.jsonl"

GOOD_TURNS = [{"role": "user", "content": "Weather in Paris?"},
              {"role": "assistant", "content": "Sunny.", "loss": True}]


def rec(rid: str, conv=None, **extra) -> bytes:
    """One released record as a JSON line (UTF-8)."""
    return (json.dumps({"id": rid, "conversation": GOOD_TURNS if conv is None else conv, **extra},
                       ensure_ascii=False) + "\n").encode("utf-8")


@pytest.fixture
def raw(tmp_path) -> Path:
    d = tmp_path / "raw"
    shutil.copytree(RELEASE / "internlm", d / "internlm")
    return d


def target(raw: Path) -> Path:
    return raw / REPO / "data" / TARGET


def good_lines(raw: Path) -> bytes:
    data = target(raw).read_bytes()
    assert data.count(b"\n") == 2
    return data


def run_convert(raw: Path, tmp_path: Path):
    out = tmp_path / "converted"
    stages.convert(raw_dir=str(raw), out_dir=str(out))
    return out


def assert_refused(raw: Path, tmp_path: Path, line: int | None, record: str | None, *words: str,
                   file: Path | None = None) -> str:
    """Convert must fail with one line naming file:line (record), and write nothing."""
    path = file or target(raw)
    with pytest.raises(DataError) as ei:
        run_convert(raw, tmp_path)
    msg = str(ei.value)
    where = f"{path}:{line}" if line is not None else f"{path}: "
    assert msg.startswith(where), msg
    if record is not None:
        assert f"(record {record!r})" in msg, msg
    else:
        assert "(record" not in msg, msg
    for w in words:
        assert w in msg, msg
    assert "\n" not in msg and "\r" not in msg
    msg.encode("utf-8")  # printable: no lone surrogate in the message itself
    out = tmp_path / "converted"
    assert not out.exists() or list(out.iterdir()) == [], "a failed convert left output behind"
    return msg


# ------------------------------------------------------------------------------ encodings

def _latin1_line(raw):
    return good_lines(raw) + rec("bad_3", [{"role": "user", "content": "café"}, GOOD_TURNS[1]]) \
        .decode("utf-8").encode("latin-1")


ENCODING_CASES = {
    # name: (make file bytes from the good bytes, line, record, words in the message)
    "latin1": (_latin1_line, 3, "bad_3", ["not valid UTF-8", "0xe9", "Latin-1"]),
    "cp1252_quote": (lambda raw: good_lines(raw) + b'{"id": "bad_3", "conversation": [{"role": "user", '
                     b'"content": "\x93quoted\x94"}]}\n', 3, "bad_3", ["not valid UTF-8", "0x93"]),
    "utf16_bom": (lambda raw: good_lines(raw).decode().encode("utf-16"), 1, None, ["UTF-16-LE", "UTF-8"]),
    "utf16_be_bom": (lambda raw: codecs.BOM_UTF16_BE + good_lines(raw).decode().encode("utf-16-be"), 1, None,
                     ["UTF-16-BE"]),
    "utf32_bom": (lambda raw: good_lines(raw).decode().encode("utf-32"), 1, None, ["UTF-32-LE"]),
    "utf16_no_bom": (lambda raw: good_lines(raw).decode().encode("utf-16-le"), 1, "toolbench_react_10p_0",
                     ["NUL byte", "UTF-16"]),
    "utf16_line_inside": (lambda raw: good_lines(raw) + rec("bad_3").decode().encode("utf-16-le"), 3, "bad_3",
                          ["NUL byte"]),
    "gzip_named_jsonl": (lambda raw: gzip.compress(good_lines(raw)), 1, None, ["gzip"]),
    "zip_named_jsonl": (lambda raw: _zip(good_lines(raw)), 1, None, ["zip archive"]),
    "parquet_named_jsonl": (lambda raw: b"PAR1" + b"\x00" * 20, 1, None, ["Parquet"]),
    "git_lfs_pointer": (lambda raw: b"version https://git-lfs.github.com/spec/v1\noid sha256:"
                        + b"0" * 64 + b"\nsize 123\n", 1, None, ["Git LFS pointer"]),
    "cut_in_multibyte_char": (lambda raw: good_lines(raw) + rec("bad_3", [{"role": "user", "content": "caf\u00e9"}])
                              [:-1].split("\u00e9".encode())[0] + "\u00e9".encode()[:1], 3, "bad_3",
                              ["ends inside a multi-byte UTF-8 character", "truncated"]),
    "utf8_bom_mid_file": (lambda raw: good_lines(raw) + codecs.BOM_UTF8 + rec("bad_3"), 3, "bad_3",
                          ["byte order mark inside the file"]),
}


def _zip(data: bytes) -> bytes:
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(TARGET, data)
    return buf.getvalue()


@pytest.mark.parametrize("case", sorted(ENCODING_CASES))
def test_encoding_refused(case, raw, tmp_path):
    make, line, record, words = ENCODING_CASES[case]
    data = make(raw)
    target(raw).write_bytes(data)
    assert_refused(raw, tmp_path, line, record, *words)


# ------------------------------------------------------------------------------ JSON syntax and values

JSON_CASES = {
    "nested_thousands_deep": (b'{"id": "bad_3", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}\n", "bad_3",
                              ["nested too deeply"]),
    "nested_over_limit": (b'{"id": "bad_3", "x": ' + b"[" * 64 + b"]" * 64 + b"}\n", "bad_3",
                          ["more than 64 levels"]),
    "lone_high_surrogate": (b'{"id": "bad_3", "conversation": [{"role": "user", "content": "hi \\ud83d"}]}\n',
                            "bad_3", ["lone UTF-16 surrogate \\ud83d", ".conversation[0].content"]),
    "lone_low_surrogate": (b'{"id": "bad_3", "conversation": [{"role": "user", "content": "\\ude00 x"}]}\n',
                           "bad_3", ["lone UTF-16 surrogate \\ude00"]),
    "reversed_surrogate_pair": (b'{"id": "bad_3", "conversation": [{"role": "user", "content": "\\ude00\\ud83d"}]}\n',
                                "bad_3", ["lone UTF-16 surrogate"]),
    "surrogate_in_key": (b'{"id": "bad_3", "\\ud800": 1}\n', "bad_3", ["lone UTF-16 surrogate", "in key"]),
    "raw_control_character": (b'{"id": "bad_3", "conversation": [{"role": "user", "content": "a\x01b"}]}\n',
                              "bad_3", ["raw control character U+0001"]),
    "raw_tab_in_string": (b'{"id": "bad_3", "conversation": [{"role": "user", "content": "a\tb"}]}\n',
                          "bad_3", ["raw control character U+0009"]),
    "nan_literal": (b'{"id": "bad_3", "score": NaN}\n', "bad_3", ["NaN"]),
    "infinity_literal": (b'{"id": "bad_3", "score": Infinity}\n', "bad_3", ["Infinity"]),
    "minus_infinity_literal": (b'{"id": "bad_3", "score": -Infinity}\n', "bad_3", ["-Infinity"]),
    "float_overflow": (b'{"id": "bad_3", "score": 1e999}\n', "bad_3", ["overflows to infinity"]),
    "integer_over_4300_digits": (b'{"id": "bad_3", "n": ' + b"7" * 5000 + b"}\n", "bad_3", ["digits"]),
    "duplicate_key": (b'{"id": "bad_3", "conversation": [{"role": "assistant", "content": "x", '
                      b'"loss": true, "loss": false}]}\n', "bad_3", ["duplicate key 'loss'"]),
    "truncated_last_line": (rec("bad_3")[:60], "bad_3", ["invalid JSON", "truncated"]),
    "truncated_mid_file": (rec("bad_3")[:60] + b"\n" + rec("ok_4"), "bad_3", ["invalid JSON", "truncated"]),
    "not_json_text": (b"id,conversation\n", None, ["invalid JSON", "Expecting value"]),
    "single_quotes": (b"{'id': 'bad_3'}\n", None, ["invalid JSON"]),
    "trailing_comma": (b'{"id": "bad_3", "conversation": [],}\n', "bad_3", ["invalid JSON"]),
    "top_level_array": (b'[{"id": "bad_3"}]\n', None, ["JSON array, expected an object"]),
    "top_level_string": (b'"bad_3"\n', None, ["JSON string, expected an object"]),
    "top_level_number": (b"3\n", None, ["JSON number, expected an object"]),
    "top_level_null": (b"null\n", None, ["JSON null, expected an object"]),
    "top_level_boolean": (b"true\n", None, ["JSON boolean, expected an object"]),
    "sharegpt_layout": (b'{"id": "bad_3", "conversations": [{"from": "human", "value": "x"}]}\n', "bad_3",
                        ["'conversations'"]),
    "missing_id": (b'{"conversation": []}\n', None, ["no string 'id'"]),
    "empty_conversation": (b'{"id": "bad_3", "conversation": []}\n', "bad_3", ["non-empty 'conversation'"]),
    "non_boolean_loss": (rec("bad_3", [GOOD_TURNS[0], {**GOOD_TURNS[1], "loss": "yes"}]), "bad_3",
                         ["non-boolean 'loss'"]),
    "unknown_role": (rec("bad_3", [{"role": "tool", "content": "{}"}]), "bad_3", ["unknown role 'tool'"]),
    "non_string_content": (rec("bad_3", [{"role": "user", "content": ["a"]}]), "bad_3",
                           ["non-string 'content'"]),
}


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_json_line_refused(case, raw, tmp_path):
    line_bytes, record, words = JSON_CASES[case]
    target(raw).write_bytes(good_lines(raw) + line_bytes)
    assert_refused(raw, tmp_path, 3, record, *words)


def test_json_array_file_under_jsonl_name(raw, tmp_path):
    recs = [json.loads(x) for x in good_lines(raw).splitlines()]
    target(raw).write_text(json.dumps(recs, indent=2), encoding="utf-8")
    assert_refused(raw, tmp_path, 1, None, "JSON array or pretty-printed JSON, not JSON Lines")


def test_html_page_under_jsonl_name(raw, tmp_path):
    target(raw).write_bytes(b"<!DOCTYPE html>\n<html><body>Rate limit exceeded</body></html>\n")
    assert_refused(raw, tmp_path, 1, None, "HTML/XML, not JSON")


def test_huge_line_over_the_limit(raw, tmp_path, monkeypatch):
    monkeypatch.setattr(afio, "MAX_LINE_BYTES", 4096)
    long = rec("bad_3", [{"role": "user", "content": "x" * 5000}, GOOD_TURNS[1]])
    target(raw).write_bytes(good_lines(raw) + long)
    assert_refused(raw, tmp_path, 3, "bad_3", "longer than 4096 bytes", "MAX_LINE_BYTES")


def test_documented_line_limit_is_large_enough():
    assert afio.MAX_LINE_BYTES == 16 * 1024 * 1024 and afio.MAX_JSON_DEPTH == 64


def test_empty_file(raw, tmp_path):
    target(raw).write_bytes(b"\n  \n")
    assert_refused(raw, tmp_path, None, None, "file is empty")


def test_bad_record_in_a_later_file_leaves_no_converted_file(raw, tmp_path):
    """All-or-nothing across the seven files: the error is in the last stem alphabetically."""
    last = raw / REPO / "data" / "toolbench_tflan_cot_30p.jsonl"
    last.write_bytes(last.read_bytes() + b'{"id": "bad_3", "v": NaN}\n')
    assert_refused(raw, tmp_path, 3, "bad_3", "NaN", file=last)


def test_failed_write_leaves_no_partial_file(tmp_path):
    def records():
        yield {"id": "a"}
        raise RuntimeError("disk full")
    out = tmp_path / "o.jsonl"
    with pytest.raises(RuntimeError):
        afio.write_jsonl(out, records())
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ accepted by rule

def _convert_ok(raw, tmp_path):
    out = run_convert(raw, tmp_path)
    return read_jsonl(out / TARGET), load_skipped(out)


def test_utf8_bom_at_start_is_accepted(raw, tmp_path):
    plain, _ = _convert_ok(raw, tmp_path / "a")
    target(raw).write_bytes(codecs.BOM_UTF8 + good_lines(raw))
    assert _convert_ok(raw, tmp_path / "b")[0] == plain


def test_crlf_line_endings_are_accepted(raw, tmp_path):
    plain, _ = _convert_ok(raw, tmp_path / "a")
    target(raw).write_bytes(good_lines(raw).replace(b"\n", b"\r\n"))
    assert _convert_ok(raw, tmp_path / "b")[0] == plain


def test_escaped_control_characters_and_surrogate_pairs_are_accepted(raw, tmp_path):
    line = b'{"id": "ok_3", "conversation": [{"role": "user", "content": "a\\u0000b\\u001b[0m \\ud83d\\ude00"}, ' \
           b'{"role": "assistant", "content": "ok"}]}\n'
    target(raw).write_bytes(good_lines(raw) + line)
    recs, _ = _convert_ok(raw, tmp_path)
    assert recs[-1]["turns"][0]["content"] == "a\x00b\x1b[0m \U0001F600"


# ------------------------------------------------------------------------------ record policies

def test_duplicate_record_id_is_refused(raw, tmp_path):
    target(raw).write_bytes(good_lines(raw) + rec("toolbench_react_10p_0"))
    assert_refused(raw, tmp_path, 3, "toolbench_react_10p_0", "duplicate record id", "first on line 1")


@pytest.mark.parametrize("reason,conv", [
    ("no_assistant_turn", [{"role": "system", "content": "tools"}, {"role": "user", "content": "hi"}]),
    ("no_trained_turn", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a", "loss": False},
                         {"role": "user", "content": "more"}, {"role": "assistant", "content": "b", "loss": False}]),
    ("opens_with_assistant", [{"role": "assistant", "content": "Sure."}, {"role": "user", "content": "hi"},
                              {"role": "assistant", "content": "ok"}]),
])
def test_untrainable_record_is_skipped_and_listed(reason, conv, raw, tmp_path):
    target(raw).write_bytes(good_lines(raw) + rec("skip_3", conv))
    out = run_convert(raw, tmp_path)
    assert [r["id"] for r in read_jsonl(out / TARGET)] == ["toolbench_react_10p_0", "toolbench_react_10p_1"]
    skipped = load_skipped(out)
    assert skipped["toolbench_react_10p"] == [{"id": "skip_3", "line": 3, "reason": reason}]
    assert all(v == [] for k, v in skipped.items() if k != "toolbench_react_10p")
    # the data card counts and lists it
    converted = {p.stem: read_jsonl(p) for p in sorted(out.glob("*.jsonl"))}
    card = build_card(converted, _NoTok(), 100, tmp_path / "card.json", tmp_path / "card.md",
                      {"description": "test"}, skipped=skipped)
    entry = card["files"]["toolbench_react_10p"]["skipped"]
    assert entry == {"total": 1, "by_reason": {reason: 1}, "ids": ["skip_3"], "listed": True}
    assert card["total_skipped"] == 1
    md = (tmp_path / "card.md").read_text(encoding="utf-8")
    assert "## Records skipped by the conversion" in md and "`skip_3`" in md


def test_file_with_only_untrainable_records_is_refused(raw, tmp_path):
    conv = [{"role": "user", "content": "hi"}]
    target(raw).write_bytes(rec("a", conv) + rec("b", conv))
    assert_refused(raw, tmp_path, None, None, "no trainable record", "no_assistant_turn")


def test_card_refuses_missing_skip_list(raw, tmp_path):
    out = run_convert(raw, tmp_path)
    (out / SKIPPED_NAME).unlink()
    with pytest.raises(DataError, match="re-run the convert stage"):
        load_skipped(out)


class _NoTok:
    """Stand-in for SegmentTokenizer in card tests: one token per character."""

    def encode_record(self, rec, max_length=None):
        from agentflan.template import Encoded
        n = sum(len(t["content"]) for t in rec["turns"])
        return Encoded(list(range(n)), [0] * n, [0] * n, [0] * n)


# ------------------------------------------------------------------------------ whole-file JSON (ShareGPT)

SHAREGPT = "anon8231489123/ShareGPT_Vicuna_unfiltered/ShareGPT_V3_unfiltered_cleaned_split.json"


def _sharegpt(tmp_path, data: bytes) -> Path:
    p = tmp_path / "raw" / SHAREGPT
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _run_sharegpt(tmp_path):
    out = tmp_path / "general"
    stages.sharegpt(raw_dir=str(tmp_path / "raw"), out=str(out / "sharegpt.jsonl"),
                    stats=str(out / "stats.json"), english_only=True, max_conversations=None, seed=0)
    return out


SG_GOOD = b'[\n {"id": "s1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},\n'


@pytest.mark.parametrize("case,data,line,record,word", [
    ("latin1", SG_GOOD + ' {"id": "s2", "conversations": [{"from": "human", "value": "café"}]}\n]'
     .encode("latin-1"), 3, None, "not valid UTF-8"),
    ("lone_surrogate", SG_GOOD + b' {"id": "s2", "conversations": [{"from": "human", "value": "\\ud83d"}]}\n]',
     3, "s2", "lone UTF-16 surrogate"),
    ("utf16", (SG_GOOD + b"]").decode().encode("utf-16"), 1, None, "UTF-16-LE"),
    ("nan", SG_GOOD + b' {"id": "s2", "n": NaN}\n]', None, None, "NaN"),
    ("truncated", SG_GOOD + b' {"id": "s2", "conv', 3, None, "truncated"),
])
def test_sharegpt_file_refused(case, data, line, record, word, tmp_path):
    path = _sharegpt(tmp_path, data)
    with pytest.raises(DataError) as ei:
        _run_sharegpt(tmp_path)
    msg = str(ei.value)
    assert msg.startswith(f"{path}:{line}" if line else f"{path}"), msg
    assert word in msg and "\n" not in msg
    if record:
        assert f"(record {record!r})" in msg
    assert not (tmp_path / "general").exists()


def test_sharegpt_wrong_top_level_type(tmp_path):
    path = _sharegpt(tmp_path, b'{"id": "s1", "conversations": []}')
    with pytest.raises(DataError) as ei:
        _run_sharegpt(tmp_path)
    assert str(ei.value).startswith(f"{path}: top level is a dict, expected a JSON array")
    assert not (tmp_path / "general").exists()


# ------------------------------------------------------------------------------ the CLI

def _cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "agentflan.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize("case", ["latin1", "utf16_bom", "lone_surrogate"])
def test_cli_prints_one_line_and_exits_nonzero(case, raw, tmp_path):
    data = {"latin1": _latin1_line(raw), "utf16_bom": good_lines(raw).decode().encode("utf-16"),
            "lone_surrogate": good_lines(raw) + JSON_CASES["lone_high_surrogate"][0]}[case]
    target(raw).write_bytes(data)
    out = tmp_path / "converted"
    res = _cli("convert", "--params", json.dumps({"raw_dir": str(raw), "out_dir": str(out)}))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [x for x in res.stderr.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {target(raw)}:")
    assert not [x for x in res.stderr.splitlines() if x and not x.startswith("error: ") and " INFO " not in x]
    assert not out.exists()


def test_cli_bad_params_is_one_line():
    res = _cli("convert", "--params", "{not json")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("error: --params:") and len(res.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ config

def _cfg_file(tmp_path, text: str) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(text, encoding="utf-8")
    return p


BASE_CFG = (ROOT / "config" / "config.yaml").read_text(encoding="utf-8")


def _line_of(text: str, needle: str) -> int:
    return next(i for i, x in enumerate(text.splitlines(), start=1) if needle in x)


@pytest.mark.parametrize("case,edit,needle,key,word", [
    ("max_length_negative", ("max_length: 448", "max_length: -3"), "max_length: -3", "data.max_length",
     "minimum"),
    ("max_length_string", ("max_length: 448", "max_length: long"), "max_length: long", "data.max_length",
     "not of type"),
    ("unknown_tokenizer_kind", ("kind: bpe", "kind: sentencepiece"), "kind: sentencepiece", "tokenizer.kind",
     "is not one of"),
    ("unknown_preset", ("preset: miniature", "preset: tiny"), "preset: tiny", "preset", "is not one of"),
    ("main_size_not_in_sizes", ("main_size: xs", "main_size: xl"), "main_size: xl", "models.main_size",
     "not in models.sizes"),
    ("unknown_top_level_key", ("seed: 0\n", "seed: 0\nsede: 1\n"), "sede: 1", "sede", "not allowed"),
])
def test_config_value_outside_schema(case, edit, needle, key, word, tmp_path):
    text = BASE_CFG.replace(*edit, 1)
    assert text != BASE_CFG
    path = _cfg_file(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.load_config(path)
    msg = str(ei.value)
    assert msg.startswith(f"{path}:{_line_of(text, needle)}: {key}: "), msg
    assert word in msg and "\n" not in msg


@pytest.mark.parametrize("case,extra,needle,key,word", [
    ("unknown_benchmark", "evaluation:\n  benchmarks:\n    mbpp: {max_samples: 3}\n", "mbpp:",
     "evaluation.benchmarks.mbpp", "unknown benchmark 'mbpp'"),
    ("unknown_ablation_format", "ablations:\n  datasets:\n    mine: {format: toolformer}\n", "mine:",
     "ablations.datasets.mine.format", "'toolformer' is not one of"),
    ("ablation_without_format", "ablations:\n  datasets:\n    mine: {sharegpt: true}\n", "mine:",
     "ablations.datasets.mine.format", "unknown format None"),
    ("unknown_capability_weight", "ablations:\n  datasets:\n    mine: {format: chat, weights: {planning: 1}}\n",
     "mine:", "ablations.datasets.mine.weights.planning", "unknown capability 'planning'"),
    ("weight_out_of_range", "ablations:\n  datasets:\n    mine: {format: chat, weights: {reasoning: 2}}\n",
     "mine:", "ablations.datasets.mine.weights.reasoning", "not a number in [0, 1]"),
    ("dataset_name_not_a_wildcard", "ablations:\n  datasets:\n    My-Set: {format: chat}\n", "My-Set:",
     "ablations.datasets.My-Set", "must match"),
])
def test_unknown_ablation_or_benchmark_name(case, extra, needle, key, word, tmp_path):
    text = BASE_CFG + "\n" + extra
    path = _cfg_file(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.load_config(path)
    msg = str(ei.value)
    assert msg.startswith(f"{path}:{_line_of(text, needle)}: {key}: "), msg
    assert word in msg


def test_config_error_without_a_file_names_the_key():
    config = yaml.safe_load(BASE_CFG)
    config["data"]["max_length"] = 0
    with pytest.raises(cfg.ConfigError, match=r"^config: data\.max_length: 0 is less than the minimum"):
        cfg.validate(config)


# ------------------------------------------------------------------------------ tokenizer

def _tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    corpus = ["Human Assistant weather Paris calculator answer 12 30 42 <|>"] * 20
    specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    if kind == "unk":  # word-level pieces, an unk token, ASCII-only vocabulary
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        specials["unk_token"] = "<unk>"
    else:  # byte-level pre-tokenizer but no byte alphabet and no unk: unknown bytes vanish
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(vocab_size=200, special_tokens=list(
        dict.fromkeys(["<pad>", "<s>", "</s>", *(["<unk>"] if kind == "unk" else [])]))))
    return PreTrainedTokenizerFast(tokenizer_object=tok, **specials)


@pytest.mark.parametrize("kind,word", [("unk", "unknown token"), ("lossy", "decoding its ids gives")])
def test_tokenizer_that_cannot_encode_the_template(kind, word, tmp_path):
    src = tmp_path / "badtok"
    _tokenizer(kind).save_pretrained(src)
    out = tmp_path / "tokenizer"
    with pytest.raises(DataError) as ei:
        stages.tokenizer(kind="pretrained", out_dir=str(out), converted_dir="", sharegpt_path="",
                         pretrain_path=None, vocab_size=0, name_or_path=str(src), revision=None)
    msg = str(ei.value)
    assert msg.startswith(f"{src}: ") and word in msg and "user begin tag" in msg
    assert not out.exists() and not Path(str(out) + ".tmp").exists()


def test_miniature_bpe_passes_the_tokenizer_check(raw, tmp_path):
    conv = run_convert(raw, tmp_path)
    sg = tmp_path / "sharegpt.jsonl"
    afio.write_jsonl(sg, [{"id": "s", "source": "sharegpt", "turns": [
        {"role": "user", "content": "hi", "train": False, "capability": None},
        {"role": "assistant", "content": "hello", "train": True, "capability": None}]}])
    out = tmp_path / "tok"
    stages.tokenizer(kind="bpe", out_dir=str(out), converted_dir=str(conv), sharegpt_path=str(sg),
                     pretrain_path=None, vocab_size=400, name_or_path=None, revision=None)
    assert (out / "tokenizer.json").exists()


@pytest.mark.parametrize("fixture", ["llama2_tokenizer", "mistral_tokenizer"])
def test_sentencepiece_tokenizers_of_the_paper_pass(fixture, request):
    """Llama-2 (the paper's models) and Mistral (tags only through byte fallback) pass the check."""
    from agentflan.validation import check_tokenizer
    check_tokenizer(request.getfixturevalue(fixture), fixture)


# ------------------------------------------------------------------------------ sources lock (download)

def _fetch_setup(tmp_path):
    from agentflan.download import AGENTFLAN_STEMS, SourceSpec, fetch_source
    mirror = tmp_path / "mirror"
    shutil.copytree(RELEASE / "internlm", mirror / "internlm")
    spec = SourceSpec("agentflan", REPO, files=["*.jsonl"], required=[f"*{s}.jsonl" for s in AGENTFLAN_STEMS])
    dest, lock = tmp_path / "raw", tmp_path / "sources.lock.json"
    fetch_source(spec, dest, lock, mirror=mirror)
    return spec, mirror, dest, lock


def test_altered_source_file_is_refused(tmp_path):
    from agentflan.download import fetch_source
    from agentflan.io import sha256_file
    spec, mirror, dest, lock = _fetch_setup(tmp_path)
    f = mirror / REPO / "data" / TARGET
    old = sha256_file(f)
    f.write_bytes(f.read_bytes() + rec("extra_2"))
    before = lock.read_bytes()
    with pytest.raises(DataError) as ei:
        fetch_source(spec, dest, lock, mirror=mirror)
    msg = str(ei.value)
    assert msg.startswith(f"{dest / REPO / 'data' / TARGET}: ") and "\n" not in msg
    assert f"file 'data/{TARGET}' changed" in msg and old in msg and sha256_file(f) in msg
    assert lock.read_bytes() == before
    assert sha256_file(dest / REPO / "data" / TARGET) == old


def test_missing_source_file_is_refused(tmp_path):
    from agentflan.download import verify_tree
    _, _, dest, lock = _fetch_setup(tmp_path)
    (dest / REPO / "data" / TARGET).unlink()
    with pytest.raises(DataError) as ei:
        verify_tree(dest, lock)
    msg = str(ei.value)
    assert msg.startswith(f"{dest / REPO / 'data' / TARGET}: ") and f"locked file 'data/{TARGET}' is missing" in msg


def test_corrupt_lock_file_is_refused(tmp_path):
    from agentflan.download import verify_tree
    _, _, dest, lock = _fetch_setup(tmp_path)
    lock.write_bytes(lock.read_bytes()[:-40])
    with pytest.raises(DataError) as ei:
        verify_tree(dest, lock)
    assert str(ei.value).startswith(f"{lock}:") and "truncated" in str(ei.value)


def test_read_json_reports_line_of_bad_token(tmp_path):
    p = tmp_path / "x.json"
    p.write_bytes(b'{\n  "a": 1,\n  "b": NaN\n}\n')
    with pytest.raises(DataError, match=r"x\.json: non-standard JSON constant NaN"):
        read_json(p)
    p.write_bytes(b'{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(DataError, match=r"x\.json:4: invalid JSON"):
        read_json(p)
