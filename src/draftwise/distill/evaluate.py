"""Stage `eval`: the draft before and after, on prompts training never saw.

The target greedily continues every held-out prompt (same categories as training) and a few
prompts of each other category (cached in eval/conts/), keeping the rows p it decoded them
from. One teacher-forced pass of each draft over those texts gives, per position, greedy
agreement (the draft's argmax is the target's token, as `advise` measures it) and the expected
acceptance under sampling at temperature 1, sum_v min(p, q). Reported per category:
eval/report.json, report.md, agreement.png, and one line of verdict.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from draftwise.backends.base import Backend
from draftwise.bench.advise import greedy_agreement, overlap, teacher_forced
from draftwise.bench.prompts import Prompt
from draftwise.config import SamplingConfig
from draftwise.distill.data import Job, Split, continue_rows, render_ids
from draftwise.distill.rundir import RunDir, read_json
from draftwise.files import atomic_path, write_json

SAMPLING = SamplingConfig(temperature=1.0)
BETTER = 1.0  # points of agreement that count as a gain
HARM = 2.0  # points an other category may lose before the verdict says so


@dataclass
class Tally:
    """Sums over positions of one draft in one category."""

    positions: int = 0
    agree: float = 0.0
    accept: float = 0.0

    @property
    def agreement(self) -> float:
        return self.agree / self.positions if self.positions else float("nan")

    @property
    def acceptance(self) -> float:
        return self.accept / self.positions if self.positions else float("nan")


@dataclass
class EvalResult:
    """tallies[draft][category]; groups[category] is 'trained' or 'other'; before/after name the
    two drafts the verdict compares."""

    drafts: dict[str, str]  # label -> weights (model path, "+ adapter" when one is applied)
    groups: dict[str, str]
    tallies: dict[str, dict[str, Tally]] = field(default_factory=dict)
    before: str = ""
    after: str = ""
    verdict: str = ""
    skipped: list[str] = field(default_factory=list)
    # per category, positions where only `after` agrees / only `before` does
    flips: dict[str, list[int]] = field(default_factory=dict)

    @property
    def gained(self) -> int:
        """Positions of the trained group only `after` gets right."""
        return sum(f[0] for c, f in self.flips.items() if self.groups[c] == "trained")

    @property
    def lost(self) -> int:
        return sum(f[1] for c, f in self.flips.items() if self.groups[c] == "trained")

    def delta(self, cat: str, what: str = "agreement") -> float:
        """Points (x100) after minus before in one category."""
        a, b = self.tallies[self.after][cat], self.tallies[self.before][cat]
        return 100 * (getattr(a, what) - getattr(b, what))

    def pooled(self, label: str, group: str, what: str = "agreement") -> float:
        ts = [t for c, t in self.tallies[label].items() if self.groups[c] == group]
        n = sum(t.positions for t in ts)
        key = "agree" if what == "agreement" else "accept"
        return sum(getattr(t, key) for t in ts) / n if n else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self) | {"gained": self.gained, "lost": self.lost}
        for label, cats in self.tallies.items():
            for c, t in cats.items():
                d["tallies"][label][c].update(agreement=t.agreement, acceptance=t.acceptance)
        return d


def eval_prompts(split: Split) -> list[tuple[str, Prompt]]:
    """(group, prompt) in evaluation order: the held-out prompts ('trained'), then the others."""
    return [("trained", p) for p in split.held_out] + [("other", p) for p in split.other]


def target_continuation(run: RunDir, i: int, group: str, p: Prompt, target: Backend,
                        max_tokens: int, max_prompt_tokens: int) -> tuple[dict, np.ndarray | None]:
    """Evaluation prompt i's record {id, category, group, prompt, cont} (cont: the target's greedy
    continuation; none when the prompt is too long) and the target's logits rows [L, V] it was
    decoded from, or None when the record was cached in eval/conts/ (one of another prompt,
    copied in from another run, is decoded again). Decoded one at a time (the pipeline gives a
    one-sequence target): batch shape moves llama.cpp's logits a little, and decoded 4 at a time
    the 1.5B Q8_0 target's greedy text left the lone one's at a near-tie in 17 of 61 evaluation
    prompts, so the positions every run is measured on would follow the batch composition."""
    d = run.stage("eval") / "conts"
    d.mkdir(exist_ok=True)
    f = d / f"{i:05d}.json"
    rec = read_json(f) if f.is_file() else None
    if rec is not None and (rec["id"], rec["category"]) == (p.id, p.category):
        return rec, None
    ids = render_ids(p, target)
    rec = {"id": p.id, "category": p.category, "group": group, "prompt": ids, "cont": []}
    tl = None
    if len(ids) <= max_prompt_tokens:
        rec["cont"], rows = continue_rows(target, [Job(ids, 0.0, 0)], max_tokens, np.array)[0]
        tl = np.concatenate(rows)
    write_json(f, rec)
    return rec, tl


def report_row(group: str, category: str, trained_label: str | None, several: bool) -> str:
    """The report row of an evaluation prompt: its category; held-out prompts of a prompt file
    (trained_label: the file's name) under the file's name, split by category when the file's
    held-out prompts have several (name/category), so that they never merge with the other
    categories' rows. The verdict pools every trained row."""
    if group != "trained" or not trained_label:
        return category
    return f"{trained_label}/{category}" if several else trained_label


def run_eval(run: RunDir, split: Split, target: Backend, drafts: dict[str, Backend],
             before: str, after: str, max_tokens: int, max_prompt_tokens: int,
             trained_label: str | None = None, progress=None) -> EvalResult:
    """Evaluate each draft (label -> backend); the verdict compares `before` with `after`.
    Expected acceptance takes p from the rows the target decoded its continuation from, or, for a
    continuation cached by an earlier run, from teacher-forcing it (the same up to rounding)."""
    if run.is_done("eval"):
        return _load(read_json(run.path / "eval" / "report.json"))
    prompts = eval_prompts(split)
    res = EvalResult({k: b.weights for k, b in drafts.items()}, {}, before=before, after=after)
    several = len({p.category for g, p in prompts if g == "trained"}) > 1
    rows = [report_row(g, p.category, trained_label, several) for g, p in prompts]
    for (g, _), cat in zip(prompts, rows):
        res.groups[cat] = g
    res.tallies = {k: {c: Tally() for c in res.groups} for k in drafts}
    res.flips = {c: [0, 0] for c in res.groups}
    task = progress.add_task("eval", total=len(prompts), info="") if progress else None
    for i, ((group, p), cat) in enumerate(zip(prompts, rows)):
        rec, tl = target_continuation(run, i, group, p, target, max_tokens, max_prompt_tokens)
        if not rec["cont"]:
            res.skipped.append(f"{rec['category']}/{rec['id']}")
        else:
            if tl is None:
                tl = teacher_forced(target, rec["prompt"], rec["cont"])
            agree = {}
            for label, be in drafts.items():
                dl = teacher_forced(be, rec["prompt"], rec["cont"])
                agree[label] = greedy_agreement(dl, rec["cont"], target.vocab.n_vocab)
                t = res.tallies[label][cat]
                t.positions += len(rec["cont"])
                t.agree += float(agree[label].sum())
                t.accept += float(overlap(tl, dl, SAMPLING).sum())
            res.flips[cat][0] += int(((agree[after] == 1) & (agree[before] == 0)).sum())
            res.flips[cat][1] += int(((agree[after] == 0) & (agree[before] == 1)).sum())
        if progress:
            progress.update(task, advance=1)
    res.verdict = verdict(res)
    write_report(run, res)
    run.mark_done("eval", {"verdict": res.verdict})
    return res


def sign_test(gained: int, lost: int) -> float:
    """Two-sided exact p-value that positions flip either way equally often (McNemar)."""
    n, k = gained + lost, min(gained, lost)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def verdict(res: EvalResult) -> str:
    """One line: better / no clear change / worse / mixed, with the numbers behind it. A change
    counts only when it is >= 1 point (a loss elsewhere: >= HARM) and the positions that flipped
    favour one side beyond chance (sign test, p < 0.05): a few hundred positions move by a point
    or two on noise, and 3 prompts of qa (58 positions) by 3.4 on two flips."""
    b, a = res.pooled(res.before, "trained"), res.pooled(res.after, "trained")
    gain = 100 * (a - b)
    p = sign_test(res.gained, res.lost)
    other = [c for c, g in res.groups.items() if g == "other"
             and res.tallies[res.before][c].positions]
    others = [res.delta(c) for c in other]
    harmed = [c for c in other if res.delta(c) <= -HARM and sign_test(*res.flips[c]) < 0.05]
    ea, eb = res.pooled(res.after, "trained", "acceptance"), res.pooled(res.before, "trained",
                                                                        "acceptance")
    if gain >= BETTER and p < 0.05 and not harmed:
        word = "better"
    elif gain >= BETTER and p < 0.05:
        word = f"mixed (gains where trained, loses in {', '.join(harmed)})"
    elif gain <= -BETTER and p < 0.05:
        word = "worse"
    else:
        word = "no clear change"
    losses = [c for c in other if res.delta(c) <= -HARM and c not in harmed]
    note = f" ({', '.join(losses)}: within chance)" if losses else ""
    other = (f"; other categories {min(others):+.1f} to {max(others):+.1f} points{note}"
             if others else "")
    return (f"verdict: {word}: held-out greedy agreement {100 * b:.1f}% -> {100 * a:.1f}% "
            f"({gain:+.1f} points; {res.gained} positions gained, {res.lost} lost, p={p:.2g})"
            f"{other}; expected acceptance at T=1 {100 * eb:.1f}% -> {100 * ea:.1f}%")


def _load(d: dict) -> EvalResult:
    res = EvalResult(d["drafts"], d["groups"], before=d["before"], after=d["after"],
                     verdict=d["verdict"], skipped=d.get("skipped", []),
                     flips=d.get("flips", {}))
    res.tallies = {k: {c: Tally(t["positions"], t["agree"], t["accept"]) for c, t in v.items()}
                   for k, v in d["tallies"].items()}
    return res


def markdown(res: EvalResult) -> str:
    labels = list(res.tallies)
    head = ["category", "group", "positions"] + [f"agreement {k}" for k in labels] + \
        ["change", "flips +/-"] + [f"acceptance T=1 {k}" for k in labels] + ["change"]
    lines = ["# distill evaluation", "", res.verdict, "",
             f"before = `{res.before}` ({res.drafts[res.before]}), after = `{res.after}` "
             f"({res.drafts[res.after]}). Agreement: the draft's argmax is the target's greedy "
             "token (teacher-forced); flips: positions only after / only before agrees; acceptance: "
             "sum min(p, q) at temperature 1.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c, g in res.groups.items():
        t0 = res.tallies[labels[0]][c]
        cells = [c, g, str(t0.positions)]
        cells += [f"{100 * res.tallies[k][c].agreement:.1f}%" for k in labels]
        cells.append(f"{res.delta(c):+.1f}")
        cells.append("+{}/-{}".format(*res.flips[c]))
        cells += [f"{100 * res.tallies[k][c].acceptance:.1f}%" for k in labels]
        cells.append(f"{res.delta(c, 'acceptance'):+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    if res.skipped:
        lines += ["", f"skipped (prompt too long or no continuation): {', '.join(res.skipped)}"]
    return "\n".join(lines) + "\n"


def plot(res: EvalResult) -> bytes:
    """PNG: greedy agreement per category, one bar per draft."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cats = list(res.groups)
    labels = list(res.tallies)
    fig = Figure(figsize=(max(6.0, 1.1 * len(cats) + 2), 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    w = 0.8 / len(labels)
    x = np.arange(len(cats))
    for i, k in enumerate(labels):
        ax.bar(x + (i - (len(labels) - 1) / 2) * w,
               [100 * res.tallies[k][c].agreement for c in cats], w, label=k)
    ax.set_xticks(x, [f"{c}\n({res.groups[c]})" for c in cats])
    ax.set_ylabel("greedy agreement with the target (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    ax.set_title("draft agreement per category, before and after distillation")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write_report(run: RunDir, res: EvalResult) -> Path:
    d = run.stage("eval")
    with atomic_path(d / "agreement.png") as tmp:
        tmp.write_bytes(plot(res))
    with atomic_path(d / "report.md") as tmp:
        tmp.write_text(markdown(res))
    with atomic_path(d / "report.json") as tmp:
        tmp.write_text(json.dumps(res.to_dict(), indent=1))
    return d / "report.md"
