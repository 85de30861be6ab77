"""What every launcher hands the runner, and the helpers they share."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


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
