"""Live progress of a sweep: case i of N, current case and phase, elapsed, ETA."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from llmbench import units
from llmbench.define.cases import Case
from llmbench.judge.report.console import STATUS_STYLE
from llmbench.judge.result import CaseResult


def result_line(result: CaseResult) -> str:
    style = STATUS_STYLE.get(result.status, "")
    text = f"[{style}]{result.status:<11}[/] {escape(result.label)}"
    if result.status == "ok":
        m = result.metrics
        rate = (
            f"busbw {units.number(m['busbw_gb_s'])} GB/s"
            if m.get("busbw_gb_s") is not None
            else f"{units.rate(m.get('tokens_per_s'))} tok/s"
        )
        text += f"  {rate}  step {units.seconds(m.get('step_time_s_median'))}  mem {units.bytes_(m.get('peak_memory_bytes'))}"
    elif result.reason:
        text += f"  [dim]{escape(result.reason)}[/]"
    return text


class LiveProgress:
    """A rich progress bar on a terminal; one plain line per case elsewhere (CI logs)."""

    def __init__(self, console: Console, total: int):
        self.console = console
        self.live = console.is_terminal
        self._label = ""
        self._progress = Progress(
            SpinnerColumn(),
            MofNCompleteColumn(),
            BarColumn(bar_width=24),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("", total=total)

    def __enter__(self) -> LiveProgress:
        if self.live:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self._progress.stop()

    def case_started(self, index: int, total: int, case: Case, repeat: int) -> None:
        self._label = escape(case.label) + (f" (repeat {repeat})" if repeat else "")
        self._progress.update(self._task, description=f"{self._label} · starting")

    def case_phase(self, phase: str) -> None:
        self._progress.update(self._task, description=f"{self._label} · {escape(phase)}")

    def case_finished(self, result: CaseResult) -> None:
        self._progress.advance(self._task)
        self.console.print(result_line(result), highlight=False)
