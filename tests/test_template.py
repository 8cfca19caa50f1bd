"""The chat template is rendered byte-exactly; label masks follow the loss policy."""
import re
from pathlib import Path

import pytest

from agentflan.convert import convert_records
from agentflan.download import agentflan_files
from agentflan.records import canonical_from_released
from agentflan.template import (ASSISTANT_BEGIN, ASSISTANT_END, ASSISTANT_STOP, CAPABILITY_IDS, PART_IDS, USER_BEGIN,
                                USER_END, SegmentTokenizer, TemplateTokenizer, _Layout, render, segments)


def test_template_bytes_match_authors_readme():
    # <|Human|> + U+0D46, "\n ", <|Assistant|> + U+0D46, U+0D3F + "\n "
    assert USER_BEGIN.encode("utf-8") == b"<|Human|>\xe0\xb5\x86"
    assert USER_END.encode("utf-8") == b"\n "
    assert ASSISTANT_BEGIN.encode("utf-8") == b"<|Assistant|>\xe0\xb5\x86"
    assert ASSISTANT_END.encode("utf-8") == b"\xe0\xb4\xbf\n "


def test_render_conversation_bytes():
    turns = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
             {"role": "assistant", "content": "A"}]
    text = render(turns, add_generation_prompt=False)
    assert text == "<|Human|>\u0d46S\n <|Human|>\u0d46Q\n <|Assistant|>\u0d46A\u0d3f\n "
    assert render(turns[:2], add_generation_prompt=True).endswith("Q\n <|Assistant|>\u0d46")


def test_segments_training_flags_follow_loss_policy():
    rec = canonical_from_released({"id": "x_0", "conversation": [
        {"role": "system", "content": "tools", "loss": True},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "obs", "loss": None},
        {"role": "assistant", "content": "a2", "loss": None},
        {"role": "assistant", "content": "a3", "loss": False}]}, source="x")
    trained_text = "".join(s.text for s in segments(rec["turns"]) if s.trained)
    assert trained_text == "a1" + ASSISTANT_END + "a2" + ASSISTANT_END
    # begin tags are never trained
    assert all(not s.trained for s in segments(rec["turns"]) if s.text in (USER_BEGIN, ASSISTANT_BEGIN))


def test_react_scaffold_is_format_part():
    turns = [{"role": "user", "content": "q"},
             {"role": "assistant", "content": "Thought: look\nAction: Search\nAction Input: {}", "train": True}]
    segs = [s for s in segments(turns) if s.trained]
    fmt = [s.text for s in segs if s.part == "format"]
    assert fmt[:3] == ["Thought:", "Action:", "Action Input:"]
    assert "".join(s.text for s in segs if s.part == "content") == " look\n Search\n {}"


# --------------------------------------------------------------------------------------------
# Tokenisation: one tokenizer call on the rendered text; labels and categories from segment spans.
# The oracle below is independent of the offsets the implementation uses: it maps every token to
# its bytes (SentencePiece pieces / byte-level symbols) and so to its byte span in the text.
# --------------------------------------------------------------------------------------------

RELEASE = Path(__file__).parent / "fixtures" / "release" / "internlm" / "Agent-FLAN"
SPM = ("llama2_tokenizer", "llama2_legacy_tokenizer", "mistral_tokenizer")
ALL = SPM + ("bpe_tokenizer",)


def _turn(role, content, train=False, cap=None):
    return {"role": role, "content": content, "train": train, "capability": cap}


# Template characters and the assistant end sequence inside content, a fake begin tag in user text,
# special-token spellings, leading/trailing spaces, several scripts, an empty turn, a loss:false
# assistant turn followed by an assistant turn, and a ReAct turn.
TRICKY = [
    {"id": "t0", "source": "toolbench_tflan_60p_r10r5u7", "turns": [
        _turn("system", "Tools: search. Reply in \u0d46 style \u0d3f ok."),
        _turn("user", "Is <|Assistant|>\u0d46 a tag? It ends with \u0d3f\n  and </s> <s> <unk>"),
        _turn("assistant", "It is \u0d3f\n inside content, and \u0d46\u0d3f too.", True, "reasoning"),
        _turn("user", "  leading spaces, tabs\tand \u65e5\u672c\u8a9e \U0001F600 caf\u00e9"),
        _turn("assistant", "", True, "retrieval"),
        _turn("assistant", "not trained \u0d3f\n ", False),
        _turn("assistant", " {\"name\": \"search\", \"args\": {}}\n\n", True, "understanding"),
    ]},
    {"id": "t1", "source": "toolbench_react_10p", "turns": [
        _turn("user", "q\u0d46"),
        _turn("assistant", "Thought: look it up\u0d3f\nAction: Search\nAction Input: {\"q\": \"x\"}", True, "other"),
        _turn("user", "Observation: \u0d3f\n done"),
        _turn("assistant", "Final Answer: \u0d46yes\u0d3f", True, "other"),
    ]},
    {"id": "t2", "source": "sharegpt", "turns": [
        _turn("user", "</s>hi"), _turn("assistant", "<s>hello</s>", True)]},
]


@pytest.fixture(scope="module")
def realistic():
    """Every record of the seven released-file fixtures, converted (loss policy, capabilities)."""
    out = []
    for stem, path in sorted(agentflan_files(RELEASE).items()):
        out += convert_records(path, stem)[0]
    assert len(out) >= 10
    return out


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory, realistic):
    from agentflan.modeling import load_tokenizer, train_bpe_tokenizer
    out = tmp_path_factory.mktemp("bpe") / "tok"
    train_bpe_tokenizer([render(r["turns"]) for r in realistic + TRICKY], out, vocab_size=800)
    return load_tokenizer(str(out))


@pytest.fixture(scope="module")
def llama2_legacy_tokenizer(tmp_path_factory):
    """Llama-2 in the hub's older tokenizer.json form: the "▁" prefix and spaces come from a
    normalizer (Prepend + Replace), not a Metaspace pre-tokenizer."""
    import json
    import shutil

    import sptokenizers
    from agentflan.modeling import load_tokenizer
    out = tmp_path_factory.mktemp("llama2-legacy")
    shutil.copytree(sptokenizers.llama2_tokenizer_dir(), out, dirs_exist_ok=True)
    spec = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    assert spec["pre_tokenizer"]["type"] == "Metaspace"
    spec["pre_tokenizer"] = None
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return load_tokenizer(str(out))


def _bytes_to_unicode():
    """GPT-2's byte <-> printable-character table (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) \
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTE_LEVEL = _bytes_to_unicode()
_HEX = re.compile(r"<0x([0-9A-F]{2})>")


def token_bytes(tok, ids: list[int]) -> list[bytes]:
    """The bytes every token stands for, from its vocabulary entry alone."""
    spm = type(tok.backend_tokenizer.pre_tokenizer).__name__ != "ByteLevel"
    out = []
    for piece in tok.convert_ids_to_tokens(ids):
        m = _HEX.fullmatch(piece)
        if spm:
            out.append(bytes([int(m.group(1), 16)]) if m else piece.replace("\u2581", " ").encode())
        else:
            out.append(bytes(_BYTE_LEVEL[c] for c in piece))
    return out


def oracle(tok, record: dict, enc) -> tuple[list[int], list[int], list[int]]:
    """Labels and categories by the module's boundary rule, from byte spans: a token is trained
    iff all its bytes are trained; categories of its first byte's segment."""
    segs = segments(record["turns"], general=record.get("source") == "sharegpt")
    text = "".join(s.text for s in segs).encode()
    ids = enc.input_ids[1:]
    pieces = token_bytes(tok, ids)
    joined = b"".join(pieces)
    if joined == b" " + text:             # the Metaspace prefix "▁" added to the first token
        pieces[0] = pieces[0][1:]
        joined = joined[1:]
    assert joined == text, (record["id"], joined[:80], text[:80])
    seg_of_byte = [i for i, s in enumerate(segs) for _ in s.text.encode()]
    labels, cap, part, pos = [-100], [0], [0], 0
    for tid, b in zip(ids, pieces):
        span = range(pos, pos + max(len(b), 1)) if pos < len(text) else range(len(text) - 1, len(text))
        first = segs[seg_of_byte[span[0]]]
        trained = all(segs[seg_of_byte[i]].trained for i in span)
        labels.append(tid if trained else -100)
        cap.append(CAPABILITY_IDS[first.capability] if trained else 0)
        part.append(PART_IDS[first.part] if trained else 0)
        pos += len(b)
    return labels, cap, part


def decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("name", ALL)
def test_decode_is_rendered_text_and_labels_follow_boundary_rule(name, request, realistic):
    tok = request.getfixturevalue(name)
    st = SegmentTokenizer(tok)
    for rec in TRICKY + realistic:
        enc = st.encode_record(rec)
        assert enc.input_ids[0] == tok.bos_token_id and enc.input_ids.count(tok.bos_token_id) == 1
        assert tok.eos_token_id not in enc.input_ids       # no EOS; "</s>" in content is text
        assert decode(tok, enc.input_ids) == render(rec["turns"]), rec["id"]
        assert len(enc.labels) == len(enc.capability) == len(enc.part) == len(enc)
        labels, cap, part = oracle(tok, rec, enc)
        assert enc.labels == labels, rec["id"]
        assert enc.capability == cap, rec["id"]
        assert enc.part == part, rec["id"]


@pytest.mark.parametrize("name", ALL)
def test_trained_tokens_decode_to_trained_spans(name, request, realistic):
    """Each run of trained tokens is one trained assistant turn's content + end tag; the end tag's
    final space is missing only where it merged with the next turn's begin tag."""
    tok = request.getfixturevalue(name)
    st = SegmentTokenizer(tok)
    dropped = 0
    for rec in TRICKY + realistic:
        enc = st.encode_record(rec)
        pieces = token_bytes(tok, enc.input_ids)
        runs, cur = [], None
        for i, lab in enumerate(enc.labels):
            if lab != -100:
                cur = (cur or b"") + pieces[i]
            elif cur is not None:
                runs.append(cur)
                cur = None
        if cur is not None:
            runs.append(cur)
        trained_turns = [(k, t) for k, t in enumerate(rec["turns"]) if t["train"] and t["role"] == "assistant"]
        assert len(runs) == len(trained_turns), rec["id"]   # begin tags are never trained
        for run, (k, t) in zip(runs, trained_turns):
            whole = (t["content"] + ASSISTANT_END).encode()
            if run != whole:
                assert k < len(rec["turns"]) - 1 and run == (t["content"] + ASSISTANT_STOP).encode(), rec["id"]
                dropped += 1
    assert dropped > 0   # the boundary rule is exercised: some end tag's space merged into "<"



HI = {"id": "hi", "source": "toolbench_react_10p", "turns": [
    _turn("user", "Hi there"), _turn("assistant", "Thought: reply politely.", True, "reasoning")]}


def test_llama2_fixture_is_llama2(llama2_tokenizer):
    # meta-llama/Llama-2-*: "Hello world" -> [1, 15043, 3186]
    assert llama2_tokenizer("Hello world")["input_ids"] == [1, 15043, 3186]
    assert (llama2_tokenizer.bos_token_id, llama2_tokenizer.eos_token_id, len(llama2_tokenizer)) == (1, 2, 32000)


def test_llama2_two_turn_example_is_28_tokens(llama2_tokenizer):
    tok = llama2_tokenizer
    enc = SegmentTokenizer(tok).encode_record(HI)
    assert len(enc) == 28
    # segment by segment (the old way) it was 31 tokens, with a "▁" in front of every segment
    old = 1 + sum(len(tok(s.text, add_special_tokens=False)["input_ids"]) for s in segments(HI["turns"]))
    assert old == 31
    assert tok.convert_ids_to_tokens(enc.input_ids) == [
        "<s>", "\u2581<", "|", "H", "uman", "|", ">", "\u0d46", "Hi", "\u2581there", "<0x0A>",
        "\u2581<", "|", "Ass", "istant", "|", ">", "\u0d46",
        "Th", "ought", ":", "\u2581reply", "\u2581polit", "ely", ".", "\u0d3f", "<0x0A>", "\u2581"]
    trained = [i for i, lab in enumerate(enc.labels) if lab != -100]
    assert trained == list(range(18, 28))
    assert [enc.part[i] for i in trained] == [PART_IDS[p] for p in ["format"] * 3 + ["content"] * 4 + ["format"] * 3]
    assert {enc.capability[i] for i in trained} == {CAPABILITY_IDS["reasoning"]}
    assert set(enc.capability[:18]) == set(enc.part[:18]) == {0}


def test_llama2_end_tag_space_merged_into_next_begin_tag_is_not_trained(llama2_tokenizer):
    tok = llama2_tokenizer
    rec = {"id": "m", "source": "x", "turns": HI["turns"] + [_turn("user", "thanks")]}
    enc = SegmentTokenizer(tok).encode_record(rec)
    toks = tok.convert_ids_to_tokens(enc.input_ids)
    k = toks.index("\u0d3f")
    assert toks[k:k + 3] == ["\u0d3f", "<0x0A>", "\u2581<"]
    assert enc.labels[k] != -100 and enc.labels[k + 1] != -100 and enc.labels[k + 2] == -100
    assert enc.capability[k + 2] == enc.part[k + 2] == 0


def test_byte_fallback_tokens_share_their_character(mistral_tokenizer):
    """Mistral has no "െ" piece: three byte tokens with the same offsets, all in the begin tag."""
    tok = mistral_tokenizer
    rec = {"id": "b", "source": "x", "turns": [_turn("user", "q"), _turn("assistant", "\u0d46a", True, "reasoning")]}
    enc = SegmentTokenizer(tok).encode_record(rec)
    toks = tok.convert_ids_to_tokens(enc.input_ids)
    assert toks.count("<0xE0>") == 3              # two begin tags and the content's "െ"
    last = [i for i, t in enumerate(toks) if t == "<0xE0>"][-1]
    assert toks[last:last + 3] == ["<0xE0>", "<0xB5>", "<0x86>"]
    assert all(enc.labels[i] != -100 for i in range(last, last + 3))        # content: trained
    assert all(enc.labels[i] == -100 for i in range(last - 3, last))        # begin tag: not trained
    assert decode(tok, enc.input_ids) == render(rec["turns"])


def _assert_prompts_are_prefixes(st, records):
    checked = 0
    for rec in records:
        ids = st.encode_record(rec).input_ids
        for k, t in enumerate(rec["turns"]):
            if t["role"] == "assistant":
                prompt = st.encode_prompt([{"role": u["role"], "content": u["content"]} for u in rec["turns"][:k]])
                assert prompt == ids[:len(prompt)], (rec["id"], k)
                assert decode(st.tok, prompt) == render(rec["turns"][:k], add_generation_prompt=True)
                checked += 1
    return checked


@pytest.mark.parametrize("name", ALL)
def test_prompt_ids_are_prefix_of_training_ids(name, request, realistic):
    st = SegmentTokenizer(request.getfixturevalue(name))
    assert _assert_prompts_are_prefixes(st, TRICKY + realistic) > 20


def test_encode_records_batch_equals_one_by_one_and_truncation(llama2_tokenizer, realistic):
    st = TemplateTokenizer(llama2_tokenizer)
    recs = TRICKY + realistic
    batch = st.encode_records(recs)
    assert batch == [st.encode_record(r) for r in recs]
    longest = max(batch, key=len)
    cut = st.encode_records([recs[batch.index(longest)]], max_length=50)[0]
    assert len(cut) == 50 and cut.input_ids == longest.input_ids[:50] and cut.labels == longest.labels[:50]
    assert cut.capability == longest.capability[:50] and cut.part == longest.part[:50]
    assert SegmentTokenizer is TemplateTokenizer


def test_one_tokenizer_call_per_batch(llama2_tokenizer, realistic):
    calls = []

    class Counting:
        bos_token_id = llama2_tokenizer.bos_token_id

        def __call__(self, texts, **kw):
            calls.append(len(texts))
            return llama2_tokenizer(texts, **kw)

    TemplateTokenizer(Counting()).encode_records(TRICKY + realistic)
    assert calls == [len(TRICKY) + len(realistic)]


# --- tokenizers that merge across the end of the assistant begin tag -------------------------

MERGE_TEXTS = [render([_turn("user", f"call tool {i}"), _turn("assistant", f'{{"name": "t{i}"}}'),
                       _turn("user", "ok"), _turn("assistant", f"{{}} done {i}")]) for i in range(300)]
MERGE_RECORDS = [{"id": f"mg{i}", "source": "x", "turns": [
    _turn("system", "tools"), _turn("user", f"call tool {i}"), _turn("assistant", f'{{"name": "t{i}"}}', True, "retrieval"),
    _turn("user", "ok"), _turn("assistant", f"{{}} done {i}", True, "reasoning"),
    _turn("user", "again"), _turn("assistant", "plain text", True, "reasoning")]} for i in range(0, 40, 7)]


@pytest.fixture(scope="module")
def merging_bytelevel(tmp_path_factory):
    from agentflan.modeling import load_tokenizer, train_bpe_tokenizer
    out = tmp_path_factory.mktemp("mbpe") / "tok"
    train_bpe_tokenizer(MERGE_TEXTS, out, vocab_size=400)
    return load_tokenizer(str(out))


@pytest.fixture(scope="module")
def merging_metaspace(tmp_path_factory):
    """A SentencePiece-style BPE (Metaspace prefix, no pre-split) trained on the same text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"]
    texts = MERGE_TEXTS + [render(r["turns"]) for r in MERGE_RECORDS]   # every character in the vocabulary
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=700, special_tokens=specials,
                                                             show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<unk>")
    out = tmp_path_factory.mktemp("mspm")
    fast.save_pretrained(out)
    from agentflan.modeling import load_tokenizer
    return load_tokenizer(str(out))


def _straddles_begin_tag(tok, rec) -> bool:
    text = render(rec["turns"])
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    cuts = _Layout.of(segments(rec["turns"])).cuts
    return any(s < c < e for s, e in enc["offset_mapping"] for c in cuts)


@pytest.mark.parametrize("name", ["merging_bytelevel", "merging_metaspace"])
def test_merge_across_assistant_begin_tag_is_split_like_the_prompt(name, request):
    tok = request.getfixturevalue(name)
    assert all(_straddles_begin_tag(tok, r) for r in MERGE_RECORDS)   # the case under test does occur
    st = TemplateTokenizer(tok)
    for rec in MERGE_RECORDS:
        enc = st.encode_record(rec)
        assert decode(tok, enc.input_ids) == render(rec["turns"]), rec["id"]
        assert (enc.labels, enc.capability, enc.part) == oracle(tok, rec, enc), rec["id"]
    assert st.split_texts > 0
    assert _assert_prompts_are_prefixes(st, MERGE_RECORDS) == 3 * len(MERGE_RECORDS)


@pytest.mark.parametrize("name", SPM)
def test_real_tokenizers_never_need_the_split(name, request, realistic):
    st = TemplateTokenizer(request.getfixturevalue(name))
    st.encode_records(TRICKY + realistic)
    assert st.split_texts == 0


def test_slow_or_offsetless_tokenizer_is_refused():
    class NoOffsets:
        bos_token_id = None

        def __call__(self, texts, **kw):
            return {"input_ids": [[1] for _ in texts], "offset_mapping": [[(3, 1)] for _ in texts]}

    with pytest.raises(ValueError, match=r"record 'hi': tokenizer offsets are not monotonic"):
        TemplateTokenizer(NoOffsets()).encode_record(HI)


def test_bytelevel_bpe_needs_the_split_on_realistic_records(bpe_tokenizer, realistic):
    """So the byte-level cases of the tests above (decode, oracle, prompt prefix) cover split texts."""
    st = TemplateTokenizer(bpe_tokenizer)
    st.encode_records(TRICKY + realistic)
    assert st.split_texts > 0


def test_mistral_fixture_matches_sentencepiece(mistral_tokenizer, realistic):
    """The converted fast tokenizer gives SentencePiece's own ids on the rendered conversations.
    Known difference of transformers' conversion, left out: a run of spaces before a word
    ("\\n  title": fast "▁▁" "title", SentencePiece "▁" "▁title")."""
    import sentencepiece
    import sptokenizers
    sp = sentencepiece.SentencePieceProcessor(
        model_file=str(sptokenizers.source_file(sptokenizers.MISTRAL_COMMON_WHEEL)))
    compared = 0
    for rec in TRICKY + realistic:
        text = render(rec["turns"])
        if re.search(r"  \S", text):
            continue
        ids = mistral_tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert ids == sp.encode(text), rec["id"]
        compared += 1
    assert compared >= 12


def test_segments_tile_the_rendered_text(realistic):
    for rec in TRICKY + realistic:
        for gen in (False, True):
            assert "".join(s.text for s in segments(rec["turns"], add_generation_prompt=gen)) \
                == render(rec["turns"], add_generation_prompt=gen)
