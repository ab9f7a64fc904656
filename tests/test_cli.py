"""The command line, end to end in subprocesses: output, stats, and every bad input."""

import json
import os
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


def test_different_vocabularies_are_bridged_losslessly(tiny_models, other_vocab_model):
    """A draft with another tokenizer drafts through text (see pairing); greedy output stays AR's."""
    args = ["--target", str(tiny_models[0]), "--max-tokens", "16", "--json", "The quick"]
    sd = run("generate", "--draft", str(other_vocab_model), *args)
    ar = run("generate", "--no-draft", *args)
    assert sd.returncode == 0, sd.stderr
    assert json.loads(sd.stdout)["text"] == json.loads(ar.stdout)["text"]
    assert json.loads(sd.stdout)["stats"]["n_drafted"] > 0


def test_ctrl_c_prints_stats_and_exits_130(tiny_models):
    target, draft = map(str, tiny_models)
    p = subprocess.Popen([*EXE, "generate", "--target", target, "--draft", draft,
                          "--max-tokens", "100000", "--ctx", "100000", "x"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    first = p.stdout.read(1)  # generation has started once text arrives
    assert first and time.time() < deadline
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert "interrupted" in err and "tok/s" in err


def test_models_path_errors_and_list():
    env = {**os.environ}
    r = run("models", "path", "qwen2.5-coder-0.5b-q3_k_m", env=env)
    assert r.returncode == 2 and "models quantize qwen2.5-coder-0.5b --to q3_k_m" in r.stderr
    r = run("models", "list")
    assert r.returncode == 0 and "qwen2.5-coder-1.5b" in r.stdout
