"""User-facing errors.

A user mistake (bad YAML, unknown key, missing file) must end in one readable
line and exit code 2, never a traceback. Everything that is the user's fault is
raised as :class:`UserError`; the CLI prints ``str(error)`` and exits. Anything
else that escapes a command is llmbench's own fault: exit code 3 (never 1, which
a nightly gate reads as "regression"), one line, and the traceback in a file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit code llmbench returns, in one place (README's table mirrors it)."""

    OK = 0
    FAILED_CHECK = 1
    """A regression, or a check (loss parity) that failed: the gate's red."""
    INVALID = 2
    """Invalid input, a case that errored or timed out, or data missing for a verdict."""
    INTERNAL = 3
    """A bug in llmbench: one line on stderr naming the file that holds the traceback."""
    INTERRUPTED = 130
    """Ctrl-C or SIGTERM; finished cases are kept and the resume command printed."""


class UserError(Exception):
    """A mistake in the user's input, reported as ``where: key: message``."""

    def __init__(self, message: str, *, where: str | None = None, key: str | None = None):
        self.message = message
        self.where = where
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.where, self.key) if p]
        return ": ".join([*parts, self.message])


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean X?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class Unsupported(Exception):
    """A case asks for something this model, library or machine cannot do.

    Raised inside a rank; the case is recorded as ``unsupported`` with the
    message as its reason, and the sweep goes on.
    """
