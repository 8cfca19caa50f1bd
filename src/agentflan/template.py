"""The Agent-FLAN chat template, tokenisation and label masks.

Template (authors' README, InternLM/Agent-FLAN; experiments.md §3.1)::

    dict(role='user',      begin='<|Human|>െ',     end='\\n ')
    dict(role='system',    begin='<|Human|>െ',     end='\\n ')
    dict(role='assistant', begin='<|Assistant|>െ', end='ി\\n ')

The odd characters are literal code points: U+0D46 (MALAYALAM VOWEL SIGN E) after each begin tag,
and U+0D3F (MALAYALAM VOWEL SIGN I) before the assistant's newline. ``system`` renders exactly like
``user``.

Tokenisation is done segment by segment (begin tag, content pieces, end tag), so label boundaries
are exact and the prompt seen at generation time tokenises exactly as during training. A token is
trained (label = its id) only if it belongs to the content or the end tag of a trained assistant
turn (see :mod:`agentflan.records` for the loss policy); the begin tag is never trained.

Every trained token also carries two categories used for the loss-analysis figures:
``capability`` (reasoning / retrieval / understanding / instruction / general / other) and
``part`` (format / content) for ReAct-scaffold turns (Figure 2).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

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
        out.append(Segment(begin))
        out.extend(_content_segments(t["content"], trained, cap, react))
        out.append(Segment(end, trained, cap, "format" if react else ("content" if trained else "none")))
    if add_generation_prompt:
        out.append(Segment(ASSISTANT_BEGIN))
    return out


class SegmentTokenizer:
    """Tokenise segments one by one with a (fast) HF tokenizer, caching the fixed tags."""

    def __init__(self, tokenizer, add_bos: bool = True):
        self.tok = tokenizer
        self.add_bos = add_bos and tokenizer.bos_token_id is not None
        self._cache: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        if text in self._cache:
            return self._cache[text]
        ids = self.tok(text, add_special_tokens=False)["input_ids"] if text else []
        if text in (USER_BEGIN, USER_END, ASSISTANT_BEGIN, ASSISTANT_END):
            self._cache[text] = ids
        return ids

    def encode_segments(self, segs: list[Segment], max_length: int | None = None) -> Encoded:
        enc = Encoded()
        if self.add_bos:
            enc.input_ids.append(self.tok.bos_token_id)
            enc.labels.append(-100)
            enc.capability.append(0)
            enc.part.append(0)
        for s in segs:
            ids = self.ids(s.text)
            enc.input_ids.extend(ids)
            enc.labels.extend(ids if s.trained else [-100] * len(ids))
            enc.capability.extend([CAPABILITY_IDS[s.capability]] * len(ids))
            enc.part.extend([PART_IDS[s.part]] * len(ids))
        if max_length is not None and len(enc) > max_length:
            enc.input_ids = enc.input_ids[:max_length]
            enc.labels = enc.labels[:max_length]
            enc.capability = enc.capability[:max_length]
            enc.part = enc.part[:max_length]
        return enc

    def encode_record(self, record: dict, max_length: int | None = None) -> Encoded:
        general = record.get("source") == "sharegpt"
        return self.encode_segments(segments(record["turns"], general=general), max_length)

    def encode_prompt(self, messages: list[dict]) -> list[int]:
        """Token ids of a generation prompt: the conversation plus the assistant begin tag."""
        turns = [{"role": m["role"], "content": m["content"], "train": False} for m in messages]
        return self.encode_segments(segments(turns, add_generation_prompt=True)).input_ids
