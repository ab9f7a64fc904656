"""The transformers backend on a real GGUF (Qwen2.5-Coder 0.5B, dequantized to float32 once)."""

from pathlib import Path

import pytest

from draftwise.config import GenerateConfig, SpecConfig
from draftwise.drafters.ngram import NgramDrafter
from draftwise.engine import Engine

pytestmark = pytest.mark.real


def test_gguf_converts_once_and_speculation_is_exact(qwen_paths):
    from draftwise.backends.transformers import TransformersBackend, _converted_dir

    gguf = qwen_paths[1]
    target = TransformersBackend(gguf, dtype="float32", threads=2)
    assert (_converted_dir(Path(gguf), "float32") / "config.json").exists()
    assert target.vocab.n_tokens > 150_000 and target.vocab.eos_ids
    cfg = GenerateConfig(max_tokens=24)
    prompt = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
    ar = Engine(target).generate(prompt, cfg)
    for k in (1, 3):
        sd = Engine(target, NgramDrafter(), SpecConfig(k=k)).generate(prompt, cfg)
        assert sd.tokens == ar.tokens and sd.stats.n_drafted > 0
    assert "fib" in ar.text or "return" in ar.text
