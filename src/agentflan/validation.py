"""Checks of things built or loaded at run time that no schema can catch.

:func:`check_tokenizer` runs in the ``tokenizer`` stage right after the tokenizer is trained (the
miniature's byte-level BPE) or loaded (a pretrained tokenizer named in config), so that a
tokenizer that cannot represent the chat template fails there, with one line, and not as silently
wrong labels in training.
"""
from __future__ import annotations

from .io import DataError
from .template import ASSISTANT_BEGIN, ASSISTANT_END, USER_BEGIN, USER_END, render

#: Conversation rendered with the authors' template for the round-trip check: every tag, a
#: system, user and assistant turn, an observation-like JSON user turn, digits and punctuation.
PROBE_TURNS = (
    {"role": "system", "content": "You can call tools. Answer the question.", "train": False},
    {"role": "user", "content": "What is 12 + 30? Use the calculator.", "train": False},
    {"role": "assistant", "content": 'Thought: add.\nAction: calculator\nAction Input: {"a": 12, "b": 30}',
     "train": True},
    {"role": "user", "content": '{"error": "", "response": "42"}', "train": False},
    {"role": "assistant", "content": "The answer is 42.", "train": True},
)


def _ok_roundtrip(text: str, decoded: str) -> bool:
    # SentencePiece tokenizers (Llama-2) add one "dummy prefix" space that decoding may keep.
    return decoded in (text, " " + text) or (text.startswith(" ") and decoded == text[1:])


def check_tokenizer(tokenizer, name: str = "tokenizer") -> None:
    """Refuse a tokenizer that cannot encode the chat template faithfully.

    Requirements: a fast tokenizer (training needs character offsets); ``bos`` and ``eos``
    tokens; and, for every template tag alone and for a whole rendered conversation, encoding
    without special tokens yields no ``unk`` id and decoding the ids gives the text back
    (a vocabulary without byte fallback that lacks the tags' characters, e.g. the Malayalam
    ``\\u0d46``/``\\u0d3f``, fails here). Raises :class:`~agentflan.io.DataError` naming ``name``
    (the tokenizer's directory or hub id) and the first text that fails."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(name, "not a fast tokenizer (training needs character offsets; "
                              "use the tokenizer.json / PreTrainedTokenizerFast version)")
    for attr in ("bos_token_id", "eos_token_id"):
        if getattr(tokenizer, attr, None) is None:
            raise DataError(name, f"tokenizer has no {attr[:3]} token")
    unk = getattr(tokenizer, "unk_token_id", None)
    probes = [("user begin tag", USER_BEGIN), ("user end tag", USER_END),
              ("assistant begin tag", ASSISTANT_BEGIN), ("assistant end tag", ASSISTANT_END),
              ("rendered conversation", render(list(PROBE_TURNS)))]
    for label, text in probes:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise DataError(name, f"encodes the {label} {text!r} to no token at all")
        if unk is not None and unk in ids:
            raise DataError(name, f"encodes the {label} {text[:60]!r} with the unknown token "
                                  f"{tokenizer.unk_token!r} (no byte fallback for its characters)")
        decoded = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if not _ok_roundtrip(text, decoded):
            pos = next((i for i, (a, b) in enumerate(zip(text, decoded)) if a != b),
                       min(len(text), len(decoded)))
            raise DataError(name, f"cannot encode the {label}: decoding its ids gives "
                                  f"{decoded[max(0, pos - 10):pos + 20]!r} where the text has "
                                  f"{text[max(0, pos - 10):pos + 20]!r} (character {pos})")
