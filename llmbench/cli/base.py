"""The command group, its consoles and the one place a user mistake becomes exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from llmbench import __version__
from llmbench.errors import ExitCode, UserError

# Piped output (CI logs, files) gets a wide console instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


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
            sys.exit(ExitCode.INVALID)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llmbench")
def cli() -> None:
    """Benchmark, profile and plan DeepSpeed training of large language models."""


def split_list(keys: str) -> list[str]:
    return [k.strip() for k in keys.split(",") if k.strip()]
