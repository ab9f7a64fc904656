"""`draftwise export`: plans from real advise.json / bench.json, the files and launch commands of
each engine (run through stand-in engine executables that print their argv), vocabulary rules,
and bad input."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from draftwise.errors import DraftwiseError
from draftwise.export import llamaserver, vllm
from draftwise.export.common import Plan, pair_info, read_plan
from draftwise.export.run import ExportOptions, run_export

EXE = [sys.executable, "-m", "draftwise.cli"]
TOKENS = ["<eos>", *"abcdefgh", "Ġa", "Ġb", "ab", "cd", "Ġab"]


def write_gguf(path: Path, tokens=TOKENS, tok_model: str = "gpt2", n_embd: int = 8) -> Path:
    """A GGUF with a vocabulary and one tensor: enough for `check` (llama-server export only
    reads the metadata and links the file)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(2048)
    w.add_tokenizer_model(tok_model)
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t.startswith("<") else gguf.TokenType.NORMAL
                       for t in tokens])
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), n_embd), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def ggufs(tmp_path):
    other = ["<s>", "</s>", *"abcdefgh", "▁a", "▁b", "ba", "dc"]
    return {"target": write_gguf(tmp_path / "t.gguf", n_embd=64),
            "draft": write_gguf(tmp_path / "d.gguf", n_embd=16),
            "other": write_gguf(tmp_path / "o.gguf", tokens=other, tok_model="llama")}


def fake_engine(tmp_path: Path, name: str) -> dict:
    """An executable `name` on PATH that writes its argv as JSON: the launch script runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                   "print(json.dumps({'cwd': os.getcwd(), 'argv': sys.argv[1:]}))\n")
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def run_launch(out: Path, engine_exe: str, tmp_path: Path) -> list[str]:
    r = subprocess.run(["sh", str(out / "launch.sh")], capture_output=True, text=True,
                       env=fake_engine(tmp_path, engine_exe), timeout=30)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert Path(got["cwd"]).resolve() == out.resolve()  # relative model paths work from anywhere
    return got["argv"]


def same_file(a: Path, b: Path) -> bool:
    return os.stat(a).st_ino == os.stat(b).st_ino and os.stat(a).st_dev == os.stat(b).st_dev


# ------------------------------------------------------------------ plans from result files


@pytest.fixture(scope="module")
def real_advise(tiny_models, tmp_path_factory):
    """advise.json written by run_advise on the tiny pair."""
    from draftwise.bench.advise_cmd import run_advise
    from draftwise.bench.options import AdviseOptions, PromptOptions
    from draftwise.loader import BackendOptions

    root = tmp_path_factory.mktemp("advise")
    prompts = root / "p.jsonl"
    prompts.write_text('{"prompt": "def quicksort(a):\\n"}\n')
    tgt, draft = map(str, tiny_models)
    run_advise(AdviseOptions(tgt, (draft, "ngram"), k_max=3, max_tokens=16, out_dir=str(root),
                             reps=2), PromptOptions(prompt_file=str(prompts)),
               BackendOptions(n_ctx=256))
    return root / "advise.json"


def test_plan_follows_a_real_advise_json(real_advise):
    data = json.loads(real_advise.read_text())
    best = max(data["advice"], key=lambda a: a["best_speedup"])
    if best["best_speedup"] >= 1.02:
        plan = read_plan(str(real_advise))
        assert (plan.target, plan.draft, plan.k) == (data["target"], best["draft"],
                                                     best["best_k"])
    else:  # tiny models on a busy CPU: advise says plainly that nothing pays
        with pytest.raises(DraftwiseError, match="no draft is predicted to beat"):
            read_plan(str(real_advise))


def test_real_advise_json_with_a_chosen_pair_exports_to_vllm(real_advise, tiny_models, tmp_path):
    """The file's target, the draft and K given: the HF directories are linked, not copied."""
    draft = str(tiny_models[1])
    res = run_export(ExportOptions("vllm", str(real_advise), draft=draft, k=2,
                                   out=str(tmp_path / "v")))
    out = res.out
    assert res.plan.target == json.loads(real_advise.read_text())["target"]
    assert same_file(out / "target" / "model.safetensors",
                     Path(res.plan.target) / "model.safetensors")
    assert same_file(out / "draft" / "model.safetensors", Path(draft) / "model.safetensors")
    argv = run_launch(out, "vllm", tmp_path)
    assert argv[:2] == ["serve", "./target"]
    cfg = json.loads(argv[argv.index("--speculative-config") + 1])
    assert cfg == {"method": "draft_model", "model": "./draft", "num_speculative_tokens": 2}
    assert argv[argv.index("--served-model-name") + 1] == "target"
    meta = json.loads((out / "export.json").read_text())
    assert meta["argv"][1:] == argv and meta["vocabulary"].startswith("identical")
    assert meta["checked_against"] == vllm.CHECKED
    readme = (out / "README.md").read_text()
    for f in meta["flags"]:  # every flag in the table, with what it was checked against
        assert f"`{f['flag']}`" in readme and f["checked"] in readme
    assert "vllm/config/speculative.py" in readme


def advise_json(path: Path, target: str, advice: list[tuple]) -> Path:
    """An advise.json written through advise's own dataclasses and writer.
    advice: (draft, temperature, best_k, best_speedup)."""
    from draftwise.bench.advise_cmd import AdviseResult, DraftAdvice, KPrediction
    from draftwise.bench.report import _clean

    items = [DraftAdvice(d, t, "?", 0.8, 1.0, [KPrediction(k, 2.0, 2.0, s, s)], k, s)
             for d, t, k, s in advice]
    res = AdviseResult(target, 4, [], {}, items, ["..."])
    path.write_text(json.dumps(_clean(asdict(res)), indent=1))
    return path


def test_plan_picks_the_best_draft_at_the_temperature(tmp_path):
    p = advise_json(tmp_path / "advise.json", "T", [("a", 0.0, 3, 1.4), ("b", 0.0, 5, 1.7),
                                                    ("a", 0.7, 2, 1.2), ("b", 0.7, 4, 1.01)])
    plan = read_plan(str(p))
    assert (plan.target, plan.draft, plan.k, plan.temperature) == ("T", "b", 5, 0.0)
    assert "1.70x" in plan.expected
    plan = read_plan(str(p), temperature=0.7)
    assert (plan.draft, plan.k) == ("a", 2)
    with pytest.raises(DraftwiseError, match="no result at temperature 0.3"):
        read_plan(str(p), temperature=0.3)
    assert read_plan(str(p), k=7).k == 7  # an explicit K replaces the recommended one


def bench_json(path: Path, recs, summaries) -> Path:
    """A bench.json written by bench's own writer (report.to_json)."""
    from draftwise.bench.options import BenchOptions
    from draftwise.bench.report import BenchResult, to_json

    res = BenchResult(BenchOptions(target="T", drafts=("d",), ks="1-4", p_min=0.3), {}, [], [],
                      [], summaries, recs)
    path.write_text(json.dumps(to_json(res), indent=1))
    return path


def summary(draft, k, speedup, accept="exact"):
    from draftwise.bench.summary import ConfigSummary

    return ConfigSummary(f"{draft} K={k}", draft, k, 0.0, "?", 3, 100, 10.0, 9.0, 11.0, speedup,
                         speedup - 0.1, speedup + 0.1, speedup, 0.8, 2.0, 3.0, accept=accept)


def test_plan_from_bench_json_turns_adaptive_k_into_the_best_fixed_k(tmp_path):
    from draftwise.bench.summary import Recommendation

    rec = Recommendation(0.0, True, "d adaptive", "d", None, "?", 1.6, 1.4, 1.8, "text")
    p = bench_json(tmp_path / "bench.json", [rec],
                   [summary("d", 2, 1.3), summary("d", 3, 1.5), summary("e", 4, 1.9),
                    summary("d", 4, 2.5, accept="topk:3")])  # lossy: never the one exported
    plan = read_plan(str(p))
    assert (plan.target, plan.draft, plan.k, plan.p_min) == ("T", "d", 3, 0.3)
    assert "adaptive K" in plan.notes[0] and "K=3" in plan.notes[0]
    no = Recommendation(0.0, False, text="T=0: nothing beats autoregressive decoding.")
    p = bench_json(tmp_path / "none.json", [no], [summary("d", 2, 0.9)])
    with pytest.raises(DraftwiseError, match="nothing beats autoregressive"):
        read_plan(str(p))


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("not json", "cannot read"),
    ('{"kind": "endpoint", "levels": []}', "bench --endpoint"),
    ('{"foo": 1}', "neither an advise.json"),
    ('{"target": "T", "advice": [{"draft": "d"}]}', "not a complete"),
])
def test_bad_result_files(tmp_path, content, message):
    p = tmp_path / "x.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(DraftwiseError, match=message):
        read_plan(str(p))


def test_plans_engines_cannot_run(tmp_path):
    with pytest.raises(DraftwiseError, match="hybrid drafter"):
        read_plan(None, "T", "ngram+D", 3)
    with pytest.raises(DraftwiseError, match="give --from"):
        read_plan(None, "T", None, None)
    with pytest.raises(DraftwiseError, match="between 1 and 32"):
        read_plan(None, "T", "D", 40)


# ------------------------------------------------------------------ each engine


def test_sglang_export_runs_a_k_chain(tiny_models, tmp_path):
    t, d = map(str, tiny_models)
    res = run_export(ExportOptions("sglang", target=t, draft=d, k=4, out=str(tmp_path / "s"),
                                   tp=2, port=30000))
    argv = run_launch(res.out, "python3", tmp_path)
    assert argv[:4] == ["-m", "sglang.launch_server", "--model-path", "./target"]
    flag = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    assert flag["--speculative-algorithm"] == "STANDALONE"
    assert flag["--speculative-draft-model-path"] == "./draft"
    assert (flag["--speculative-num-steps"], flag["--speculative-eagle-topk"],
            flag["--speculative-num-draft-tokens"]) == ("4", "1", "5")
    assert (flag["--tp-size"], flag["--port"]) == ("2", "30000") and "--enable-metrics" in argv


def test_llama_server_export_links_ggufs(ggufs, tmp_path):
    res = run_export(ExportOptions("llama-server", target=str(ggufs["target"]),
                                   draft=str(ggufs["draft"]), k=5, parallel=8,
                                   out=str(tmp_path / "l")))
    assert same_file(res.out / "target.gguf", ggufs["target"])
    assert same_file(res.out / "draft.gguf", ggufs["draft"])
    argv = run_launch(res.out, "llama-server", tmp_path)
    assert argv == ["-m", "./target.gguf", "-md", "./draft.gguf", "--spec-type", "draft-simple",
                    "--spec-draft-n-max", "5", "-np", "8", "--metrics", "-a", "t", "--host",
                    "127.0.0.1", "--port", "8000"]
    script = (res.out / "launch.sh").read_text()
    assert "llama.cpp@0c1e57098" in script and "llama-cpp-python 0.3.36" in script


def test_ngram_exports(tiny_models, ggufs, tmp_path):
    t = str(tiny_models[0])
    res = run_export(ExportOptions("vllm", target=t, draft="ngram", k=4, out=str(tmp_path / "v")))
    argv = run_launch(res.out, "vllm", tmp_path)
    assert json.loads(argv[argv.index("--speculative-config") + 1]) == {
        "method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3,
        "prompt_lookup_min": 1}
    assert not (res.out / "draft").exists()
    res = run_export(ExportOptions("llama-server", target=str(ggufs["target"]), draft="ngram",
                                   k=4, out=str(tmp_path / "l")))
    argv = run_launch(res.out, "llama-server", tmp_path)
    assert argv[2:6] == ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-m", "4"]
    res = run_export(ExportOptions("sglang", target=t, draft="ngram", k=4,
                                   out=str(tmp_path / "s")))
    assert "NGRAM" in res.launch.argv and any("CUDA only" in n for n in res.launch.notes)


def test_p_min_from_bench_reaches_llama_server(ggufs, tmp_path):
    from draftwise.bench.summary import Recommendation

    rec = Recommendation(0.0, True, "d K=3", str(ggufs["draft"]), 3, "?", 1.5, 1.2, 1.8, "t")
    p = bench_json(tmp_path / "bench.json", [rec], [])
    res = run_export(ExportOptions("llama-server", str(p), target=str(ggufs["target"]),
                                   out=str(tmp_path / "l")))
    assert "--spec-draft-p-min" in res.launch.argv
    assert res.launch.argv[res.launch.argv.index("--spec-draft-p-min") + 1] == "0.3"


# ------------------------------------------------------------------ vocabulary rules


def test_bridged_pair(ggufs, tmp_path):
    t, d, pairing = pair_info(str(ggufs["target"]), str(ggufs["other"]))
    assert pairing.verdict == "bridged"
    plan = Plan(str(ggufs["target"]), str(ggufs["other"]), 3)
    for engine, what in (("sglang", "SGLang cannot speculate"),
                         ("llama-server", "llama-server cannot speculate")):
        with pytest.raises(DraftwiseError, match=what) as e:
            run_export(ExportOptions(engine, target=plan.target, draft=plan.draft, k=3,
                                     out=str(tmp_path / engine)))
        assert "bridged" in str(e.value) and "\n" not in str(e.value)
        assert not (tmp_path / engine).exists()
    # vLLM: only through its token-intersection option, said plainly
    notes = vllm.check(plan, t, d, pairing)
    assert vllm.heterogeneous(notes) and "cannot serve this pair" in notes[0]
    launch = vllm.launch(plan, "./target", "./draft", "t", "h", 1, 1, notes)
    cfg = json.loads(launch.argv[launch.argv.index("--speculative-config") + 1])
    assert cfg["use_heterogeneous_vocab"] is True and cfg["method"] == "draft_model"


def test_llama_cpp_vocabulary_rule(ggufs, tmp_path):
    """llama.cpp's own rule: same type and BOS, sizes within 128, texts equal from id 5 on."""
    from draftwise.pairing.meta import read_info

    t = read_info(str(ggufs["target"]))
    early = TOKENS.copy()
    early[2] = "z"  # below id 5: llama.cpp does not compare it
    late = TOKENS.copy()
    late[7] = "z"
    big = [*TOKENS, *(f"<x{i}>" for i in range(200))]
    cases = {"early": (early, None), "late": (late, "token 7 differs"),
             "big": (big, "differ by more than 128")}
    for name, (tokens, problem) in cases.items():
        d = read_info(str(write_gguf(tmp_path / f"{name}.gguf", tokens=tokens)))
        got = llamaserver.vocab_problem(t, d)
        assert (got is None) if problem is None else (problem in got), (name, got)
    spm = read_info(str(write_gguf(tmp_path / "spm.gguf", tok_model="llama")))
    assert "vocabulary types differ" in llamaserver.vocab_problem(t, spm)


# ------------------------------------------------------------------ the directory and the CLI


def test_export_directory_is_replaced_whole_or_refused(tiny_models, tmp_path):
    t, d = map(str, tiny_models)
    out = tmp_path / "x"
    run_export(ExportOptions("vllm", target=t, draft=d, k=2, out=str(out)))
    run_export(ExportOptions("vllm", target=t, draft=d, k=3, out=str(out)))  # an earlier export
    assert json.loads((out / "export.json").read_text())["plan"]["k"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temporary directories left
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(DraftwiseError, match="not an earlier export"):
        run_export(ExportOptions("vllm", target=t, draft=d, k=2, out=str(other)))
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_export_command(tiny_models, tmp_path):
    t, d = map(str, tiny_models)
    r = subprocess.run([*EXE, "export", "--to", "vllm", "--target", t, "--draft", d, "-k", "3",
                        "--out", str(tmp_path / "v")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    cmd = r.stdout.strip().splitlines()[-1]
    assert shlex.split(cmd)[:3] == ["vllm", "serve", "./target"]
    assert (tmp_path / "v" / "launch.sh").exists()


@pytest.mark.parametrize("args, message", [
    (["--to", "tgi", "--target", "a", "--draft", "b", "-k", "3"], "--to must be one of"),
    (["--to", "vllm", "--target", "a"], "give --from"),
    (["--to", "vllm", "--from", "/no/such/advise.json"], "does not exist"),
    (["--to", "llama-server", "--target", "{t}", "--draft", "{d}", "-k", "3"], "loads GGUF"),
])
def test_export_bad_input_is_one_line(tiny_models, args, message):
    t, d = map(str, tiny_models)
    r = subprocess.run([*EXE, "export", *(a.format(t=t, d=d) for a in args)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.real
def test_real_qwen_pair_to_llama_server_and_gemma_refused(qwen_paths, tmp_path):
    t, d = qwen_paths
    res = run_export(ExportOptions("llama-server", target=t, draft=d, k=3,
                                   out=str(tmp_path / "q")))
    assert res.verdict.startswith("identical")
    assert (res.out / "target.gguf").stat().st_size == Path(t).stat().st_size
    from draftwise.models.pull import pull

    gemma = str(pull("gemma-3-270m", progress=False))
    with pytest.raises(DraftwiseError, match="llama-server cannot speculate.*bridged"):
        run_export(ExportOptions("llama-server", target=t, draft=gemma, k=3,
                                 out=str(tmp_path / "g")))


@pytest.mark.parametrize("engine, why", [
    ("vllm", "rejection_sample_method"),
    ("sglang", "--speculative-accept-threshold-single"),
    ("llama-server", "common_sampler_sample_and_accept_n"),
])
def test_lossy_accept_is_refused_with_the_reason(engine, why, tmp_path):
    """No engine carries a draftwise lossy mode: refused before any model work, in one line that
    says why and names the engine version checked."""
    with pytest.raises(DraftwiseError, match=f"{engine} cannot carry --accept topk:3") as e:
        ExportOptions(engine, target="no-such-model", draft="ngram", k=3, accept="topk:3",
                      out=str(tmp_path / "x"))
    msg = str(e.value)
    assert why in msg and "@" in msg and "\n" not in msg and "--accept exact" in msg
    with pytest.raises(DraftwiseError, match="'loose' is not an acceptance mode"):
        ExportOptions(engine, accept="loose")
    assert ExportOptions(engine, accept="exact").accept == "exact"
