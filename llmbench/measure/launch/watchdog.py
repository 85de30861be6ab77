"""Imported by the fork server: it exits at once when the llmbench that started it is gone.

The fork server notices a dead parent only through an end-of-file on a pipe,
and then exits like any interpreter — finalising torch, transformers and
deepspeed, which took longer than a minute on a loaded two-core machine
(``kill -9`` of a sweep left the fork server, the resource tracker and the
running case alive, ~800 MB). ``PR_SET_PDEATHSIG`` cannot be used here: it
fires when the *thread* that forked the server ends, and the launcher may
start the server from a short-lived thread. So a daemon thread polls the
parent pid and leaves with ``os._exit``; the case processes the server forked
follow through their own death signal (``process.die_with_parent``), and the
resource tracker once the last of them has closed its pipe.

The server's own, orderly exit (its parent closed the pipe) is cut short the
same way: finalising the imported libraries kept it running for 3-9 s after
every sweep on a loaded machine, and a daemon thread cannot run once
finalisation holds the interpreter.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time

POLL_S = 0.5


def _watch(parent: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent:
            os._exit(1)


def _leave(pid: int) -> None:
    """First exit handler of the fork server: skip finalisation (forked children keep their own exit)."""
    if os.getpid() == pid:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def start() -> None:
    """Watch this process's parent from a daemon thread (forked children do not inherit it)."""
    threading.Thread(
        target=_watch, args=(os.getppid(),), name="llmbench-parent-watchdog", daemon=True
    ).start()
    atexit.register(_leave, os.getpid())


start()
