"""Adaptive K's costs kept between runs: round trip, damaged files, and through generate."""

import json
import subprocess
import sys

from test_adaptive import bernoulli, simulate

from draftwise.config import GenerateConfig, SpecConfig
from draftwise.loader import BackendOptions, cost_key
from draftwise.policy import AdaptiveK, FixedK
from draftwise.policy.store import cost_file, load_costs, save_costs

# ms to verify n tokens on the 2-core machine (Q8_0 1.5B): K = 4..6 lose, K = 2-3 win
MS = {1: 108, 2: 123, 3: 140, 4: 158, 5: 237, 6: 253, 7: 278, 8: 229, 9: 316}


def verify(n):
    return MS[n] / 1e3


def test_saved_costs_make_a_short_reply_faster(tmp_path):
    """A 128-token reply is too short to learn costs in; the next run starts with them."""
    trained = AdaptiveK(8, 6)
    simulate(trained, bernoulli(lambda i: 0.86), verify=verify, t_draft=0.03)
    path = tmp_path / "c.json"
    save_costs(trained, path)
    loaded = AdaptiveK(8, 6)
    assert load_costs(loaded, path) and loaded.state() == trained.state()
    short = dict(n_tokens=128, verify=verify, t_draft=0.03)
    g_fresh, ks_fresh = simulate(AdaptiveK(8, 6), bernoulli(lambda i: 0.86, seed=1), **short)
    g_loaded, ks_loaded = simulate(loaded, bernoulli(lambda i: 0.86, seed=1), **short)
    assert ks_fresh[0] == 6 and ks_loaded[0] <= 3  # starts at the K the costs favour
    assert g_loaded > g_fresh
    assert not list(tmp_path.glob(".*.partial"))


def test_missing_or_damaged_files_and_fixed_k_are_ignored(tmp_path):
    pol = AdaptiveK(8, 3)
    assert not load_costs(pol, tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"t_draft": 0.1}')
    assert not load_costs(pol, bad) and pol.next_k() == 3
    save_costs(FixedK(3), tmp_path / "fixed.json")
    save_costs(AdaptiveK(8, 3), tmp_path / "unmeasured.json")
    assert not (tmp_path / "fixed.json").exists() and not (tmp_path / "unmeasured.json").exists()


def test_cost_file_depends_on_pairing_and_threads(tmp_path, monkeypatch, tiny_models):
    monkeypatch.setenv("DRAFTWISE_HOME", str(tmp_path))
    t, d = map(str, tiny_models)

    def path(target, draft, threads=None):
        return cost_file(cost_key(target, draft, BackendOptions(threads=threads)))

    a = path(t, d)
    assert a == path(t, d) and a.parent == tmp_path / "costs"
    assert len({a, path(t, "ngram"), path(t, d, threads=1), path(d, d)}) == 4


def test_generate_saves_costs_and_the_next_engine_loads_them(tmp_path, monkeypatch, tiny_models):
    from draftwise.loader import open_engine

    monkeypatch.setenv("DRAFTWISE_HOME", str(tmp_path))
    t, d = map(str, tiny_models)
    r = subprocess.run([sys.executable, "-m", "draftwise.cli", "generate", "--target", t,
                        "--draft", d, "--max-tokens", "40", "def quicksort(a):"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    files = list((tmp_path / "costs").glob("*.json"))
    assert len(files) == 1
    saved = {int(k): v for k, v in json.loads(files[0].read_text())["t_round"].items()}
    with open_engine(t, d, spec=SpecConfig(adaptive=True)) as engine:
        assert saved and engine.policy.state()["t_round"] == saved
        engine.generate("def f(x):", GenerateConfig(max_tokens=16))
    after = json.loads(files[0].read_text())["t_round"]
    assert after != json.loads(json.dumps({str(k): v for k, v in saved.items()}))  # saved again
    files[0].unlink()
    with open_engine(t, d, spec=SpecConfig(k=3)) as engine:  # fixed K: nothing saved
        engine.generate("def f(x):", GenerateConfig(max_tokens=16))
    assert not list((tmp_path / "costs").glob("*.json"))
