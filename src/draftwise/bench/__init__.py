"""`draftwise bench` and `draftwise advise`: measure which draft, K and quantization pay.

run_bench / run_advise are imported lazily: the report needs matplotlib, the CLI should not.
"""

from __future__ import annotations

__all__ = ["run_advise", "run_bench"]


def __getattr__(name: str):
    if name == "run_bench":
        from draftwise.bench.bench_cmd import run_bench

        return run_bench
    if name == "run_advise":
        from draftwise.bench.advise_cmd import run_advise

        return run_advise
    raise AttributeError(name)
