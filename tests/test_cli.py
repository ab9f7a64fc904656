"""The command line, end to end in subprocesses: output, stats, and every bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

EXE = [sys.executable, "-m", "draftwise.cli"]


def run(*args, timeout=300, **kw):
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def other_vocab_model(tmp_path_factory):
    """A tiny model whose tokenizer was trained to a different vocabulary size."""
    from tiny import build_model, build_tokenizer

    root = tmp_path_factory.mktemp("other")
    tok = build_tokenizer(root / "tok", vocab_size=290)
    return build_model(root / "m", seed=3, tok=tok)


def test_generate_streams_text_and_prints_stats(tiny_models):
    target, draft = map(str, tiny_models)
    r = run("generate", "--target", target, "--draft", draft, "-k", "3", "--max-tokens", "20",
            "def quicksort(a):")
    assert r.returncode == 0, r.stderr
    assert "20 tokens" in r.stderr and "alpha" in r.stderr and "tau" in r.stderr
    ar = run("generate", "--target", target, "--no-draft", "--max-tokens", "20", "--json",
             "def quicksort(a):")
    data = json.loads(ar.stdout)
    assert data["stats"]["n_generated"] == 20 and data["stats"]["n_drafted"] == 0
    assert r.stdout.rstrip("\n") == data["text"]  # speculative text == AR text (greedy)


def test_generate_compare_ar_and_ngram(tiny_models):
    target = str(tiny_models[0])
    r = run("generate", "--target", target, "--draft", "ngram", "--max-tokens", "16",
            "--compare-ar", "--json", "for i in range(10):")
    stats = json.loads(r.stdout)["stats"]
    assert r.returncode == 0 and stats["identical_to_ar"] is True
    assert "identical to AR" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--target", "no-such-model", "--no-draft"], "unknown model 'no-such-model'"),
    (["--no-draft", "-k", "0"], "K must be between 1 and 32"),
    (["--no-draft", "-k", "33"], "K must be between 1 and 32"),
    (["--no-draft", "--temperature", "-1"], "temperature must be >= 0"),
    (["--no-draft", "--top-p", "0"], "top_p must be in (0, 1]"),
    (["--no-draft", "--top-p", "1.5"], "top_p must be in (0, 1]"),
    (["--no-draft", "--ctx", "16"], "context holds 16"),
    ([], "give --draft MODEL"),
])
def test_bad_input_is_one_clear_line(tiny_models, args, message):
    if "--target" not in args:
        args = ["--target", str(tiny_models[0]), *args]
    r = run("generate", *args, "The quick brown fox jumps over the lazy dog " * 2)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("args, message", [
    (["generate", "--no-draft", "--accept", "loose", "x"], "'loose' is not an acceptance mode"),
    (["generate", "--draft", "ngram", "--accept", "topk:3", "--temperature", "0.7", "x"],
     "acceptance mode topk:3 is for greedy decoding"),
    (["bench", "--draft", "ngram", "--accept", "ratio:2"], "'ratio:2' is not an acceptance mode"),
    (["bench", "--draft", "ngram", "--accept", "typical:0.1"], "is for sampling"),
    (["serve", "--draft", "ngram", "--accept", "topk:1"], "'topk:1' is not an acceptance mode"),
    (["export", "--to", "sglang", "--draft", "ngram", "--accept", "ratio:0.5"],
     "sglang cannot carry --accept ratio:0.5"),
])
def test_bad_accept_is_one_clear_line(tiny_models, args, message):
    r = run(args[0], "--target", str(tiny_models[0]), *args[1:])
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_generate_lossy_accept_reports_it(tiny_models):
    target, draft = map(str, tiny_models)
    r = run("generate", "--target", target, "--draft", draft, "-k", "4", "--accept", "topk:3",
            "--max-tokens", "30", "--json", "The quick brown fox")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)["stats"]
    assert stats["exact"] is False and stats["accept"] == "topk:3"
    assert 0 < stats["n_lenient"] <= stats["n_accepted"]


def test_different_vocabularies_are_bridged_losslessly(tiny_models, other_vocab_model):
    """A draft with another tokenizer drafts through text (see pairing); greedy output stays AR's."""
    args = ["--target", str(tiny_models[0]), "--max-tokens", "16", "--json", "The quick"]
    sd = run("generate", "--draft", str(other_vocab_model), *args)
    ar = run("generate", "--no-draft", *args)
    assert sd.returncode == 0, sd.stderr
    assert json.loads(sd.stdout)["text"] == json.loads(ar.stdout)["text"]
    assert json.loads(sd.stdout)["stats"]["n_drafted"] > 0


@pytest.mark.real
def test_ctrl_c_prints_stats_and_exits_130(qwen_paths):
    # A real model with a 4096-token context: minutes of work, so the signal surely comes first
    # (a tiny model fills its 256 positions in well under a second).
    p = subprocess.Popen([*EXE, "generate", "--target", qwen_paths[1], "--draft", "ngram",
                          "--max-tokens", "4000", "--ctx", "4096", "def f(x):"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    first = p.stdout.read(1)  # generation has started once text arrives
    assert first and time.time() < deadline
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert "interrupted" in err and "tok/s" in err


def test_models_path_errors_and_list(tmp_path):
    env = {**os.environ, "DRAFTWISE_HOME": str(tmp_path)}  # an empty cache, whatever is pulled
    r = run("models", "path", "qwen2.5-coder-0.5b-q3_k_m", env=env)
    assert r.returncode == 2 and "models quantize qwen2.5-coder-0.5b --to q3_k_m" in r.stderr
    r = run("models", "list")
    assert r.returncode == 0 and "qwen2.5-coder-1.5b" in r.stdout


def test_hybrid_draft_name(tiny_models):
    target, draft = map(str, tiny_models)
    args = ["--target", target, "--max-tokens", "24", "--json", "for i in range(10): for i in"]
    sd = run("generate", "--draft", f"ngram+{draft}", "-k", "3", *args)
    ar = run("generate", "--no-draft", *args)
    assert sd.returncode == 0, sd.stderr
    assert json.loads(sd.stdout)["text"] == json.loads(ar.stdout)["text"]
    assert json.loads(sd.stdout)["stats"]["n_drafted"] > 0


def test_check_command(tiny_models, tmp_path):
    target, draft = map(str, tiny_models)
    r = run("check", target, draft, "--json")
    assert r.returncode in (0, 1), r.stderr  # tiny random models may draw warnings, never a fail
    assert json.loads(r.stdout)["verdict"] == "identical"
    r = run("check", target, draft)
    assert "verdict: identical" in r.stdout and "Pairing checklist" in r.stdout
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    r = run("check", target, str(junk))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_bench_and_advise_commands(tiny_models, tmp_path):
    target, draft = map(str, tiny_models)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "def quicksort(a):"}\n{"prompt": "for i in range(10):"}\n')
    common = ["--prompts", str(prompts), "--n-prompts", "1", "--max-tokens", "8"]
    r = run("bench", "--target", target, "--draft", draft, "--draft", "ngram", "-k", "1-2",
            "--repeats", "1", "--no-adaptive", "--out", str(tmp_path / "b"), *common)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())["summaries"]
    assert {(s["draft"], s["k"]) for s in rows if s["draft"] != "none"} == {
        (d, k) for d in (draft, "ngram") for k in (1, 2)}
    assert (tmp_path / "b" / "report.html").stat().st_size > 0
    r = run("advise", target, "--drafts", draft, "--k-max", "3", "--out", str(tmp_path / "a"),
            *common)
    assert r.returncode == 0, r.stderr
    advice = json.loads((tmp_path / "a" / "advise.json").read_text())["advice"]
    assert [a["draft"] for a in advice] == [draft] and 1 <= advice[0]["best_k"] <= 3
    r = run("bench", "--target", target, "-k", "9-2", "--out", str(tmp_path / "c"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_serve_command(tiny_models):
    import socket

    import httpx

    target, draft = map(str, tiny_models)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([*EXE, "serve", "--target", target, "--draft", draft, "--port", str(port),
                          "--name", "tiny"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while True:
            assert p.poll() is None and time.time() < deadline, p.stderr.read()
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"model": "tiny", "prompt": "def quicksort(a):", "max_tokens": 20,
                "temperature": 0}
        out = httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()
        ar = run("generate", "--target", target, "--no-draft", "--max-tokens", "20", "--json",
                 "def quicksort(a):")
        assert out["choices"][0]["text"] == json.loads(ar.stdout)["text"]
        assert out["speculative"]["drafted"] > 0
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)


def test_serve_parallel_on_transformers_says_it_serves_one_sequence(tiny_models):
    r = run("serve", "--target", str(tiny_models[0]), "--parallel", "2", timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0, r.stderr  # one line
    assert "transformers backend serves one sequence at a time; use --parallel 1" in r.stderr


@pytest.mark.real
def test_demo_runs_on_the_real_pair():
    """Each prompt's row says the speculative text is AR's, or where it parts from it: allowed
    only at a near-tie (AR's top-2 logit margin below NEAR_TIE, see conftest.py)."""
    from conftest import NEAR_TIE

    r = run("demo", "--max-tokens", "16", timeout=900,
            env={**os.environ, "COLUMNS": "200"})  # wide enough that no table cell wraps
    assert r.returncode == 0, r.stderr
    assert "same text" in r.stdout and "overall speedup" in r.stdout
    rows = [line.split("│") for line in r.stdout.splitlines()
            if line.startswith("│") and re.search(r"│\s*\d+\.\d\dx\s*│", line)]
    assert len(rows) == 5, r.stdout  # one row per prompt
    for row in rows:
        same = row[-2].strip()
        if same != "yes":
            m = re.fullmatch(r"no: token \d+, AR margin (\d+\.\d+)", same)
            assert m and float(m[1]) < NEAR_TIE, r.stdout
