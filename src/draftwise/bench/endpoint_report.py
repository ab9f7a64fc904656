"""Write a `bench --endpoint` run: endpoints.json, endpoints.csv, endpoints.md, endpoints.html and
plots/endpoints_*.png, each to a temporary name first (a killed run leaves the last whole file).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

from matplotlib.figure import Figure

from draftwise.bench.endpoint import EndpointOptions, EndpointRun, LevelSummary
from draftwise.bench.plots import _png
from draftwise.bench.report import _clean, _fmt
from draftwise.files import atomic_path

METHOD = (
    "Each endpoint in turn, each concurrency level C in turn: C streams send the prompts (cycled) "
    "as streamed chat or text completions until the level's requests were sent or its time "
    "limit passed. TTFT: from sending a request to its first chunk with text. Chunk gap: time "
    "between chunks with text (a speculative server may send several tokens per chunk). ms per "
    "token: (last chunk - first chunk) / (tokens - 1), over a level's requests; tok/s per stream: "
    "the median over requests of (tokens - 1) / (last chunk - first chunk). Total tok/s: the "
    "level's generated tokens over its wall time. Tokens are the server's usage count where it "
    "sends one, else chunks. Acceptance (accepted / drafted draft tokens): summed over the "
    "responses where the server reports it per request (draftwise `speculative`, llama-server "
    "`timings`, vLLM `metrics.speculative_decoding`), else the difference of the server's "
    "/metrics counters before and after the level (llama-server, vLLM: the level's own requests "
    "only if nothing else ran), else SGLang's gauge of its most recent batch. Accept length: "
    "tokens per verify step, the bonus token included.")

HEADERS = ["endpoint", "engine", "C", "ok / sent", "total tok/s", "TTFT p50 / p90 ms",
           "chunk gap p50 / p90 ms", "ms / token", "tok/s per stream", "acceptance",
           "accept length", "acceptance from"]
CSV_FIELDS = ("endpoint", "label", "engine", "concurrency", "n_sent", "n_ok", "n_errors",
              "wall_s", "tokens", "total_tok_s", "ttft_p50", "ttft_p90", "gap_p50", "gap_p90",
              "tpot", "stream_tok_s", "acceptance", "drafted", "accepted", "accept_length",
              "acceptance_from")


def row(lv: LevelSummary) -> list[str]:
    return [lv.label, lv.engine, str(lv.concurrency), f"{lv.n_ok} / {lv.n_sent}",
            _fmt(lv.total_tok_s, 1), f"{_fmt(lv.ttft_p50, 0)} / {_fmt(lv.ttft_p90, 0)}",
            f"{_fmt(lv.gap_p50, 1)} / {_fmt(lv.gap_p90, 1)}", _fmt(lv.tpot, 1),
            _fmt(lv.stream_tok_s, 1), _fmt(lv.acceptance, 3), _fmt(lv.accept_length, 2),
            lv.acceptance_from]


def _levels(runs: list[EndpointRun]) -> list[LevelSummary]:
    return [lv for r in runs for lv in r.levels]


def _plot(runs: list[EndpointRun]) -> bytes:
    """Total tok/s, TTFT and tok/s per stream against concurrency, a line per endpoint."""
    fig = Figure(figsize=(14, 4))
    axes = fig.subplots(1, 3)
    panels = [("total_tok_s", "total tok/s"), ("ttft_p50", "TTFT p50 (ms)"),
              ("stream_tok_s", "tok/s per stream (median)")]
    for i, r in enumerate(runs):
        for ax, (attr, _) in zip(axes, panels):
            pts = [(lv.concurrency, getattr(lv, attr)) for lv in r.levels
                   if getattr(lv, attr) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", color=f"C{i % 10}",
                        label=f"{r.info.label} ({r.info.engine})")
    for ax, (_, name) in zip(axes, panels):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # total tok/s: every level has it
    if handles:
        axes[-1].legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle("Endpoints under load")
    return _png(fig)


def _setup(opts: EndpointOptions, prompts: list[dict], runs: list[EndpointRun]) -> list[str]:
    cats = sorted({p["category"] for p in prompts})
    lines = [f"{r.info.label}: {r.info.url}, engine {r.info.engine} (from {r.info.engine_from}), "
             f"model {r.info.model}" for r in runs]
    lines += [f"concurrency {', '.join(map(str, opts.concurrency))}; requests per level "
              f"{opts.requests or 'max(prompts, 2 x C)'}; time limit {opts.time_limit:g} s per "
              f"level; max_tokens {opts.max_tokens}; temperature {opts.temperature:g}",
              f"prompts: {len(prompts)} ({', '.join(cats)})",
              f"client: {platform.platform()}, {time.strftime('%Y-%m-%d %H:%M')}"]
    return lines


def to_json(opts: EndpointOptions, prompts: list[dict], runs: list[EndpointRun],
            failures: list[str]) -> dict:
    return _clean({
        "kind": "endpoint", "options": asdict(opts) | {"api_key": "(given)" if opts.api_key
                                                       else None}, "prompts": prompts,
        "endpoints": [asdict(r.info) for r in runs], "failures": failures,
        "levels": [asdict(lv) for lv in _levels(runs)],
        "requests": [asdict(q) for r in runs for q in r.records]})


def markdown(opts, prompts, runs, failures, plot: str | None) -> str:
    out = ["# draftwise bench --endpoint", "", "## Setup", ""]
    out += [f"- {line}" for line in _setup(opts, prompts, runs)]
    if failures:
        out += ["", "## Stopped early", ""] + [f"- {f}" for f in failures]
    out += ["", "## Results", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(row(lv)) + " |" for lv in _levels(runs)]
    errs = [(lv, e) for lv in _levels(runs) for e in lv.errors]
    if errs:
        out += ["", "Errors:", ""] + [f"- {lv.label} C={lv.concurrency}: {e}" for lv, e in errs]
    if plot:
        out += ["", "## Plots", "", f"![endpoints]({plot})"]
    out += ["", "## Method", "", METHOD, ""]
    return "\n".join(out)


def render_html(opts, prompts, runs, failures, png: bytes | None) -> str:
    e = html.escape
    li = "".join(f"<li>{e(x)}</li>" for x in _setup(opts, prompts, runs))
    stop = ("<h2>Stopped early</h2><ul>" + "".join(f"<li>{e(f)}</li>" for f in failures)
            + "</ul>") if failures else ""
    head = "".join(f"<th>{e(h)}</th>" for h in HEADERS)
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row(lv)) + "</tr>"
                   for lv in _levels(runs))
    errs = "".join(f"<li>{e(lv.label)} C={lv.concurrency}: {e(x)}</li>"
                   for lv in _levels(runs) for x in lv.errors)
    img = (f'<figure><img alt="endpoints" src="data:image/png;base64,'
           f'{base64.b64encode(png).decode()}"></figure>') if png else ""
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
             "padding:3px 6px;text-align:right}th{background:#eee}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>draftwise bench --endpoint</title><style>{style}</style></head><body>"
            f"<h1>draftwise bench --endpoint</h1><h2>Setup</h2><ul>{li}</ul>{stop}"
            f"<h2>Results</h2><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
            + (f"<p>Errors:</p><ul>{errs}</ul>" if errs else "")
            + f"<h2>Plots</h2>{img}<h2>Method</h2><p>{e(METHOD)}</p></body></html>\n")


def _write(path: Path, data: str | bytes) -> None:
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)


def write_report(opts: EndpointOptions, prompts: list[dict], runs: list[EndpointRun],
                 failures: list[str], out_dir: str | Path) -> dict[str, Path]:
    """Write all outputs under out_dir; returns {kind: path}."""
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "endpoints.json", "csv": out / "endpoints.csv",
             "markdown": out / "endpoints.md", "html": out / "endpoints.html"}
    _write(paths["json"], json.dumps(to_json(opts, prompts, runs, failures), indent=1))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_FIELDS)
    for lv in _levels(runs):
        d = asdict(lv)
        w.writerow(["" if d[c] is None else d[c] for c in CSV_FIELDS])
    _write(paths["csv"], buf.getvalue())
    png = _plot(runs) if _levels(runs) else None
    if png:
        paths["plot"] = out / "plots" / "endpoints_load.png"
        _write(paths["plot"], png)
    _write(paths["markdown"], markdown(opts, prompts, runs, failures,
                                       "plots/endpoints_load.png" if png else None))
    _write(paths["html"], render_html(opts, prompts, runs, failures, png))
    return paths
