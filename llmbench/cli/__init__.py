"""The command line. Thin: parse, delegate, print, choose the exit code.

One module per wing's commands; exit codes are :class:`llmbench.errors.ExitCode`.
"""

from __future__ import annotations

import os

from llmbench.cli import judge, measure, plan
from llmbench.cli.base import cli, console

__all__ = ["cli", "console", "judge", "main", "measure", "plan"]


def main() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    cli(prog_name="llmbench")
