"""The paper's ablation datasets (experiments.md §3.3), built from config.

A dataset spec (``config['ablations']['datasets'][<id>]``)::

    format:     react | chat | none      which released files form the agent part
    weights:    {reasoning, retrieval, understanding, instruction}   capability weights (chat only)
    negatives:  bool                      add toolbench_negative (paper §4.3)
    sharegpt:   bool                      add the general-chat records
    fraction:   float in (0, 1]           seeded share of the agent part (Figure 7)

Ratio semantics (the paper does not say how weights are applied; ``capability_mode``):

* ``mask`` (default): each trained turn of capability c keeps its loss with probability w_c
  (w_c <= 1), decided by a hash of (seed, record id, turn index) so that a turn's fate does not
  depend on the rest of the data set. Samples are never dropped; trained tokens scale by w_c.
* ``sample``: for every capability c, the records holding trained c-turns are copied
  floor(w_c) times plus once more with probability frac(w_c); in each copy only the c-turns are
  trained. Trained tokens scale by w_c and total tokens change with the weights (as the paper's
  Table 2 token column does: 37.3M for equal weights, 18.1M weighted).

ShareGPT mixing (``sharegpt_mode``): ``concat`` (default, the authors' meaning of "1:1", issue #4:
plain concatenation, no resampling) or ``ratio`` (seeded down/up-sampling of the general records
to ``sharegpt_ratio`` × the agent part).
"""
from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from pathlib import Path

from .records import CAPABILITIES
from .template import segments

DEFAULT_FORMATS = {
    "react": ["agent_instruct_react", "toolbench_react_10p"],
    "chat": ["agent_instruct_tflan", "toolbench_tflan_60p_r10r5u7", "toolbench_tflan_cot_30p",
             "toolbench_react_10p", "toolbench_instruct_j1s1_3k"],
    "none": [],
}
NEGATIVE_SOURCE = "toolbench_negative"
TOOL_MARKERS = ("Input parameters are as follows", "You have access to the following",
                "access to the following functions", "get_relations(")


def _unit(seed: int, *parts) -> float:
    """Deterministic uniform [0, 1) from a hash (independent of iteration order)."""
    h = hashlib.sha256(("\x1f".join(str(p) for p in (seed, *parts))).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


def _copy_turns(rec: dict, origin: dict | None = None) -> dict:
    """A copy of ``rec`` whose turn dicts (the only thing the weights change) are its own;
    ``origin``, if given, maps the copy's ``id()`` to the record it was made from."""
    copy = {**rec, "turns": [dict(t) for t in rec["turns"]]}
    if origin is not None:
        origin[id(copy)] = origin.get(id(rec), rec)
    return copy


def apply_weights_mask(records: list[dict], weights: dict, seed: int, origin: dict | None = None,
                       units: dict | None = None) -> list[dict]:
    """Each trained turn of capability c keeps its loss with probability w_c (module docstring).
    A record none of whose turns loses its loss is returned as it is (the same object), the others
    as copies with their own turn dicts (``origin``: see :func:`build_dataset`). ``units``, if
    given, keeps the turns' hash draws (seed, record id and turn -> [0, 1)) for the next call."""
    out = []
    sha256, from_bytes = hashlib.sha256, int.from_bytes
    units = {} if units is None else units
    for rec in records:
        flips = None
        prefix = None
        for i, t in enumerate(rec["turns"]):
            cap = t.get("capability")
            if t["train"] and cap is not None:
                w = float(weights.get(cap, 1.0))
                if w > 1.0:
                    raise ValueError(f"capability weight {cap}={w} > 1 needs capability_mode 'sample'")
                if not w < 1.0:   # w == 1 (or NaN): the turn always keeps its loss
                    continue
                if w > 0:          # _unit(seed, "mask", rec["id"], i) >= w, unrolled
                    if prefix is None:
                        prefix = f"{seed}\x1fmask\x1f{rec['id']}\x1f"
                    u = units.get((prefix, i))
                    if u is None:
                        u = units[prefix, i] = from_bytes(sha256(f"{prefix}{i}".encode()).digest()[:8], "big") / 2 ** 64
                    if u < w:
                        continue
                (flips := flips or []).append(i)
        if flips is None:
            out.append(rec)
            continue
        rec = _copy_turns(rec, origin)
        for i in flips:
            rec["turns"][i]["train"] = False
        out.append(rec)
    return out


def mask_units(records: list[dict], seed: int, units: dict) -> dict:
    """Fill ``units`` with the hash draw of every trained turn with a capability (what
    :func:`apply_weights_mask` draws for any weights), for data sets built one after another."""
    sha256, from_bytes = hashlib.sha256, int.from_bytes
    for rec in records:
        prefix = None
        for i, t in enumerate(rec["turns"]):
            if t["train"] and t.get("capability") is not None:
                if prefix is None:
                    prefix = f"{seed}\x1fmask\x1f{rec['id']}\x1f"
                if (prefix, i) not in units:
                    units[prefix, i] = from_bytes(sha256(f"{prefix}{i}".encode()).digest()[:8], "big") / 2 ** 64
    return units


def apply_weights_sample(records: list[dict], weights: dict, seed: int, origin: dict | None = None) -> list[dict]:
    out = []
    for rec in records:
        caps = sorted({t["capability"] for t in rec["turns"] if t["train"] and t.get("capability")})
        untagged = any(t["train"] and not t.get("capability") for t in rec["turns"])
        if not caps:
            out.append(_copy_turns(rec, origin))
            continue
        if untagged:  # trained turns outside the decomposition keep one view of their own
            view = _copy_turns(rec, origin)
            for t in view["turns"]:
                t["train"] = t["train"] and not t.get("capability")
            view["id"] = f"{rec['id']}#other"
            out.append(view)
        for cap in caps:
            w = float(weights.get(cap, 1.0))
            copies = math.floor(w) + (1 if _unit(seed, "sample", rec["id"], cap) < w - math.floor(w) else 0)
            for k in range(copies):
                view = _copy_turns(rec, origin)
                for t in view["turns"]:
                    t["train"] = t["train"] and t.get("capability") == cap
                view["id"] = f"{rec['id']}#{cap}" + (f"#{k}" if k else "")
                out.append(view)
    return out


def negative_case(rec: dict) -> str:
    """The paper's Figure 6 case of a record: a (no tools, general), b (tools, general query),
    c (no tools, tool-like query), d (tools, tool query)."""
    src = rec["source"].replace("data_", "", 1)
    if src == "sharegpt":
        return "a"
    if src != NEGATIVE_SOURCE:
        return "d"
    prompt = "\n".join(t["content"] for t in rec["turns"] if t["role"] in ("system",))
    if not prompt and rec["turns"] and rec["turns"][0]["role"] == "user":
        prompt = rec["turns"][0]["content"]
    return "b" if any(m in prompt for m in TOOL_MARKERS) else "c"


def source_stems(spec: dict, formats: dict | None = None) -> set[str]:
    """The converted files :func:`build_dataset` draws ``spec``'s records from."""
    stems = set((formats or DEFAULT_FORMATS).get(spec.get("format", "chat"), []))
    if spec.get("negatives"):
        stems.add(NEGATIVE_SOURCE)
    return stems


def build_dataset(spec: dict, converted: dict[str, list[dict]], general: list[dict], *,
                  seed: int, capability_mode: str = "mask", sharegpt_mode: str = "concat",
                  sharegpt_ratio: float = 1.0, formats: dict | None = None,
                  origin: dict | None = None, units: dict | None = None) -> list[dict]:
    """Assemble one ablation dataset (records in a seeded, shuffled order). Records the weights do
    not change are the input objects themselves; ``origin``, if given, receives ``{id(copy): the
    input record it was made from}`` for the others (their token counts are the input record's).
    ``units``: see :func:`apply_weights_mask` (for building several data sets)."""
    formats = formats or DEFAULT_FORMATS
    fmt = spec.get("format", "chat")
    if fmt not in formats:
        raise ValueError(f"unknown format {fmt!r}; known: {sorted(formats)}")
    agent: list[dict] = []
    for stem in formats[fmt]:
        if stem not in converted:
            raise ValueError(f"dataset needs released file {stem!r}, which was not converted")
        agent.extend(converted[stem])
    weights = spec.get("weights") or {}
    unknown = set(weights) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capabilities in weights: {sorted(unknown)}")
    if weights:
        if capability_mode == "mask":
            agent = apply_weights_mask(agent, weights, seed, origin, units)
        elif capability_mode == "sample":
            agent = apply_weights_sample(agent, weights, seed, origin)
        else:
            raise ValueError(f"capability_mode must be 'mask' or 'sample', not {capability_mode!r}")
    if spec.get("negatives"):
        agent.extend(converted[NEGATIVE_SOURCE])
    fraction = float(spec.get("fraction", 1.0))
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction < 1:
        rng = random.Random(f"{seed}-fraction")
        idx = sorted(rng.sample(range(len(agent)), max(1, round(fraction * len(agent)))))
        agent = [agent[i] for i in idx]
    mixed = list(agent)
    if spec.get("sharegpt"):
        if sharegpt_mode == "concat":
            mixed.extend(general)
        elif sharegpt_mode == "ratio":
            want = round(sharegpt_ratio * len(agent))
            rng = random.Random(f"{seed}-sharegpt")
            if want <= len(general):
                idx = sorted(rng.sample(range(len(general)), want))
                mixed.extend(general[i] for i in idx)
            else:
                mixed.extend(general * (want // len(general)))
                mixed.extend(general[i] for i in sorted(rng.sample(range(len(general)), want % len(general))))
        else:
            raise ValueError(f"sharegpt_mode must be 'concat' or 'ratio', not {sharegpt_mode!r}")
    rng = random.Random(f"{seed}-shuffle")
    order = list(range(len(mixed)))
    rng.shuffle(order)
    return [mixed[i] for i in order]


def _counts_by_record(records: list[dict], seg_tok, max_length: int, counts=None,
                      keys: list | None = None, known: dict | None = None) -> list[tuple[int, dict]]:
    """Full length and trained tokens within ``max_length`` by capability id of every record: from
    the token-count cache (:mod:`agentflan.tokcache`) where it holds the record, else tokenised.
    ``keys``, if given, are the records' cache keys (None: computed); ``known`` maps ``id(record)``
    to these counts where a caller derived them already (from the same cache)."""
    per: list = [None] * len(records)
    if counts is not None:
        from .tokcache import derive
        if counts.max_length != max_length:
            raise ValueError(f"token counts are for max_length {counts.max_length}, not {max_length}")
        known = known or {}
        for i, r in enumerate(records):
            got = known.get(id(r))
            if got is not None:
                per[i] = got
                continue
            row = counts.lookup(r, keys[i] if keys is not None else None)
            if row is not None:
                n, _, _, by_cap = derive(row, r)
                per[i] = (n, by_cap)
    miss = [i for i, p in enumerate(per) if p is None]
    if counts is not None:
        counts.fallbacks += len(miss)
    for k in range(0, len(miss), 512):
        chunk = miss[k:k + 512]
        batch = [records[i] for i in chunk]
        encoded = (seg_tok.encode_records(batch) if hasattr(seg_tok, "encode_records")
                   else [seg_tok.encode_record(r) for r in batch])
        for i, enc in zip(chunk, encoded):
            by_cap = Counter(cap for lab, cap in zip(enc.labels[:max_length], enc.capability[:max_length])
                             if lab != -100)
            per[i] = (len(enc), by_cap)
    return per


def dataset_stats(records: list[dict], seg_tok, max_length: int, counts=None, keys: list | None = None,
                  known: dict | None = None) -> dict:
    """Samples, cases and token counts of a data set. ``counts`` (a :class:`agentflan.tokcache.TokenCounts`
    for this tokenizer and ``max_length``) gives the token counts without tokenising; records it
    does not hold are tokenised with ``seg_tok`` (``counts.fallbacks`` counts them). ``keys``: the
    records' cache keys where the caller has them (:func:`agentflan.tokcache.record_key`); ``known``:
    see :func:`_counts_by_record`."""
    by_source = Counter(r["source"] for r in records)
    cases = Counter(negative_case(r) for r in records)
    names = {1: "reasoning", 2: "retrieval", 3: "understanding", 4: "instruction"}
    total = truncated = 0
    by_id: dict = {}   # trained tokens by capability id
    for full, by_cap in _counts_by_record(records, seg_tok, max_length, counts, keys, known):
        if max_length and full > max_length:
            truncated += 1
            total += max_length
        else:
            total += full
        for cap, n in by_cap.items():
            by_id[cap] = by_id.get(cap, 0) + n
    tok = Counter()
    for cap, n in by_id.items():
        tok[names.get(cap, "other")] += n
    return {
        "n_samples": len(records),
        "samples_by_source": dict(sorted(by_source.items())),
        "tokens_total": total,
        "tokens_trained": sum(by_id.values()),
        "tokens_trained_by_capability": {c: tok[c] for c in (*CAPABILITIES, "other")},
        "cases": {c: cases.get(c, 0) for c in "abcd"},
        "truncated_samples": truncated,
        "max_length": max_length,
    }


class SourceCounts:
    """The counts :func:`dataset_stats` adds up, per record of the records several data sets are
    drawn from (``sources``), in arrays: a data set of them and of copies made from them
    (``origin``, see :func:`build_dataset`) then has its stats from a few array sums
    (:meth:`stats`), without walking its records again. The result is :func:`dataset_stats`'
    (tests/test_ablations.py); where the cache lacks a record, :meth:`stats` gives None and the
    caller uses :func:`dataset_stats`."""

    CASES = "abcd"
    N_CAPS = 7   # agentflan.template.CAPABILITY_IDS

    def __init__(self, sources: list[dict], counts, max_length: int, keys: dict | None = None):
        import numpy as np

        from .tokcache import derive, record_key
        self.counts, self.max_length = counts, max_length
        self.gid = {id(r): g for g, r in enumerate(sources)}
        self.keys = [(keys or {}).get(id(r)) or record_key(r) for r in sources]
        self.full = np.zeros(len(sources), dtype=np.int64)
        self.caps = np.zeros((len(sources), self.N_CAPS), dtype=np.int64)
        self.usable = np.zeros(len(sources), dtype=bool)
        self.source_names = sorted({r["source"] for r in sources})
        code = {s: i for i, s in enumerate(self.source_names)}
        self.source = np.fromiter((code[r["source"]] for r in sources), dtype=np.int64, count=len(sources))
        self.case = np.fromiter((self.CASES.index(negative_case(r)) for r in sources), dtype=np.int64,
                                count=len(sources))
        self.ok = counts is not None and counts.max_length == max_length
        for g, r in enumerate(sources if self.ok else ()):
            got = self._derive(r, self.keys[g], derive)
            if got is not None:
                self.full[g], self.caps[g] = got
                self.usable[g] = True

    def _derive(self, record: dict, key: str, derive):
        row = self.counts.lookup(record, key)
        if row is None:
            return None
        n, _, _, by_cap = derive(row, record)
        caps = [0] * self.N_CAPS
        for cap, v in by_cap.items():
            if not 0 <= cap < self.N_CAPS:
                return None
            caps[cap] = v
        return n, caps

    def stats(self, records: list[dict], origin: dict) -> dict | None:
        """:func:`dataset_stats` of ``records`` (sources and copies of them), or None where this
        table cannot give it."""
        import numpy as np

        from .tokcache import derive
        if not self.ok:
            return None
        gid = self.gid
        idx = np.fromiter((gid.get(id(r), -1) for r in records), dtype=np.int64, count=len(records))
        copies = np.flatnonzero(idx < 0)
        full, caps, src, case = [], [], [], []
        for i in copies.tolist():
            g = gid.get(id(origin.get(id(records[i]))))
            got = self._derive(records[i], self.keys[g], derive) if g is not None else None
            if got is None:
                return None
            full.append(got[0])
            caps.append(got[1])
            src.append(self.source[g])
            case.append(self.case[g])
        kept = idx[idx >= 0]
        if not self.usable[kept].all():
            return None
        full = np.concatenate((self.full[kept], np.asarray(full, dtype=np.int64)))
        caps = np.concatenate((self.caps[kept], np.asarray(caps, dtype=np.int64).reshape(-1, self.N_CAPS)))
        src = np.concatenate((self.source[kept], np.asarray(src, dtype=np.int64)))
        case = np.concatenate((self.case[kept], np.asarray(case, dtype=np.int64)))
        ml = self.max_length
        if ml:
            truncated, total = int((full > ml).sum()), int(np.minimum(full, ml).sum())
        else:
            truncated, total = 0, int(full.sum())
        by_id = caps.sum(axis=0).tolist()
        names = {1: "reasoning", 2: "retrieval", 3: "understanding", 4: "instruction"}
        tok = Counter()
        for cap, n in enumerate(by_id):
            tok[names.get(cap, "other")] += n
        by_source = np.bincount(src, minlength=len(self.source_names)).tolist()
        cases = np.bincount(case, minlength=len(self.CASES)).tolist()
        return {
            "n_samples": len(records),
            "samples_by_source": {s: n for s, n in zip(self.source_names, by_source) if n},
            "tokens_total": total,
            "tokens_trained": sum(by_id),
            "tokens_trained_by_capability": {c: tok[c] for c in (*CAPABILITIES, "other")},
            "cases": dict(zip(self.CASES, cases)),
            "truncated_samples": truncated,
            "max_length": ml,
        }


def audit_dump(records: list[dict], n: int, title: str) -> str:
    """The text a model sees for the first ``n`` samples, trained spans marked ⟦…⟧ with their capability."""
    out = [f"# Audit dump: {title}", "",
           "Trained tokens are between ⟦ and ⟧ (capability after the closing bracket); "
           "everything else is context without loss. Template tags are shown literally.", ""]
    for rec in records[:n]:
        out.append(f"## `{rec['id']}` (source `{rec['source']}`, case {negative_case(rec)})")
        out.append("")
        parts, run = [], None  # merge adjacent trained segments of one capability into one span
        general = rec["source"] == "sharegpt"
        for s in segments(rec["turns"], general=general) + [None]:
            key = (s.trained, s.capability) if s is not None else None
            if run is not None and (key != run[0] or not run[0][0]):
                text = "".join(run[1])
                parts.append(f"⟦{text}⟧{{{run[0][1]}}}" if run[0][0] else text)
                run = None
            if s is None:
                break
            if run is None:
                run = (key, [s.text])
            else:
                run[1].append(s.text)
        body = "".join(parts).replace("```", "ˋˋˋ")
        out += ["```text", body, "```", ""]
    return "\n".join(out)


