"""bench: prompt sets, K ranges, aggregation, recommendation, a sweep + report on tiny models."""

import csv
import json
from html.parser import HTMLParser
from importlib import resources

import numpy as np
import pytest

from draftwise.bench.drafts import quant_of
from draftwise.bench.options import BenchOptions, PromptOptions
from draftwise.bench.prompts import CATEGORIES, builtin, load_prompts, read_jsonl
from draftwise.bench.runner import BenchConfig, RunRecord, sweep_configs
from draftwise.bench.summary import bootstrap_ci, recommend, summarize
from draftwise.config import parse_k_range
from draftwise.errors import DraftwiseError
from draftwise.loader import BackendOptions

# -- prompts -------------------------------------------------------------------------------------


def test_builtin_categories_load_with_ids():
    for cat in CATEGORIES:
        rows = builtin(cat)
        assert len(rows) >= 10 and all(p.text and p.chat and p.category == cat for p in rows)
        assert len({p.id for p in rows}) == len(rows)
    assert builtin("code")[0].id == "HumanEval/0"
    assert builtin("writing") == builtin("chat")


def test_sources_keep_attribution():
    text = resources.files("draftwise.bench").joinpath("data", "SOURCES.md").read_text()
    for s in ("hemingkx/Spec-Bench", "openai/human-eval", "Apache-2.0", "MIT",
              "Copyright (c) OpenAI"):
        assert s in text


def test_load_prompts_selection():
    ps = load_prompts(["code", "qa"], n_prompts=3, offset=2)
    assert [p.category for p in ps] == ["code"] * 3 + ["qa"] * 3
    assert ps[0].id == builtin("code")[2].id
    assert [p.category for p in load_prompts()] == ["code"] * 20


def test_user_jsonl(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "raw text"}\n\n{"turns": ["hi", "more"], "id": "x"}\n')
    a, b = load_prompts(prompt_file=str(f))
    assert (a.text, a.chat, a.category) == ("raw text", False, "file")
    assert (b.text, b.chat, b.id) == ("hi", True, "x")
    assert b.render(lambda m: f"<{m[0]['role']}>{m[0]['content']}") == "<user>hi"
    assert a.render(None) == "raw text"


@pytest.mark.parametrize("content,match", [
    ("", "holds no prompts"),
    ("\n  \n", "holds no prompts"),
    ('{"prompt": ""}\n', 'line 1: needs a non-empty "prompt"'),
    ('{"text": "x"}\n', "line 1: needs"),
    ('{"prompt": "ok"}\nnot json\n', "line 2: not valid JSON"),
    ("[1, 2]\n", "expected an object"),
])
def test_bad_prompt_files(tmp_path, content, match):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(DraftwiseError, match=match):
        load_prompts(prompt_file=str(f))


def test_bad_prompt_selection(tmp_path):
    with pytest.raises(DraftwiseError, match="unknown category 'poetry'; choose from code, chat"):
        load_prompts(["poetry"])
    with pytest.raises(DraftwiseError, match="does not exist"):
        load_prompts(prompt_file=str(tmp_path / "missing.jsonl"))
    with pytest.raises(DraftwiseError, match="number of prompts"):
        load_prompts(["code"], n_prompts=0)
    with pytest.raises(DraftwiseError, match="no prompts left"):
        load_prompts(["code"], offset=500)
    assert read_jsonl('{"prompt": "a"}', "x", "c")[0].id == "c/0"


# -- options -------------------------------------------------------------------------------------


def test_parse_k_range():
    assert parse_k_range("1-8") == tuple(range(1, 9))
    assert parse_k_range("1,3, 5-6") == (1, 3, 5, 6)
    assert parse_k_range([4, 2, 2]) == (2, 4)
    assert parse_k_range(3) == (3,)


@pytest.mark.parametrize("spec,match", [
    ("8-1", "K range '8-1' is invalid: 8 > 1"),
    ("0-4", "K must be between 1 and 32, got 0"),
    ("1-40", "got 33"),
    ("a-b", "K range 'a-b' is invalid"),
    ("", "K range '' is invalid"),
    ([], "K range is empty"),
])
def test_bad_k_range(spec, match):
    with pytest.raises(DraftwiseError, match=match):
        parse_k_range(spec)


def test_bench_options_validate():
    with pytest.raises(DraftwiseError, match="at least one draft"):
        BenchOptions("t", drafts=())
    with pytest.raises(DraftwiseError, match="`none` is not a draft"):
        BenchOptions("t", drafts=("none",))
    with pytest.raises(DraftwiseError, match="temperatures"):
        BenchOptions("t", temperatures=(-1.0,))
    with pytest.raises(DraftwiseError, match="repeats"):
        BenchOptions("t", repeats=0)
    o = BenchOptions("t", drafts=("a", "b"), ks=(1, 2), temperatures=(0.0, 0.7))
    labels = [c.label for c in sweep_configs(o)]
    assert labels.count("AR") == 2 and "a K=2" in labels and "b adaptive" in labels
    assert len(labels) == 2 * (1 + 2 * 3)


def test_quant_of():
    assert quant_of("qwen2.5-coder-0.5b-q4_0") == "q4_0"
    assert quant_of("ngram+qwen2.5-coder-0.5b-q8_0") == "q8_0"
    assert quant_of("qwen2.5-coder-0.5b") == "q4_k_m"  # the catalog's file
    assert quant_of("/models/Qwen2.5-0.5B-Instruct-Q3_K_M.gguf") == "q3_k_m"
    assert quant_of("ngram") == "-" and quant_of("/some/hf_dir") == "?"


# -- aggregation ---------------------------------------------------------------------------------


def _rec(cfg, prompt, rep, t_decode, rounds=(), n=12, identical=None):
    return RunRecord(cfg, prompt, "code", rep, 10, n, 0.1, t_decode, 0.0, t_decode * 0.9, "length",
                     [], [], list(rounds), identical)


AR0 = BenchConfig("none", 0, 0.0)
D2 = BenchConfig("d", 2, 0.0)
BAD = BenchConfig("bad", 2, 0.0)


def test_bootstrap_ci():
    assert bootstrap_ci(np.log([2.0, 2.0, 2.0])) == pytest.approx((2.0, 2.0))
    lo, hi = bootstrap_ci(np.log([1.0, 1.5, 2.0, 2.5]))
    assert 1.0 < lo < hi < 2.5
    assert bootstrap_ci(np.log([1.3])) == pytest.approx((1.3, 1.3))


def test_summarize_hand_computed():
    recs = [_rec(AR0, "p1", 0, 1.2), _rec(AR0, "p2", 0, 1.0),
            # 2x on p1 and 1.25x on p2 -> geometric mean sqrt(2.5)
            _rec(D2, "p1", 0, 0.6, rounds=[(2, 2), (2, 1), (2, 0), (2, 2), (2, 2)], identical=True),
            _rec(D2, "p2", 0, 0.8, rounds=[(2, 0)] * 4 + [(2, 1)] * 4, identical=False)]
    ar, d = summarize(recs, max_tokens=16)
    assert ar.label == "AR" and ar.speedup == pytest.approx(1.0)
    assert d.speedup == pytest.approx(np.sqrt(2.5))
    assert d.speedup_lo <= d.speedup <= d.speedup_hi
    assert d.alpha == pytest.approx((7 + 4) / 26)  # accepted / drafted
    assert d.tau == pytest.approx(24 / 13)  # tokens / rounds
    assert d.identical == 0.5 and ar.identical is None
    assert d.by_category == pytest.approx({"code": np.sqrt(2.5)})
    assert d.tok_s == pytest.approx(np.median([12 / 0.6, 12 / 0.8]))
    assert d.ms_target == pytest.approx(1e3 * 0.9 * 1.4 / 24)
    # positions reached: p1 2+2+1+2+2 = 9 with 7 accepted; p2 4 x 1 + 4 x 2 = 12 with 4 accepted
    assert d.by_prompt_len == [(10, 4 / 12, 12), (10, 7 / 9, 9)]  # sorted by (length, rate)
    assert sum(n for _, _, n in d.by_position) == 21


def test_recommend_says_plainly_when_nothing_beats_ar():
    recs = [_rec(AR0, f"p{i}", 0, 1.0) for i in range(4)]
    recs += [_rec(BAD, f"p{i}", 0, 1.25 + 0.01 * i) for i in range(4)]
    (rec,) = recommend(summarize(recs))
    assert not rec.beats_ar and rec.draft == "none"
    assert "nothing beats autoregressive decoding" in rec.text and "--draft none" in rec.text


def test_recommend_picks_the_significantly_fastest():
    recs = [_rec(AR0, f"p{i}", 0, 1.0) for i in range(4)]
    recs += [_rec(D2, f"p{i}", 0, 0.5 + 0.01 * i) for i in range(4)]
    recs += [_rec(BAD, f"p{i}", 0, 1.1) for i in range(4)]
    (rec,) = recommend(summarize(recs))
    assert rec.beats_ar and (rec.draft, rec.k) == ("d", 2) and rec.speedup > 1.9
    assert "use draft d" in rec.text and "K=2" in rec.text


# -- a sweep on tiny models ------------------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.imgs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])


def _speedup_from_runs(runs: list[dict], label: str, with_prefill: bool = False) -> float:
    """What bench.json's recorded times say a configuration's speedup is: the geometric mean over
    its runs of tok/s over AR's tok/s on the same prompt, repeat and temperature."""
    def rate(r):
        return r["n_generated"] / (r["t_decode"] + (r["t_prefill"] if with_prefill else 0.0))

    def key(r):
        return r["config"]["temperature"], r["prompt_id"], r["repeat"]

    ar = {key(r): r for r in runs if r["config"]["draft"] == "none"}
    mine = [r for r in runs if r["label"] == label]
    assert len(mine) == 2  # one per prompt
    return float(np.exp(np.mean([np.log(rate(r) / rate(ar[key(r)])) for r in mine])))


def test_sweep_and_report_on_tiny_models(tiny_models, tmp_path):
    import base64

    from draftwise.bench import run_bench

    tgt, draft = map(str, tiny_models)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "def quicksort(a):\\n"}\n{"turns": ["The quick brown fox"]}\n')
    out = tmp_path / "out"
    drafts = [draft, "ngram", f"ngram+{draft}"]
    run_bench(BenchOptions(tgt, tuple(drafts), ks="1-2", max_tokens=10, repeats=1),
              PromptOptions(prompt_file=str(prompts)), BackendOptions(n_ctx=256), str(out))
    data = json.loads((out / "bench.json").read_text())
    n_cfg = 1 + len(drafts) * 3  # AR + (K=1, K=2, adaptive) per draft
    assert len(data["summaries"]) == n_cfg and len(data["runs"]) == 2 * n_cfg
    assert data["recommendations"] and data["recommendations"][0]["text"].startswith("T=0")
    for s in data["summaries"]:
        assert s["n_tokens"] == 20 and s["tok_s"] > 0
        assert s["speedup"] == pytest.approx(_speedup_from_runs(data["runs"], s["label"]))
        assert s["speedup_e2e"] == pytest.approx(_speedup_from_runs(data["runs"], s["label"],
                                                                    with_prefill=True))
        assert s["speedup_lo"] <= s["speedup"] <= s["speedup_hi"]
        if s["draft"] != "none":
            assert s["identical"] == 1.0  # greedy speculation is lossless
    with (out / "bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_cfg and rows[0]["label"] == "AR"
    md = (out / "report.md").read_text()
    assert "## Recommendation" in md
    for name in ("speedup_vs_k", "acceptance_vs_context", "acceptance_per_position", "time_split"):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{name}.png)" in md
    page = _Tags()
    page.feed((out / "report.html").read_text())
    assert {"html", "table", "img"} <= set(page.tags)
    assert len(page.imgs) == 4
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"


def test_bad_input_fails_before_loading_models(tmp_path):
    from draftwise.bench import run_bench

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    target = "no-such-model"  # never loaded: input is checked first
    opts = BenchOptions(target, ("ngram",))
    with pytest.raises(DraftwiseError, match="holds no prompts"):
        run_bench(opts, PromptOptions(prompt_file=str(empty)))
    with pytest.raises(DraftwiseError, match="unknown category"):
        run_bench(opts, PromptOptions(categories=("nope",)))
    with pytest.raises(DraftwiseError, match="K range"):
        BenchOptions(target, ("ngram",), ks="5-2")
    with pytest.raises(DraftwiseError, match="unknown model 'no-such-model'"):
        run_bench(opts, PromptOptions(n_prompts=1))


def test_prompts_too_long_are_skipped_or_refused(tiny_models, tmp_path):
    from draftwise.bench import run_bench

    tgt, _ = map(str, tiny_models)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "the dog " * 200}) + "\n")
    with pytest.raises(DraftwiseError, match="no prompt fits the context of 256 tokens"):
        run_bench(BenchOptions(tgt, ("ngram",)), PromptOptions(prompt_file=str(prompts)),
                  BackendOptions(n_ctx=256), str(tmp_path))


def test_report_from_synthetic_runs(tmp_path):
    """Report files from hand-made runs (no models): divergences are listed with their margin."""
    from draftwise.bench.report import BenchResult, write_report

    recs = [_rec(AR0, f"p{i}", 0, 1.0) for i in range(3)]
    recs += [_rec(D2, f"p{i}", 0, 0.8, rounds=[(2, 1)] * 6, identical=i > 0) for i in range(3)]
    recs[3].diverged_at, recs[3].ar_margin = 7, 0.004
    recs[0].category = recs[3].category = "rag"  # p0 is rag, p1 and p2 code
    summaries = summarize(recs, 16)
    res = BenchResult(BenchOptions("t", drafts=("d",), ks=(2,)), {"cpus": 2}, [], [], recs,
                      summaries, recommend(summaries))
    paths = write_report(res, tmp_path)
    md = paths["markdown"].read_text()
    assert "1 of 3 speculative runs differ from AR: d K=2 on p0 at token 7 (margin 0.004)" in md
    assert "near-tie" in paths["html"].read_text()
    assert "| d K=2 | 0 | 1.25 | 1.25 |" in md  # speedup by category: rag, code
    data = json.loads(paths["json"].read_text())
    assert data["runs"][3]["ar_margin"] == 0.004 and data["runs"][3]["label"] == "d K=2"


# -- lenient (lossy) acceptance modes --------------------------------------------------------------

def test_sweep_runs_each_mode_where_it_applies():
    o = BenchOptions("t", drafts=("a",), ks=(2,), adaptive=False, temperatures=(0.0, 0.7),
                     accepts=("exact", "TopK:3", "typical:0.09", "exact"))
    assert o.accepts == ("exact", "topk:3", "typical:0.09,0.3")
    labels = [(c.label, c.temperature) for c in sweep_configs(o)]
    assert labels == [("AR", 0.0), ("a K=2", 0.0), ("a topk:3 (lossy) K=2", 0.0),
                      ("AR", 0.7), ("a K=2", 0.7), ("a typical:0.09,0.3 (lossy) K=2", 0.7)]
    with pytest.raises(DraftwiseError, match="is for sampling"):
        BenchOptions("t", accepts=("typical:0.1",))  # greedy only: typical never applies
    with pytest.raises(DraftwiseError, match="'nope' is not an acceptance mode"):
        BenchOptions("t", accepts=("nope",))
    with pytest.raises(DraftwiseError, match="at least one --accept"):
        BenchOptions("t", accepts=())


def test_lossy_configurations_are_reported_and_never_recommended(tmp_path):
    """A lossy configuration faster than everything: shown with its mode and lenient tokens,
    marked lossy, and the recommendation is the fastest exact one."""
    from draftwise.bench.report import BenchResult, write_report

    lossy = BenchConfig("d", 2, 0.0, "topk:3")
    recs = [_rec(AR0, f"p{i}", 0, 1.0) for i in range(4)]
    recs += [_rec(D2, f"p{i}", 0, 0.8, rounds=[(2, 1)] * 6) for i in range(4)]
    recs += [_rec(lossy, f"p{i}", 0, 0.4, rounds=[(2, 2)] * 4) for i in range(4)]
    for r in recs[8:]:
        r.n_lenient = 3
    summaries = summarize(recs, 16)
    s = summaries[2]
    assert (s.accept, s.n_lenient, s.exact, s.label) == ("topk:3", 12, False,
                                                         "d topk:3 (lossy) K=2")
    (rec,) = recommend(summaries)
    assert rec.label == "d K=2" and "lossy" not in rec.text
    res = BenchResult(BenchOptions("t", drafts=("d",), ks=(2,), accepts=("exact", "topk:3")),
                      {"cpus": 2}, [], [], recs, summaries, [rec])
    paths = write_report(res, tmp_path)
    md = paths["markdown"].read_text()
    assert "acceptance: exact, topk:3 (lossy)" in md
    assert "| d | ? | 2 | 0 | topk:3 (lossy) |" in md and "| 12 (25.0%) |" in md
    assert "| d | ? | 2 | 0 | exact |" in md and "| 0 (0.0%) |" in md
    with (tmp_path / "bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["accept"], r["n_lenient"]) for r in rows] == [("exact", "0"), ("exact", "0"),
                                                            ("topk:3", "12")]
    data = json.loads(paths["json"].read_text())
    assert data["runs"][8]["n_lenient"] == 3 and data["options"]["accepts"] == ["exact", "topk:3"]


def test_sweep_with_a_lossy_mode_on_tiny_models(tiny_models, tmp_path):
    from draftwise.bench import run_bench

    tgt, draft = map(str, tiny_models)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "The quick brown fox"}\n{"prompt": "def quicksort(a):\\n"}\n')
    run_bench(BenchOptions(tgt, (draft,), ks=(4,), adaptive=False, max_tokens=30, repeats=1,
                           accepts=("exact", "topk:3")),
              PromptOptions(prompt_file=str(prompts)), BackendOptions(n_ctx=256), str(tmp_path))
    data = json.loads((tmp_path / "bench.json").read_text())
    by = {s["label"]: s for s in data["summaries"]}
    assert by[f"{draft} K=4"]["identical"] == 1.0 and by[f"{draft} K=4"]["n_lenient"] == 0
    lossy = by[f"{draft} topk:3 (lossy) K=4"]
    assert lossy["accept"] == "topk:3" and lossy["n_lenient"] > 0
    assert all(r["label"] != lossy["label"] for r in data["recommendations"])
    assert "tokens kept leniently" in (tmp_path / "report.md").read_text()
