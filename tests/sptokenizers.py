"""Real SentencePiece tokenizers for tests and rehearsals, built from PyPI files without a model hub.

* :func:`llama2_tokenizer_dir` -- Llama-2's 32k vocabulary. llama.cpp ships it as a vocab-only
  GGUF (``vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf``) inside the llama-cpp-python sdist;
  only that file is read from the archive (the package is never built), then loaded with
  ``transformers`` (``gguf_file=``, needs the ``gguf`` package) and saved as a fast tokenizer.
* :func:`mistral_tokenizer_dir` -- Mistral's first 32k SentencePiece model (``tokenizer.model.v1``
  in the mistral-common wheel), converted to a Llama fast tokenizer (needs ``sentencepiece`` and
  ``protobuf``). Same Metaspace prefix behaviour as Llama-2, but no ``െ`` piece: U+0D46 falls back
  to three byte tokens.

Both return a directory with ``tokenizer.json`` that :func:`agentflan.modeling.load_tokenizer`
loads. They are built once, under ``$AGENTFLAN_TEST_CACHE`` (default ``~/.cache/agentflan-tests``);
archives come from the PyPI simple index (``$AGENTFLAN_PYPI_SIMPLE``, default
``https://pypi.org/simple``), and archives and extracted files are verified by sha256. The
extracted files stay in the cache (:func:`source_file`; e.g. to compare with ``sentencepiece``).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

LLAMA_CPP_SDIST = {
    "project": "llama-cpp-python",
    "filename": "llama_cpp_python-0.3.16.tar.gz",
    "sha256": "34ed0f9bd9431af045bb63d9324ae620ad0536653740e9bb163a2e1fcb973be6",
    "member": "llama_cpp_python-0.3.16/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf",
    "member_sha256": "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69",
}
MISTRAL_COMMON_WHEEL = {
    "project": "mistral-common",
    "filename": "mistral_common-1.13.1-py3-none-any.whl",
    "sha256": "98b4d0755b8d90bf4691fa8f1b70cb3b4a8cd4dc1653c4ed08ef3d1c7d2c29af",
    "member": "mistral_common/data/tokenizer.model.v1",
    "member_sha256": "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055",
}


def cache_dir() -> Path:
    root = os.environ.get("AGENTFLAN_TEST_CACHE") or Path.home() / ".cache" / "agentflan-tests"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _archive_url(spec: dict) -> str:
    """URL of ``spec['filename']`` from the PyPI simple index (JSON form, PEP 691)."""
    index = os.environ.get("AGENTFLAN_PYPI_SIMPLE", "https://pypi.org/simple").rstrip("/")
    page = f"{index}/{spec['project']}/"
    req = urllib.request.Request(page, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        listing = json.load(resp)
        base = resp.geturl()
    for f in listing.get("files", []):
        if f["filename"] == spec["filename"]:
            return urllib.parse.urljoin(base, f["url"])
    raise RuntimeError(f"{page}: no file {spec['filename']} in the index")


def source_file(spec: dict) -> Path:
    """One file from a PyPI archive, both verified by sha256, kept under ``cache_dir()/sources``
    (the archive itself is not kept)."""
    dst = cache_dir() / "sources" / Path(spec["member"]).name
    if dst.exists() and _sha256(dst.read_bytes()) == spec["member_sha256"]:
        return dst
    try:
        url = _archive_url(spec)
        with urllib.request.urlopen(url, timeout=600) as resp:
            blob = resp.read()
    except OSError as e:
        raise RuntimeError(f"cannot download {spec['filename']} from the PyPI index ({e}); set "
                           "AGENTFLAN_PYPI_SIMPLE to a reachable simple index, or AGENTFLAN_TEST_CACHE to a "
                           "cache that already holds the tokenizers") from e
    if _sha256(blob) != spec["sha256"]:
        raise RuntimeError(f"{url}: sha256 {_sha256(blob)} != pinned {spec['sha256']}")
    if spec["filename"].endswith(".whl"):
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            data = z.read(spec["member"])
    else:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as t:
            f = t.extractfile(t.getmember(spec["member"]))
            if f is None:
                raise RuntimeError(f"{url}: {spec['member']} is not a regular file")
            data = f.read()
    if _sha256(data) != spec["member_sha256"]:
        raise RuntimeError(f"{url}: {spec['member']} sha256 {_sha256(data)} != pinned {spec['member_sha256']}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, dst)
    return dst


def _build_once(name: str, build) -> Path:
    """``cache_dir()/name``, built by ``build(tmp_dir)`` into a temporary directory and renamed."""
    out = cache_dir() / name
    if (out / "tokenizer.json").exists():
        return out
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache_dir()))
    tmp.chmod(0o755)
    try:
        build(tmp)
        if not (tmp / "tokenizer.json").exists():
            raise RuntimeError(f"building {name}: no tokenizer.json was saved")
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / "tokenizer.json").exists():  # a concurrent build that won is fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def llama2_tokenizer_dir() -> Path:
    """A saved Hugging Face fast tokenizer with Llama-2's vocabulary (ids as in meta-llama/Llama-2-*)."""
    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer
        src = tmp / "src"
        src.mkdir()
        name = Path(LLAMA_CPP_SDIST["member"]).name
        shutil.copyfile(source_file(LLAMA_CPP_SDIST), src / name)
        tok = AutoTokenizer.from_pretrained(src, gguf_file=name, trust_remote_code=False)
        shutil.rmtree(src)
        tok.save_pretrained(tmp)
    return _build_once("llama2-spm-tokenizer", build)


def mistral_tokenizer_dir() -> Path:
    """A saved Hugging Face fast tokenizer converted from Mistral's ``tokenizer.model.v1``."""
    def build(tmp: Path) -> None:
        from transformers import LlamaTokenizer
        src = tmp / "src"
        src.mkdir()
        shutil.copyfile(source_file(MISTRAL_COMMON_WHEEL), src / "tokenizer.model")
        tok = LlamaTokenizer.from_pretrained(src, add_bos_token=True, trust_remote_code=False)
        if len(tok) != 32000:
            raise RuntimeError(f"converting tokenizer.model.v1 gave {len(tok)} tokens, not 32000")
        shutil.rmtree(src)
        tok.save_pretrained(tmp)
    return _build_once("mistral-v1-spm-tokenizer", build)


if __name__ == "__main__":
    print(llama2_tokenizer_dir())
    print(mistral_tokenizer_dir())
