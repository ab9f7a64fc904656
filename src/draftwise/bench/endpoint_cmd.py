"""`draftwise bench --endpoint`: run every endpoint and level, print a table, write the report.

Endpoints are measured one after another (they may share a machine); a failing one ends its own
run, the others still run, the report holds everything measured, and then the failure is raised
as one line.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

from rich.console import Console
from rich.table import Table

from draftwise.bench.endpoint import (
    Client,
    EndpointDown,
    EndpointOptions,
    EndpointRun,
    LevelDown,
    run_level,
    summarize,
)
from draftwise.bench.endpoint_report import HEADERS, row, write_report
from draftwise.bench.options import PromptOptions
from draftwise.bench.serverstats import acceptance_from_metrics
from draftwise.errors import DraftwiseError


def _label(url: str, taken: set[str]) -> str:
    u = urlparse(url)
    label = u.netloc + (u.path if u.path not in ("", "/") else "")
    n, base = 2, label
    while label in taken:
        label, n = f"{base} #{n}", n + 1
    taken.add(label)
    return label


def _line(lv) -> str:
    acc = ("" if lv.acceptance is None else
           f", acceptance {lv.acceptance:.3f} ({lv.acceptance_from})")
    ttft = "-" if lv.ttft_p50 is None else f"{lv.ttft_p50:.0f}"
    per = "-" if lv.stream_tok_s is None else f"{lv.stream_tok_s:.1f}"
    return (f"{lv.label} C={lv.concurrency}: {lv.n_ok}/{lv.n_sent} ok, {lv.total_tok_s:.1f} tok/s "
            f"total, TTFT p50 {ttft} ms, {per} tok/s per stream{acc}")


async def _run_endpoint(url: str, label: str, opts: EndpointOptions, prompts, con: Console,
                        runs: list[EndpointRun], failures: list[str]) -> None:
    client = Client(url, opts)
    run = None
    try:
        info = await client.probe(label)
        run = EndpointRun(info)
        runs.append(run)
        con.print(f"{label}: {info.engine} (from {info.engine_from}), model {info.model}"
                  + ("" if info.has_metrics else "; no /metrics"), highlight=False)
        for c in opts.concurrency:
            before = await client.metrics() if info.has_metrics else None
            n = opts.n_requests(len(prompts), c)
            with con.status(f"{label}: {n} requests, {c} at a time"):
                try:
                    records, wall = await run_level(client, info, prompts, c, n, opts.time_limit)
                except LevelDown as e:  # report what the level did before the server went
                    run.records += e.records
                    run.levels.append(summarize(info, c, e.records, e.wall,
                                                acceptance_from_metrics(None, None, None)))
                    raise
            after = await client.metrics() if info.has_metrics else None
            if info.engine == "unknown" and client.seen_engine:
                info.engine, info.engine_from = client.seen_engine, "responses"
            lv = summarize(info, c, records, wall, acceptance_from_metrics(info.engine, before,
                                                                           after))
            run.levels.append(lv)
            run.records += records
            con.print(_line(lv), highlight=False)
            if lv.n_ok == 0:
                raise EndpointDown(f"{url}: every request at concurrency {c} failed "
                                   f"({lv.errors[0] if lv.errors else 'no answer'})")
    except EndpointDown as e:
        failures.append(str(e))
        if run is not None:
            run.failure = str(e)
    finally:
        await client.close()


async def _run_all(opts: EndpointOptions, prompts, con: Console, runs, failures) -> None:
    taken: set[str] = set()
    for url in opts.endpoints:
        await _run_endpoint(url, _label(url, taken), opts, prompts, con, runs, failures)


def results_table(runs: list[EndpointRun]) -> Table:
    table = Table(title="draftwise bench --endpoint", header_style="bold")
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("endpoint", "engine", "acceptance from")
                         else "right")
    for r in runs:
        for lv in r.levels:
            table.add_row(*row(lv), style="red" if lv.n_errors else None)
    return table


def run_endpoint_bench(opts: EndpointOptions, prompt_opts: PromptOptions = PromptOptions(),
                       out_dir: str = "bench-results", console: Console | None = None
                       ) -> list[EndpointRun]:
    """Measure every endpoint at every concurrency level; write endpoints.{json,csv,md,html} and
    plots/ under out_dir. A dead or failing endpoint raises DraftwiseError (one line) after the
    report of what was measured is written."""
    con = console or Console()
    prompts = prompt_opts.load()
    runs: list[EndpointRun] = []
    failures: list[str] = []
    written = None
    try:
        asyncio.run(_run_all(opts, prompts, con, runs, failures))
    finally:  # also on Ctrl-C: what was measured is kept
        if any(r.levels for r in runs):
            written = write_report(opts, [{"id": p.id, "category": p.category} for p in prompts],
                                   runs, failures, out_dir)
    if written:
        con.print(results_table(runs))
        con.print(f"report: {written['html']} (also {written['markdown'].name}, "
                  f"{written['json'].name}, {written['csv'].name}, plots/)")
    if failures:
        more = f" (and {len(failures) - 1} more, see the report)" if len(failures) > 1 else ""
        where = f"; partial results in {written['html'].parent}" if written else ""
        raise DraftwiseError(f"{failures[0]}{more}{where}".replace("\n", " "))
    return runs
