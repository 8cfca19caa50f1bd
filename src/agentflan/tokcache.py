"""Token counts of every converted and ShareGPT record, tokenised once (rule ``token_counts``).

The ablation data sets and the data card need token counts, not token ids: total length, trained
tokens (within ``max_length``), per capability and per part, and whether a record is too long.
Twelve ablation data sets drawn from the same records used to tokenise each record again and again;
this module tokenises every distinct record once with the token-exact template
(:class:`agentflan.template.TemplateTokenizer`, batched through the fast tokenizer) and stores what
the statistics need.

**Per turn, not per record.** Ablations change which assistant turns are trained (capability
weights mask turns, ``sample`` mode trains one capability per copy); the text, and so the token
ids, never change. By the template's boundary rule a token is trained iff every character it
covers is trained, and trained characters are the content and end tag of trained assistant turns.
Begin tags are never trained and lie between any two turns, so a token is either never trained
(it covers a begin-tag character) or lies inside one assistant turn and is trained iff that turn
is. The cache therefore tokenises each record with *every* assistant turn trained and stores, for
each assistant turn, its trainable tokens (all of them, and those within ``max_length``), its
capability id and its ``format``-part tokens. The counts of any mask are sums over the turns it
trains: no tokenisation. Each row is also checked at build time against the record's own mask
(labels computed from the same tokens with the real layout); a row that does not agree is stored
with ``exact: false`` and its records are tokenised again when used (counted in
:attr:`TokenCounts.fallbacks`).

**Key.** A record's key is the sha256 of its roles, contents and turn capabilities and of whether
it is a general (ShareGPT) record (which sets the capability of its trained tokens); train flags
are not part of the key, they select turns at lookup. The file's header names the tokenizer (sha256
of its files, :func:`tokenizer_hash`) and ``max_length``; a reader checks both.

File format (JSON lines, canonical JSON, rows sorted by key, no paths or times)::

    {"format": "agentflan-token-counts/1", "max_length": 8192, "records": N, "tokenizer_sha256": "…",
     "columns": ["turn", "capability", "trained", "trained_in_window", "format", "format_in_window"]}
    {"k": "<sha256>", "n": 734, "t": [[1, 2, 88, 88, 12, 12], [3, 1, 40, 40, 0, 0]], "x": true}

``n`` is the full length (BOS included), ``t`` one row per assistant turn with trainable tokens.
"""
from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing as mp
import os
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path

import numpy as np

from .io import DataError, atomic_open, dumps, dumps_bytes, loads_fast
from .template import (_SCAFFOLD, CAPABILITY_IDS, PART_IDS, TEMPLATE, TemplateTokenizer, _anchors, _Layout,
                       segments)

FORMAT = "agentflan-token-counts/2"
#: Formats :meth:`TokenCounts.load` reads (version 1 has no file index).
READABLE = (FORMAT, "agentflan-token-counts/1")
COLUMNS = ["turn", "capability", "trained", "trained_in_window", "format", "format_in_window"]
CAPABILITY_NAMES = {v: k for k, v in CAPABILITY_IDS.items()}
_FORMAT_PART = PART_IDS["format"]
# Records per tokenizer call (the fast tokenizer encodes a batch on all its threads).
BATCH = 512


def tokenizer_hash(tokenizer_dir: str | os.PathLike, exclude: tuple[str, ...] = ()) -> str:
    """sha256 over the names and bytes of every file of a saved tokenizer directory (but the
    top-level files named in ``exclude``)."""
    root = Path(tokenizer_dir)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        if rel in exclude:
            continue
        h.update(rel.encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def is_general(record: dict) -> bool:
    """Whether the template tags the record's trained tokens ``general`` (ShareGPT records)."""
    return record.get("source") == "sharegpt"


def record_key(record: dict) -> str:
    """sha256 of what fixes a record's tokens and their categories: roles, contents, capabilities
    and the general flag (train flags excluded: they select turns at lookup)."""
    parts = ["G" if is_general(record) else "A"]
    for t in record["turns"]:
        content, cap = t["content"], t.get("capability")
        parts += (t["role"], cap if type(cap) is str else str(cap or ""), str(len(content)), content)
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def trained_turns(record: dict) -> list[int]:
    """Indices of the turns the template trains (assistant turns with a true ``train`` flag)."""
    return [i for i, t in enumerate(record["turns"]) if t["role"] == "assistant" and t.get("train")]


def _layout(record: dict, all_trained: bool) -> tuple[_Layout, np.ndarray]:
    """The record's layout (every assistant turn trained if ``all_trained``) and the turn index
    of every segment."""
    turns = record["turns"]
    if all_trained:
        turns = [{**t, "train": t["role"] == "assistant"} for t in turns]
    segs = segments(turns, general=is_general(record))
    turn_of, i = [], -1
    for s in segs:
        if s.kind == "begin":
            i += 1
        turn_of.append(i)
    return _Layout.of(segs), np.asarray(turn_of, dtype=np.int64)


def _trained_tokens(lay: _Layout, anchors: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each text token is trained and the segment of its first character (the rule of
    :meth:`TemplateTokenizer._assemble`)."""
    n = len(lay.text)
    if not len(anchors) or not n:
        return np.zeros(len(anchors), dtype=bool), np.zeros(len(anchors), dtype=np.int64)
    first = np.minimum(anchors, n - 1)
    last = np.clip(np.maximum(ends, first + 1), 1, n)
    seg = np.searchsorted(lay.starts, first, side="right") - 1
    lengths = np.diff(np.append(lay.starts, n))
    untrained = np.concatenate(([0], np.cumsum(np.repeat(~lay.trained, lengths))))
    return (untrained[last] - untrained[first]) == 0, seg


def _window(n_text_tokens: int, bos: int, max_length: int | None) -> np.ndarray:
    """Whether each text token lies within the first ``max_length`` positions (BOS first)."""
    pos = np.arange(n_text_tokens) + bos
    return pos < max_length if max_length is not None else np.ones(n_text_tokens, dtype=bool)


def _row(record: dict, lay: _Layout, turn_of: np.ndarray, ids: list[int], anchors: np.ndarray,
         ends: np.ndarray, bos: int, max_length: int | None) -> dict:
    """The cache row of ``record`` from its tokens and its layout with every assistant turn trained."""
    trained, seg = _trained_tokens(lay, anchors, ends)
    inwin = _window(len(ids), bos, max_length)
    turn = turn_of[seg]
    fmt = lay.part[seg] == _FORMAT_PART
    n_turns = len(record["turns"])
    cols = [np.bincount(turn[m], minlength=n_turns) for m in
            (trained, trained & inwin, trained & fmt, trained & fmt & inwin)]
    caps = np.zeros(n_turns, dtype=np.int64)
    caps[turn[trained]] = lay.capability[seg[trained]]
    t = [[i, int(caps[i]), *(int(c[i]) for c in cols)] for i in range(n_turns) if cols[0][i]]
    row = {"n": len(ids) + bos, "t": t}
    # Check against the record's own mask: labels from the same tokens with the real layout (the
    # same layout when the record trains every assistant turn).
    own = [t["role"] == "assistant" and bool(t.get("train")) for t in record["turns"]]
    if own == [t["role"] == "assistant" for t in record["turns"]]:
        real, r_trained, r_seg = lay, trained, seg
    else:
        real = _layout(record, all_trained=False)[0]
        r_trained, r_seg = _trained_tokens(real, anchors, ends)
    got = derive(row, record)
    want_caps = np.bincount(real.capability[r_seg[r_trained & inwin]], minlength=len(CAPABILITY_IDS))
    want = (int(r_trained.sum()), int((r_trained & inwin).sum()),
            {i: int(c) for i, c in enumerate(want_caps) if c})
    row["x"] = (got[1], got[2], got[3]) == want
    return row


def derive(row: dict, record: dict) -> tuple[int, int, int, dict[int, int]]:
    """Counts of ``record`` (whose train flags select turns) from its cache row: full length,
    trained tokens, trained tokens within the window, trained tokens within the window by
    capability id."""
    turns = record["turns"]
    n_turns = len(turns)
    full = win = 0
    by_cap: dict[int, int] = {}
    for i, cap, tf, tw, _ff, _fw in row["t"]:
        if i < n_turns:
            t = turns[i]
            if t["role"] == "assistant" and t.get("train"):   # i in trained_turns(record)
                full += tf
                win += tw
                if tw:
                    by_cap[cap] = by_cap.get(cap, 0) + tw
    return row["n"], full, win, by_cap


# What forked workers of build_rows share (set before the pool forks, read in the children).
_SHARED: dict = {}


def _rows_of(keyed: list[tuple[str, dict]], seg_tok: TemplateTokenizer, max_length: int | None) -> dict[str, dict]:
    """Cache rows of distinct ``(key, record)`` pairs, tokenised in one batched tokenizer call and
    counted record by record (:func:`_row`): the reference path, used for the records that
    :func:`_batch_rows` leaves to it (a token straddling an assistant begin tag, bad offsets)."""
    records = [r for _, r in keyed]
    bos = 1 if seg_tok.add_bos else 0
    rows: dict[str, dict] = {}
    # The text and the cuts do not depend on train flags: the all-trained layout serves for both.
    lays = [_layout(r, all_trained=True) for r in records]
    for (key, rec), (lay, turn_of), (ids, offs) in zip(keyed, lays, seg_tok._call([lay.text for lay, _ in lays])):
        try:
            done = (list(ids), *_anchors(offs, len(lay.text)))
            ids, anchors, ends = seg_tok._pieces(lay.text, lay.cuts, True, done)
        except ValueError as e:
            raise ValueError(f"record {rec.get('id')!r}: {e}") from None
        rows[key] = _row(rec, lay, turn_of, ids, anchors, ends, bos, max_length)
    return rows


# ----------------------------------------------------------------------------- batched path
# The same rows as _rows_of, computed for a whole batch at once: the tokens of all its records lie
# in one array (character offsets shifted by each record's place in the batch's concatenated text),
# so the boundary rule, the segment lookup and the per-turn counts are a few numpy calls per batch
# instead of per record. tests/test_tokcache.py checks both paths give the same rows.

class _Backend:
    """The ``tokenizers.Tokenizer`` of a fast Hugging Face tokenizer, called the way
    :meth:`TemplateTokenizer._call` calls the wrapper (no special tokens added, strings that spell a
    special token tokenised as text, no truncation, no padding) but without the wrapper's
    conversion of every encoding into lists: the batch encodes in Rust on all cores, and only
    the offsets come back to Python."""

    def __init__(self, backend):
        self.backend = backend

    @classmethod
    def of(cls, tok) -> "_Backend | None":
        """The backend of ``tok`` where it has one and it is set up as above apart from the
        special-token flag; else None (stand-in tokenizers, a truncating backend)."""
        try:
            from tokenizers import Tokenizer
        except ImportError:   # pragma: no cover - transformers' fast tokenizers need it
            return None
        bk = getattr(tok, "backend_tokenizer", None)
        if not isinstance(bk, Tokenizer) or bk.truncation is not None or bk.padding is not None:
            return None
        return cls(bk)

    def offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character offsets of every text's tokens (``encode_special_tokens`` set by the caller)."""
        return [e.offsets for e in self.backend.encode_batch(texts, add_special_tokens=False)]


_ASSISTANT_BEGIN, _ASSISTANT_END = TEMPLATE["assistant"]
_FORMAT_ID = PART_IDS["format"]


def _flat_layout(keyed: list[tuple[str, dict]]):
    """Texts and the segment table of a batch: every record's all-trained layout (as
    :func:`_layout` builds it through :func:`agentflan.template.segments`) with segments of no
    characters left out, offsets counted from the start of the batch's concatenated text."""
    texts, rec_base = [], []
    seg_start, seg_untrained, seg_fmt, seg_turn = [], [], [], []
    turn_cap, turn_own, turn_base, cuts, cut_rec = [], [], [], [], []
    pos = tb = 0
    for r, (_, rec) in enumerate(keyed):
        general = is_general(rec)
        rec_base.append(pos)
        turn_base.append(tb)
        parts = []
        for t in rec["turns"]:
            role, content = t["role"], t["content"]
            begin, end = TEMPLATE[role]
            parts += (begin, content, end)
            seg_start.append(pos)
            seg_untrained.append(True)
            seg_fmt.append(False)
            seg_turn.append(tb)
            pos += len(begin)
            if role == "assistant":
                cuts.append(pos)
                cut_rec.append(r)
                turn_cap.append(CAPABILITY_IDS["general" if general else (t.get("capability") or "other")])
                react = False
                at = pos
                for m in _SCAFFOLD.finditer(content):
                    react = True
                    a, b = pos + m.start(), pos + m.end()
                    if a > at:
                        seg_start.append(at), seg_untrained.append(False), seg_fmt.append(False), seg_turn.append(tb)
                    seg_start.append(a), seg_untrained.append(False), seg_fmt.append(True), seg_turn.append(tb)
                    at = b
                pos += len(content)
                if pos > at:
                    seg_start.append(at), seg_untrained.append(False), seg_fmt.append(False), seg_turn.append(tb)
                seg_start.append(pos), seg_untrained.append(False), seg_fmt.append(react), seg_turn.append(tb)
            else:
                turn_cap.append(0)
                if content:
                    seg_start.append(pos), seg_untrained.append(True), seg_fmt.append(False), seg_turn.append(tb)
                pos += len(content)
                seg_start.append(pos), seg_untrained.append(True), seg_fmt.append(False), seg_turn.append(tb)
            pos += len(end)
            turn_own.append(role == "assistant" and bool(t.get("train")))
            tb += 1
        texts.append("".join(parts))
    turn_base.append(tb)
    rec_base.append(pos)
    return (texts, np.asarray(rec_base, dtype=np.int64), np.asarray(seg_start, dtype=np.int64),
            np.asarray(seg_untrained, dtype=bool), np.asarray(seg_fmt, dtype=bool),
            np.asarray(seg_turn, dtype=np.int64), turn_cap, np.asarray(turn_own, dtype=bool), turn_base,
            np.asarray(cuts, dtype=np.int64), np.asarray(cut_rec, dtype=np.int64))


def _batch_rows(keyed: list[tuple[str, dict]], layout, offsets: list[list[tuple[int, int]]], bos: int,
                max_length: int | None) -> tuple[dict[str, dict], list[int]]:
    """Rows of a batch from its tokens' offsets (the rule of :func:`_row`), and the indices of the
    records left to :func:`_rows_of`: a token straddles an assistant begin tag (the template then
    tokenises the text in pieces) or the offsets are not monotonic (it raises the error)."""
    (texts, rec_base, seg_start, seg_untrained, seg_fmt, seg_turn, turn_cap, turn_own, turn_base, cuts,
     cut_rec) = layout
    n_rec = len(keyed)
    n_tok = np.fromiter(map(len, offsets), dtype=np.int64, count=n_rec)
    total = int(n_tok.sum())
    off = np.fromiter(chain.from_iterable(chain.from_iterable(offsets)), dtype=np.int64,
                      count=2 * total).reshape(-1, 2)
    tok_first = np.cumsum(n_tok) - n_tok                  # index of each record's first token
    rec = np.repeat(np.arange(n_rec), n_tok)              # record of every token
    base, end_of = rec_base[:-1][rec], rec_base[1:][rec]  # its text's start and end in the batch
    starts, ends = off[:, 0] + base, off[:, 1] + base
    slow = np.zeros(n_rec, dtype=bool)
    if total:
        # _anchors: a token's first character, offsets widened back to the previous token's end
        reach = np.maximum.accumulate(ends)
        prev = np.empty_like(reach)
        prev[1:] = reach[:-1]
        has = n_tok > 0
        prev[tok_first[has]] = rec_base[:-1][has]
        anchors = np.minimum(starts, prev)
        inner = rec[1:] == rec[:-1]
        slow[rec[1:][inner & (np.diff(anchors) < 0)]] = True
        slow[rec[starts > ends]] = True
        last_tok = tok_first[has] + n_tok[has] - 1
        slow[rec[last_tok][reach[last_tok] > end_of[last_tok]]] = True
        # _straddled: a token that starts before an assistant begin tag's end and reaches past it
        i = np.searchsorted(anchors, cuts, side="left") - 1
        ok = i >= 0
        hit = np.zeros(len(cuts), dtype=bool)
        hit[ok] = (rec[i[ok]] == cut_rec[ok]) & (reach[i[ok]] > cuts[ok])
        slow[cut_rec[hit]] = True
        # _trained_tokens: trained iff no untrained character from first to last
        first = np.minimum(anchors, end_of - 1)
        last = np.minimum(np.maximum(np.maximum(ends, first + 1), base + 1), end_of)
        lengths = np.diff(np.append(seg_start, rec_base[-1]))
        untrained = np.concatenate(([0], np.cumsum(np.repeat(seg_untrained, lengths))))
        trained = (untrained[last] - untrained[first]) == 0
        seg = np.searchsorted(seg_start, first, side="right") - 1
        turn = seg_turn[seg]
        fmt = seg_fmt[seg]
        if max_length is not None:
            inwin = (np.arange(total) - tok_first[rec]) + bos < max_length
        else:
            inwin = np.ones(total, dtype=bool)
        n_turns = turn_base[-1]
        cols = [np.bincount(turn[m], minlength=n_turns).tolist() for m in
                (trained, trained & inwin, trained & fmt, trained & fmt & inwin)]
        # The check of _row against the record's own mask: the same rule with the characters of
        # the turns the record does not train counted as untrained (its real layout's labels).
        own_untrained = np.concatenate(([0], np.cumsum(np.repeat(seg_untrained | ~turn_own[seg_turn], lengths))))
        r_trained = (own_untrained[last] - own_untrained[first]) == 0
        n_caps = len(CAPABILITY_IDS)
        caps_of_turn = np.asarray(turn_cap, dtype=np.int64)
        want = [np.bincount(rec[r_trained], minlength=n_rec).tolist(),
                np.bincount(rec[r_trained & inwin], minlength=n_rec).tolist(),
                np.bincount(rec[r_trained & inwin] * n_caps + caps_of_turn[turn[r_trained & inwin]],
                            minlength=n_rec * n_caps).reshape(n_rec, n_caps).tolist()]
    else:
        n_turns = turn_base[-1]
        cols = [[0] * n_turns for _ in range(4)]
        want = [[0] * n_rec, [0] * n_rec, [[0] * len(CAPABILITY_IDS) for _ in range(n_rec)]]
    c0, c1, c2, c3 = cols
    rows: dict[str, dict] = {}
    n_list = (n_tok + bos).tolist()
    for r, (key, record) in enumerate(keyed):
        if slow[r]:
            continue
        tb = turn_base[r]
        t = [[i - tb, turn_cap[i], c0[i], c1[i], c2[i], c3[i]] for i in range(tb, turn_base[r + 1]) if c0[i]]
        row = rows[key] = {"n": n_list[r], "t": t}
        got = derive(row, record)
        row["x"] = (got[1], got[2], got[3]) == (want[0][r], want[1][r], {i: c for i, c in enumerate(want[2][r]) if c})
    return rows, [int(r) for r in np.flatnonzero(slow)]


def _rows_fast(keyed: list[tuple[str, dict]], seg_tok: TemplateTokenizer, backend: _Backend,
               max_length: int | None, batch: int, pipelined: bool = True) -> dict[str, dict]:
    """Rows of ``keyed`` in batches. ``pipelined``: the backend encodes the next batch (in Rust,
    without the GIL, on every core) while this thread counts the current one; else one batch
    after the other (in a worker process of several)."""
    bos = 1 if seg_tok.add_bos else 0
    spans = [keyed[k:k + batch] for k in range(0, len(keyed), batch)]
    rows: dict[str, dict] = {}

    def encode(part):
        lay = _flat_layout(part)
        return lay, backend.offsets(lay[0])

    def count(part, layout, offsets):
        got, slow = _batch_rows(part, layout, offsets, bos, max_length)
        rows.update(got)
        if slow:
            rows.update(_rows_of([part[i] for i in slow], seg_tok, max_length))

    # = split_special_tokens=True, which the wrapper's own calls (the per-record path) set as well
    before = backend.backend.encode_special_tokens
    backend.backend.encode_special_tokens = True
    try:
        if not pipelined:
            for part in spans:
                count(part, *encode(part))
            return rows
        with ThreadPoolExecutor(1) as pool:
            nxt = pool.submit(encode, spans[0]) if spans else None
            for k, part in enumerate(spans):
                layout, offsets = nxt.result()
                nxt = pool.submit(encode, spans[k + 1]) if k + 1 < len(spans) else None
                count(part, layout, offsets)
    finally:
        backend.backend.encode_special_tokens = before
    return rows


def _worker(span: tuple[int, int]) -> tuple[dict[str, dict], int]:
    seg_tok, records, max_length = _SHARED["seg_tok"], _SHARED["records"], _SHARED["max_length"]
    before = seg_tok.split_texts
    rows = _rows_of(records[span[0]:span[1]], seg_tok, max_length)
    return rows, seg_tok.split_texts - before


def _batched_worker(k: int) -> tuple[dict[str, dict], int]:
    """Every ``n``-th batch from the ``k``-th, one after the other, the tokenizer on one thread
    (the workers share the cores)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    seg_tok, records, max_length = _SHARED["seg_tok"], _SHARED["records"], _SHARED["max_length"]
    batch, n = _SHARED["batch"], _SHARED["workers"]
    mine = [r for j in range(k * batch, len(records), n * batch) for r in records[j:j + batch]]
    before = seg_tok.split_texts
    rows = _rows_fast(mine, seg_tok, _SHARED["backend"], max_length, batch, pipelined=False)
    return rows, seg_tok.split_texts - before


def build_rows(records: list[dict], seg_tok: TemplateTokenizer, max_length: int | None,
               batch: int = BATCH, workers: int = 1, batched: bool = True,
               keys: list[str] | None = None) -> dict[str, dict]:
    """One cache row per distinct record key, every distinct record tokenised once.

    With ``batched`` (default) and a fast tokenizer, the batched path (:func:`_batch_rows`) counts
    whole batches at once and leaves only the records the template splits to the per-record path
    (:func:`_rows_of`); otherwise every record takes the per-record path. With ``workers`` > 1,
    forked processes share the batches (on the batched path each encodes on one thread: the
    Python part of the work is then spread over the cores as well). The rows are the same
    whichever path or sharing. ``keys``: the records' :func:`record_key`, if the caller has them."""
    todo: dict[str, dict] = {}
    for r, key in zip(records, keys if keys is not None else map(record_key, records)):
        todo.setdefault(key, r)
    distinct = list(todo.items())
    backend = _Backend.of(seg_tok.tok) if batched else None
    n_batches = -(-len(distinct) // batch)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(workers, cpus)
    fork = workers > 1 and n_batches > 1 and "fork" in mp.get_all_start_methods()
    if backend is not None and not fork:
        return _rows_fast(distinct, seg_tok, backend, max_length, batch)
    rows: dict[str, dict] = {}
    if fork:
        workers = min(workers, n_batches)
        _SHARED.update(seg_tok=seg_tok, records=distinct, max_length=max_length, batch=batch, workers=workers,
                       backend=backend)
        jobs = (_batched_worker, range(workers)) if backend is not None else (
            _worker, [(k, min(k + batch, len(distinct))) for k in range(0, len(distinct), batch)])
        gc.freeze()   # the workers' garbage collectors leave the shared records (and their pages) alone
        try:
            with mp.get_context("fork").Pool(workers) as pool:
                for part, split in pool.imap_unordered(*jobs):
                    rows.update(part)
                    seg_tok.split_texts += split
        finally:
            _SHARED.clear()
            gc.unfreeze()
        return rows
    for k in range(0, len(distinct), batch):
        rows.update(_rows_of(distinct[k:k + batch], seg_tok, max_length))
    return rows


def write_counts(path: str | os.PathLike, rows: dict[str, dict], tok_sha: str, max_length: int | None,
                 files: list[tuple[str, list[str], bool]] | None = None) -> None:
    """The cache file: header, rows sorted by key, then one index line per file the records were
    read from (``files``: its sha256, the key of each of its records in order, and whether every
    line is in the form :func:`agentflan.io.read_jsonl_lines` writes back as it is)."""
    files = files or []
    header = {"format": FORMAT, "max_length": max_length, "records": len(rows), "tokenizer_sha256": tok_sha,
              "columns": COLUMNS, "files": len(files)}
    order = {key: i for i, key in enumerate(sorted(rows))}
    with atomic_open(path, "wb") as fh:
        fh.write(dumps(header).encode("utf-8") + b"\n")
        fh.write(b"".join(dumps_bytes({"k": key, **rows[key]}, plain=True) + b"\n" for key in sorted(rows)))
        for sha, keys, reusable in files:
            fh.write(dumps_bytes({"f": sha, "r": [order[k] for k in keys], "w": reusable}, plain=True) + b"\n")


def _row_ok(row, width: int) -> bool:
    """Whether a parsed line is a cache row: k, n, x and t rows of ``width`` non-negative ints."""
    if (type(row) is not dict or type(row.get("k")) is not str or type(row.get("n")) is not int
            or type(row.get("x")) is not bool or type(row.get("t")) is not list):
        return False
    for u in row["t"]:
        if type(u) is not list or len(u) != width:
            return False
        for v in u:
            if type(v) is not int or v < 0:
                return False
    return True


class TokenCounts:
    """The cache file, read back; :meth:`lookup` gives a record's row (or None: not cached or
    not exact), :attr:`fallbacks` counts the records the caller had to tokenise again."""

    def __init__(self, rows: dict[str, dict], max_length: int | None, tokenizer_sha256: str,
                 files: dict[str, tuple[list[str], bool]] | None = None):
        self.rows = rows
        self.max_length = max_length
        self.tokenizer_sha256 = tokenizer_sha256
        self.fallbacks = 0
        #: ``{sha256 of a file: (the key of each of its records, whether every line is written
        #: back as it is)}`` for the files the token_counts job read (:func:`write_counts`).
        self.files = files or {}

    @classmethod
    def load(cls, path: str | os.PathLike, tokenizer_sha256: str | None = None,
             max_length: int | None = None) -> "TokenCounts":
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "file not found (run the token_counts job)")
        lines = path.read_bytes().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()

        def parse(i: int, strict: bool = False):
            try:
                return json.loads(lines[i]) if strict else loads_fast(lines[i])
            except (ValueError, RecursionError) as e:   # JSONDecodeError and UnicodeDecodeError
                if not strict:
                    return parse(i, strict=True)   # json's value, or json's error
                raise DataError(path, f"not valid JSON ({type(e).__name__})", line=i + 1) from None

        header = parse(0, strict=True) if lines else None
        if not isinstance(header, dict) or header.get("format") not in READABLE:
            raise DataError(path, f"not a token-counts file (first line must be a {FORMAT} header)", line=1)
        if tokenizer_sha256 is not None and header.get("tokenizer_sha256") != tokenizer_sha256:
            raise DataError(path, "token counts were made with another tokenizer "
                                  f"(sha256 {str(header.get('tokenizer_sha256'))[:12]}…, this one "
                                  f"{tokenizer_sha256[:12]}…); rerun the token_counts job", line=1)
        if max_length is not None and header.get("max_length") != max_length:
            raise DataError(path, f"token counts are for max_length {header.get('max_length')}, "
                                  f"not {max_length}; rerun the token_counts job", line=1)
        rows: dict[str, dict] = {}
        width = len(COLUMNS)
        n_files = header.get("files", 0)
        if type(n_files) is not int or not 0 <= n_files < len(lines):
            raise DataError(path, f"header's file count {n_files!r} is not a count of the file's lines", line=1)
        for i in range(1, len(lines) - n_files):
            row = parse(i)
            if not _row_ok(row, width):
                row = parse(i, strict=True)   # as json reads it (orjson reads ints over 64 bits as floats)
                if not _row_ok(row, width):
                    raise DataError(path, "malformed token-counts row (needs k, n, x and t rows of "
                                          f"{width} non-negative ints)", line=i + 1,
                                    record=row.get("k") if isinstance(row, dict) else None)
            if row["k"] in rows:
                raise DataError(path, "duplicate key", line=i + 1, record=row["k"])
            rows[row["k"]] = row
        if len(rows) != header.get("records"):
            raise DataError(path, f"header says {header.get('records')} records, file holds {len(rows)}")
        keys = sorted(rows)
        files: dict[str, tuple[list[str], bool]] = {}
        for i in range(len(lines) - n_files, len(lines)):
            f = parse(i)
            ok = (type(f) is dict and type(f.get("f")) is str and type(f.get("w")) is bool
                  and type(f.get("r")) is list and all(type(k) is int and 0 <= k < len(keys) for k in f["r"]))
            if not ok:
                raise DataError(path, "malformed file index line (needs f, a sha256, w, a bool, and r, "
                                      "row numbers)", line=i + 1)
            files[f["f"]] = ([keys[k] for k in f["r"]], f["w"])
        return cls(rows, header.get("max_length"), header.get("tokenizer_sha256"), files)

    def lookup(self, record: dict, key: str | None = None) -> dict | None:
        """The row of ``record`` (``key``: its :func:`record_key`, if the caller has it)."""
        row = self.rows.get(record_key(record) if key is None else key)
        return row if row is not None and row["x"] else None


def load_tokenizer_without_torch(tokenizer_dir: str | os.PathLike):
    """:func:`agentflan.modeling.load_tokenizer`, with torch kept out of this process: a tokenizer
    needs none, and importing torch (which transformers does when it finds it) is most of the
    seconds loading takes. transformers then loads the same tokenizer (the tests compare the
    backends); a process that has imported torch already, or a load that fails this way, loads
    the usual way."""
    import sys

    from .modeling import load_tokenizer
    if "torch" in sys.modules or "transformers" in sys.modules:
        return load_tokenizer(str(tokenizer_dir))
    advice = os.environ.get("TRANSFORMERS_NO_ADVISORY_WARNINGS")
    sys.modules["torch"] = None   # import torch -> ImportError; find_spec("torch") -> None
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"   # "PyTorch was not found..."
    try:
        return load_tokenizer(str(tokenizer_dir))
    except Exception:  # noqa: BLE001 - anything: load again with torch
        for name in [m for m in sys.modules if m == "transformers" or m.startswith("transformers.")]:
            del sys.modules[name]
        del sys.modules["torch"]
        return load_tokenizer(str(tokenizer_dir))
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
        if advice is None:
            os.environ.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS", None)
        else:
            os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = advice


class _FileTokenizer:
    """A fast tokenizer read straight from ``tokenizer.json`` (no transformers import), with what
    :class:`TemplateTokenizer` uses of a transformers tokenizer: ``bos_token_id``,
    ``backend_tokenizer`` and the call (no special tokens added, no truncation or padding)."""

    def __init__(self, backend, bos_token_id: int | None):
        self.backend_tokenizer = backend
        self.bos_token_id = bos_token_id

    @classmethod
    def read(cls, tokenizer_dir: str | os.PathLike) -> "tuple[_FileTokenizer, tuple] | None":
        """The tokenizer of ``tokenizer_dir`` and its fingerprint (:func:`_fingerprint`), or None
        where there is no ``tokenizer.json``."""
        root = Path(tokenizer_dir)
        try:
            from tokenizers import Tokenizer
            backend = Tokenizer.from_file(str(root / "tokenizer.json"))
        except Exception:  # noqa: BLE001 - no such file or not one tokenizers reads: transformers' load
            return None
        bos = None
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            try:
                bos = json.loads((root / name).read_text(encoding="utf-8")).get("bos_token")
            except (OSError, ValueError, AttributeError):
                continue
            break
        if isinstance(bos, dict):
            bos = bos.get("content")
        bos_id = backend.token_to_id(bos) if isinstance(bos, str) else None
        fingerprint = _fingerprint(backend, bos_id)
        backend.no_truncation()    # as transformers' call does for a call that asks for none
        backend.no_padding()
        return cls(backend, bos_id), fingerprint

    def __call__(self, texts, add_special_tokens: bool = True, return_offsets_mapping: bool = False,
                 split_special_tokens: bool = False) -> dict:
        if add_special_tokens:
            raise ValueError("_FileTokenizer adds no special tokens (TemplateTokenizer asks for none)")
        bk = self.backend_tokenizer
        before, bk.encode_special_tokens = bk.encode_special_tokens, split_special_tokens
        try:
            encs = bk.encode_batch(list(texts), add_special_tokens=False)
        finally:
            bk.encode_special_tokens = before
        out = {"input_ids": [e.ids for e in encs]}
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encs]
        return out


def _fingerprint(backend, bos_token_id: int | None) -> tuple:
    """What fixes the template's tokens: the backend's whole definition (normalizer,
    pre-tokenizer, model, added tokens, post-processor, truncation, padding) and the BOS id."""
    return hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest(), bos_token_id


#: The record, inside a tokenizer directory, of how transformers loads it (:func:`write_view`).
VIEW_FILE = "agentflan_transformers_view.json"
VIEW_FORMAT = "agentflan-transformers-view/1"


def _versions() -> dict[str, str]:
    """The installed transformers and tokenizers (package metadata only: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("transformers", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = ""
    return out


def write_view(tokenizer_dir: str | os.PathLike) -> tuple:
    """Load ``tokenizer_dir`` as :class:`TokenizerCheck` does (transformers, torch kept out where
    it can be) and record its :func:`_fingerprint` in ``VIEW_FILE``, with the sha256 of the
    directory's other files and the transformers and tokenizers versions that loaded it. The
    ``tokenizer`` job writes it (it loads the tokenizer anyway), so ``token_counts`` need not load
    transformers again: :func:`recorded_view` gives the same answer while all three still match."""
    root = Path(tokenizer_dir)
    (root / VIEW_FILE).unlink(missing_ok=True)
    tok = load_tokenizer_without_torch(root)
    fp = _fingerprint(tok.backend_tokenizer, tok.bos_token_id)
    doc = {"format": VIEW_FORMAT, "files_sha256": tokenizer_hash(root), "versions": _versions(),
           "backend_sha256": fp[0], "bos_token_id": fp[1]}
    tmp = root / (VIEW_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, root / VIEW_FILE)
    return fp


def recorded_view(tokenizer_dir: str | os.PathLike) -> tuple | None:
    """The fingerprint :func:`write_view` recorded for ``tokenizer_dir``, or None where there is
    no record or it no longer holds (another file, another transformers or tokenizers version)."""
    root = Path(tokenizer_dir)
    try:
        doc = json.loads((root / VIEW_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != VIEW_FORMAT or doc.get("versions") != _versions():
        return None
    if doc.get("files_sha256") != tokenizer_hash(root, exclude=(VIEW_FILE,)):
        return None
    bos = doc.get("bos_token_id")
    if not isinstance(doc.get("backend_sha256"), str) or not (bos is None or isinstance(bos, int)):
        return None
    return doc["backend_sha256"], bos


class TokenizerCheck:
    """How transformers loads a tokenizer directory (:func:`_fingerprint` of what
    :func:`load_tokenizer_without_torch` gives): read from the ``tokenizer`` job's record
    (:func:`recorded_view`) where it still holds, else worked out in a forked process while this
    one tokenises with ``tokenizer.json`` read directly: importing transformers is seconds of work
    the tokenisation need not wait for."""

    def __init__(self, proc, conn, recorded: tuple | None = None):
        self.proc, self.conn, self.recorded = proc, conn, recorded

    @classmethod
    def start(cls, tokenizer_dir: str | os.PathLike) -> "TokenizerCheck | None":
        """Start the check (None where there is no valid record and processes cannot be forked)."""
        recorded = recorded_view(tokenizer_dir)
        if recorded is not None:
            return cls(None, None, recorded)
        if "fork" not in mp.get_all_start_methods():
            return None
        ctx = mp.get_context("fork")
        ours, theirs = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_check_in_child, args=(str(tokenizer_dir), theirs), daemon=True)
        proc.start()
        theirs.close()
        return cls(proc, ours)

    def result(self, timeout: float = 600) -> tuple | None:
        """transformers' fingerprint of the tokenizer, or None if the check failed."""
        if self.recorded is not None:
            return self.recorded
        try:
            got = self.conn.recv() if self.conn.poll(timeout) else None
        except (EOFError, OSError):
            got = None
        finally:
            self.conn.close()
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
        return tuple(got) if isinstance(got, (tuple, list)) else None


def _check_in_child(tokenizer_dir: str, conn) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)   # transformers' warnings stay out of the job log
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        os.nice(19)   # the tokenisation goes first; this runs on what it leaves
    except OSError:
        pass
    try:
        tok = load_tokenizer_without_torch(tokenizer_dir)
        conn.send(_fingerprint(tok.backend_tokenizer, tok.bos_token_id))
    except BaseException:  # noqa: BLE001 - the parent tokenises with transformers' tokenizer then
        conn.send(None)
    finally:
        conn.close()


def build(records: list[dict], tokenizer_dir: str | os.PathLike, max_length: int | None,
          out: str | os.PathLike, workers: int = 1, check: "TokenizerCheck | None" = None,
          keys: list[str] | None = None, files: list[tuple[str, list[str], bool]] | None = None) -> dict:
    """Tokenise ``records`` once and write the cache; returns a summary for the log.

    The records are tokenised with ``tokenizer.json`` read directly, while :class:`TokenizerCheck`
    (``check``, started here if not given) loads the directory with transformers in a forked
    process; if the two differ in anything that fixes the tokens, the records are tokenised again
    with transformers' tokenizer. Without ``tokenizer.json`` or fork, transformers' tokenizer is
    used from the start. ``keys`` and ``files``: see :func:`build_rows` and :func:`write_counts`."""
    direct = _FileTokenizer.read(tokenizer_dir)
    if direct is not None and check is None:
        check = TokenizerCheck.start(tokenizer_dir)
    used = "transformers"
    if direct is not None and check is not None:
        seg_tok = TemplateTokenizer(direct[0])
        rows = build_rows(records, seg_tok, max_length, workers=workers, keys=keys)
        used = "tokenizer.json (the same as transformers loads" + (
            ", as the tokenizer job recorded)" if check.recorded is not None else ")")
        if check.result() != direct[1]:
            used = "transformers (tokenizer.json differs from what it loads)"
            direct = None
    if direct is None or check is None:
        seg_tok = TemplateTokenizer(load_tokenizer_without_torch(tokenizer_dir))
        rows = build_rows(records, seg_tok, max_length, workers=workers, keys=keys)
    write_counts(out, rows, tokenizer_hash(tokenizer_dir), max_length, files)
    return {"records": len(records), "distinct": len(rows), "inexact": sum(not r["x"] for r in rows.values()),
            "split_texts": seg_tok.split_texts, "tokenizer": used}


class LazyTemplateTokenizer:
    """A :class:`TemplateTokenizer` loaded from ``tokenizer_dir`` on first use (a job whose
    records are all in the cache never loads the tokenizer)."""

    def __init__(self, tokenizer_dir: str | os.PathLike):
        self.tokenizer_dir = str(tokenizer_dir)
        self._tok: TemplateTokenizer | None = None

    def __getattr__(self, name):
        if name.startswith("__") or name in ("tokenizer_dir", "_tok"):
            raise AttributeError(name)
        if self._tok is None:
            from .modeling import load_tokenizer
            self._tok = TemplateTokenizer(load_tokenizer(self.tokenizer_dir))
        return getattr(self._tok, name)


def load_for(path: str | os.PathLike | None, tokenizer_dir: str | os.PathLike,
             max_length: int | None) -> "TokenCounts | None":
    """The cache at ``path`` checked against this tokenizer and ``max_length`` (None: no cache)."""
    if path is None:
        return None
    return TokenCounts.load(path, tokenizer_hash(tokenizer_dir), max_length)
