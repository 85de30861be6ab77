"""The command line. Thin: parse, delegate, print, choose the exit code.

One module per wing's commands; exit codes are :class:`llmbench.errors.ExitCode`.
A command's module is imported only when that command runs (or when help
lists it): ``llmbench plan`` does not pay for the scenario schema and the
sweep machinery that ``run`` needs, which would double its start-up.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from llmbench.cli import base
from llmbench.cli.base import console

__all__ = ["COMMANDS", "cli", "console", "main"]

COMMANDS: dict[str, str] = {
    **dict.fromkeys(("run", "validate", "profile", "env", "prepare-data", "parity"), "measure"),
    **dict.fromkeys(("report", "compare", "ingest", "history"), "judge"),
    "plan": "plan",
}
"""Each command and the ``llmbench.cli`` module that defines it (tests/test_cli_lazy.py checks both ways)."""


class LazyGroup(click.Group):
    """``base.cli`` with its commands loaded on first use.

    The command modules register on ``base.cli`` when imported; this group
    knows their names up front and imports a module when one of its commands
    is looked up.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in base.cli.commands:
            importlib.import_module(f"llmbench.cli.{COMMANDS[cmd_name]}")
        return base.cli.commands.get(cmd_name)


cli = LazyGroup(
    name=base.cli.name,
    callback=base.cli.callback,
    params=base.cli.params,
    help=base.cli.help,
    context_settings=base.cli.context_settings,
)


def main() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    base.retained = []
    try:
        cli(prog_name="llmbench")
    except SystemExit as done:
        if not base.retained or not isinstance(done.code, int | None):
            raise
        # A judge command kept what it read (base.retain_until_exit); its output is
        # written and its files closed: leave without freeing it all one by one.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(done.code or 0)
