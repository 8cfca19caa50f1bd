"""Batched greedy generation (evaluation's only model-facing code).

Prompts are rendered and tokenised by the model's chat format (:mod:`agentflan.chat_formats`;
``agentflan``, the default: exactly as in training,
:meth:`agentflan.template.SegmentTokenizer.encode_prompt`; ``llama2-chat`` for external
Llama-2-chat checkpoints such as AgentLM; ``fireact`` for FireAct's Alpaca-style prompt) and
decoded greedily until the format's stop string (Agent-FLAN: the assistant end tag ``ി\\n``;
fireact: ``\\nObservation:``; llama2-chat: none), EOS or ``max_new_tokens``, by one of three backends
(``evaluation.generation.backend``):

* ``fast`` (default): :class:`agentflan.fastgen.FastDecoder`, continuous batching over a slot KV
  cache with shared prompt prefixes computed once, in this process (CPU or one GPU);
* ``plain``: transformers' ``model.generate`` on left-padded fixed batches;
* ``vllm``: :class:`agentflan.fastgen.VllmDecoder`, vLLM's offline engine on GPUs (optional
  install, envs/vllm.yaml), prompts passed as token ids.

The backend's name is written into every predictions row (``"backend"``) by
:func:`agentflan.stages.generate`.

Generation survives a kill: with a :class:`ResumeLog` (the *side file*
``<predictions>.partial.jsonl``), every finished reply is appended as one JSON line and fsynced per
batch; a rerun takes the replies whose key still matches from the side file and sends only the
missing prompts to the model. The key of a reply is

* the item id (HotpotQA: ``<item id>#<step>``, see :func:`agentflan.evaluation.registry.run_episodes`),
* ``prompt``: sha256 of the exact prompt token ids (after truncation to ``max_prompt_length``),
* ``settings``: sha256 of :meth:`Generator.settings` (model files, decoding settings, batch size,
  dtype, device type, library versions).

Units of work are fixed over the whole call: prompts sorted by length (longest first), then cut
into chunks of ``batch_size`` prompts (``plain``: one left-padded batch each) or of
``batch_size * group_batches`` prompts (``fast``, ``vllm``: one group sharing ``batch_size``
decode slots). A rerun regenerates the same units as an uninterrupted run and gives the same
bytes. See docs/CONTRACTS.md ("Predictions and the resume side file").
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from .io import AppendLog, DataError, dumps, sha256_file
from .template import ASSISTANT_STOP

SIDE_SUFFIX = ".partial.jsonl"
#: generation backends (``evaluation.generation.backend``)
BACKENDS = ("fast", "plain", "vllm")
# bump when the meaning of a stored reply changes (e.g. cut_at_stop); part of the settings key
SIDE_FORMAT = 1
# files of a model directory that define the model (weights, config, tokenizer); anything else
# (README, pytorch_model.bin we never load, ...) does not enter the model identity
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".model", ".txt", ".jinja", ".tiktoken")
_SIDE_KEYS = frozenset({"id", "prompt", "settings", "reply"})


def side_path(out: str | os.PathLike) -> Path:
    """The resume side file of a predictions file: ``<out>.partial.jsonl`` (not a Snakemake output)."""
    return Path(str(out) + SIDE_SUFFIX)


def prompt_hash(ids: list[int]) -> str:
    """sha256 of a prompt's token ids (decimal, comma-separated)."""
    return hashlib.sha256(",".join(map(str, ids)).encode("ascii")).hexdigest()


def model_dir(model_path: str) -> Path:
    """The local directory the model is loaded from: the path itself, or the Hugging Face cache
    snapshot of a hub name (already downloaded by the model load; nothing is fetched)."""
    p = Path(model_path)
    if p.is_dir():
        return p
    from huggingface_hub import try_to_load_from_cache
    cfg = try_to_load_from_cache(model_path, "config.json")
    if not isinstance(cfg, str):
        raise DataError(model_path, "not a local directory and not in the Hugging Face cache; "
                                    "cannot identify the model for the resume key")
    return Path(cfg).parent


def model_identity(model_path: str, workers: int = 8) -> dict[str, str]:
    """``{file name: sha256}`` of every model-defining file (see ``MODEL_FILE_SUFFIXES``).

    Full content hashes, not names and sizes: a re-trained model has the same file sizes. Files
    are hashed in parallel threads (hashlib releases the GIL) right after the model load, when
    they are in the page cache: 0.6 GB/s per thread on the 2-core development machine, i.e. well
    under a minute for 7B and a few minutes at most for 70B, against hours of generation."""
    from concurrent.futures import ThreadPoolExecutor
    d = model_dir(model_path)
    files = sorted(f for f in d.iterdir()
                   if f.is_file() and not f.name.startswith(".") and f.name.endswith(MODEL_FILE_SUFFIXES))
    if not any(f.name.endswith(".safetensors") for f in files):
        raise DataError(d, "no .safetensors weights in the model directory")
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(files)))) as pool:
        digests = list(pool.map(lambda f: sha256_file(f, chunk=8 << 20), files))
    return {f.name: h for f, h in zip(files, digests)}


class ResumeLog(AppendLog):
    """The side file of finished replies: one JSON line per reply,
    ``{"id", "prompt", "reply", "settings"}`` (sorted keys).

    Reading: lines with another ``settings`` key are stale and dropped; a last line without its
    newline is torn (the job died while writing it) and dropped; any other unreadable line is an
    error naming the file and line. When lines were dropped, the file is rewritten (temporary
    file, fsync, rename) before anything is appended, so a torn tail never merges with new lines.
    Appending: one ``os.write`` of whole lines per batch, then ``fsync``."""

    def __init__(self, path: str | os.PathLike, settings_key: str):
        super().__init__(path)
        self.settings_key = settings_key
        self.entries: dict[tuple[str, str], str] = {}
        self.lines = 0          # complete lines read
        self.stale = 0          # lines of other settings
        self.torn = 0           # torn last line (0 or 1)
        self.duplicates = 0     # repeated keys (the first is kept)
        self.used = 0           # replies handed out by get()
        if self.path.exists():
            self._read()
            if self.stale or self.torn or self.duplicates:
                self._rewrite()

    # ------------------------------------------------------------------ reading
    def _read(self) -> None:
        for lineno, obj in self._complete_lines("side-file", "delete the file to start this benchmark's "
                                                             "generation over"):
            if not isinstance(obj, dict) or set(obj) != _SIDE_KEYS or \
                    not all(isinstance(obj[k], str) for k in _SIDE_KEYS):
                rec = obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
                raise DataError(self.path, f"side-file line is not {{{', '.join(sorted(_SIDE_KEYS))}}} "
                                           "with string values; delete the file to start this "
                                           "benchmark's generation over", line=lineno, record=rec)
            if obj["settings"] != self.settings_key:
                self.stale += 1
                continue
            key = (obj["id"], obj["prompt"])
            if key in self.entries:
                self.duplicates += 1
                continue
            self.entries[key] = obj["reply"]

    def _line(self, rid: str, prompt: str, reply: str) -> str:
        return dumps({"id": rid, "prompt": prompt, "reply": reply, "settings": self.settings_key}) + "\n"

    def _rewrite(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            for (rid, prompt), reply in self.entries.items():
                fh.write(self._line(rid, prompt, reply))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    # ------------------------------------------------------------------ use
    def get(self, rid: str, prompt: str) -> str | None:
        """The stored reply of ``rid`` for this exact prompt, or None."""
        reply = self.entries.get((rid, prompt))
        if reply is not None:
            self.used += 1
        return reply

    def append(self, rows: list[tuple[str, str, str]]) -> None:
        """Append ``(id, prompt hash, reply)`` rows as whole lines, then flush to disk."""
        if not rows:
            return
        self._append_text("".join(self._line(*r) for r in rows))
        for rid, prompt, reply in rows:
            self.entries.setdefault((rid, prompt), reply)

    def summary(self) -> str:
        if not (self.lines or self.torn):
            return f"no side file ({self.path.name}), generating from scratch"
        return (f"side file {self.path.name}: {len(self.entries)} replies usable, {self.stale} stale "
                f"(other settings), {self.torn} torn last line dropped")


class Generator:
    """Greedy replies of a local model (see the module docstring for the backends).

    ``batch_size`` is the number of rows decoded together; ``group_batches`` (fast, vllm) how many
    batches' worth of prompts form one group (the unit that shares decode slots and that the side
    file records at once); ``prefill_tokens`` (fast) the most padded prompt tokens in one prefill
    forward; ``share_prefixes`` (fast) whether prompt prefixes shared within a group are computed
    once; ``tensor_parallel_size`` (vllm) GPUs per model, ``None`` = every visible GPU."""

    def __init__(self, model_path: str, *, max_new_tokens: int = 96, batch_size: int = 16,
                 max_prompt_length: int = 1024, threads: int = 1, dtype: str = "auto", backend: str = "fast",
                 group_batches: int = 4, prefill_tokens: int = 16384, share_prefixes: bool = True,
                 tensor_parallel_size: int | None = None, chat_format: str = "agentflan",
                 system_prompt: str | None = None):
        import torch

        from . import chat_formats
        from .fastgen import BackendError
        from .modeling import load_causal_lm, load_tokenizer
        if backend not in BACKENDS:
            raise BackendError(f"generation backend {backend!r} is not one of {', '.join(BACKENDS)}")
        for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size),
                            ("max_prompt_length", max_prompt_length), ("group_batches", group_batches),
                            ("prefill_tokens", prefill_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BackendError(f"generation {name} must be a positive integer, got {value!r}")
        if tensor_parallel_size is not None and (not isinstance(tensor_parallel_size, int) or tensor_parallel_size < 1):
            raise BackendError(f"generation tensor_parallel_size must be a positive integer or null, "
                             f"got {tensor_parallel_size!r}")
        torch.set_num_threads(max(1, threads))
        self.backend = backend
        self.device = "cuda" if backend == "vllm" or torch.cuda.is_available() else "cpu"
        self.tok = load_tokenizer(model_path)
        if dtype == "auto":
            dtype = "bf16" if self.device == "cuda" else "fp32"
        try:
            self.fmt = chat_formats.get(chat_format, self.tok, system_prompt)
        except chat_formats.ChatFormatError as exc:
            raise BackendError(str(exc)) from None
        self.stop = self.fmt.stop     # None: the reply ends at EOS (llama2-chat)
        self.model_path = model_path
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.max_prompt_length = max_prompt_length
        self.group_batches = group_batches
        self.prefill_tokens = prefill_tokens
        self.share_prefixes = bool(share_prefixes)
        self.model = None
        self.engine = None
        if backend == "vllm":
            from .fastgen import VllmDecoder
            self.engine = VllmDecoder(model_path, self.tok, max_new_tokens=max_new_tokens, stop=self.stop,
                                      batch_size=batch_size, max_model_len=max_prompt_length + max_new_tokens,
                                      dtype=dtype, tensor_parallel_size=tensor_parallel_size)
        else:
            self.model = load_causal_lm(model_path, dtype=dtype, device=self.device).eval()
            if backend == "fast":
                from .fastgen import FastDecoder
                self.engine = FastDecoder(self.model, self.tok, max_new_tokens=max_new_tokens, stop=self.stop,
                                          slots=batch_size, prefill_tokens=prefill_tokens,
                                          share_prefixes=self.share_prefixes)
        self.truncated_prompts = 0
        self.generated = 0      # prompts sent to the model
        self.resumed = 0        # prompts answered from a side file
        self._settings: dict | None = None

    @property
    def unit(self) -> int:
        """Prompts per unit of work: a left-padded batch (plain) or a group (fast, vllm)."""
        return self.batch_size if self.backend == "plain" else self.batch_size * self.group_batches

    def settings(self) -> dict:
        """Everything a greedy reply depends on besides its prompt tokens.

        ``batch_size`` is included: a reply's floating-point sums depend on its batch's shapes
        (plain: left padding to the batch's longest prompt; fast: the group's decode slots), and
        kernels reduce in shape-dependent order, so a reply can differ in the last bits (and a
        near-tie argmax flip) with another batch composition. So are the backend and its
        parameters (``generation``). The GPU model and the thread count are not included (a
        resumed cluster job may land on another node)."""
        if self._settings is None:
            import torch
            import transformers
            self._settings = {
                "format": SIDE_FORMAT,
                "model": model_identity(self.model_path),
                "max_new_tokens": self.max_new_tokens,
                "max_prompt_length": self.max_prompt_length,
                "batch_size": self.batch_size,
                "dtype": self.dtype,
                "device": self.device,
                "stop": self.stop,
                "chat_format": self.fmt.describe(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "generation": self.describe(),
            }
        return self._settings

    def describe(self) -> dict:
        """The backend and its parameters (part of :meth:`settings`)."""
        if self.backend == "plain":
            return {"backend": "plain"}
        if self.backend == "fast":
            from .fastgen import ENGINE_FORMAT
            return {"backend": "fast", "engine": ENGINE_FORMAT, "group_batches": self.group_batches,
                    "prefill_tokens": self.prefill_tokens, "share_prefixes": self.share_prefixes,
                    "min_shared_prefix": self.engine.min_shared_prefix, "refill": self.engine.refill}
        return {"backend": "vllm", "vllm": self.engine.version, "group_batches": self.group_batches,
                "tensor_parallel_size": self.engine.tensor_parallel_size}

    def settings_key(self) -> str:
        return hashlib.sha256(dumps(self.settings()).encode("utf-8")).hexdigest()

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        ids = self.fmt.encode_prompt(messages)
        if len(ids) > self.max_prompt_length:
            self.truncated_prompts += 1
            ids = ids[-self.max_prompt_length:]
        return ids

    def _generate(self, prompts: list[list[int]], width: int) -> list[str]:
        """Greedy replies of one unit's prompts (those not resumed), in order. ``width`` is the
        longest prompt of the whole unit (plain left-pads every batch to it)."""
        if self.backend == "plain":
            texts = self._generate_plain(prompts, width)
        elif self.backend == "fast":
            texts = [cut_at_stop(self.tok.decode(ids, skip_special_tokens=True), self.stop)
                     for ids in self.engine.run(prompts)]
        else:
            texts = [cut_at_stop(text, self.stop) for text in self.engine.run(prompts)]
        # a format whose prompt ends inside the reply (fireact: "Thought:") gives the reply whole
        return [self.fmt.reply_lead + t for t in texts] if self.fmt.reply_lead else texts

    def _generate_plain(self, prompts: list[list[int]], width: int) -> list[str]:
        """Greedy replies of one batch with ``model.generate``, every prompt left-padded to ``width``."""
        import torch
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        with torch.no_grad():
            gen = self.model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=self.max_new_tokens,
                pad_token_id=pad, eos_token_id=self.tok.eos_token_id,
                **({"stop_strings": [self.stop], "tokenizer": self.tok} if self.stop else {}))
        return [cut_at_stop(self.tok.decode(gen[row, width:], skip_special_tokens=True), self.stop)
                for row in range(len(prompts))]

    def __call__(self, batch_messages: list[list[dict]], progress: bool = False, *,
                 ids: list[str] | None = None, log: ResumeLog | None = None,
                 desc: str = "generate") -> list[str]:
        """One greedy reply per message list, in input order.

        With ``log`` (and one id per message list), replies found in the side file are reused
        and every newly generated unit is appended to it. The units are those of an
        uninterrupted run: prompts sorted by length (longest first), cut into chunks of
        :attr:`unit` prompts; of a chunk only the prompts missing from the side file go to the
        model (all or none of it after a kill, as a chunk's lines are written with one write)."""
        from tqdm import tqdm

        if log is not None and (ids is None or len(ids) != len(batch_messages)):
            raise ValueError("resumable generation needs one id per message list")
        prompts = [self._prompt_ids(m) for m in batch_messages]
        keys = [prompt_hash(p) for p in prompts] if log is not None else []
        order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
        outputs: dict[int, str] = {}
        chunks = [order[i:i + self.unit] for i in range(0, len(order), self.unit)]
        bar = tqdm(total=len(prompts), desc=desc, unit="item", disable=not progress, mininterval=10)
        for chunk in chunks:
            todo = []
            for i in chunk:
                reply = log.get(ids[i], keys[i]) if log is not None else None
                if reply is None:
                    todo.append(i)
                else:
                    outputs[i] = reply
            if todo:
                width = max(len(prompts[i]) for i in chunk)
                for i, text in zip(todo, self._generate([prompts[i] for i in todo], width)):
                    outputs[i] = text
                if log is not None:
                    log.append([(ids[i], keys[i], outputs[i]) for i in todo])
            self.generated += len(todo)
            self.resumed += len(chunk) - len(todo)
            bar.update(len(chunk))
        bar.close()
        return [outputs[i] for i in range(len(prompts))]

    def as_fn(self) -> Callable[[list[list[dict]]], list[str]]:
        return lambda batch: self(batch)

    def keyed_fn(self, log: ResumeLog, desc: str) -> Callable[[list[list[dict]], list[str]], list[str]]:
        """``fn(messages, ids)`` for :func:`agentflan.evaluation.registry.run_episodes` with
        ``step_ids=True``: resumable, one progress bar per call (per episode step)."""
        calls = [0]

        def fn(batch: list[list[dict]], ids: list[str]) -> list[str]:
            calls[0] += 1
            return self(batch, progress=True, ids=ids, log=log, desc=f"{desc} step {calls[0]}")
        return fn


def cut_at_stop(text: str, stop: str | None = ASSISTANT_STOP) -> str:
    """Cut a decoded continuation at the stop string (default: the assistant end tag; ``None``:
    a format whose reply ends at EOS, which the decoders already stop at and skip)."""
    if stop is None:
        return text.strip()
    k = text.find(stop)
    return (text[:k] if k >= 0 else text).strip()
