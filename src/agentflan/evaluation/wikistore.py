"""A local, hermetic Wikipedia for HotpotQA episodes: pages in SQLite with an FTS5 index.

Built from JSONL pages (the introductory paragraphs of 2017 Wikipedia that HotpotQA was built on;
data/README.md "HotpotQA protocols" names the source and what is verified about it), queried by
:class:`WikiEnv` with the semantics of the tools that AgentTuning's held-out HotpotQA evaluation
executes (``THUDM/AgentTuning@e33a45d eval_heldout/hotpotQA/src/agent_arch.py``: LangChain 0.0.174
``DocstoreExplorer(Wikipedia())``; ``ysymyth/ReAct wikienv.py`` for sentence lookup):

* ``search(x)``: a page whose title equals x after :func:`norm_title` (white space collapsed,
  ``_`` read as a space, case-folded; an exact-case match wins, then the first page in build
  order) → the page's first paragraph (LangChain: ``page_content.split("\\n\\n")[0]``). Otherwise
  ``Could not find [x]. Similar: ['T1', 'T2', ...]`` with up to ``similar_k`` titles ranked by
  FTS5 bm25 over the titles and texts of the whole store (title column weighted 10, text 1; ties
  by build order), the Python list repr LangChain prints (live Wikipedia's own search ranking
  cannot be reproduced offline; upstream listed up to 10 = ``wikipedia.search``'s default).
* ``lookup(k)``: matches of k (case-insensitive substring) in the current page, one per call:
  ``(Result i/n) <match>``; ``No Results``; ``No More Results`` after the last. The same keyword
  again steps on, a different keyword starts over (LangChain's ``lookup_str``/``lookup_index``).
  Units: ``sentence`` (default; the prompts' "next sentence containing keyword", ReAct's
  wikienv) or ``paragraph`` (what LangChain steps through on live pages; an introductory-paragraph
  store has one paragraph per page, so this returns the whole page once). Without a found page
  :class:`NoPage` is raised (the agent answers upstream's message). A successful search resets
  the lookup state (LangChain keeps ``lookup_str`` across searches; ReAct resets it).

Page records (one JSON object per line): ``title`` (non-empty string) and one of ``paragraphs``
(list of strings, or of lists of sentences), ``text`` (a string: one paragraph, or a list of
sentence strings: one paragraph, or a list of lists: paragraphs of sentences; the shapes of the
HotpotQA abstracts dump and of BEIR's ``corpus.jsonl``), ``sentences`` (list of strings). Where no
sentence boundaries are given, a paragraph is split at ``". "`` like ReAct's wikienv. A record
that is not one of these stops the build with one line naming file, line and record. Duplicate
titles keep the first occurrence (counted in the build info). ``expected_pages`` (the
pinned corpus' record count) refuses any other file in one line. The build is deterministic: pages
are stored in input order, the meta table records the input files' sha256 and the counts.
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import unicodedata
from pathlib import Path
from typing import Any, Iterable

from ..io import DataError

SCHEMA_VERSION = 1
NOT_FOUND_LOOKUP = ("The last page Searched was not found, so you cannot Lookup a keyword in it. "
                    "Please try one of the similar pages given.")


class NoPage(LookupError):
    """Lookup without a page found by the last Search."""


def norm_title(s: str) -> str:
    s = unicodedata.normalize("NFC", str(s)).replace("_", " ")
    return " ".join(s.split()).casefold()


def split_sentences(paragraph: str) -> list[str]:
    """ReAct wikienv's split: at ``". "``, each part stripped and ended with a period."""
    return [p.strip() + ("" if p.strip().endswith(".") else ".")
            for p in paragraph.split(". ") if p.strip()]


def _paragraphs_of(rec: dict, path: Path, line: int, title: str) -> list[list[str]]:
    """Paragraphs as lists of sentences."""
    def bad(msg: str) -> DataError:
        return DataError(path, msg, line=line, record=title)

    def para(x: Any) -> list[str]:
        if isinstance(x, str):
            return split_sentences(x) if x.strip() else []
        if isinstance(x, list) and all(isinstance(s, str) for s in x):
            return [s for s in x if s.strip()]
        raise bad("a paragraph must be a string or a list of sentence strings")

    if "paragraphs" in rec:
        ps = rec["paragraphs"]
        if not isinstance(ps, list):
            raise bad("'paragraphs' must be a list")
        out = [para(p) for p in ps]
    elif "sentences" in rec:
        out = [para(rec["sentences"])]
    elif "text" in rec:
        t = rec["text"]
        if isinstance(t, list) and t and all(isinstance(p, list) for p in t):
            out = [para(p) for p in t]
        else:
            out = [para(t)]
    else:
        raise bad("page record has none of 'paragraphs', 'text', 'sentences'")
    out = [p for p in out if p]
    if not out:
        raise bad("page has no text")
    return out


def iter_pages(paths: Iterable[str | Path]) -> Iterable[tuple[str, list[list[str]]]]:
    """``(title, paragraphs of sentences)`` from JSONL files (``.jsonl`` or ``.jsonl.gz``)."""
    import gzip
    for path in paths:
        path = Path(path)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise DataError(path, f"invalid JSON: {exc.msg}", line=line) from None
                if not isinstance(rec, dict):
                    raise DataError(path, "page record is not an object", line=line)
                title = rec.get("title")
                if not isinstance(title, str) or not title.strip():
                    raise DataError(path, "page record has no non-empty string 'title'", line=line,
                                    record=str(rec.get("_id", rec.get("id", "")))[:80] or None)
                yield title, _paragraphs_of(rec, path, line, title)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(paths: list[str | Path], db_path: str | Path, expected_pages: int | None = None) -> dict:
    """Build the store at ``db_path`` (replaced if present); returns the build info."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError(db_path, "no page files given to build the wiki store from")
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(db_path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        con.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE pages (id INTEGER PRIMARY KEY, title TEXT NOT NULL, norm TEXT NOT NULL,
                                paragraphs TEXT NOT NULL);
            CREATE INDEX pages_norm ON pages(norm, id);
            CREATE VIRTUAL TABLE fts USING fts5(title, body, content='', tokenize='unicode61');
        """)
        seen: set[str] = set()
        n = dup = 0
        for title, paras in iter_pages(paths):
            if title in seen:
                dup += 1
                continue
            seen.add(title)
            n += 1
            con.execute("INSERT INTO pages VALUES (?, ?, ?, ?)",
                        (n, title, norm_title(title), json.dumps(paras, ensure_ascii=False)))
            con.execute("INSERT INTO fts(rowid, title, body) VALUES (?, ?, ?)",
                        (n, title, " ".join(" ".join(p) for p in paras)))
        if expected_pages is not None and n + dup != int(expected_pages):
            raise DataError(paths[0], f"wiki source has {n + dup} page records, expected {expected_pages} "
                                      "(evaluation.benchmarks.hotpotqa.wiki.expected_pages): "
                                      "not the pinned corpus")
        info = {"schema_version": SCHEMA_VERSION, "pages": n, "duplicate_titles_skipped": dup,
                "sources": [{"file": p.name, "sha256": _sha256(p)} for p in paths],
                "sqlite_version": sqlite3.sqlite_version}
        con.executemany("INSERT INTO meta VALUES (?, ?)",
                        [(k, json.dumps(v, sort_keys=True)) for k, v in sorted(info.items())])
        con.commit()
        con.execute("VACUUM")
    finally:
        con.close()
    tmp.replace(db_path)
    return info


class WikiStore:
    """Read-only queries on a built store."""

    def __init__(self, db_path: str | Path):
        db_path = Path(db_path)
        if not db_path.is_file():
            raise DataError(db_path, "wiki store not found (built by the rule hotpotqa_wiki)")
        self.path = db_path
        self.con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
        try:
            meta = dict(self.con.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as exc:
            raise DataError(db_path, f"not a wiki store: {exc}") from None
        self.info = {k: json.loads(v) for k, v in meta.items()}
        if self.info.get("schema_version") != SCHEMA_VERSION:
            raise DataError(db_path, f"wiki store schema {self.info.get('schema_version')} != "
                                     f"{SCHEMA_VERSION}; rebuild it")

    def page(self, title: str) -> tuple[str, list[list[str]]] | None:
        rows = self.con.execute("SELECT id, title, paragraphs FROM pages WHERE norm = ? ORDER BY id",
                                (norm_title(title),)).fetchall()
        if not rows:
            return None
        want = " ".join(unicodedata.normalize("NFC", title).replace("_", " ").split())
        best = next((r for r in rows if r[1] == want), rows[0])
        return best[1], json.loads(best[2])

    def similar(self, query: str, k: int) -> list[str]:
        terms = re.findall(r"\w+", unicodedata.normalize("NFC", query).casefold())
        if not terms or k <= 0:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in dict.fromkeys(terms))
        rows = self.con.execute(
            "SELECT p.title FROM fts JOIN pages p ON p.id = fts.rowid WHERE fts MATCH ? "
            "ORDER BY bm25(fts, 10.0, 1.0), fts.rowid LIMIT ?", (match, int(k))).fetchall()
        return [r[0] for r in rows]


class WikiEnv:
    """Per-episode Search/Lookup state over a :class:`WikiStore`."""

    def __init__(self, store: WikiStore, similar_k: int = 10, lookup_unit: str = "sentence"):
        if lookup_unit not in ("sentence", "paragraph"):
            raise ValueError(f"lookup_unit must be sentence or paragraph, got {lookup_unit!r}")
        self.store = store
        self.similar_k = similar_k
        self.lookup_unit = lookup_unit
        self.paragraphs: list[list[str]] | None = None
        self.title: str | None = None
        self.lookup_str = ""
        self.lookup_index = 0

    def search(self, query: str) -> str:
        hit = self.store.page(query)
        if hit is None:
            self.paragraphs, self.title = None, None
            return f"Could not find [{query}]. Similar: {self.store.similar(query, self.similar_k)}"
        self.title, self.paragraphs = hit
        self.lookup_str, self.lookup_index = "", 0
        return " ".join(self.paragraphs[0])

    def lookup(self, term: str) -> str:
        if self.paragraphs is None:
            raise NoPage(NOT_FOUND_LOOKUP)
        if term.lower() != self.lookup_str:
            self.lookup_str, self.lookup_index = term.lower(), 0
        else:
            self.lookup_index += 1
        units = ([s for p in self.paragraphs for s in p] if self.lookup_unit == "sentence"
                 else [" ".join(p) for p in self.paragraphs])
        hits = [u for u in units if self.lookup_str in u.lower()]
        if not hits:
            return "No Results"
        if self.lookup_index >= len(hits):
            return "No More Results"
        return f"(Result {self.lookup_index + 1}/{len(hits)}) {hits[self.lookup_index]}"
