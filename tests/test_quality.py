"""bench --quality: tasks and their checks, options, a run of every mode on tiny models, report."""

import csv
import json
import subprocess
import sys

import pytest

from draftwise.errors import DraftwiseError
from draftwise.quality.runner import QualityOptions, first_difference
from draftwise.quality.sandbox import Limits, run_program
from draftwise.quality.tasks import HumanEval, Math, get_task, last_number, select

FAST = Limits(wall_s=10, cpu_s=5, memory_mb=512)


def _canonical(task_id: str) -> str:
    from importlib import resources

    text = resources.files("draftwise.quality").joinpath("data", "humaneval.jsonl").read_text()
    return next(r for r in map(json.loads, text.splitlines()) if r["task_id"] == task_id)[
        "canonical_solution"]


def test_humaneval_canonical_solutions_pass_wrong_ones_fail():
    task = HumanEval()
    problems = task.problems()
    assert len(problems) == 164 and problems[0].id == "HumanEval/0"
    assert task.stop == ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
    for p in problems[::8]:
        out = task.check(p, _canonical(p.id), FAST)
        assert out.passed, (p.id, out)
        assert not task.check(p, "    return None\n", FAST).passed, p.id
    # a completion that loops forever is stopped, not waited for
    assert task.check(problems[0], "    while True:\n        pass\n",
                      Limits(wall_s=3, cpu_s=1)).status == "timeout"


def test_math_answers_checked_as_numbers():
    task = Math()
    probs = task.problems()
    assert len(probs) == 80 and probs[0].answer == "1000" and probs[0].prompt.chat
    assert "Jen decides" in probs[0].prompt.text
    assert task.check(probs[0], "400 + 600 = 1,000.\nThe answer is 1,000.", FAST).passed
    assert task.check(probs[0], "The answer is 1000.0", FAST).passed
    out = task.check(probs[0], "It costs 600 dollars.", FAST)
    assert (out.status, out.detail) == ("failed", "answered 600, expected 1000")
    assert not task.check(probs[0], "no idea", FAST).passed
    assert last_number("from -3 to 4.5.") == "4.5" and last_number("x") is None


def test_selection_and_bad_names():
    probs = HumanEval().problems()
    assert [p.id for p in select(probs, 2, 10)] == ["HumanEval/10", "HumanEval/11"]
    with pytest.raises(DraftwiseError, match="no problems left after skipping the first 200"):
        select(probs, 5, 200)
    with pytest.raises(DraftwiseError, match="unknown quality task 'mbpp'; choose from humaneval"):
        get_task("mbpp")


def test_options_validate_modes_once():
    o = QualityOptions("t", ("d",), accepts=("topk:3", "exact", "topk:3", "ratio:0.50"))
    assert o.accepts == ("exact", "topk:3", "ratio:0.5")  # exact first, canonical, no repeats
    assert [o.label(m) for m in o.modes] == ["AR", "exact", "topk:3", "ratio:0.5"]
    two = QualityOptions("t", ("a", "b"))
    assert [two.label(m) for m in two.modes] == ["AR", "a exact", "b exact"]
    for kw, msg in [({"accepts": ("topk:x",)}, "accept"),
                    ({"accepts": ("typical:0.1",)}, "is for sampling"),
                    ({"tasks": ("nope",)}, "unknown quality task"),
                    ({"drafts": ()}, "needs a draft"),
                    ({"k": 0}, "K must be between"),
                    ({"n_problems": 0}, "--n-problems must be >= 1")]:
        with pytest.raises(DraftwiseError, match=msg):
            QualityOptions(**{"target": "t", "drafts": ("d",), **kw})


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2


class Toy:
    """Three raw-text prompts; a completion passes when its length is even (in the sandbox)."""

    name = "toy"
    stop = ("\n\n",)
    max_tokens = 24

    def problems(self):
        from draftwise.bench.prompts import Prompt
        from draftwise.quality.tasks import Problem

        return [Problem(Prompt(f"toy/{i}", "toy", t, chat=False)) for i, t in
                enumerate(["def quicksort(a):\n", "The quick brown fox", "for i in range(10):"])]

    def check(self, problem, completion, limits):
        return run_program(f"assert len({completion!r}) % 2 == 0", limits)


@pytest.fixture(scope="module")
def far_draft(tiny_models, tmp_path_factory):
    """A random draft with the tiny target's tokenizer: it disagrees with the target often."""
    from tiny import build_model
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models[0])
    return build_model(tmp_path_factory.mktemp("far") / "m", seed=7, tok=tok)


def test_every_mode_on_tiny_models_and_the_report(tiny_models, far_draft, tmp_path):
    from draftwise.loader import BackendOptions
    from draftwise.quality.cmd import run_quality
    from draftwise.quality.report import write_report

    tgt = str(tiny_models[0])
    opts = QualityOptions(tgt, (str(far_draft),), (), ("topk:2", "topk:320"), k=3, n_problems=3,
                          limits=FAST)
    res = run_quality(opts, BackendOptions(n_ctx=256), tasks=[Toy()])
    assert len(res.records) == 3 * 4
    by = {(r.mode, r.problem_id): r for r in res.records}
    for i in range(3):
        ar, ex = by[("AR", f"toy/{i}")], by[("exact", f"toy/{i}")]
        assert ex.completion == ar.completion and ex.differs is False and ex.n_lenient == 0
        assert ex.passed == ar.passed == (len(ar.completion) % 2 == 0)
    loose = [by[("topk:320", f"toy/{i}")] for i in range(3)]
    assert sum(r.n_lenient for r in loose) > 0 and any(r.differs for r in loose)
    for r in loose:
        assert r.n_lenient <= r.n_accepted <= r.n_drafted
        assert (r.diverged_at is not None) == r.differs
    s = {x.mode: x for x in res.summaries}
    assert s["exact"].pass_at_1 == s["AR"].pass_at_1 and s["exact"].differs == 0
    assert s["topk:320"].n_lenient == sum(r.n_lenient for r in loose)
    assert s["topk:320"].alpha > s["exact"].alpha  # the lenient rule keeps more drafts
    paths = write_report(res, tmp_path)
    md = paths["markdown"].read_text()
    assert "pass@1 equal; completions identical to AR's on 100% of problems" in md
    assert "topk:320 (lossy)" in md
    with paths["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert [r["mode"] for r in rows] == ["AR", "exact", "topk:2", "topk:320"]
    data = json.loads(paths["json"].read_text())
    assert len(data["records"]) == 12 and data["exact"]
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in paths["html"].read_text()


def test_cli_refuses_bad_quality_input(tiny_models):
    exe = [sys.executable, "-m", "draftwise.cli", "bench", "--target", str(tiny_models[0])]
    for args, msg in [(["--quality", "humaneval", "-k", "1-4"], "bench --quality takes one K"),
                      (["--quality", "humaneval", "--accept", "topk:1"], "topk:N (N >= 2)"),
                      (["--quality", "mbpp"], "unknown quality task 'mbpp'"),
                      (["--quality", "math", "--temperature", "0.7"], "decodes greedily")]:
        r = subprocess.run([*exe, *args], capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
