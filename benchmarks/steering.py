"""Does a fine-tuned draft steer the target? Measure the style of the target's output.

The draft is trained (`draftwise distill --data benchmarks/data/styled.jsonl --loss ce`) on 48
functions written in one style: every parameter and the return type annotated, and a Google-style
docstring (Args:, Returns:). On the 16 held-out functions (templates never trained on) this runs
AR, exact speculative decoding and each lossy acceptance mode, with the stock draft and the
styled one, and reports how often the completion shows the style beside pass@1 (the function's
tests, in the sandbox), speedup over AR and the tokens accepted leniently.

Exact mode must give AR's completions whatever the draft (the target keeps the veto); only a
lossy mode can move the style. Run it on the real pair (see README, "Does a fine-tuned draft
steer the target?"):

  python benchmarks/steering.py -t qwen2.5-coder-1.5b -d qwen2.5-coder-0.5b \
      -d qwen2.5-coder-0.5b-styled --accept topk:2 --accept topk:5 --accept ratio:0.3 \
      --out steering-results
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from draftwise.bench.prompts import Prompt
from draftwise.loader import BackendOptions
from draftwise.quality.cmd import run_quality
from draftwise.quality.report import QualityResult, row, write_report
from draftwise.quality.runner import QualityOptions
from draftwise.quality.sandbox import Limits, Outcome, run_program
from draftwise.quality.tasks import HUMANEVAL_STOP, Problem, humaneval_program

DATA = Path(__file__).resolve().parent / "data" / "styled.jsonl"
_DEF = re.compile(r"^[ \t]*def\s+\w+\s*\((?P<params>[^)]*)\)\s*(?P<ret>->[^:]+)?:", re.M)


class Styled:
    """The held-out rows of styled.jsonl as a quality task (completed as raw text, checked like
    HumanEval)."""

    name = "styled"
    stop = HUMANEVAL_STOP
    max_tokens = 192

    def __init__(self, path: Path = DATA, split: str = "held_out"):
        self.rows = [r for r in map(json.loads, path.read_text().splitlines())
                     if r["split"] == split]

    def problems(self) -> list[Problem]:
        return [Problem(Prompt(r["id"], self.name, r["prompt"], chat=False), r["test"],
                        r["entry_point"]) for r in self.rows]

    def check(self, problem: Problem, completion: str, limits: Limits) -> Outcome:
        return run_program(humaneval_program(problem, completion), limits)


def _split_params(params: str) -> list[str]:
    """Top-level comma split: 'a: dict[str, int], b' -> ['a: dict[str, int]', 'b']."""
    out, depth, cur = [], 0, ""
    for c in params:
        depth += c in "([{"
        depth -= c in ")]}"
        if c == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += c
    return [p.strip() for p in [*out, cur] if p.strip() not in ("", "*", "/", "self", "cls")]


def annotated(completion: str) -> bool:
    """Whether the completion's first def has a return annotation and every parameter annotated."""
    m = _DEF.search(completion)
    return bool(m and m["ret"] and all(":" in p for p in _split_params(m["params"])))


def google_docstring(completion: str) -> bool:
    """Whether the completion has a docstring with Args: and Returns: sections."""
    return '"""' in completion and "Args:" in completion and "Returns:" in completion


def style_table(res: QualityResult) -> list[dict]:
    """Per mode: the style rates over its completions, next to pass@1, speedup and lenient."""
    out = []
    for s in res.summaries:
        recs = [r for r in res.records if r.mode == s.mode and r.task == s.task]
        out.append({"mode": s.mode, "n": len(recs),
                    "annotated": sum(annotated(r.completion) for r in recs) / len(recs),
                    "docstring": sum(google_docstring(r.completion) for r in recs) / len(recs),
                    "pass_at_1": s.pass_at_1, "speedup": 1.0 if s.is_ar else s.speedup,
                    "differs": s.differs, "lenient_frac": s.lenient_frac})
    return out


def markdown(table: list[dict]) -> str:
    head = "| mode | n | annotated | Google docstring | pass@1 | speedup | differs from AR | " \
           "lenient tokens |\n|---|---|---|---|---|---|---|---|\n"
    return head + "".join(
        f"| {t['mode']} | {t['n']} | {t['annotated']:.0%} | {t['docstring']:.0%} | "
        f"{t['pass_at_1']:.3f} | {t['speedup']:.2f} | "
        f"{'-' if t['differs'] is None else format(t['differs'], '.0%')} | "
        f"{t['lenient_frac']:.1%} |\n" for t in table)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-t", "--target", required=True)
    ap.add_argument("-d", "--draft", action="append", required=True,
                    help="draft (repeatable): the stock one, then the styled one")
    ap.add_argument("--accept", action="append", default=[], help="lossy mode (repeatable)")
    ap.add_argument("-k", type=int, default=3)
    ap.add_argument("--n-problems", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default="steering-results")
    a = ap.parse_args(argv)
    opts = QualityOptions(a.target, tuple(a.draft), (), tuple(a.accept), a.k, a.n_problems,
                          max_tokens=a.max_tokens)
    res = run_quality(opts, BackendOptions(threads=a.threads, n_ctx=a.ctx),
                      tasks=[Styled(Path(a.data))])
    write_report(res, a.out)
    table = style_table(res)
    md = markdown(table)
    (Path(a.out) / "steering.md").write_text(md)
    (Path(a.out) / "steering.json").write_text(json.dumps(table, indent=1))
    print(md)
    for s in res.summaries:
        print(" | ".join(row(s)))


if __name__ == "__main__":
    main()
