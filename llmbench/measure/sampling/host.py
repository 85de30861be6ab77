"""Host sampler: memory and CPU of the case's whole process tree (psutil).

This is the memory figure of CPU runs and of offloaded optimizer state or
parameters. RSS counts pages shared between processes (forked ranks share
their parent's pre-imported libraries) once per process, so the tree sum is
an upper bound on the tree's physical memory. PSS would split them fairly,
but reading /proc/<pid>/smaps_rollup took 1.1 ms per torch-importing process
on the 2-core dev machine, as much as a whole tick of this sampler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

from llmbench.measure.sampling.base import Sample, Sampler


@dataclass
class _CpuReading:
    """CPU seconds of each process, keyed by (pid, create time) so a reused pid is a new process."""

    cpu_s: dict[tuple[int, float], float]
    monotonic_s: float


class HostSampler(Sampler):
    source = "host"
    columns = ("tree_rss_bytes", "proc_rss_max_bytes", "cpu_util_pct", "processes")
    measures = "RSS of the case's process tree (sum, per-process max), CPU use of the tree"

    def __init__(self, interval_s: float = 0.1):
        super().__init__(interval_s)
        self._previous: _CpuReading | None = None

    def sample(self, root_pid: int) -> list[Sample]:
        t = time.time()
        now = time.monotonic()
        rss: list[int] = []
        cpu_s: dict[tuple[int, float], float] = {}
        for proc in self.processes(root_pid):
            try:
                with proc.oneshot():
                    rss_bytes = proc.memory_info().rss
                    times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # ended between discovery and reading: not an error
            rss.append(rss_bytes)
            cpu_s[(proc.pid, proc.create_time())] = times.user + times.system
        if not rss:  # the case has ended; a zero here would be an invented reading
            self._previous = None
            return []
        util = _cpu_util_pct(self._previous, cpu_s, now)
        self._previous = _CpuReading(cpu_s, now)
        return [
            self._row(
                t,
                "host",
                tree_rss_bytes=sum(rss),
                proc_rss_max_bytes=max(rss),
                cpu_util_pct=util,
                processes=len(rss),
            )
        ]


def _cpu_util_pct(
    previous: _CpuReading | None, cpu_s: dict[tuple[int, float], float], now: float
) -> float | None:
    """CPU use of the tree since the previous tick, in percent of one core.

    A process seen for the first time started since the previous tick (the
    tree is re-read every tick), so all of its CPU time is new; a process that
    ended since then loses at most one tick of CPU time. Children's times that
    a parent collects when reaping them are left out: they were already counted
    while those children lived.
    """
    if previous is None or now <= previous.monotonic_s:
        return None
    used_s = sum(total - previous.cpu_s.get(key, 0.0) for key, total in cpu_s.items())
    return 100.0 * used_s / (now - previous.monotonic_s)
