"""Provenance of every result file: which code, config, packages and inputs produced it.

A stamp (:func:`stamp`) is a plain dict with sorted keys and nothing that varies between machines of
our kind or between two checkouts of the same commit:

* ``code_hash``: sha256 over the sorted ``(path, sha256)`` of the files that compute results
  (:data:`CODE_PATHS`: ``src/``, ``workflow/``, ``Snakefile``, ``config/``,
  ``paper/paper_reported.yaml``), hashed from the files themselves (no git needed). It is *not*
  the git commit: the committed tables are regenerated and committed after the code commit, so a
  commit id inside them could never match a fresh clone's rebuild. The git commit, where there is
  one, is printed in the job log only (:func:`log_revision`).
* ``config`` and ``config_hash``: the job's own parameters minus the paths (the config subset that
  produced the file), and the sha256 of their canonical JSON.
* ``inputs`` and ``inputs_hash``: ``{path relative to the working directory: sha256}`` of every
  input file (a directory is expanded into its files), and the sha256 of that mapping's JSON.
* ``packages``: the installed versions of :data:`PACKAGES`.

No timestamps, hostnames or absolute paths. This module imports neither training nor generation
(reporting and scoring use it).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from .io import DataError, atomic_open

#: Bumped when the stamp's layout changes.
FORMAT = 1
#: What ``code_hash`` covers, relative to the repository root.
CODE_PATHS = ("src", "workflow", "Snakefile", "config", "paper/paper_reported.yaml")
#: Never part of the code (build and cache leftovers that a fresh clone does not have).
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".snakemake", ".ipynb_checkpoints", ".mypy_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".tmp")
#: Distributions whose versions are recorded (``None`` when not installed); this package is
#: the distribution ``agentflan-repro``, recorded under the key ``agentflan``.
PACKAGES = {"agentflan": "agentflan-repro", "deepspeed": "deepspeed", "peft": "peft", "snakemake": "snakemake",
            "tokenizers": "tokenizers", "torch": "torch", "transformers": "transformers"}
#: Stage parameters that name files or directories: recorded as inputs (or outputs), not config.
PATH_KEYS = frozenset({
    "raw_dir", "lock", "mirror", "manifest", "manifests", "out_dir", "out", "out_data", "out_stats",
    "out_audit", "out_json", "out_md", "out_csv", "out_png", "stats", "converted_dir", "sharegpt_path",
    "pretrain_path", "tokenizer_dir", "items", "predictions", "per_sample", "scores", "ablation_stats",
    "metrics", "train_configs", "card_json", "example_source", "summary_dir", "reported", "tables_dir",
    "eval_files", "data", "config_out", "checkpoint_dir", "probe_out", "base_model", "model", "token_counts",
})
#: Model weights and tokenizer files are large: their hashes are memoised per process (by path,
#: size and modification time) so a job that stamps several outputs hashes each file once.
_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _MEMO[key] = h.hexdigest()
    return _MEMO[key]


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(_canonical(obj)).hexdigest()


def _walk(path: Path) -> list[Path]:
    """Files under ``path`` (or ``path`` itself), without build and cache leftovers, sorted."""
    if path.is_file():
        return [path]
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if not name.endswith(_SKIP_SUFFIXES):
                out.append(Path(dirpath) / name)
    return sorted(out)


def repo_root() -> Path:
    """The checkout this package runs from (``src/agentflan`` -> the directory with the Snakefile)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "Snakefile").is_file() or not (root / "src" / "agentflan").is_dir():
        raise DataError(root, "provenance: not a checkout of the package (no Snakefile next to src/); "
                              "install it editable (pip install -e .) from a clone")
    return root


def code_hash(root: str | os.PathLike | None = None) -> str:
    """sha256 over the sorted ``"<sha256>  <path>\\n"`` lines of every file under :data:`CODE_PATHS`
    of ``root`` (default: :func:`repo_root`), paths relative to ``root`` in POSIX form."""
    root = Path(root) if root is not None else repo_root()
    lines = []
    for rel in CODE_PATHS:
        base = root / rel
        if not base.exists():
            continue
        for f in _walk(base):
            lines.append(f"{sha256_file(f)}  {f.relative_to(root).as_posix()}\n")
    if not lines:
        raise DataError(root, f"provenance: none of {', '.join(CODE_PATHS)} exists here")
    return hashlib.sha256("".join(sorted(lines, key=lambda s: s.split("  ", 1)[1])).encode()).hexdigest()


_CODE_HASH: dict[str, str] = {}


def _cached_code_hash() -> str:
    root = str(repo_root())
    if root not in _CODE_HASH:
        _CODE_HASH[root] = code_hash(root)
    return _CODE_HASH[root]


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, dist in sorted(PACKAGES.items()):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def relative(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory in POSIX form; a file outside it is named
    ``<outside>/<parent>/<name>`` (never an absolute path, which differs between machines)."""
    p = Path(os.path.abspath(path))
    cwd = Path(os.getcwd())
    try:
        return p.relative_to(cwd).as_posix()
    except ValueError:
        return "<outside>/" + "/".join(p.parts[-2:])


def input_hashes(paths: Iterable[str | os.PathLike | None]) -> dict[str, str]:
    """``{relative path: sha256}`` of every input file; a directory contributes each of its files.
    ``None`` entries and names that are not local paths (a hub repo id) are skipped: the config
    records those."""
    out: dict[str, str] = {}
    for path in paths:
        if path is None:
            continue
        p = Path(path)
        if not p.exists():
            continue
        for f in _walk(p):
            out[relative(f)] = sha256_file(f)
    return dict(sorted(out.items()))


#: Parameters never recorded, at any depth: the API backend's environment (it holds the key) and
#: test hooks; and any key that names a credential.
NEVER_RECORDED = frozenset({"environ", "sleep"})
_CREDENTIAL = re.compile(r"(api_?key|secret|password|passwd|authorization|credential)", re.I)
#: Path parameters that may instead name a hub repository (``org/name``): recorded in the config
#: when no such local path exists (a local model is an input, hashed file by file).
_MODEL_KEYS = ("base_model", "model")


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in sorted(value.items())
                if k not in NEVER_RECORDED and not _CREDENTIAL.search(str(k))}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def config_subset(params: dict) -> dict:
    """A stage's parameters without the ones that name files (:data:`PATH_KEYS`; a model given by
    its hub name stays), the API environment and anything that names a credential."""
    out = {k: v for k, v in params.items()
           if k not in PATH_KEYS or (k in _MODEL_KEYS and isinstance(v, str) and not Path(v).exists())}
    return _scrub(out)


def stamp(config_subset: dict, inputs: Iterable[str | os.PathLike | None]) -> dict:
    """The provenance record of one result file (see the module docstring)."""
    ins = input_hashes(inputs)
    return {
        "code_hash": _cached_code_hash(),
        "config": config_subset,
        "config_hash": sha256_json(config_subset),
        "format": FORMAT,
        "inputs": ins,
        "inputs_hash": sha256_json(ins),
        "packages": package_versions(),
    }


def footer(st: dict) -> str:
    """The one line under a Markdown table."""
    return f"code {st['code_hash'][:12]} · config {st['config_hash'][:12]} · inputs {st['inputs_hash'][:12]}"


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}.provenance.json")


def write_sidecar(path: str | os.PathLike, st: dict) -> Path:
    """``<path>.provenance.json`` next to a JSONL or CSV result (canonical JSON, sorted keys)."""
    out = sidecar_path(path)
    with atomic_open(out) as fh:
        fh.write(json.dumps(st, sort_keys=True, ensure_ascii=False, indent=2) + "\n")
    return out


def git_commit() -> str | None:
    """The checkout's commit (``git rev-parse HEAD``), or None outside a clone or without git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def log_revision(prefix: str = "[provenance]") -> None:
    """Print the code hash and, where git knows it, the commit: job logs only, never artifacts."""
    print(f"{prefix} code_hash {_cached_code_hash()} git commit {git_commit() or 'unknown'}", flush=True)


if __name__ == "__main__":   # python -m agentflan.provenance: the checkout's code hash and versions
    print(f"code_hash {code_hash()}")
    for _name, _version in package_versions().items():
        print(f"{_name} {_version}")
