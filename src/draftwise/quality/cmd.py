"""`draftwise bench --quality TASK`: run the modes with a progress bar, print the table and the
exact-mode statement, write the report."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from draftwise.bench.session import load_models, machine_info, prepare
from draftwise.loader import BackendOptions
from draftwise.quality.report import HEADERS, QualityResult, exact_statements, row, write_report
from draftwise.quality.runner import QualityOptions, QualityRecord, run_task
from draftwise.quality.sandbox import network_namespace
from draftwise.quality.tasks import Task, get_task, select


def run_quality(opts: QualityOptions, backend: BackendOptions = BackendOptions(),
                console: Console | None = None, tasks: Sequence[Task] | None = None
                ) -> QualityResult:
    """Every mode on opts.n_problems problems of each task (default: opts.tasks by name)."""
    con = console or Console()
    tasks = list(tasks) if tasks is not None else [get_task(t) for t in opts.tasks]
    con.print(f"loading {opts.target} and {len(opts.drafts)} draft(s)")
    records: list[QualityRecord] = []
    skipped: list[str] = []
    with load_models(opts.target, opts.drafts, backend) as models:
        for task in tasks:
            problems = select(task.problems(), opts.n_problems, opts.offset)
            room = (opts.max_tokens or task.max_tokens) + opts.k + 2
            kept, skip = prepare([p.prompt for p in problems], models, room)
            skipped += skip
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=con, transient=True) as prog:
                bar = prog.add_task(task.name, total=len(kept) * len(opts.modes))

                def done(r: QualityRecord, bar=bar) -> None:
                    prog.update(bar, advance=1, description=f"{r.problem_id} {r.mode} {r.status}"
                                f" {r.tok_s:.1f} tok/s")

                records += run_task(opts, task, kept, {p.id: p for p in problems},
                                    models.target, models.drafters, on_run=done)
        machine = machine_info(models) | {"netns": network_namespace()}
    return QualityResult(opts, machine, skipped, records)


def run_quality_bench(opts: QualityOptions, backend: BackendOptions = BackendOptions(),
                      out_dir: str = "bench-results", console: Console | None = None) -> None:
    con = console or Console()
    res = run_quality(opts, backend, con)
    paths = write_report(res, out_dir)
    table = Table(title="draftwise bench --quality (greedy)", header_style="bold")
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("task", "mode") else "right")
    for s in res.summaries:
        table.add_row(*row(s))
    con.print(table)
    for line in exact_statements(res.summaries):
        con.print(line, highlight=False)
    con.print(f"report: {paths['html']} (also {paths['markdown'].name}, {paths['json'].name}, "
              f"{paths['csv'].name}, plots/)")
