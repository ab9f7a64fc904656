"""`draftwise export`: carry a measured draft, K and pair to vLLM, SGLang or llama-server.

common: the recommendation (from advise.json / bench.json or explicit names), the vocabulary
check and writing model files; vllm / sglang / llamaserver: one engine each (its flags, what it
can pair, the version its flags were checked against); run: the export itself (run_export).
"""

from __future__ import annotations

__all__ = ["run_export"]


def __getattr__(name: str):
    if name == "run_export":
        from draftwise.export.run import run_export

        return run_export
    raise AttributeError(name)
