"""The command line. Thin: parse, delegate, print, choose the exit code.

Exit codes: 0 success; 1 a regression (compare) or a failed check; 2 invalid
input or a case that errored; 130 interrupted.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from llmbench import __version__
from llmbench.errors import EXIT_USAGE, UserError

console = Console()
err_console = Console(stderr=True)

EXIT_INTERRUPTED = 130


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a UserError into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err_console.print(
                f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True
            )
            sys.exit(EXIT_USAGE)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llmbench")
def cli() -> None:
    """Benchmark, profile and plan DeepSpeed training of large language models."""


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@user_errors
def validate(scenario: Path, overrides: tuple[str, ...]) -> None:
    """Check a scenario file (and KEY=VALUE overrides) without running anything."""
    from llmbench.scenario import load_scenario

    loaded = load_scenario(scenario, overrides)
    cases = loaded.expand()
    axes = (
        ", ".join(f"{a.key}×{len(a.values)}" for a in loaded.axes if len(a.values) > 1)
        or "no sweep"
    )
    console.print(
        f"{scenario}: ok — {len(cases)} cases ({axes}), {loaded.run.repeats} repeat(s)",
        highlight=False,
    )


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--dry-run", is_flag=True, help="List the cases and their ids; run nothing.")
@click.option(
    "--resume",
    "resume",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run only the cases missing from this run directory.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Root for run directories (default: run.output_dir).",
)
@user_errors
def run(
    scenario: Path,
    overrides: tuple[str, ...],
    dry_run: bool,
    resume: Path | None,
    output_dir: Path | None,
) -> None:
    """Run every case of SCENARIO; KEY=VALUE overrides (lists sweep), e.g. model.size=[tiny,mini]."""
    from llmbench.scenario import load_scenario

    loaded = load_scenario(scenario, overrides)
    cases = loaded.expand()
    if dry_run:
        from llmbench.sweep import dry_run_table

        console.print(dry_run_table(loaded, cases))
        return
    from llmbench.sweep import run_sweep

    signal.signal(signal.SIGTERM, _raise_interrupt)
    code = run_sweep(loaded, cases, console, resume=resume, output_dir=output_dir)
    sys.exit(code)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    cli(prog_name="llmbench")
