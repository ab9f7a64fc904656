import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """(target_dir, draft_dir): a random tiny target and a noisy copy of it as the draft."""
    from tiny import build_model, build_tokenizer

    root = tmp_path_factory.mktemp("tiny")
    tok = build_tokenizer(root / "tok")
    target = build_model(root / "target", seed=0, tok=tok)
    draft = build_model(root / "draft", seed=1, tok=tok, base=target, noise=0.005)
    return target, draft


@pytest.fixture(scope="session")
def qwen_paths():
    """(target_1.5b, draft_0.5b) GGUF paths of the real Qwen2.5-Coder pair (pulled once, cached)."""
    from draftwise.models.pull import pull

    return str(pull("qwen2.5-coder-1.5b", progress=False)), str(pull("qwen2.5-coder-0.5b", progress=False))


@pytest.fixture(scope="session")
def qwen_pair(qwen_paths):
    from draftwise.backends.llamacpp import LlamaCppBackend

    t, d = qwen_paths
    return LlamaCppBackend(t, n_ctx=1024), LlamaCppBackend(d, n_ctx=1024)
