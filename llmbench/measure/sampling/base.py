"""The sampler interface: a daemon thread that reads a case's processes at a fixed rate.

Samplers watch a case from the parent process while its ranks run, so they
must never disturb or stop the sweep: a sampler that cannot work records why
(``unavailable_reason``) and yields no samples instead of raising. Every sample
is stamped with ``time.time()`` because the workers stamp their phase changes
with the same clock; pacing uses the monotonic clock so that a wall-clock step
(NTP) cannot make a sampler burst or stall.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pandas as pd
import psutil

from llmbench.judge.timeline import timeline_frame

DEFAULT_INTERVAL_S = 0.1
TREE_REFRESH_S = 0.5
STOP_TIMEOUT_S = 5.0

Sample = dict[str, Any]
"""One reading: ``t`` (epoch s), ``source``, ``device`` and the sampler's columns (None: missing)."""


def describe_error(exc: BaseException) -> str:
    """``Type: message``, the form llmbench.hardware.detect uses for NVML errors too."""
    return f"{type(exc).__name__}: {exc}"


def case_processes(root_pid: int) -> list[psutil.Process]:
    """The case's leader and all its descendants, as they are right now.

    Ranks start after the sampler (and may start helpers of their own), so
    samplers call this on every tick rather than once.
    """
    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:  # the case has ended (ZombieProcess is a subclass)
        return []


class Sampler(ABC):
    """Samples in its own daemon thread every ``interval_s`` between start() and stop()."""

    source: ClassVar[str]
    """Value of the ``source`` column and the key of this sampler's reasons."""
    columns: ClassVar[tuple[str, ...]]
    """The metric columns this sampler fills (units in the names)."""
    measures: ClassVar[str]
    """One line for people (``llmbench env``): what this sampler reads."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.unavailable_reason: str | None = None
        """Why this sampler produced no (usable) samples; None while it works."""
        self.field_errors: dict[str, str] = {}
        """``"<device>.<column>"`` -> why that column is missing on that device."""
        self._samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._root_pid = 0
        self._tree: list[psutil.Process] = []
        self._tree_at = 0.0
        self.ignored_pids: set[int] = set()
        """Processes inside the watched tree that are not the case (a node agent itself)."""

    def processes(self, root_pid: int) -> list[psutil.Process]:
        """The case's processes, without the ignored ones, re-discovered at most every TREE_REFRESH_S.

        Discovery reads the status of every process on the machine (psutil's
        parent map), the bulk of a tick's cost; a case's tree changes only when
        ranks start or end, so a sampler reuses it in between (a process that
        has ended since is skipped by the readers). While the tree is the leader
        alone it is re-read every tick: forked ranks can start, train and end
        within one refresh period, and would otherwise never be sampled.
        """
        now = time.monotonic()
        if len(self._tree) < 2 or now - self._tree_at >= TREE_REFRESH_S:
            self._tree = [p for p in case_processes(root_pid) if p.pid not in self.ignored_pids]
            self._tree_at = now
        return self._tree

    @abstractmethod
    def sample(self, root_pid: int) -> list[Sample]:
        """Read once now; public so the benchmark can time one tick."""

    def _open(self) -> None:  # noqa: B027 - optional hook
        """Acquire what sampling needs; raising makes the sampler unavailable."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release what _open acquired; must not raise."""

    def _unavailable(self, exc: BaseException) -> str:
        return f"{self.source} unavailable: {describe_error(exc)}"

    def start(self, root_pid: int) -> None:
        """Begin sampling the process tree rooted at ``root_pid`` (the case's leader)."""
        if self._started:
            raise RuntimeError(f"{self.source} sampler already started; make one per case")
        self._started = True
        self._root_pid = root_pid
        try:
            self._open()
        except Exception as exc:  # no library, no driver, no device: never stop the case
            self.unavailable_reason = self._unavailable(exc)
            return
        self._thread = threading.Thread(
            target=self._loop, name=f"llmbench-{self.source}-sampler", daemon=True
        )
        self._thread.start()

    def stop(self) -> list[Sample]:
        """End sampling (after one last reading) and return every sample taken.

        A reading that never returns (a hung NVML call) must not hang the
        sweep: after ``STOP_TIMEOUT_S`` the thread (a daemon) is abandoned, the
        sampler says why its figures stop there, and what it read so far stays.
        """
        if self._thread is not None:
            self._stop.set()
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                self.unavailable_reason = (
                    f"{self.source} sampler hung: a reading did not return within "
                    f"{STOP_TIMEOUT_S:g} s of the case's end"
                )
                self._thread = None
                return list(self._samples)
            self._thread = None
            self._close()
        return self._samples

    def _loop(self) -> None:
        start = time.monotonic()
        tick = 0
        while self._take():
            now = time.monotonic()
            # The next slot on the fixed schedule; slots missed while a tick ran
            # late are skipped, never made up in a burst.
            tick = max(tick + 1, math.floor((now - start) / self.interval_s) + 1)
            if self._stop.wait(start + tick * self.interval_s - now):
                # A reading after the case ended brackets the end of its measure
                # window (energy is interpolated between bracketing samples).
                self._take()
                return

    def _take(self) -> bool:
        try:
            self._samples.extend(self.sample(self._root_pid))
        except Exception as exc:  # a bug or a broken library: keep the sweep going, say why
            self.unavailable_reason = f"{self.source} sampler failed: {describe_error(exc)}"
            return False
        return True

    def _row(self, t: float, device: str, **values: Any) -> Sample:
        return {"t": t, "source": self.source, "device": device, **values}


class SamplerSet:
    """Several samplers started and stopped together, giving one timeline."""

    def __init__(self, samplers: list[Sampler], not_run: dict[str, str] | None = None):
        self.samplers = samplers
        self.not_run = dict(not_run or {})
        """Sources deliberately not sampled, with the reason (e.g. no GPU on a CPU run)."""
        self._t0: float | None = None

    @property
    def columns(self) -> list[str]:
        return [c for s in self.samplers for c in s.columns]

    def ignore(self, pid: int) -> None:
        """Leave ``pid`` out of every sampler's view of the case."""
        for sampler in self.samplers:
            sampler.ignored_pids.add(pid)

    def start(self, root_pid: int) -> None:
        self._t0 = time.time()
        for sampler in self.samplers:
            sampler.start(root_pid)

    def stop(self) -> pd.DataFrame:
        """Stop every sampler; their samples as one timeline (see timeline.timeline_frame)."""
        samples = [row for s in self.samplers for row in s.stop()]
        return timeline_frame(samples, self.columns, self._t0)

    @property
    def unavailable(self) -> dict[str, str]:
        """Why figures will be missing: by source (``"nvml"``) and by ``"<device>.<column>"``."""
        reasons = dict(self.not_run)
        for sampler in self.samplers:
            if sampler.unavailable_reason:
                reasons[sampler.source] = sampler.unavailable_reason
            reasons.update(sampler.field_errors)
        return reasons
