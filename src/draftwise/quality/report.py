"""Summarize quality runs per (task, mode) and write quality.json, quality.csv, report.md,
report.html and plots/speedup_vs_pass1.png (bench's formats)."""

from __future__ import annotations

import base64
import csv
import html
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from draftwise.bench.plots import _png
from draftwise.bench.report import _clean, _fmt
from draftwise.bench.summary import bootstrap_ci
from draftwise.quality.runner import QualityOptions, QualityRecord

METHOD = (
    "Greedy decoding (pass@1 with one completion per problem). Every problem runs autoregressive "
    "decoding (AR), exact speculative decoding and each lossy acceptance mode back to back, in an "
    "order rotated per problem, with the same models and K. Completions are cut at the task's stop "
    "strings; HumanEval completions run with the problem's tests in a sandboxed child process "
    "(time, CPU, memory and file-size limits, a temporary directory, no network, no writes "
    "outside it: a guard against accidents, not a security boundary); math answers pass when "
    "their last number equals the reference. Speedup is the geometric mean over problems of "
    "decode tok/s divided by AR's on the same problem, with a 95% percentile-bootstrap interval. "
    "'differs' is the fraction of problems whose completion text differs from AR's; 'first diff' "
    "the mean index of the first differing generated token among them. 'lenient' counts tokens "
    "kept that exact verification would have rejected.")


@dataclass
class QualitySummary:
    task: str
    mode: str
    draft: str
    accept: str
    n: int
    n_passed: int
    pass_at_1: float
    speedup: float
    speedup_lo: float
    speedup_hi: float
    differs: float | None  # fraction of problems whose completion differs from AR's
    first_diff: float | None  # mean first differing token among them
    n_lenient: int
    lenient_frac: float  # lenient tokens / generated tokens
    alpha: float
    tau: float
    tok_s: float  # median

    @property
    def is_ar(self) -> bool:
        return self.draft == "none"


def summarize(records: list[QualityRecord]) -> list[QualitySummary]:
    """One summary per (task, mode), in first-seen order."""
    groups: dict[tuple[str, str], list[QualityRecord]] = defaultdict(list)
    for r in records:
        groups[(r.task, r.mode)].append(r)
    ar = {(r.task, r.problem_id): r for r in records if r.draft == "none"}
    out = []
    for (task, mode), runs in groups.items():
        pairs = [(r, ar[(task, r.problem_id)]) for r in runs if (task, r.problem_id) in ar]
        logs = np.log([r.tok_s / a.tok_s for r, a in pairs if r.tok_s > 0 and a.tok_s > 0])
        lo, hi = bootstrap_ci(logs)
        diffs = [r for r in runs if r.differs is not None]
        at = [r.diverged_at for r in diffs if r.differs]
        n_gen = sum(r.n_generated for r in runs)
        drafted = sum(r.n_drafted for r in runs)
        rounds = sum(r.n_rounds for r in runs)
        n_pass = sum(r.passed for r in runs)
        out.append(QualitySummary(
            task, mode, runs[0].draft, runs[0].accept, len(runs), n_pass, n_pass / len(runs),
            float(np.exp(logs.mean())) if logs.size else float("nan"), lo, hi,
            sum(r.differs for r in diffs) / len(diffs) if diffs else None,
            float(np.mean(at)) if at else None, sum(r.n_lenient for r in runs),
            sum(r.n_lenient for r in runs) / n_gen if n_gen else 0.0,
            sum(r.n_accepted for r in runs) / drafted if drafted else 0.0,
            n_gen / rounds if rounds else 0.0, float(np.median([r.tok_s for r in runs]))))
    return out


def exact_statements(summaries: list[QualitySummary]) -> list[str]:
    """Per task and draft: does exact SD give AR's pass@1 (and AR's completions)?"""
    out = []
    ar = {s.task: s for s in summaries if s.is_ar}
    for s in summaries:
        if s.accept != "exact" or s.task not in ar:
            continue
        a = ar[s.task]
        same = s.n_passed == a.n_passed
        ident = 1 - (s.differs or 0.0)
        text = (f"{s.task}: exact speculative decoding ({s.mode}) passes {s.n_passed}/{s.n} "
                f"problems, AR {a.n_passed}/{a.n}: pass@1 {'equal' if same else 'NOT equal'}; "
                f"completions identical to AR's on {ident:.0%} of problems.")
        if ident < 1:
            text += (" A differing greedy completion in exact mode is a near-tie where batched "
                     "and one-token logits round differently (see bench's divergence margins).")
        out.append(text)
    return out


@dataclass
class QualityResult:
    options: QualityOptions
    machine: dict
    skipped: list[str]
    records: list[QualityRecord]
    summaries: list[QualitySummary] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.summaries:
            self.summaries = summarize(self.records)


HEADERS = ["task", "mode", "n", "pass@1", "speedup [95% CI]", "differs from AR", "first diff",
           "lenient tokens", "alpha", "tau", "tok/s"]
CSV_FIELDS = ("task", "mode", "draft", "accept", "n", "n_passed", "pass_at_1", "speedup",
              "speedup_lo", "speedup_hi", "differs", "first_diff", "n_lenient", "lenient_frac",
              "alpha", "tau", "tok_s")


def row(s: QualitySummary) -> list[str]:
    sp = "1.00" if s.is_ar else f"{s.speedup:.2f} [{s.speedup_lo:.2f}, {s.speedup_hi:.2f}]"
    diff = "-" if s.differs is None else f"{100 * s.differs:.0f}%"
    lenient = "-" if s.is_ar else f"{s.n_lenient} ({100 * s.lenient_frac:.1f}%)"
    return [s.task, s.mode + ("" if s.is_ar or s.accept == "exact" else " (lossy)"), str(s.n),
            f"{s.pass_at_1:.3f} ({s.n_passed}/{s.n})", sp, diff, _fmt(s.first_diff, 1), lenient,
            "-" if s.is_ar else _fmt(s.alpha), _fmt(s.tau), _fmt(s.tok_s, 1)]


def plot_speedup_vs_pass1(summaries: list[QualitySummary]) -> bytes:
    """pass@1 against speedup (95% CI bars), a panel per task, a labelled point per mode; dotted:
    AR's speed and pass@1."""
    tasks = list(dict.fromkeys(s.task for s in summaries))
    fig = Figure(figsize=(6 * len(tasks), 4.2))
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, t in zip(axes, tasks):
        for i, s in enumerate(x for x in summaries if x.task == t):
            if s.is_ar:
                ax.axhline(s.pass_at_1, color="black", lw=1, ls=":")
                sp, err = 1.0, [[0.0], [0.0]]
            else:
                sp = s.speedup
                err = [[max(0.0, sp - s.speedup_lo)], [max(0.0, s.speedup_hi - sp)]]
            ax.errorbar([sp], [s.pass_at_1], xerr=err, color=f"C{i % 10}", capsize=3,
                        marker="s" if s.is_ar else "o")
            ax.annotate(s.mode, (sp, s.pass_at_1), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
        ax.axvline(1.0, color="black", lw=1, ls=":")
        ax.set_xlabel("speedup over AR (decode tok/s)")
        ax.set_ylabel("pass@1")
        ax.set_title(t)
    return _png(fig)


def _setup(res: QualityResult) -> list[str]:
    o, m = res.options, res.machine
    tasks = ", ".join(f"{s.task} ({s.n} problems)" for s in res.summaries if s.is_ar)
    return [f"target: {o.target}; drafts: {', '.join(o.drafts)}; K {o.k}; greedy",
            f"tasks: {tasks}, from problem {o.offset}; max_tokens "
            f"{o.max_tokens or 'task default'}" + (f"; skipped (too long): "
                                                   f"{', '.join(res.skipped)}" if res.skipped else ""),
            f"sandbox: wall {o.limits.wall_s:g}s, CPU {o.limits.cpu_s}s, memory "
            f"{o.limits.memory_mb} MB; network namespace {'yes' if m.get('netns') else 'no'}",
            f"machine: {m.get('platform', '?')}, {m.get('cpus', '?')} CPUs, backend "
            f"{m.get('backend', '?')}, {m.get('date', '')}"]


def markdown(res: QualityResult) -> str:
    out = ["# draftwise bench --quality", "", "## Exact mode", ""]
    out += [f"- {line}" for line in exact_statements(res.summaries)]
    out += ["", "## Setup", ""] + [f"- {line}" for line in _setup(res)]
    out += ["", "## Results", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(row(s)) + " |" for s in res.summaries]
    out += ["", "![speedup vs pass@1](plots/speedup_vs_pass1.png)", "", "## Method", "", METHOD,
            ""]
    return "\n".join(out)


def render_html(res: QualityResult, png: bytes) -> str:
    e = html.escape
    items = lambda lines: "".join(f"<li>{e(x)}</li>" for x in lines)  # noqa: E731
    head = "".join(f"<th>{e(h)}</th>" for h in HEADERS)
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row(s)) + "</tr>"
                   for s in res.summaries)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
             "padding:3px 6px;text-align:right}th{background:#eee}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>draftwise bench --quality: {e(res.options.target)}</title><style>{style}"
            f"</style></head><body><h1>draftwise bench --quality</h1><h2>Exact mode</h2>"
            f"<ul>{items(exact_statements(res.summaries))}</ul><h2>Setup</h2>"
            f"<ul>{items(_setup(res))}</ul><h2>Results</h2><table><thead><tr>{head}</tr>"
            f"</thead><tbody>{rows}</tbody></table><figure><img alt=\"speedup vs pass@1\" "
            f"src=\"data:image/png;base64,{base64.b64encode(png).decode()}\"></figure>"
            f"<h2>Method</h2><p>{e(METHOD)}</p></body></html>\n")


def write_report(res: QualityResult, out_dir: str | Path) -> dict[str, Path]:
    """Write all outputs under out_dir; returns {kind: path}."""
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    png = plot_speedup_vs_pass1(res.summaries)
    paths = {"json": out / "quality.json", "csv": out / "quality.csv",
             "markdown": out / "report.md", "html": out / "report.html",
             "plot": out / "plots" / "speedup_vs_pass1.png"}
    paths["json"].write_text(json.dumps(_clean({
        "options": asdict(res.options), "machine": res.machine, "skipped": res.skipped,
        "exact": exact_statements(res.summaries),
        "summaries": [asdict(s) for s in res.summaries],
        "records": [asdict(r) for r in res.records]}), indent=1))
    with paths["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for s in res.summaries:
            d = asdict(s)
            w.writerow(["" if d[c] is None else d[c] for c in CSV_FIELDS])
    paths["plot"].write_bytes(png)
    paths["markdown"].write_text(markdown(res))
    paths["html"].write_text(render_html(res, png))
    return paths
