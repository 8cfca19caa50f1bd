"""Results bundle: one archive of everything the tables and figures are computed from, and the way
back from it to every table, figure and the diff against the paper, on a CPU, without data or models.

``snakemake bundle`` writes ``results/<run>/bundle/<run>-results.tar.gz`` with

* ``summary/``: the summary files the table, figure and diff jobs read (``results/<run>/summary``),
  with their provenance sidecars;
* ``eval/``: every model's predictions, scores and score provenance;
* ``train/``: training curves (``metrics.jsonl``) and effective training configurations;
* ``data/``: the data card and every ablation data set's ``stats.json``;
* ``config.json`` (the resolved config) and ``MANIFEST.json``: the run, the config's sha256,
  the code revision (the package's ``code_hash`` and the git commit when there is one), and the
  sha256 of every other member. No model weights, no training data.

The archive is deterministic: members sorted by name, mode 0644, owner 0, mtime 0, gzip header
without name or time; the same results give the same bytes.

``snakemake --config from_bundle=PATH`` (with the preset the bundle was made with) checks the
archive against its manifest, unpacks ``summary/`` where ``summarize`` would have written it, and
runs only the table, figure and diff jobs: they read the same files, so they write the same
numbers, and each Markdown table says in its first line that it was rebuilt from a bundle.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from .io import DataError, dumps

MANIFEST = "MANIFEST.json"
FORMAT = 1
#: Beside a summary directory unpacked from a bundle, ``<summary dir>.from_bundle.json`` says which
#: bundle (read by the table stage); beside, not inside, so the summaries' hashes stay those of the run.
FROM_BUNDLE_SUFFIX = ".from_bundle.json"


def note_path(summary_dir: Path) -> Path:
    summary_dir = Path(summary_dir)
    return summary_dir.with_name(summary_dir.name + FROM_BUNDLE_SUFFIX)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def members_of(roots: dict[str, str], files: list[str]) -> dict[str, str]:
    """``{name in the archive: path}``: each file under the first root (``{prefix: directory}``) that
    holds it, named ``<prefix>/<path below the root>``, with its provenance sidecar when it has one."""
    out: dict[str, str] = {}
    for f in files:
        path = Path(f)
        for prefix, root in roots.items():
            try:
                rel = path.relative_to(root)
            except ValueError:
                continue
            out[f"{prefix}/{rel.as_posix()}"] = str(path)
            side = Path(f"{path}.provenance.json")
            if side.is_file():
                out[f"{prefix}/{rel.as_posix()}.provenance.json"] = str(side)
            break
        else:
            raise ValueError(f"{f}: under none of the bundle's roots {sorted(roots.values())}")
    return out


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, data


def write_bundle(files: dict[str, str | os.PathLike], config: dict, out: Path, *,
                 code_hash: str, commit: str | None) -> dict:
    """Pack ``files`` (``{name in the archive: path}``) with the config and a manifest into ``out``."""
    members: dict[str, bytes] = {}
    for name, path in sorted(files.items()):
        p = Path(path)
        if not p.is_file():
            raise DataError(p, "missing: the bundle needs every result the tables are computed from")
        if p.suffix == ".safetensors" or p.name.endswith((".bin", ".pt", ".pth", ".ckpt")):
            raise DataError(p, "model weights never go into a results bundle")
        members[name] = p.read_bytes()
    config_bytes = (dumps(config) + "\n").encode("utf-8")
    members["config.json"] = config_bytes
    manifest = {"format": FORMAT, "run": config.get("run"), "preset": config.get("preset"),
                "config_sha256": _sha256(config_bytes), "code_hash": code_hash, "git_commit": commit,
                "files": {name: _sha256(data) for name, data in sorted(members.items())}}
    members[MANIFEST] = (json.dumps(manifest, sort_keys=True, indent=1) + "\n").encode("utf-8")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info, data = _member(name, members[name])
            tar.addfile(info, io.BytesIO(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as fh:
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=9) as gz:
            gz.write(raw.getvalue())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    return manifest


def read_bundle(path: Path) -> tuple[dict, dict[str, bytes]]:
    """Members of a bundle after checking each against the manifest; a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such results bundle")
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            members = {}
            for info in tar.getmembers():
                if not info.isfile() or info.name.startswith(("/", "..")) or "/../" in info.name:
                    raise DataError(path, f"unexpected member {info.name!r} (only plain files with relative names)")
                members[info.name] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(path, f"not a readable results bundle ({type(exc).__name__}: {exc})") from None
    if MANIFEST not in members:
        raise DataError(path, f"no {MANIFEST}: not a results bundle of this package")
    try:
        manifest = json.loads(members.pop(MANIFEST).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"{MANIFEST} is not JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise DataError(path, f"bundle format {manifest.get('format')!r}, this package reads {FORMAT}")
    listed = manifest.get("files", {})
    if set(listed) != set(members):
        extra, missing = sorted(set(members) - set(listed)), sorted(set(listed) - set(members))
        raise DataError(path, f"members and manifest differ (not listed: {extra[:3]}, missing: {missing[:3]})")
    for name, digest in sorted(listed.items()):
        if _sha256(members[name]) != digest:
            raise DataError(path, f"{name}: sha256 differs from the manifest (the bundle was altered or damaged)")
    return manifest, members


def unpack_summary(path: Path, summary_dir: Path, expected: list[str], run: str) -> dict:
    """Verify the bundle and write its ``summary/`` files into ``summary_dir`` (atomically, each)."""
    manifest, members = read_bundle(path)
    if manifest.get("run") != run:
        raise DataError(path, f"bundle of run {manifest.get('run')!r}, but this config's run is {run!r} "
                              f"(use the preset the bundle was made with: its config.json)")
    summary_dir = Path(summary_dir)
    summary_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(n for n in members if n.startswith("summary/"))
    missing = [e for e in expected if f"summary/{e}" not in members]
    if missing:
        raise DataError(path, f"the bundle lacks summary files {missing}")
    for name in names:
        target = summary_dir / name[len("summary/"):]
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(members[name])
        os.replace(tmp, target)
    note = {"bundle": Path(path).name, "bundle_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
            "code_hash": manifest["code_hash"], "git_commit": manifest.get("git_commit"),
            "config_sha256": manifest["config_sha256"]}
    note_path(summary_dir).write_text(dumps(note) + "\n", encoding="utf-8")
    return note


def header_note(summary_dir: Path) -> str | None:
    """The first line of a table rebuilt from a bundle (None for a table of a full run)."""
    p = note_path(summary_dir)
    if not p.exists():
        return None
    note = json.loads(p.read_text(encoding="utf-8"))
    commit = (note.get("git_commit") or "")[:12] or "unknown"
    return (f"*Rebuilt from the results bundle `{note['bundle']}` (sha256 {note['bundle_sha256'][:12]}; results "
            f"computed by code {note['code_hash'][:12]}, commit {commit}): no data or model was used.*")
