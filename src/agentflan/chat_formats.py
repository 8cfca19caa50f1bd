"""Chat formats: how a conversation becomes the prompt token ids of one model family.

Every generation backend (:class:`agentflan.generate.Generator`: ``fast``, ``plain``, ``vllm``)
takes its prompt ids and its stop string from one :class:`PromptFormat`, selected by the
``chat_format`` of the model (``evaluation.external_models.<id>.chat_format``; our own models are
always ``agentflan``). One tokenisation path per format: the text is rendered once and tokenised
once per piece of text that the reference implementation tokenises on its own.

* ``agentflan``: the Agent-FLAN template (:mod:`agentflan.template`,
  :meth:`~agentflan.template.SegmentTokenizer.encode_prompt`); the reply ends at the assistant end
  tag ``ി\\n`` (:data:`~agentflan.template.ASSISTANT_STOP`) or EOS.
* ``llama2-chat``: Llama-2-chat, exactly as Meta's reference ``Llama.chat_completion``
  (facebookresearch/llama, ``llama/generation.py``, Llama 2 release)::

      B_INST, E_INST = "[INST]", "[/INST]"
      B_SYS, E_SYS = "<<SYS>>\\n", "\\n<</SYS>>\\n\\n"
      # a leading system message is folded into the first user message:
      #   B_SYS + system + E_SYS + user
      # every (user, assistant) pair: encode(f"{B_INST} {user.strip()} {E_INST} {answer.strip()} ",
      #                                      bos=True, eos=True)
      # the last user message:        encode(f"{B_INST} {user.strip()} {E_INST}", bos=True, eos=False)

  so the rendered text (BOS/EOS written ``<s>``/``</s>``) is
  ``<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s><s>[INST] {user2} [/INST]``
  (the form of Hugging Face's Llama 2 blog, "How to prompt Llama 2"). Each ``[INST] ...`` piece is
  tokenised as a text of its own (as SentencePiece ``encode`` does in the reference: each piece
  gets its start-of-text ``▁``), all pieces of a batch in one tokenizer call, with
  ``split_special_tokens`` so content never injects control tokens; BOS/EOS are the tokenizer's
  ids, never text. The reply ends at EOS (there is no stop string). AgentLM (THUDM/AgentTuning
  README: "The models follow the conversation format of Llama-2-chat, with system prompt fixed as
  ``You are a helpful, respectful and honest assistant.``") sets ``system_prompt``.

  Beyond the reference (which asserts strictly alternating user/assistant turns after an optional
  system message), our choices: with ``system_prompt`` set, it is the system block and a
  conversation's own system messages are prepended to the first user message (joined by a blank
  line); consecutive messages of one role (after folding) are joined by a blank line; a system
  message after the first turn counts as a user message. A conversation must end with a user
  message (a generation prompt).
* ``fireact``: FireAct's Llama models as FireAct's own ``generation.py`` runs them with
  ``--alpaca_format`` (anchen1011/FireAct, ``prepare_prompt`` and ``run``): the Alpaca prompt

      Below is an instruction that describes a task. Write a response that appropriately completes
      the request.\n\n### Instruction:\n{question}\n\n### Response:\n

  followed by the trajectory so far, one ``Thought: ...\nAction: ...\nObservation: ...\n`` block
  per step, and the model continues from ``Thought:`` until ``\nObservation:`` (its stop word) or
  EOS; the prompt is one text with BOS (``tokenizer(prompt)`` in FireAct's ``models/llama.py``).
  FireAct prompts single questions; our mapping of a conversation onto it (ours, documented in
  docs/models.md): the system messages and the first user message, joined by a blank line and
  right-stripped (FireAct: ``q.rstrip()``), are the instruction; each later assistant message is
  written as it is, then a newline; each later user message is an observation
  (``Observation: {content}\n``, unless it already starts with ``Observation:``). The reply is
  returned with its ``Thought:`` prefix, so it reads as a whole ReAct step.
"""
from __future__ import annotations

from .template import ASSISTANT_STOP, SegmentTokenizer

FORMATS = ("agentflan", "fireact", "llama2-chat")

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
# the rendered text's spelling of the control tokens (never tokenised as text)
BOS_TEXT, EOS_TEXT = "<s>", "</s>"


class ChatFormatError(ValueError):
    """A conversation or setting the chat format cannot take (one line)."""


class PromptFormat:
    """Prompt ids and stop string of one chat format (see the module docstring)."""

    name = ""
    stop: str | None = None
    #: written in the prompt after the last message (the reply continues it) ...
    reply_prefix = ""
    #: ... and put back in front of every (stripped) reply
    reply_lead = ""

    def encode_prompts(self, batch_messages: list[list[dict]]) -> list[list[int]]:
        raise NotImplementedError

    def encode_prompt(self, messages: list[dict]) -> list[int]:
        return self.encode_prompts([messages])[0]

    def describe(self) -> dict:
        """The format and its options (part of the generation settings key)."""
        return {"name": self.name}


class AgentFlanFormat(PromptFormat):
    name = "agentflan"
    stop = ASSISTANT_STOP

    def __init__(self, tokenizer):
        self.seg = SegmentTokenizer(tokenizer)

    def encode_prompts(self, batch_messages):
        return self.seg.encode_prompts(batch_messages)


class Llama2ChatFormat(PromptFormat):
    name = "llama2-chat"
    stop = None     # the reply ends at EOS

    def __init__(self, tokenizer, system_prompt: str | None = None):
        if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
            raise ChatFormatError("llama2-chat needs a tokenizer with BOS and EOS tokens")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ChatFormatError(f"llama2-chat system_prompt must be a string, got {system_prompt!r}")
        self.tok = tokenizer
        self.system_prompt = system_prompt

    def describe(self) -> dict:
        return {"name": self.name, "system_prompt": self.system_prompt}

    def dialog(self, messages: list[dict]) -> list[dict]:
        """The conversation as the reference takes it: user/assistant alternating, system folded."""
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        for m in msgs:
            if m["role"] not in ("system", "user", "assistant") or not isinstance(m["content"], str):
                raise ChatFormatError(f"llama2-chat: message role {m['role']!r} is not system/user/assistant "
                                      "or its content is not a string")
        if self.system_prompt is not None:
            lead = []
            while msgs and msgs[0]["role"] == "system":
                lead.append(msgs.pop(0)["content"])
            if not msgs or msgs[0]["role"] != "user":
                msgs.insert(0, {"role": "user", "content": ""})
            if lead:
                msgs[0] = {"role": "user", "content": "\n\n".join(lead + [msgs[0]["content"]])}
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        if msgs and msgs[0]["role"] == "system":
            if len(msgs) < 2:
                raise ChatFormatError("llama2-chat: a system message needs a user message after it")
            first, second = msgs[0], msgs[1]
            if second["role"] == "system":
                second = {"role": "user", "content": second["content"]}
            msgs = [{"role": second["role"], "content": B_SYS + first["content"] + E_SYS + second["content"]}] + msgs[2:]
        merged: list[dict] = []
        for m in msgs:
            role = "user" if m["role"] == "system" else m["role"]
            if merged and merged[-1]["role"] == role:
                merged[-1] = {"role": role, "content": merged[-1]["content"] + "\n\n" + m["content"]}
            else:
                merged.append({"role": role, "content": m["content"]})
        if not merged or merged[0]["role"] != "user" or merged[-1]["role"] != "user":
            raise ChatFormatError("llama2-chat: a generation prompt must start and end with a user message")
        return merged

    def pieces(self, messages: list[dict]) -> list[tuple[str, bool]]:
        """``(text, closed)`` per BOS-started piece: ``closed`` pieces end with EOS."""
        d = self.dialog(messages)
        out = [(f"{B_INST} {u['content'].strip()} {E_INST} {a['content'].strip()} ", True)
               for u, a in zip(d[:-1:2], d[1::2])]
        out.append((f"{B_INST} {d[-1]['content'].strip()} {E_INST}", False))
        return out

    def render(self, messages: list[dict]) -> str:
        """The prompt as text, control tokens spelled ``<s>``/``</s>``."""
        return "".join(BOS_TEXT + text + (EOS_TEXT if closed else "") for text, closed in self.pieces(messages))

    def encode_prompts(self, batch_messages):
        pieces = [self.pieces(m) for m in batch_messages]
        flat = [text for ps in pieces for text, _ in ps]
        enc = self.tok(flat, add_special_tokens=False, split_special_tokens=True)["input_ids"] if flat else []
        out, k = [], 0
        bos, eos = self.tok.bos_token_id, self.tok.eos_token_id
        for ps in pieces:
            ids: list[int] = []
            for _, closed in ps:
                ids += [bos] + list(enc[k]) + ([eos] if closed else [])
                k += 1
            out.append(ids)
        return out


ALPACA_PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately "
                 "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


class FireActFormat(PromptFormat):
    name = "fireact"
    stop = "\nObservation:"
    reply_prefix = "Thought:"
    reply_lead = "Thought: "      # as FireAct writes a step back: f"Thought: {thought}\nAction: ..."

    def __init__(self, tokenizer):
        if tokenizer.bos_token_id is None:
            raise ChatFormatError("fireact needs a tokenizer with a BOS token")
        self.tok = tokenizer

    def render(self, messages: list[dict]) -> str:
        """The prompt text (without BOS), ending with the reply prefix ``Thought:``."""
        for m in messages:
            if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
                raise ChatFormatError(f"fireact: message role {m.get('role')!r} is not system/user/assistant "
                                      "or its content is not a string")
        i, lead = 0, []
        while i < len(messages) and messages[i]["role"] == "system":
            lead.append(messages[i]["content"])
            i += 1
        if i == len(messages) or messages[i]["role"] != "user":
            raise ChatFormatError("fireact: a generation prompt needs a user message after the system messages")
        lead.append(messages[i]["content"])
        if messages[-1]["role"] != "user":
            raise ChatFormatError("fireact: a generation prompt must end with a user message")
        text = ALPACA_PROMPT.format(instruction="\n\n".join(lead).rstrip())
        for m in messages[i + 1:]:
            content = m["content"].strip()
            if m["role"] == "assistant":
                text += content + "\n"
            else:
                text += (content if content.startswith("Observation:") else f"Observation: {content}") + "\n"
        return text + self.reply_prefix

    def encode_prompts(self, batch_messages):
        texts = [self.render(m) for m in batch_messages]
        enc = self.tok(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"] if texts else []
        return [[self.tok.bos_token_id] + list(ids) for ids in enc]


def get(name: str, tokenizer, system_prompt: str | None = None) -> PromptFormat:
    """The :class:`PromptFormat` called ``name`` for ``tokenizer``."""
    if name == "agentflan":
        if system_prompt is not None:
            raise ChatFormatError("chat format agentflan takes no system_prompt")
        return AgentFlanFormat(tokenizer)
    if name == "llama2-chat":
        return Llama2ChatFormat(tokenizer, system_prompt)
    if name == "fireact":
        if system_prompt is not None:
            raise ChatFormatError("chat format fireact takes no system_prompt")
        return FireActFormat(tokenizer)
    raise ChatFormatError(f"unknown chat format {name!r}; known: {', '.join(FORMATS)}")
