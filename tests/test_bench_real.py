"""bench and advise on the real Qwen2.5-Coder pair with llama.cpp: a short smoke run."""

import json

import pytest

pytestmark = pytest.mark.real


def test_bench_and_advise_smoke(qwen_paths, tmp_path):
    from draftwise.bench import run_advise, run_bench
    from draftwise.bench.options import AdviseOptions, BenchOptions, PromptOptions
    from draftwise.loader import BackendOptions

    target, draft = qwen_paths
    prompts = PromptOptions(categories=("code",), n_prompts=1)
    backend = BackendOptions(backend="llama.cpp", n_ctx=1024)
    run_bench(BenchOptions(target, (draft, f"ngram+{draft}"), ks="2", max_tokens=16, repeats=1),
              prompts, backend, str(tmp_path / "bench"))
    data = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert len(data["summaries"]) == 5  # AR, 2 drafts x (K=2, adaptive)
    assert all(s["identical"] == 1.0 for s in data["summaries"] if s["draft"] != "none")
    assert (tmp_path / "bench" / "report.html").stat().st_size > 10_000
    run_advise(AdviseOptions(target, (draft, "ngram"), k_max=2, max_tokens=16, reps=2,
                             out_dir=str(tmp_path / "advise")), prompts, backend)
    adv = json.loads((tmp_path / "advise" / "advise.json").read_text())
    model = next(a for a in adv["advice"] if a["draft"] == draft)
    assert model["alpha"] > 0.5  # the 0.5B draft agrees with the 1.5B target on code
    assert all(p["speedup"] > 0 for p in model["per_k"])
