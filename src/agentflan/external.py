"""Models that are evaluated but never trained here: external checkpoints and API models.

External checkpoints (``evaluation.external_models``) are a published checkpoint downloaded as a
``data.sources`` entry with ``repo_type: model`` (sha256-locked by :mod:`agentflan.download`) or
a local directory. They go through the same ``generate`` and ``score`` jobs as our trained models,
with their own chat format (:mod:`agentflan.chat_formats`). Weights are loaded from safetensors
only: :func:`check_checkpoint` refuses a directory that ships only pickled ``.bin`` weights, with
one line naming the file.

The miniature has no published checkpoint; :func:`save_standin` saves a stand-in (a copy of the
model-defining files of one of its own models) under ``data/<run>/external/<id>`` so the path is
exercised by the default DAG.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .io import DataError

# pickled PyTorch weights: never loaded (arbitrary code on unpickling)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# files that define a model besides its weights (as agentflan.generate.MODEL_FILE_SUFFIXES)
DEFINING_SUFFIXES = (".json", ".safetensors", ".model", ".txt", ".jinja", ".tiktoken")


def check_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` as a directory with safetensors weights, or :class:`DataError` (one line)."""
    d = Path(path)
    if not d.is_dir():
        raise DataError(d, "external checkpoint: not a directory (a local path, or a downloaded data.sources "
                           "snapshot)")
    files = sorted(f for f in d.rglob("*") if f.is_file() and ".cache" not in f.relative_to(d).parts)
    if any(f.name.endswith(".safetensors") for f in files):
        return d
    pickled = [f for f in files if f.name.endswith(PICKLE_SUFFIXES)]
    if pickled:
        raise DataError(pickled[0], "external checkpoint ships pickled PyTorch weights only (no .safetensors "
                                    "file); this package loads safetensors only (convert the checkpoint, "
                                    "e.g. with safetensors' convert script, into a local path)")
    raise DataError(d, "external checkpoint has no .safetensors weights")


def save_standin(model_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[str]:
    """Save the miniature's stand-in external checkpoint: the model-defining files of
    ``model_dir`` (weights, config, tokenizer; byte copies, so the result is deterministic) into
    ``out_dir`` (written to a temporary directory, then renamed). Returns the file names."""
    src, out = Path(model_dir), Path(out_dir)
    check_checkpoint(src)
    files = sorted(f for f in src.iterdir() if f.is_file() and not f.name.startswith(".")
                   and f.name.endswith(DEFINING_SUFFIXES))
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in files:
        shutil.copyfile(f, tmp / f.name)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return [f.name for f in files]


def served_summary(records: list[dict]) -> dict:
    """What answered an API model's predictions, from its run records (``<predictions>.api.json``
    of every benchmark, see :func:`agentflan.api_backend.write_run_record`): the served model
    names (sorted, ``+``-joined), the requested model, and the first and last UTC date a reply
    was paid for (``reply_dates``; the run ``date`` when a record has none). A function of the
    files only: the same records give the same strings."""
    served: set[str] = set()
    requested: set[str] = set()
    dates: set[str] = set()
    for r in records:
        served.update(str(k) for k in (r.get("served_models") or {}))
        if r.get("requested_model"):
            requested.add(str(r["requested_model"]))
        reply_dates = [str(k) for k in (r.get("reply_dates") or {})]
        dates.update(reply_dates or ([str(r["date"])] if r.get("date") else []))
    first, last = (min(dates), max(dates)) if dates else ("", "")
    return {"served_model": "+".join(sorted(served)), "requested_model": "+".join(sorted(requested)),
            "served_dates": first if first == last else f"{first}..{last}"}
