"""What every launcher hands the runner, and the helpers they share."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now; each case gets its own so a lingering one never collides."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies.

    If llmbench itself is killed, the chain main → leader → ranks unwinds on its
    own instead of leaving ranks that hold memory or a GPU.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        pass


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class CaseProcess:
    """A running case, as the runner sees it whatever started it."""

    poll_fn: Callable[[], int | None]
    """The case's exit code once it has ended (0: every rank ok), else None."""
    kill_fn: Callable[[], None]
    """Stop every process of the case at once; harmless when they are already gone."""
    pid: int | None = None
    """Local root of the case's process tree, which samplers watch; None when the case runs elsewhere."""

    def poll(self) -> int | None:
        return self.poll_fn()

    def kill(self, reap_s: float = 10.0) -> None:
        """Kill the whole case and wait (briefly) until it is reaped."""
        self.kill_fn()
        deadline = time.monotonic() + reap_s
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)

    def cleanup(self) -> None:
        """After the case ended: kill anything left behind (a stray grandchild)."""
        self.kill_fn()


class Launcher(ABC):
    """Starts the ranks of one case in a fresh process group."""

    samples_on_nodes: bool = False
    """True when ranks run where the runner cannot watch them: a sampler agent then runs on each node."""

    @abstractmethod
    def start(self, case_dir: Path, world_size: int, env: dict[str, str]) -> CaseProcess:
        """Start every rank of the case whose task.json is in ``case_dir``."""

    @abstractmethod
    def build_ops(self, names: list[str], out: Path, timeout_s: float) -> dict:
        """Build DeepSpeed JIT ops where the ranks will run; per-op seconds or errors."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release anything the launcher keeps between cases."""
