"""Print a compatibility report: a rich table for people, JSON for machines."""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from draftwise.doctor.report import Report, check

_STYLE = {"pass": ("PASS", "green"), "info": ("INFO", "cyan"), "warn": ("WARN", "yellow"),
          "fail": ("FAIL", "red")}
_VERDICT_STYLE = {"identical": "green", "compatible": "green", "bridged": "yellow",
                  "incompatible": "red"}


def run_check(target: str, draft: str, *, json_out: bool, generate: bool = True,
              console: Console | None = None) -> int:
    """`draftwise check TARGET DRAFT`: print the report; return 0/1/2 for pass/warn/fail.

    A model that cannot be read raises DraftwiseError (one line for the CLI to print).
    """
    report = check(target, draft, generate=generate)
    if json_out:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        render(report, console or Console())
    return report.exit_code


def render(report: Report, console: Console) -> None:
    t, d = report.target, report.draft
    for label, m in (("target", t), ("draft ", d)):
        where = f" {escape(m.path)}" if m.path != m.name else ""
        console.print(f"[bold]{label}[/] {escape(m.name)}  [dim]({m.kind}{where})[/]")
    table = Table(show_header=True, header_style="bold", expand=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for item in report.items:
        label, style = _STYLE[item.status]
        table.add_row(item.name, f"[{style}]{label}[/]", escape(item.detail))
    console.print(table)
    console.print("[bold]Pairing checklist[/]")
    for required in (True, False):
        console.print("  required" if required else "  recommended")
        for r in report.checklist:
            if r.required == required:
                mark = {True: "[green]yes[/]", False: "[red]no [/]", None: "[dim] ? [/]"}[r.ok]
                console.print(f"    {mark}  {r.rule}")
    style = _VERDICT_STYLE[report.verdict]
    console.print(f"[bold]verdict:[/] [bold {style}]{report.verdict}[/] - {escape(report.reason)}")
