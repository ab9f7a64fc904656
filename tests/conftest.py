import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Greedy speculation on llama.cpp may leave plain decoding only where the target's top-2 logit
# margin is below what a verify pass (4+ tokens, repacked Q4_K_M weights) moves it. Measured by
# benchmarks/logit_margins.py on the 1.5B Q4_K_M target: at most 0.50 over 1,716 positions (6
# HumanEval solutions, verify batches of 4 and 5; mean 0.08, p99 0.31; the 12 argmax flips all at
# one-token margins <= 0.164); an earlier measurement over 1,544 positions gave 0.59. NEAR_TIE is
# 1.27x the larger of the two, a margin for prompts outside the measured ones.
NEAR_TIE = 0.75


def _home_sharing_models(real: Path, home: Path) -> Path:
    """A draftwise home whose models/ and hf/ (pulled GGUF files, converted HF directories: big,
    read-only for the tests) are the user's own, and whose costs/ starts empty."""
    home.mkdir(parents=True, exist_ok=True)
    for sub in ("models", "hf"):
        (real / sub).mkdir(parents=True, exist_ok=True)
        (home / sub).symlink_to(real / sub, target_is_directory=True)
    return home


@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory):
    """(the user's draftwise home, a session home for session- and module-scoped fixtures)."""
    from draftwise.models.store import cache_dir

    real = cache_dir()  # before DRAFTWISE_HOME is replaced
    home = _home_sharing_models(real, tmp_path_factory.mktemp("home"))
    mp = pytest.MonkeyPatch()
    mp.setenv("DRAFTWISE_HOME", str(home))
    yield real, home
    mp.undo()


@pytest.fixture(autouse=True)
def draftwise_home(_session_home, tmp_path_factory, monkeypatch) -> Path:
    """Each test's own DRAFTWISE_HOME (subprocesses inherit it): adaptive K's saved costs never come
    from the user's runs or from another test. Models are shared (see _home_sharing_models)."""
    home = _home_sharing_models(_session_home[0], tmp_path_factory.mktemp("home"))
    monkeypatch.setenv("DRAFTWISE_HOME", str(home))
    return home


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
