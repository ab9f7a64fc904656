"""`draftwise bench`: run the sweep with a progress bar, print the table, write the report."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from draftwise.bench.options import BenchOptions, PromptOptions
from draftwise.bench.report import HEADERS, BenchResult, _row, category_table, write_report
from draftwise.bench.runner import RunRecord, run_sweep, sweep_configs
from draftwise.bench.session import load_models, machine_info, prepare
from draftwise.bench.summary import ConfigSummary, recommend, summarize
from draftwise.loader import BackendOptions


def results_table(summaries: list[ConfigSummary]) -> Table:
    table = Table(title="draftwise bench", header_style="bold")
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("draft", "quant", "accept") else "right")
    for s in summaries:
        style = "green" if not s.is_ar and s.speedup_lo > 1.0 else (
            "red" if not s.is_ar and s.speedup_hi < 1.0 else None)
        table.add_row(*_row(s), style=style)
    return table


def run_bench(opts: BenchOptions, prompt_opts: PromptOptions = PromptOptions(),
              backend: BackendOptions = BackendOptions(), out_dir: str = "bench-results",
              console: Console | None = None) -> None:
    """Sweep AR vs each draft x K (+ adaptive) x temperature; write bench.json, bench.csv,
    report.md, report.html and plots/ under out_dir. Bad input raises DraftwiseError."""
    con = console or Console()
    prompts = prompt_opts.load()
    target = opts.target
    con.print(f"loading {target} and {len(opts.drafts)} draft(s)")
    with load_models(target, opts.drafts, backend, opts.p_min) as models:
        kept, skipped = prepare(prompts, models, opts.max_tokens + opts.k_max + 2)
        if skipped:
            con.print(f"[yellow]skipped {len(skipped)} prompt(s) too long for the context: "
                      f"{', '.join(skipped)}[/]")
        n_runs = len(sweep_configs(opts)) * len(kept) * opts.repeats
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=con, transient=True) as prog:
            task = prog.add_task("warming up", total=n_runs)

            def done(rec: RunRecord) -> None:
                prog.update(task, advance=1, description=f"{rec.prompt_id} {rec.config.label} "
                            f"{rec.tok_s:.1f} tok/s")

            records = run_sweep(opts, kept, models.target, models.drafters, on_run=done)
        machine = machine_info(models)
    summaries = summarize(records, opts.max_tokens)
    res = BenchResult(opts, machine, [{"id": p.prompt.id, "category": p.prompt.category,
                                       "n_prompt": len(p.ids)} for p in kept],
                      skipped, records, summaries, recommend(summaries))
    paths = write_report(res, out_dir)
    con.print(results_table(summaries))
    head, rows = category_table(summaries)
    if head:
        cat = Table(title="speedup by prompt category", header_style="bold")
        for h in head:
            cat.add_column(h, justify="left" if h == "configuration" else "right")
        for r in rows:
            cat.add_row(*r)
        con.print(cat)
    for r in res.recommendations:
        con.print(("[bold green]" if r.beats_ar else "[bold yellow]") + r.text + "[/]")
    lossy = [s for s in summaries if not s.is_ar and not s.exact]
    if lossy:
        con.print(f"[yellow]lossy: {len(lossy)} configuration(s) used a lenient acceptance mode "
                  f"({', '.join(dict.fromkeys(s.accept for s in lossy))}); their output is not the "
                  f"target's ({sum(s.n_lenient for s in lossy)} tokens kept leniently) and they are "
                  "not recommended[/]")
    con.print(f"report: {paths['html']} (also {paths['markdown'].name}, {paths['json'].name}, "
              f"{paths['csv'].name}, plots/)")
