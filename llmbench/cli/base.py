"""The command group, its consoles and the one place a failure becomes a line and an exit code."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.text import Text

from llmbench import __version__
from llmbench.errors import ExitCode, UserError

retained: list[object] | None = None
"""What the judge commands keep until the process exits; a list only under ``main``."""


def retain_until_exit(*objects: object) -> None:
    """Keep a command's big objects (runs read back) alive until the process exits.

    ``main`` then ends the process without tearing the interpreter down, so
    the ~2.5 million objects of two 10k-result runs are never freed one by
    one (~0.08 s of CPU, after the output was written). Outside ``main`` (tests
    calling the command group) nothing is kept.
    """
    if retained is not None:
        retained.extend(objects)


# Piped output (CI logs, files) gets a wide console instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The one top-level handler: every way a command can fail ends in one line and a documented code.

    * a user mistake (:class:`UserError`), or a file llmbench cannot read or
      write (an ``OSError`` naming it: ``-o /read-only/x.md``) → exit 2;
    * Ctrl-C outside a sweep (a sweep handles its own) → exit 130;
    * anything else is a bug in llmbench → exit 3 (not 1, which a nightly gate
      reads as a regression), with the traceback written to a private file.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning
                return fn(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except UserError as exc:
            fail(str(exc), ExitCode.INVALID)
        except OSError as exc:
            if exc.filename is None:
                fail(_internal(exc), ExitCode.INTERNAL)
            fail(f"{exc.filename}: {exc.strerror or exc}", ExitCode.INVALID)
        except KeyboardInterrupt:
            fail("interrupted", ExitCode.INTERRUPTED)
        except Exception as exc:
            fail(_internal(exc), ExitCode.INTERNAL)

    return wrapper


def _one_line_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    """A warning (a torn results line cut, a corrupt line skipped) as one line, not two with source."""
    err_console.print(Text.assemble(("warning:", "yellow"), " ", str(message)), soft_wrap=True)


def fail(message: str, code: ExitCode) -> NoReturn:
    """Print ``error: message`` (data, never markup) on stderr and exit with ``code``."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
    sys.exit(code)


def _internal(exc: BaseException) -> str:
    """One line for a bug, naming the file that keeps the full traceback."""
    text = "".join(traceback.format_exception(exc))
    try:
        fd, path = tempfile.mkstemp(prefix="llmbench-crash-", suffix=".txt")  # mode 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        where = f"traceback in {path}"
    except OSError:
        where = "the traceback could not be written"
    return f"internal error ({type(exc).__name__}: {exc}); {where}; please report it"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llmbench")
def cli() -> None:
    """Benchmark, profile and plan DeepSpeed training of large language models."""


def split_list(keys: str) -> list[str]:
    return [k.strip() for k in keys.split(",") if k.strip()]
