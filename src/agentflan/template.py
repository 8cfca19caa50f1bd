"""The Agent-FLAN chat template, tokenisation and label masks.

Template (authors' README, InternLM/Agent-FLAN; experiments.md §3.1)::

    dict(role='user',      begin='<|Human|>െ',     end='\\n ')
    dict(role='system',    begin='<|Human|>െ',     end='\\n ')
    dict(role='assistant', begin='<|Assistant|>െ', end='ി\\n ')

The odd characters are literal code points: U+0D46 (MALAYALAM VOWEL SIGN E) after each begin tag,
and U+0D3F (MALAYALAM VOWEL SIGN I) before the assistant's newline. ``system`` renders exactly like
``user``.

:func:`segments` is the single definition of the training text: it splits a conversation into
begin tags, content pieces and end tags, each with its training flag and categories; their
concatenation is :func:`render`. A segment is trained if it is the content or the end tag of a
trained assistant turn (see :mod:`agentflan.records` for the loss policy); begin tags never are.
Every trained segment also carries two categories used for the loss-analysis figures:
``capability`` (reasoning / retrieval / understanding / instruction / general / other) and
``part`` (format / content) for ReAct-scaffold turns (Figure 2).

Tokenisation (:class:`TemplateTokenizer`, alias ``SegmentTokenizer``): the rendered conversation
is tokenised **once**, as one string, with character offsets (``return_offsets_mapping``); labels
and categories come from the character spans of the segments. Tokenising segment by segment
would give every segment its own SentencePiece prefix ``▁``: with Llama-2, user ``Hi there`` and
assistant ``Thought: reply politely.`` become 31 tokens that decode with spaces the authors'
text does not have, instead of the 28 (BOS included) of the rendered text.

* **Boundary rule.** A token covers the text characters from its first to its last offset. A
  ``▁`` added by a Metaspace pre-tokenizer is not a character of the text (``▁<`` at the start
  of a conversation covers only ``<``); a space of the text turned into ``▁`` is. Offsets trimmed
  by a byte-level post-processor are widened back to the end of the previous token, and
  byte-fallback tokens of one character (several tokens with that character's offsets) all cover
  that character. **A token is trained (label = its id) iff every character it covers is
  trained**; it takes the capability and part of the segment of its first character. A token
  that straddles a trained/untrained boundary is therefore never trained, so no loss ever falls
  on untrained text. In practice this happens at one place: the assistant end tag's final space
  merges with the ``<`` of the next turn's begin tag (Llama-2 ``▁<``, byte-level BPE ``Ġ<|``), so
  a trained end tag followed by another turn trains ``ി\\n`` and not that space; the last end tag
  of a conversation is trained whole. Generation stops at ``ി\\n`` (:data:`ASSISTANT_STOP`).
* **Generation prompts** (:meth:`TemplateTokenizer.encode_prompt`) are rendered with the assistant
  begin tag and tokenised by the same code, so the prompt ids of a conversation are a prefix of
  the training ids of that conversation continued by an assistant turn. A tokenizer may merge the
  begin tag's last character with the content that follows (a byte-level BPE can learn
  ``െ{``), which would give training ids the model never sees at generation time. When a token
  straddles the end of an assistant begin tag, the text is split there (the last such place
  first, recursively): the part up to and including the begin tag is tokenised as a conversation
  of its own (exactly as :meth:`encode_prompt` tokenises it), the rest as a *continuation*: after
  a sentinel (``\\n``; another one if that merges) whose tokens are dropped, so no Metaspace
  prefix is added. Llama-2 and Mistral never merge there on the test conversations, so they are
  never split; the miniature's byte-level BPE can.
* Strings in the content that spell a special token (``</s>``) are tokenised as text
  (``split_special_tokens``), so content can never inject control tokens.
* BOS (``bos_token_id``) is prepended exactly once; no EOS is added (the assistant end tag ends a
  turn). ``max_length`` truncates from the right, BOS included.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

USER_BEGIN = "<|Human|>\u0d46"
USER_END = "\n "
ASSISTANT_BEGIN = "<|Assistant|>\u0d46"
ASSISTANT_END = "\u0d3f\n "
# The stop string for generation: the assistant end tag without the trailing space.
ASSISTANT_STOP = "\u0d3f\n"

TEMPLATE = {
    "user": (USER_BEGIN, USER_END),
    "system": (USER_BEGIN, USER_END),
    "assistant": (ASSISTANT_BEGIN, ASSISTANT_END),
}

CAPABILITY_IDS = {"none": 0, "reasoning": 1, "retrieval": 2, "understanding": 3, "instruction": 4,
                  "general": 5, "other": 6}
PART_IDS = {"none": 0, "format": 1, "content": 2}

# ReAct scaffolding: keywords at line starts (ToolBench/AgentInstruct styles) are "format" tokens.
_SCAFFOLD = re.compile(r"(?m)^(?:Thought|Action Input|Action|Think|Act|Observation|Final Answer|Answer):")


def render(turns: list[dict], add_generation_prompt: bool = False) -> str:
    """The plain text of a conversation (``turns`` have ``role`` and ``content``)."""
    out = []
    for t in turns:
        begin, end = TEMPLATE[t["role"]]
        out.append(begin + t["content"] + end)
    if add_generation_prompt:
        out.append(ASSISTANT_BEGIN)
    return "".join(out)


@dataclass
class Segment:
    text: str
    trained: bool = False
    capability: str = "none"
    part: str = "none"
    kind: str = "content"    # "begin" (a role's begin tag), "content" or "end" (a role's end tag)
    role: str = ""


@dataclass
class Encoded:
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    capability: list[int] = field(default_factory=list)
    part: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


def _content_segments(content: str, trained: bool, capability: str, react: bool) -> list[Segment]:
    if not react or not trained:
        return [Segment(content, trained, capability, "content" if trained else "none")]
    segs, pos = [], 0
    for m in _SCAFFOLD.finditer(content):
        if m.start() > pos:
            segs.append(Segment(content[pos:m.start()], True, capability, "content"))
        segs.append(Segment(m.group(0), True, capability, "format"))
        pos = m.end()
    if pos < len(content):
        segs.append(Segment(content[pos:], True, capability, "content"))
    return segs


def segments(turns: list[dict], add_generation_prompt: bool = False, general: bool = False) -> list[Segment]:
    """Split a canonical conversation into template segments with their training flags."""
    out: list[Segment] = []
    for t in turns:
        begin, end = TEMPLATE[t["role"]]
        trained = bool(t.get("train")) and t["role"] == "assistant"
        cap = "general" if general else (t.get("capability") or "other")
        cap = cap if trained else "none"
        react = bool(_SCAFFOLD.search(t["content"])) if trained else False
        out.append(Segment(begin, kind="begin", role=t["role"]))
        for seg in _content_segments(t["content"], trained, cap, react):
            seg.role = t["role"]
            out.append(seg)
        out.append(Segment(end, trained, cap, "format" if react else ("content" if trained else "none"),
                           kind="end", role=t["role"]))
    if add_generation_prompt:
        out.append(Segment(ASSISTANT_BEGIN, kind="begin", role="assistant"))
    return out




# Left contexts for tokenising a continuation (text that follows a split point). The sentinel's
# tokens are dropped; one whose last token does not end exactly at the sentinel's end is skipped.
_SENTINELS = ("\n", ".", "\u0d46", "a", " ")
# Records per batched tokenizer call.
_BATCH = 512


@dataclass
class _Layout:
    """Where the segments of one conversation lie in its rendered text."""
    text: str
    starts: np.ndarray       # start offset of every segment
    trained: np.ndarray      # bool per segment
    capability: np.ndarray   # CAPABILITY_IDS per segment
    part: np.ndarray         # PART_IDS per segment
    cuts: list[int]          # text offsets just after every assistant begin tag

    @classmethod
    def of(cls, segs: list[Segment]) -> "_Layout":
        starts, cuts, pos = [], [], 0
        for s in segs:
            starts.append(pos)
            pos += len(s.text)
            if s.kind == "begin" and s.role == "assistant":
                cuts.append(pos)
        return cls("".join(s.text for s in segs), np.asarray(starts, dtype=np.int64),
                   np.asarray([s.trained for s in segs], dtype=bool),
                   np.asarray([CAPABILITY_IDS[s.capability] for s in segs], dtype=np.int64),
                   np.asarray([PART_IDS[s.part] for s in segs], dtype=np.int64), cuts)


def _anchors(offsets, n_text: int) -> tuple[np.ndarray, np.ndarray]:
    """First text character (see the module's boundary rule) and end of every token."""
    off = np.fromiter(chain.from_iterable(offsets), dtype=np.int64, count=2 * len(offsets)).reshape(-1, 2)
    starts, ends = off[:, 0], off[:, 1]
    if len(off) == 0:
        return starts, ends
    reach = np.maximum.accumulate(ends)
    prev = np.concatenate(([0], reach[:-1]))
    anchors = np.minimum(starts, prev)
    if (np.diff(anchors) < 0).any() or reach[-1] > n_text or (starts > ends).any():
        raise ValueError("tokenizer offsets are not monotonic character offsets into the text; "
                         "a fast tokenizer with return_offsets_mapping is required")
    return anchors, ends


def _straddled(anchors: np.ndarray, ends: np.ndarray, cuts: list[int], n_text: int) -> int | None:
    """The last cut (0 < cut < n_text) that lies strictly inside a token, or None."""
    if not len(anchors):
        return None
    reach = np.maximum.accumulate(ends)
    for c in reversed(cuts):
        if 0 < c < n_text:
            i = int(np.searchsorted(anchors, c, side="left")) - 1   # last token starting before c
            if i >= 0 and reach[i] > c:
                return c
    return None


class TemplateTokenizer:
    """Token ids, labels and categories of conversations in the Agent-FLAN template.

    Wraps a fast Hugging Face tokenizer; see the module docstring for the rules. One tokenizer
    call per record (``encode_records`` batches many records into one call)."""

    def __init__(self, tokenizer, add_bos: bool = True):
        self.tok = tokenizer
        self.add_bos = add_bos and tokenizer.bos_token_id is not None
        self.split_texts = 0   # texts tokenised in pieces because a token straddled a begin tag

    # -- tokenizer calls --------------------------------------------------------------------
    def _call(self, texts: list[str]) -> list[tuple[list[int], list]]:
        """One tokenizer call: ids and character offsets of every text's tokens."""
        enc = self.tok(texts, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
        return list(zip(enc["input_ids"], enc["offset_mapping"]))

    def _tokenize(self, texts: list[str]) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
        """Ids, first characters and ends of every text's tokens."""
        return [(list(ids), *_anchors(offs, len(text))) for text, (ids, offs) in zip(texts, self._call(texts))]

    def _continuation(self, text: str) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Tokens of ``text`` as it continues some earlier text (no start-of-text prefix)."""
        for sentinel in _SENTINELS:
            ids, anchors, ends = self._tokenize([sentinel + text])[0]
            n = len(sentinel)
            k = int(np.searchsorted(anchors, n, side="left"))
            if k and int(ends[:k].max()) == n and (k == len(ids) or int(anchors[k]) == n):
                return ids[k:], anchors[k:] - n, ends[k:] - n
        raise ValueError(f"cannot tokenise {text[:40]!r}… as a continuation: every sentinel "
                         f"{_SENTINELS!r} merges with it")

    def _pieces(self, text: str, cuts: list[int], first: bool,
                done: tuple[list[int], np.ndarray, np.ndarray] | None = None
                ) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Ids, first characters and ends of ``text``'s tokens, split at the last straddled cut
        (recursively)."""
        ids, anchors, ends = done if done is not None else (
            self._tokenize([text])[0] if first else self._continuation(text))
        cut = _straddled(anchors, ends, cuts, len(text))
        if cut is None:
            return ids, anchors, ends
        self.split_texts += 1
        li, la, le = self._pieces(text[:cut], [c for c in cuts if c < cut], first)
        ri, ra, re_ = self._pieces(text[cut:], [c - cut for c in cuts if c > cut], False)
        return li + ri, np.concatenate((la, ra + cut)), np.concatenate((le, re_ + cut))

    # -- assembly ---------------------------------------------------------------------------
    def _assemble(self, lay: _Layout, ids: list[int], anchors: np.ndarray, ends: np.ndarray,
                  max_length: int | None) -> Encoded:
        n = len(lay.text)
        if len(ids) and n:
            first = np.minimum(anchors, n - 1)                   # a token's first character
            last = np.clip(np.maximum(ends, first + 1), 1, n)    # one past its last character
            seg = np.searchsorted(lay.starts, first, side="right") - 1
            # untrained characters before each position: a token is trained iff it covers none
            lengths = np.diff(np.append(lay.starts, n))
            untrained = np.concatenate(([0], np.cumsum(np.repeat(~lay.trained, lengths))))
            trained = (untrained[last] - untrained[first]) == 0
            labels = np.where(trained, np.asarray(ids, dtype=np.int64), -100).tolist()
            cap = np.where(trained, lay.capability[seg], 0).tolist()
            part = np.where(trained, lay.part[seg], 0).tolist()
        else:
            labels, cap, part = [-100] * len(ids), [0] * len(ids), [0] * len(ids)
        ids = list(ids)
        if self.add_bos:
            ids, labels, cap, part = [self.tok.bos_token_id] + ids, [-100] + labels, [0] + cap, [0] + part
        if max_length is not None and len(ids) > max_length:
            ids, labels, cap, part = ids[:max_length], labels[:max_length], cap[:max_length], part[:max_length]
        return Encoded(ids, labels, cap, part)

    def _encode_layouts(self, layouts: list[_Layout], max_length: int | None,
                        names: list[str] | None = None) -> list[Encoded]:
        out = []
        for k in range(0, len(layouts), _BATCH):
            chunk = layouts[k:k + _BATCH]
            for i, (lay, (ids, offs)) in enumerate(zip(chunk, self._call([lay.text for lay in chunk]))):
                try:
                    done = (list(ids), *_anchors(offs, len(lay.text)))
                    out.append(self._assemble(lay, *self._pieces(lay.text, lay.cuts, True, done), max_length))
                except ValueError as e:
                    name = names[k + i] if names else f"#{k + i}"
                    raise ValueError(f"record {name}: {e}") from None
        return out

    # -- public interface -------------------------------------------------------------------
    def encode_segments(self, segs: list[Segment], max_length: int | None = None) -> Encoded:
        return self._encode_layouts([_Layout.of(segs)], max_length)[0]

    def encode_records(self, records: list[dict], max_length: int | None = None) -> list[Encoded]:
        """``encode_record`` of many records, tokenised in batches."""
        return self._encode_layouts(
            [_Layout.of(segments(r["turns"], general=r.get("source") == "sharegpt")) for r in records],
            max_length, [repr(r.get("id")) for r in records])

    def encode_record(self, record: dict, max_length: int | None = None) -> Encoded:
        return self.encode_records([record], max_length)[0]

    def encode_prompts(self, batch_messages: list[list[dict]]) -> list[list[int]]:
        """``encode_prompt`` of many conversations, tokenised in batches."""
        layouts = []
        for messages in batch_messages:
            turns = [{"role": m["role"], "content": m["content"], "train": False} for m in messages]
            layouts.append(_Layout.of(segments(turns, add_generation_prompt=True)))
        return [e.input_ids for e in self._encode_layouts(layouts, None)]

    def encode_prompt(self, messages: list[dict]) -> list[int]:
        """Token ids of a generation prompt: the conversation plus the assistant begin tag."""
        return self.encode_prompts([messages])[0]


SegmentTokenizer = TemplateTokenizer
