"""Commands that judge stored runs: report, compare, history, ingest."""

from __future__ import annotations

import functools
import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from llmbench.cli import base
from llmbench.cli.base import (
    cli,
    console,
    err_console,
    retain_until_exit,
    split_list,
    user_errors,
)


def _history_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--history",
        "history_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="History database (default: reports/history.sqlite).",
    )(fn)


def _without_cyclic_gc(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a judge command with the cyclic collector paused (judge/store.py: ``gc_paused``).

    A command reads runs once and builds verdicts, frames and tables on top of
    them; every collection those allocations trigger walks all the results
    still alive (10k results: ~2.5 million objects, none in a cycle). Under
    ``main`` the process ends with the command, so the collector stays off:
    turned back on, its first young collection would walk every object the
    command made (~0.1 s), since none was ever collected.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from llmbench.judge.store import gc_paused

        if base.retained is not None:
            gc.disable()
            return fn(*args, **kwargs)
        with gc_paused():
            return fn(*args, **kwargs)

    return wrapper


def _corrupt_lines_reported(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show each skipped corrupt results line as one 'warning:' line on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import warnings

        from llmbench.judge.store import CorruptLineWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CorruptLineWarning)
            try:
                return fn(*args, **kwargs)
            finally:
                for w in caught:
                    if issubclass(w.category, CorruptLineWarning):
                        err_console.print(
                            f"[yellow]warning:[/] {escape(str(w.message))}",
                            highlight=False,
                            soft_wrap=True,
                        )

    return wrapper


def _history(path: Path | None) -> Any:
    from llmbench.judge.history import DEFAULT_PATH, History

    return History(path or DEFAULT_PATH)


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["terminal", "markdown", "html", "csv", "json"]),
    default="terminal",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report to this file instead of stdout.",
)
@click.option("--rows", default="", help="Pivot rows, comma-separated settings (e.g. model.size).")
@click.option("--cols", default="", help="Pivot columns (e.g. deepspeed.zero_stage).")
@click.option(
    "--reference", help="Case id or label speed-ups are relative to (default: first ok case)."
)
@click.option(
    "--breakdown",
    is_flag=True,
    help="Terminal: where each case's step time went (runs made with run.profile).",
)
@_history_option
@user_errors
@_corrupt_lines_reported
@_without_cyclic_gc
def report(
    runs: tuple[str, ...],
    fmt: str,
    output: Path | None,
    rows: str,
    cols: str,
    reference: str | None,
    breakdown: bool,
    history_path: Path | None,
) -> None:
    """Render RUNS (run directories or stored run ids): pivot, Markdown, HTML, CSV or JSON."""
    from llmbench.judge.history import resolve_run
    from llmbench.judge.report.render import render

    history = _history(history_path)
    loaded = [resolve_run(ref, history) for ref in runs]
    retain_until_exit(loaded)
    rendered = render(loaded, fmt, split_list(rows), split_list(cols), reference, breakdown)
    if isinstance(rendered, str):
        if output is not None:
            output.write_text(rendered)
            console.print(f"report: {output}", highlight=False, markup=False)
        else:
            click.echo(rendered, nl=False)
    elif output is not None:
        with output.open("w") as fh:
            Console(file=fh, width=160).print(rendered)
    else:
        console.print(rendered)


@cli.command()
@click.argument("baseline")
@click.argument("current")
@click.option(
    "--threshold",
    "threshold_options",
    multiple=True,
    metavar="METRIC:SPEC",
    help="Override a threshold, e.g. tokens_per_s:-3%, peak_memory_bytes:+1%,+128MiB, mfu:off.",
)
@click.option(
    "--thresholds",
    "thresholds_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML thresholds per scenario name ('*': every scenario).",
)
@click.option("--metric", "metrics", multiple=True, help="Judge these metrics, not the defaults.")
@click.option(
    "--allow-env-mismatch", is_flag=True, help="Compare runs from different environments."
)
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Accept cases or metrics of the baseline missing from CURRENT (otherwise exit 2).",
)
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@_history_option
@user_errors
@_corrupt_lines_reported
@_without_cyclic_gc
def compare(
    baseline: str,
    current: str,
    threshold_options: tuple[str, ...],
    thresholds_file: Path | None,
    metrics: tuple[str, ...],
    allow_env_mismatch: bool,
    allow_missing: bool,
    markdown_path: Path | None,
    junit_path: Path | None,
    json_path: Path | None,
    history_path: Path | None,
) -> None:
    """Judge CURRENT against BASELINE (run dirs or stored ids; BASELINE may be 'latest').

    A metric regressed when its change is past its threshold and outside its
    noise band (the spread of its last good runs in the history, or, until
    there are 5, of the runs' repeats), each run judged by its best process.
    Exit 0: no regression; 1: a regression; 2: a case errored,
    a case or metric of BASELINE is missing from CURRENT, or invalid input.
    """
    from llmbench.judge.history import resolve_run
    from llmbench.judge.regression import CompareOptions, judge, write_outputs
    from llmbench.judge.report.verdicts import terminal

    history = _history(history_path)
    options = CompareOptions(
        baseline, threshold_options, thresholds_file, metrics, allow_env_mismatch, allow_missing
    )
    current_run = resolve_run(current, history, judged_only=True)
    comparison, baseline_run = judge(options, current_run, history, judged_only=True)
    retain_until_exit(current_run, baseline_run, comparison)
    write_outputs(comparison, markdown_path, junit_path, json_path)
    console.print(terminal(comparison))
    sys.exit(comparison.exit_code)


@cli.command("history")
@click.option(
    "--index",
    "index_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Index this run directory, or every run in this folder, first (repeatable).",
)
@click.option("--scenario", help="Only runs of this scenario.")
@click.option("--case", help="Only this case (id or label).")
@click.option("--metric", help="Metric to trace [tokens_per_s, else step_time_s_median].")
@click.option("--fingerprint", help="Only runs from this environment fingerprint.")
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Runs per case to show (change points are found within them).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG here: values per run, the noise band the gate judged each by, change points.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["terminal", "csv", "json"]),
    default="terminal",
    help="Trend as a table, or as CSV / JSON rows on stdout.",
)
@click.option("--runs", "list_runs", is_flag=True, help="List indexed runs and their verdicts.")
@click.option("--mark-good", metavar="RUN_ID", help="Accept a run as a baseline (re-baseline).")
@click.option("--mark-bad", metavar="RUN_ID", help="Never use this run as a baseline.")
@click.option("--note", default="", help="Why, stored with --mark-good/--mark-bad.")
@_history_option
@user_errors
@_corrupt_lines_reported
@_without_cyclic_gc
def history_command(
    index_paths: tuple[Path, ...],
    scenario: str | None,
    case: str | None,
    metric: str | None,
    fingerprint: str | None,
    last: int,
    plot: Path | None,
    fmt: str,
    list_runs: bool,
    mark_good: str | None,
    mark_bad: str | None,
    note: str,
    history_path: Path | None,
) -> None:
    """Trends of a metric per case over indexed runs, with change points; index and mark runs."""
    history = _history(history_path)
    for run_id, added in history.index_paths(index_paths):
        console.print(f"indexed {run_id}: {added} new result(s)", highlight=False, markup=False)
    for run_id, mark in ((mark_good, "good"), (mark_bad, "bad")):
        if run_id:
            history.mark(run_id, mark, note)
            console.print(f"{run_id} marked {mark}", highlight=False, markup=False)
    acted = bool(index_paths or mark_good or mark_bad)
    if acted and not (list_runs or scenario or case or metric or plot):
        return  # the tables below import pandas (~0.2 s): a nightly's indexing never shows one
    from llmbench.judge.history import default_metric, trend
    from llmbench.judge.report.console import runs_table, trend_table

    if list_runs:
        console.print(runs_table(history.runs(scenario, fingerprint)))
        return
    found = trend(history, metric or default_metric(history), scenario, case, fingerprint, last)
    if fmt == "csv":
        from llmbench.judge.report.export import safe_csv

        click.echo(safe_csv(found.frame), nl=False)
    elif fmt == "json":
        click.echo(found.frame.to_json(orient="records", date_format="iso", indent=1))
    else:
        console.print(trend_table(found))
    if plot is not None:
        from llmbench.judge.report.plots import history_chart

        plot.write_bytes(history_chart(found.frame, found.metric, found.change_points))
        console.print(f"plot: {plot}", highlight=False, markup=False)


@cli.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Root for run directories (default: reports/runs).",
)
@click.option(
    "--history",
    "history_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="History database (default: history.sqlite beside the output dir).",
)
@user_errors
def ingest(files: tuple[Path, ...], output_dir: Path | None, history_path: Path | None) -> None:
    """Store pytest-benchmark JSON files (--benchmark-json) as runs, indexed for compare/history."""
    from llmbench.define.schema import RunSpec
    from llmbench.judge.history import History, history_next_to
    from llmbench.judge.ingest import ingest as ingest_file

    root = output_dir or Path(RunSpec().output_dir)
    history = History(history_path or history_next_to(root))
    for path in files:
        run, created = ingest_file(path, root)
        added = history.index_run(run, source="pytest-benchmark")
        state = "new run" if created else "already ingested"
        console.print(
            f"{path} → {run.path} ({len(run.results)} benchmarks, {state}; {added} newly indexed)",
            highlight=False,
            markup=False,
        )
