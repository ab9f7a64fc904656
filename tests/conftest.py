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
