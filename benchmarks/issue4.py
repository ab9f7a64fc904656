"""The measurements of issue 4 (bench / advise / adaptive K / hybrid) on the Qwen2.5-Coder pair.

Run on a quiet machine, one step at a time (each writes under benchmarks/results/<target>/):

  python benchmarks/issue4.py advise  --target qwen2.5-coder-1.5b-q8_0   # minutes
  python benchmarks/issue4.py code    --target qwen2.5-coder-1.5b-q8_0   # K 1-8 sweep, ~1 h
  python benchmarks/issue4.py compare --target qwen2.5-coder-1.5b-q8_0   # advise vs bench
  python benchmarks/issue4.py mixed   --target qwen2.5-coder-1.5b-q8_0   # adaptive vs fixed K
  python benchmarks/issue4.py quants  --target qwen2.5-coder-1.5b-q8_0   # draft quantizations

and the same with --target qwen2.5-coder-1.5b (Q4_K_M). advise uses code prompts 0-3, bench
code prompts 4-11: the prediction is checked on held-out prompts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

DRAFT = "qwen2.5-coder-0.5b"
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description="issue 4 measurements")
    ap.add_argument("step", choices=["advise", "code", "compare", "mixed", "quants"])
    ap.add_argument("--target", default="qwen2.5-coder-1.5b-q8_0")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    out = RESULTS / a.target
    common = dict(backend="llama.cpp", threads=a.threads, n_ctx=2048)
    from draftwise.bench import run_advise, run_bench

    if a.step == "advise":
        return run_advise(a.target, [DRAFT, "ngram", f"ngram+{DRAFT}"], k_max=8,
                          categories=["code"], n_prompts=4, max_tokens=128,
                          out_dir=str(out / "advise"), **common)
    if a.step == "code":
        return run_bench(a.target, [DRAFT, "ngram", f"ngram+{DRAFT}"], k_range="1-8",
                         categories=["code"], n_prompts=8, prompt_offset=4, max_tokens=128,
                         repeats=a.repeats, out_dir=str(out / "code"), **common)
    if a.step == "compare":
        script = Path(__file__).parent / "compare_advise_bench.py"
        return subprocess.call([sys.executable, str(script), str(out / "advise" / "advise.json"),
                                str(out / "code" / "bench.json")])
    if a.step == "mixed":  # adaptive K vs fixed K on all categories; hybrid where lookup helps
        return run_bench(a.target, [DRAFT, f"ngram+{DRAFT}"], k_range="2-6",
                         categories=["code", "chat", "summarization", "translation", "qa", "math",
                                     "rag"], n_prompts=2, max_tokens=128, repeats=a.repeats,
                         out_dir=str(out / "mixed"), **common)
    # draft quantizations (make the missing ones first: draftwise models quantize
    # qwen2.5-coder-0.5b --to q3_k_m, and --to q2_k)
    quants = [DRAFT] + [f"{DRAFT}-{q}" for q in ("q8_0", "q4_0", "q3_k_m", "q2_k")]
    return run_bench(a.target, quants, k_range="3-5", adaptive=False, categories=["code"],
                     n_prompts=6, prompt_offset=4, max_tokens=128, repeats=a.repeats,
                     out_dir=str(out / "quants"), **common)


if __name__ == "__main__":
    sys.exit(main())
