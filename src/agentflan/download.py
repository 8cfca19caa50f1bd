"""Pinned, sha256-verified snapshots of the public sources (paper preset).

Layout (docs/CONTRACTS.md): every source lands in ``<dest_root>/<repo_id>/<files as in the repo>``,
so the loaders read a downloaded snapshot, an offline mirror and the miniature the same way.

Where the files come from
-------------------------
1. ``mirror`` (config ``data.mirror``, snakemake ``--config data_mirror=DIR``): a directory laid
   out as ``<mirror>/<repo_id>/<files as in the repo>`` (for clusters without internet; e.g. made
   with ``hf download REPO --repo-type dataset --local-dir <mirror>/<repo_id>``). When the mirror
   was made that way, its ``.cache/huggingface/download/*.metadata`` files name the commit, which
   is then recorded; otherwise the commit is the pinned revision (if it is a commit) or unknown.
2. otherwise the Hugging Face hub: :func:`hub_snapshot` resolves the requested revision to a commit
   (``HfApi().repo_info``) and calls ``huggingface_hub.snapshot_download`` for exactly that commit
   with ``allow_patterns=spec.files``. Only data files are fetched; no dataset script is ever run
   (no ``datasets.load_dataset``, no ``trust_remote_code``). Tests inject ``hub_fetch``.

The lock file
-------------
``data/<run>/sources.lock.json`` (canonical JSON, sorted keys, no timestamps) holds, per source
name::

    {"repo_id": str, "revision_requested": str, "resolved_commit": str | null,
     "files": {"<path in repo>": {"sha256": str, "bytes": int}}}

* First fetch of a source (no entry): the entry is recorded.
* Every later fetch requests the *recorded commit* (so ``revision: main`` is reproducible too),
  and refuses with :class:`~agentflan.io.DataError` if a file changed (message names the file, the
  expected and the actual sha256), a locked file is missing, a new file matches the patterns, the
  commit differs, or the config's ``repo_id``/``revision`` no longer matches the entry.
* ``update_lock=True`` (CLI ``--update-lock``) is the explicit user action that re-resolves the
  requested revision and rewrites the entry.

Nothing half-written
--------------------
Files are fetched into a hidden temporary directory next to the destination
(``<dest_root>/<owner>/.<name>.tmp-*``), filtered to the patterns, hashed and checked; only then is
the old destination swapped out and the new one renamed into place. On any failure the destination
and the lock are left as they were and the temporary directory is removed. One :class:`SourceSpec`
per ``repo_id``: the whole ``<dest_root>/<repo_id>`` directory is replaced by the snapshot.
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .io import DataError, read_json, sha256_file, write_json

log = logging.getLogger(__name__)

_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
#: Top-level directories of a snapshot/mirror that are bookkeeping, never data.
_SKIP_DIRS = (".cache", ".git", ".huggingface")

#: ``hub_fetch(repo_id, repo_type=..., revision=..., allow_patterns=[...], local_dir=Path) -> commit``
HubFetch = Callable[..., "str | None"]

AGENTFLAN_STEMS = (
    "agent_instruct_react",
    "agent_instruct_tflan",
    "toolbench_instruct_j1s1_3k",
    "toolbench_negative",
    "toolbench_react_10p",
    "toolbench_tflan_60p_r10r5u7",
    "toolbench_tflan_cot_30p",
)


@dataclass
class SourceSpec:
    """One public source: which repo, which revision and which files (glob patterns).

    ``files`` and ``required`` use the hub's ``allow_patterns`` semantics (``fnmatch``,
    case-sensitive, ``*`` also crosses ``/``, a trailing ``/`` means the whole folder).
    Every pattern in ``required`` must match at least one fetched file.
    """

    name: str
    repo_id: str
    repo_type: str = "dataset"
    revision: str = "main"
    files: list[str] = field(default_factory=list)
    required: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not _REPO_ID_RE.fullmatch(self.repo_id or "") or ".." in self.repo_id:
            raise ValueError(f"source {self.name!r}: invalid repo_id {self.repo_id!r}")
        if self.repo_type not in ("dataset", "model", "space"):
            raise ValueError(f"source {self.name!r}: invalid repo_type {self.repo_type!r}")
        if not self.files:
            raise ValueError(f"source {self.name!r}: 'files' must list at least one pattern")
        if isinstance(self.files, str) or isinstance(self.required, str):
            raise ValueError(f"source {self.name!r}: 'files'/'required' must be lists of patterns")
        self.files = list(self.files)
        self.required = list(self.required)
        if not isinstance(self.revision, str) or not self.revision:
            raise ValueError(f"source {self.name!r}: 'revision' must be a non-empty string")


def spec_from_dict(name: str, d: dict) -> SourceSpec:
    """Build a :class:`SourceSpec` from a config mapping (keys as the dataclass fields)."""
    unknown = set(d) - {"repo_id", "repo_type", "revision", "files", "required", "name"}
    if unknown:
        raise ValueError(f"source {name!r}: unknown keys {sorted(unknown)}")
    return SourceSpec(name=name, **{k: v for k, v in d.items() if k != "name"})


def sources_from_config(cfg: dict) -> dict[str, SourceSpec]:
    """Specs from a loaded run config (``cfg["data"]["sources"]``, as in config/paper.yaml).

    A source without ``required`` requires every one of its ``files`` patterns to match at
    least one file (so a wrong pattern fails at download time, not in a later stage).
    """
    sources = (cfg.get("data") or {}).get("sources") or {}
    if not isinstance(sources, dict) or not sources:
        raise ValueError("config has no data.sources mapping")
    out = {}
    for name, d in sources.items():
        d = dict(d)
        d.setdefault("required", list(d.get("files") or []))
        out[name] = spec_from_dict(name, d)
    return out


# Default specs of the paper preset. Patterns for the parquet benchmarks follow the hub's parquet
# layout (<config>/<split>-*.parquet); ``required`` makes a wrong guess fail loudly on first fetch.
PAPER_SOURCES: dict[str, SourceSpec] = {
    s.name: s for s in (
        SourceSpec("agentflan", "internlm/Agent-FLAN", files=["*.jsonl"],
                   required=[f"*{stem}.jsonl" for stem in AGENTFLAN_STEMS]),
        SourceSpec("sharegpt", "anon8231489123/ShareGPT_Vicuna_unfiltered",
                   files=["ShareGPT_V3_unfiltered_cleaned_split.json"],
                   required=["ShareGPT_V3_unfiltered_cleaned_split.json"]),
        SourceSpec("teval", "lovesnowbest/T-Eval", files=["data/*.json"],
                   required=["data/*instruct_v2.json", "data/*review_str_v2.json"]),
        SourceSpec("glaive", "glaiveai/glaive-function-calling-v2",
                   files=["glaive-function-calling-v2.json"],
                   required=["glaive-function-calling-v2.json"]),
        SourceSpec("hotpotqa", "hotpotqa/hotpot_qa", files=["distractor/validation-*.parquet"],
                   required=["distractor/validation-*.parquet"]),
        SourceSpec("mmlu", "cais/mmlu", files=["all/test-*.parquet", "all/dev-*.parquet"],
                   required=["all/test-*.parquet", "all/dev-*.parquet"]),
        SourceSpec("gsm8k", "openai/gsm8k", files=["main/test-*.parquet"],
                   required=["main/test-*.parquet"]),
        SourceSpec("humaneval", "openai/openai_humaneval",
                   files=["openai_humaneval/test-*.parquet"],
                   required=["openai_humaneval/test-*.parquet"]),
    )
}


# --------------------------------------------------------------------------------------------
# helpers


def is_commit(revision: str | None) -> bool:
    return isinstance(revision, str) and bool(_COMMIT_RE.fullmatch(revision))


def _norm_pattern(p: str) -> str:
    p = p.replace("\\", "/")
    return p + "*" if p.endswith("/") else p


def matches(path: str, patterns: Iterable[str]) -> bool:
    """Same rule as ``huggingface_hub``'s ``allow_patterns`` (``fnmatchcase``)."""
    return any(fnmatch.fnmatchcase(path, _norm_pattern(p)) for p in patterns)


def _safe_rel(path: str, where: str | os.PathLike) -> str:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise DataError(where, f"unsafe file path {path!r} (absolute or containing '..')")
    return path


def _list_files(root: Path) -> list[str]:
    """Relative POSIX paths of every regular file under ``root`` (bookkeeping dirs skipped)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        dirnames.sort()
        for fn in sorted(filenames):
            out.append((rel_dir / fn).as_posix())
    return sorted(out)


def _hash_files(root: Path, rels: Iterable[str]) -> dict[str, dict]:
    return {rel: {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
            for rel in sorted(rels)}


def read_lock(lock_path: Path) -> dict:
    lock_path = Path(lock_path)
    if not lock_path.exists():
        return {}
    lock = read_json(lock_path)
    if not isinstance(lock, dict):
        raise DataError(lock_path, "lock file must hold a JSON object keyed by source name")
    for name, entry in lock.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict) \
                or not isinstance(entry.get("repo_id"), str):
            raise DataError(lock_path, f"malformed entry for source {name!r}")
    return lock


@contextlib.contextmanager
def _locked(lock_path: Path):
    """Serialise read-modify-write of the lock file across processes (parallel snakemake jobs)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(lock_path.parent / f".{lock_path.name}.flock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mirror_commit(repo_dir: Path, rels: list[str]) -> str | None:
    """Commit recorded by ``hf download --local-dir`` in the mirror, if all files agree."""
    commits = set()
    for rel in rels:
        meta = repo_dir / ".cache" / "huggingface" / "download" / f"{rel}.metadata"
        try:
            first = meta.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError):
            return None
        commits.add(first)
    if len(commits) == 1:
        (c,) = commits
        return c if is_commit(c) else None
    return None


# --------------------------------------------------------------------------------------------
# fetchers


def hub_snapshot(repo_id: str, *, repo_type: str, revision: str, allow_patterns: list[str],
                 local_dir: Path) -> str:
    """Real hub path: resolve ``revision`` to a commit, then download exactly that commit."""
    import huggingface_hub

    info = huggingface_hub.HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision)
    commit = info.sha
    if not is_commit(commit):
        raise RuntimeError(f"hub returned no commit sha for {repo_id}@{revision}: {commit!r}")
    huggingface_hub.snapshot_download(repo_id, repo_type=repo_type, revision=commit,
                                      allow_patterns=list(allow_patterns),
                                      local_dir=str(local_dir))
    return commit


def _copy_from_mirror(mirror: Path, spec: SourceSpec, into: Path) -> str | None:
    repo_dir = Path(mirror) / spec.repo_id
    if not repo_dir.is_dir():
        raise DataError(repo_dir, f"mirror has no directory for source {spec.name!r} "
                                  f"(expected <mirror>/{spec.repo_id}/<files as in the repo>)")
    rels = [r for r in _list_files(repo_dir) if matches(r, spec.files)]
    for rel in rels:
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo_dir / rel, target)  # follows symlinks (HF cache-style mirrors)
    return _mirror_commit(repo_dir, rels)


# --------------------------------------------------------------------------------------------
# verification


def _compare(entry: dict, files: dict[str, dict], where: Path, name: str) -> None:
    """Raise DataError listing every difference between locked and actual files."""
    expected = entry["files"]
    problems: list[tuple[str, str]] = []
    for rel in sorted(set(expected) | set(files)):
        if rel not in files:
            problems.append((rel, f"locked file {rel!r} is missing "
                                  f"(expected sha256 {expected[rel].get('sha256')})"))
        elif rel not in expected:
            problems.append((rel, f"unexpected file {rel!r} matches the patterns but is not in "
                                  f"the lock (actual sha256 {files[rel]['sha256']})"))
        elif files[rel]["sha256"] != expected[rel].get("sha256"):
            problems.append((rel, f"file {rel!r} changed: expected sha256 "
                                  f"{expected[rel].get('sha256')}, actual sha256 "
                                  f"{files[rel]['sha256']}"))
    if problems:
        msg = "; ".join(p for _, p in problems)
        raise DataError(where / problems[0][0],
                        f"source {name!r} does not match the lock: {msg}. If the upstream change "
                        "is intended, re-run with update_lock=True (CLI --update-lock).")


def verify_tree(dest_root: Path, lock: dict | Path, names: Iterable[str] | None = None) -> dict:
    """Check files already in place under ``dest_root`` against ``lock`` (dict or lock path).

    Every locked file must exist with its sha256 and no other file may sit in the repo directory
    (bookkeeping dirs such as ``.cache`` excepted). Returns ``{name: number_of_files}``.
    """
    if not isinstance(lock, dict):
        lock = read_lock(Path(lock))
    out = {}
    for name in (sorted(lock) if names is None else names):
        if name not in lock:
            raise DataError(dest_root, f"source {name!r} has no lock entry")
        entry = lock[name]
        repo_dir = Path(dest_root) / entry["repo_id"]
        if not repo_dir.is_dir():
            raise DataError(repo_dir, f"source {name!r} is not downloaded")
        for rel in entry["files"]:
            _safe_rel(rel, repo_dir)
        present = _list_files(repo_dir)
        _compare(entry, _hash_files(repo_dir, present), repo_dir, name)
        out[name] = len(present)
    return out


# --------------------------------------------------------------------------------------------
# fetch


def _chmod_like_mkdir(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def _swap_into_place(staged: Path, dest: Path) -> None:
    backup = None
    if dest.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rmdir(backup)
        os.replace(dest, backup)
    try:
        os.replace(staged, dest)
    except BaseException:
        if backup is not None:
            os.replace(backup, dest)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def fetch_source(spec: SourceSpec, dest_root: Path, lock_path: Path, *,
                 mirror: Path | None = None, hub_fetch: HubFetch | None = None,
                 update_lock: bool = False) -> dict:
    """Fetch ``spec`` into ``dest_root/<repo_id>/``, record or verify it in ``lock_path``.

    Returns ``{"name", "origin": "mirror"|"hub", "action": "recorded"|"verified"|"updated",
    "dest": str, "entry": <lock entry as written>}``. Raises :class:`DataError` (the destination
    and the lock untouched) when the fetched files do not match the lock.
    """
    dest_root, lock_path = Path(dest_root), Path(lock_path)
    dest = dest_root / spec.repo_id
    with _locked(lock_path):
        lock = read_lock(lock_path)
    entry = lock.get(spec.name)
    for other, e in lock.items():
        if other != spec.name and e.get("repo_id") == spec.repo_id:
            raise DataError(lock_path, f"source {other!r} already uses repo {spec.repo_id!r}; "
                                       "one source per repo (merge their file patterns)")

    if entry is not None and not update_lock:
        if entry.get("repo_id") != spec.repo_id:
            raise DataError(lock_path, f"source {spec.name!r}: config repo_id {spec.repo_id!r} "
                                       f"differs from the locked {entry.get('repo_id')!r}; "
                                       "use update_lock=True to re-pin")
        if entry.get("revision_requested") != spec.revision:
            raise DataError(lock_path, f"source {spec.name!r}: config revision {spec.revision!r} "
                                       f"differs from the locked "
                                       f"{entry.get('revision_requested')!r}; "
                                       "use update_lock=True to re-pin")
        request = entry.get("resolved_commit") or spec.revision
    else:
        request = spec.revision

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        _chmod_like_mkdir(tmp)  # mkdtemp makes 0700; the final directory gets the usual mode
        if mirror is not None:
            origin = "mirror"
            commit = _copy_from_mirror(Path(mirror), spec, tmp)
        else:
            origin = "hub"
            fetch = hub_fetch or hub_snapshot
            log.info("fetching %s (%s@%s) from the hub", spec.name, spec.repo_id, request)
            commit = fetch(spec.repo_id, repo_type=spec.repo_type, revision=request,
                           allow_patterns=list(spec.files), local_dir=tmp)
            if commit is not None and not is_commit(commit):
                raise DataError(dest, f"hub fetch of {spec.repo_id}@{request} reported a "
                                      f"malformed commit {commit!r}")

        # keep exactly the files matching the patterns (drop .cache and any stray file)
        all_files = _list_files(tmp)
        rels = [r for r in all_files if matches(r, spec.files)]
        for rel in rels:
            _safe_rel(rel, tmp)
        for skip in _SKIP_DIRS:
            shutil.rmtree(tmp / skip, ignore_errors=True)
        for rel in set(all_files) - set(rels):
            (tmp / rel).unlink()
        missing_req = [p for p in spec.required if not any(matches(r, [p]) for r in rels)]
        if missing_req:
            raise DataError(dest, f"source {spec.name!r} ({spec.repo_id}@{request}, from "
                                  f"{origin}): no file matches the required pattern(s) "
                                  f"{missing_req}; got {rels}")
        files = _hash_files(tmp, rels)

        if is_commit(request) and commit is not None and commit != request:
            raise DataError(dest, f"source {spec.name!r}: requested commit {request} but "
                                  f"{origin} delivered commit {commit}")
        if entry is not None and not update_lock:
            _compare(entry, files, dest, spec.name)
            locked_commit = entry.get("resolved_commit")
            if locked_commit and commit and commit != locked_commit:
                raise DataError(dest, f"source {spec.name!r}: {origin} has commit {commit}, "
                                      f"lock has {locked_commit}")
            resolved = locked_commit or commit or (request if is_commit(request) else None)
            action = "verified"
        else:
            resolved = commit or (request if is_commit(request) else None)
            action = "recorded" if entry is None else "updated"
        new_entry = {"repo_id": spec.repo_id, "revision_requested": spec.revision,
                     "resolved_commit": resolved, "files": files}

        _swap_into_place(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    with _locked(lock_path):
        lock = read_lock(lock_path)  # re-read: other sources may have been written meanwhile
        if lock.get(spec.name) != new_entry:
            lock[spec.name] = new_entry
            write_json(lock_path, lock)
    if resolved is None:
        log.warning("source %s: commit unknown (mirror without hub metadata and no pinned "
                    "commit); files are pinned by sha256 only", spec.name)
    log.info("source %s: %s %d files from %s", spec.name, action, len(files), origin)
    return {"name": spec.name, "origin": origin, "action": action, "dest": str(dest),
            "entry": new_entry}


# --------------------------------------------------------------------------------------------
# Agent-FLAN file discovery


def agentflan_files(repo_dir: Path) -> dict[str, Path]:
    """Map each of the seven Agent-FLAN stems to its ``*.jsonl`` file under ``repo_dir``.

    Recursive glob; a ``data_`` prefix (seen in some downloaded copies) is tolerated, and files
    under hidden directories (``.cache``) are ignored. Raises :class:`DataError` if a stem has no
    file, or two files claim the same stem.
    """
    repo_dir = Path(repo_dir)
    if not repo_dir.is_dir():
        raise DataError(repo_dir, "Agent-FLAN directory not found")
    found: dict[str, Path] = {}
    for path in sorted(repo_dir.rglob("*.jsonl")):
        rel = path.relative_to(repo_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        stem = path.stem
        if stem not in AGENTFLAN_STEMS and stem.startswith("data_"):
            stem = stem[len("data_"):]
        if stem not in AGENTFLAN_STEMS:
            continue
        if stem in found:
            raise DataError(path, f"two files claim Agent-FLAN stem {stem!r}: "
                                  f"{found[stem]} and {path}")
        found[stem] = path
    missing = [s for s in AGENTFLAN_STEMS if s not in found]
    if missing:
        raise DataError(repo_dir, f"Agent-FLAN file(s) missing for stem(s) {missing} "
                                  f"(looked for <stem>.jsonl or data_<stem>.jsonl, recursively)")
    return {s: found[s] for s in AGENTFLAN_STEMS}


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m agentflan.download",
        description="Fetch pinned, sha256-verified snapshots of the paper preset's sources.")
    ap.add_argument("--source", action="append", default=[],
                    help=f"source name (repeatable); known: {', '.join(PAPER_SOURCES)}")
    ap.add_argument("--all", action="store_true", help="every source of --config/--sources-json (else the built-in defaults)")
    ap.add_argument("--config", type=Path,
                    help="run config YAML (e.g. config/paper.yaml): sources from data.sources, "
                         "mirror from data.mirror unless --mirror is given")
    ap.add_argument("--sources-json", type=Path,
                    help="JSON object {name: {repo_id, revision, files, required, repo_type}} "
                         "overriding the built-in paper defaults")
    ap.add_argument("--dest", type=Path, required=True, help="raw root, e.g. data/<run>/raw")
    ap.add_argument("--lock", type=Path, required=True, help="e.g. data/<run>/sources.lock.json")
    ap.add_argument("--mirror", type=Path, default=None,
                    help="offline mirror laid out as <mirror>/<repo_id>/<files>")
    ap.add_argument("--update-lock", action="store_true",
                    help="re-resolve the revision and overwrite the lock entry (explicit re-pin)")
    ap.add_argument("--verify-only", action="store_true",
                    help="only check the files in place against the lock; fetch nothing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    specs = dict(PAPER_SOURCES)
    mirror = args.mirror
    if args.config:
        import yaml

        with open(args.config, encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh) or {}
        specs = sources_from_config(cfg)
        if mirror is None and (cfg.get("data") or {}).get("mirror"):
            mirror = Path(cfg["data"]["mirror"])
    if args.sources_json:
        raw = read_json(args.sources_json)
        specs = {n: spec_from_dict(n, d) for n, d in raw.items()}
    names = list(specs) if args.all else args.source
    if not names:
        ap.error("give --source NAME (repeatable) or --all")
    unknown = [n for n in names if n not in specs]
    if unknown:
        ap.error(f"unknown source(s) {unknown}; known: {sorted(specs)}")
    try:
        if args.verify_only:
            print(json.dumps(verify_tree(args.dest, args.lock, names), sort_keys=True))
            return 0
        for n in names:
            res = fetch_source(specs[n], args.dest, args.lock, mirror=mirror,
                               update_lock=args.update_lock)
            print(json.dumps({k: res[k] for k in ("name", "origin", "action", "dest")},
                             sort_keys=True))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
