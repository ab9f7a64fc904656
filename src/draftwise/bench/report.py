"""Write a sweep's results: bench.json, bench.csv, report.md (+ plots/*.png), report.html.

The HTML file is self-contained: its plots are embedded as base64 PNG.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from draftwise.bench.options import BenchOptions
from draftwise.bench.plots import PLOTS
from draftwise.bench.runner import RunRecord
from draftwise.bench.summary import ConfigSummary, Recommendation

METHOD = (
    "Every prompt and repeat runs autoregressive decoding (AR) and each configuration back to back "
    "in one process, in an order rotated per prompt and repeat. Speedup is the geometric mean over "
    "(prompt, repeat) pairs of decode tok/s divided by AR's on the same pair, with a 95% "
    "percentile-bootstrap interval; prefill is excluded (bench.json and bench.csv also give "
    "speedup_e2e, which includes it). alpha = accepted / drafted tokens; "
    "tau = tokens per target forward. Acceptance per position is P(position i accepted | "
    "positions before it accepted). Adaptive K keeps one controller per configuration through "
    "the sweep (measured costs carry over; each new prompt starts from the long-run "
    "acceptance), as in `serve` and `generate`. Configurations marked lossy use a lenient "
    "acceptance mode (--accept): they keep draft tokens exact verification would reject, so their "
    "output is not the target's; `lenient tokens` counts those tokens. They are never recommended.")


@dataclass
class BenchResult:
    options: BenchOptions
    machine: dict
    prompts: list[dict]  # id, category, n_prompt of each prompt run
    skipped: list[str]  # ids of prompts that did not fit the context
    records: list[RunRecord]
    summaries: list[ConfigSummary]
    recommendations: list[Recommendation]
    plots: dict[str, bytes] = field(default_factory=dict)


def _clean(x):
    """NaN/inf -> None so that the JSON is standard."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def to_json(res: BenchResult) -> dict:
    return _clean({
        "options": asdict(res.options), "machine": res.machine, "prompts": res.prompts,
        "skipped": res.skipped,
        "recommendations": [asdict(r) for r in res.recommendations],
        "summaries": [asdict(s) for s in res.summaries],
        "runs": [asdict(r) | {"label": r.config.label} for r in res.records],
    })


CSV_FIELDS = ("label", "draft", "k", "temperature", "quant", "n_runs", "n_tokens", "tok_s",
              "tok_s_q1", "tok_s_q3", "speedup", "speedup_lo", "speedup_hi", "speedup_e2e",
              "alpha", "tau", "mean_k", "acceptance_at", "ms_draft", "ms_target", "ms_overhead",
              "identical", "accept", "n_lenient")


def _fmt(v, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _row(s: ConfigSummary) -> list[str]:
    k = "AR" if s.is_ar else ("adaptive" if s.k is None else str(s.k))
    ident = "-" if s.identical is None else f"{100 * s.identical:.0f}%"
    sp = "1.00" if s.is_ar else f"{s.speedup:.2f} [{s.speedup_lo:.2f}, {s.speedup_hi:.2f}]"
    accept = "-" if s.is_ar else s.accept if s.exact else f"{s.accept} (lossy)"
    lenient = "-" if s.is_ar else f"{s.n_lenient} ({100 * s.n_lenient / s.n_tokens:.1f}%)"
    return [s.draft, s.quant, k, f"{s.temperature:g}", accept,
            f"{s.tok_s:.1f} [{s.tok_s_q1:.1f}, {s.tok_s_q3:.1f}]", sp, _fmt(s.alpha),
            _fmt(s.tau), _fmt(s.mean_k, 1), _fmt(s.ms_draft, 1), _fmt(s.ms_target, 1),
            _fmt(s.ms_overhead, 1), ident, lenient]


HEADERS = ["draft", "quant", "K", "T", "accept", "tok/s median [IQR]", "speedup [95% CI]", "alpha",
           "tau", "drafted/round", "draft ms/tok", "verify ms/tok", "overhead ms/tok",
           "identical to AR", "lenient tokens"]


def _setup_lines(res: BenchResult) -> list[str]:
    o, m = res.options, res.machine
    cats = sorted({p["category"] for p in res.prompts})
    lines = [f"target: {o.target} ({m.get('target_path', '')})",
             f"drafts: {', '.join(o.drafts)}; K: {', '.join(map(str, o.ks))}"
             + ("; adaptive K" if o.adaptive else ""),
             f"temperatures: {', '.join(f'{t:g}' for t in o.temperatures)}; max_tokens "
             f"{o.max_tokens}; repeats {o.repeats}; p_min {o.p_min:g}",
             "acceptance: " + ", ".join(a if a == "exact" else f"{a} (lossy)" for a in o.accepts),
             f"prompts: {len(res.prompts)} ({', '.join(cats)})"
             + (f"; skipped (too long): {', '.join(res.skipped)}" if res.skipped else ""),
             f"machine: {m.get('platform', '?')}, {m.get('cpus', '?')} CPUs, threads "
             f"{m.get('threads') or 'default'}, backend {m.get('backend', '?')}, "
             f"{m.get('date', '')}"]
    return lines


def category_table(summaries: list[ConfigSummary]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of speedup per prompt category, or ([], []) with a single category."""
    cats = list(dict.fromkeys(c for s in summaries for c in s.by_category))
    if len(cats) < 2:
        return [], []
    rows = [[s.label, f"{s.temperature:g}"] + [_fmt(s.by_category.get(c)) for c in cats]
            for s in summaries if not s.is_ar]
    return ["configuration", "T", *cats], rows


def _divergence_lines(res: BenchResult) -> list[str]:
    """Greedy runs whose text differs from AR, with AR's top-2 logit margin where they part; lossy
    runs apart (they differ by design)."""
    greedy = [r for r in res.records if r.identical is not None]
    lossy = [r for r in greedy if r.config.accept != "exact"]
    exact = [r for r in greedy if r.config.accept == "exact"]
    diff = [r for r in exact if not r.identical]
    out = []
    if exact and not diff:
        out.append(f"Greedy: all {len(exact)} speculative runs with exact acceptance produced "
                   "exactly AR's tokens.")
    elif diff:
        parts = ", ".join(f"{r.config.label} on {r.prompt_id} at token {r.diverged_at} (margin "
                          f"{_fmt(r.ar_margin, 3)})" for r in diff[:10])
        out.append(f"Greedy: {len(diff)} of {len(exact)} speculative runs differ from AR: "
                   f"{parts}" + (" ..." if len(diff) > 10 else "") + ". A small margin is a "
                   "near-tie, where batched and one-token logits can round differently.")
    if lossy:
        same = sum(r.identical for r in lossy)
        out.append(f"Greedy, lossy acceptance: {same} of {len(lossy)} runs still produced AR's "
                   f"tokens; the others differ by design ({sum(r.n_lenient for r in lossy)} "
                   "tokens kept leniently).")
    return out


def markdown(res: BenchResult, plot_dir: str = "plots") -> str:
    out = ["# draftwise bench", "", "## Recommendation", ""]
    out += [f"- {r.text}" for r in res.recommendations] or ["- no speculative configuration ran"]
    out += ["", "## Setup", ""] + [f"- {line}" for line in _setup_lines(res)]
    out += ["", "## Results", "", "| " + " | ".join(HEADERS) + " |",
            "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(_row(s)) + " |" for s in res.summaries]
    head, rows = category_table(res.summaries)
    if head:
        out += ["", "### Speedup by prompt category", "", "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    out += ["", *_divergence_lines(res)]
    out += ["", "## Plots", ""]
    out += [f"![{name}]({plot_dir}/{name}.png)" for name in res.plots]
    out += ["", "## Method", "", METHOD, ""]
    return "\n".join(out)


def render_html(res: BenchResult) -> str:
    e = html.escape
    rec = "".join(f"<li>{e(r.text)}</li>" for r in res.recommendations)
    setup = "".join(f"<li>{e(line)}</li>" for line in _setup_lines(res))
    head = "".join(f"<th>{e(h)}</th>" for h in HEADERS)
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in _row(s)) + "</tr>"
                   for s in res.summaries)
    imgs = "".join(
        f'<figure><img alt="{e(n)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{e(n.replace('_', ' '))}</figcaption></figure>"
        for n, png in res.plots.items())
    div = "".join(f"<p>{e(line)}</p>" for line in _divergence_lines(res))
    head, crow = category_table(res.summaries)
    if head:
        div = ("<h3>Speedup by prompt category</h3><table><thead><tr>"
               + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"
               + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in crow)
               + "</tbody></table>" + div)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
             "padding:3px 6px;text-align:right}th{background:#eee}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>draftwise bench: {e(res.options.target)}</title><style>{style}</style></head>"
            f"<body><h1>draftwise bench</h1><h2>Recommendation</h2><ul>{rec}</ul>"
            f"<h2>Setup</h2><ul>{setup}</ul><h2>Results</h2><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table>{div}<h2>Plots</h2>{imgs}"
            f"<h2>Method</h2><p>{e(METHOD)}</p></body></html>\n")


def make_plots(summaries: list[ConfigSummary]) -> dict[str, bytes]:
    return {name: fn(summaries) for name, fn in PLOTS.items()}


def write_report(res: BenchResult, out_dir: str | Path) -> dict[str, Path]:
    """Write all outputs under out_dir; returns {kind: path}."""
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    if not res.plots:
        res.plots = make_plots(res.summaries)
    paths = {"json": out / "bench.json", "csv": out / "bench.csv", "markdown": out / "report.md",
             "html": out / "report.html"}
    paths["json"].write_text(json.dumps(to_json(res), indent=1))
    with paths["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for s in res.summaries:
            d = asdict(s)
            d["acceptance_at"] = ";".join(f"{a:.3f}" for a in s.acceptance_at)
            w.writerow(["" if d[c] is None else d[c] for c in CSV_FIELDS])
    for name, png in res.plots.items():
        paths[name] = out / "plots" / f"{name}.png"
        paths[name].write_bytes(png)
    paths["markdown"].write_text(markdown(res))
    paths["html"].write_text(render_html(res))
    return paths
