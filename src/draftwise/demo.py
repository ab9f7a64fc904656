"""`draftwise demo`: the Qwen2.5-Coder pair, AR vs speculative, side by side."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from draftwise.compare import ar_reference, divergence
from draftwise.config import GenerateConfig, SpecConfig
from draftwise.engine import Engine
from draftwise.loader import BackendOptions, open_engine

TARGET_BASE, DRAFT_BASE = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"
TARGET, DRAFT = f"{TARGET_BASE}-q8_0", f"{DRAFT_BASE}-q4_0"  # 8-bit target, fast 4-bit draft
PROMPTS = [
    "def quicksort(a):\n",
    "def is_prime(n: int) -> bool:\n",
    "class Stack:\n    def __init__(self):\n",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "import json\n\ndef load_config(path):\n",
]


def run_demo(max_tokens: int = 128, k: int = 3, threads: int | None = None) -> None:
    from draftwise.models.pull import pull
    from draftwise.models.quantize import QUANT_NOTE, quantize

    out = Console()
    for name in (TARGET_BASE, DRAFT_BASE):
        pull(name)
    quantize(TARGET_BASE, "q8_0")
    quantize(DRAFT_BASE, "q4_0", allow_requantize=True)  # Q4_0 steps ~30% faster than Q4_K_M
    out.print(f"target {TARGET} (llama.cpp), draft {DRAFT}, K={k}, greedy, {max_tokens} tokens")
    out.print(f"[dim]{QUANT_NOTE}[/dim]")
    cfg = GenerateConfig(max_tokens=max_tokens)
    table = Table("prompt", "AR tok/s", "SD tok/s", "speedup", "alpha", "tau", "same text")
    tot_ar = tot_sd = 0.0
    with open_engine(TARGET, DRAFT, BackendOptions(threads=threads), SpecConfig(k=k)) as engine:
        plain = Engine(engine.target)  # the same target, no draft: the AR baseline
        engine.generate("def warmup():\n", GenerateConfig(max_tokens=8))  # first decode allocates
        for prompt in PROMPTS:
            ar = plain.generate(prompt, cfg)
            sd = engine.generate(prompt, cfg)
            div = divergence(sd.tokens, ar.tokens, [] if sd.tokens == ar.tokens else
                             ar_reference(engine.target, prompt, cfg)[1])
            tot_ar += ar.stats.t_decode / max(ar.stats.n_generated, 1)
            tot_sd += sd.stats.t_decode / max(sd.stats.n_generated, 1)
            table.add_row(prompt.splitlines()[0][:32], f"{ar.stats.tok_s:.1f}",
                          f"{sd.stats.tok_s:.1f}", f"{sd.stats.tok_s / ar.stats.tok_s:.2f}x",
                          f"{sd.stats.alpha:.2f}", f"{sd.stats.tau:.2f}", "yes" if div.identical
                          else f"no: token {div.index}, AR margin {div.ar_margin:.3f}")
    out.print(table)
    out.print(f"overall speedup {tot_ar / tot_sd:.2f}x (mean time per token, AR / SD)")
