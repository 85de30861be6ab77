"""Host sampler on real process trees; the sampling thread's pacing and stop; SamplerSet."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from llmbench.measure.sampling import HostSampler, SamplerSet
from llmbench.measure.sampling import base as base_module
from llmbench.measure.sampling.base import TREE_REFRESH_S, Sampler

MiB = 2**20

# A leader that starts two "ranks", each holding 100 MiB with every page written.
TREE = textwrap.dedent(
    """
    import subprocess, sys
    rank = '''
    import pathlib, sys, time
    block = bytearray(b"\\\\x01") * (100 * 2**20)
    pathlib.Path(sys.argv[1]).write_text("ready")
    time.sleep(120)
    '''
    ranks = [subprocess.Popen([sys.executable, "-c", rank, f"{sys.argv[1]}/ready{r}"]) for r in range(2)]
    for p in ranks:
        p.wait()
    """
)

# A leader that waits for "go", then starts one rank that spins on a CPU until killed.
SPINNER = textwrap.dedent(
    """
    import pathlib, subprocess, sys, time
    go = pathlib.Path(sys.argv[1]) / "go"
    pathlib.Path(sys.argv[1], "started").write_text("")
    while not go.exists():
        time.sleep(0.01)
    subprocess.Popen([sys.executable, "-c", "while True: pass"]).wait()
    """
)


@pytest.fixture
def start_tree(tmp_path):
    """Start a script as a case leader in its own process group; killed at the end."""
    leaders: list[subprocess.Popen] = []

    def start(script: str) -> subprocess.Popen:
        leader = subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)], start_new_session=True
        )
        leaders.append(leader)
        return leader

    yield start
    for leader in leaders:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def wait_for(*paths: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"timed out waiting for {paths}"
        time.sleep(0.02)


def test_tree_rss_covers_every_process_of_the_case(start_tree, tmp_path):
    leader = start_tree(TREE)
    sampler = HostSampler(interval_s=0.05)
    sampler.start(leader.pid)  # before the ranks exist: the tree is re-discovered as it grows
    wait_for(tmp_path / "ready0", tmp_path / "ready1")
    time.sleep(TREE_REFRESH_S + 0.3)
    rows = sampler.stop()
    assert sampler.unavailable_reason is None
    assert rows[0]["processes"] == 1 and rows[-1]["processes"] == 3
    assert max(r["tree_rss_bytes"] for r in rows) >= 2 * 100 * MiB
    assert max(r["proc_rss_max_bytes"] for r in rows) >= 100 * MiB
    assert all(r["source"] == "host" and r["device"] == "host" for r in rows)


def test_ranks_that_start_soon_after_the_leader_are_sampled_at_once(
    start_tree, tmp_path, monkeypatch
):
    """Forked ranks can start, train and end within one refresh period of the tree."""
    monkeypatch.setattr(base_module, "TREE_REFRESH_S", 60.0)  # no periodic refresh in this test
    leader = start_tree(TREE)
    sampler = HostSampler(interval_s=0.05)
    assert [p.pid for p in sampler.processes(leader.pid)] == [leader.pid]  # no ranks yet
    wait_for(tmp_path / "ready0", tmp_path / "ready1")
    assert len(sampler.processes(leader.pid)) == 3  # the leader alone is re-read every tick


def test_cpu_of_a_rank_started_between_ticks_is_counted(start_tree, tmp_path):
    """The tree's CPU seconds add up to what its processes used, new processes included."""
    leader = start_tree(SPINNER)
    wait_for(tmp_path / "started")
    time.sleep(0.2)  # let the leader's interpreter finish starting
    leader_cpu = psutil.Process(leader.pid).cpu_times()
    sampler = HostSampler(interval_s=1.0)
    sampler.start(leader.pid)
    (tmp_path / "go").write_text("")  # the rank starts just after the first tick
    time.sleep(2.3)
    rows = sampler.stop()
    rank = psutil.Process(leader.pid).children()[0]
    rank_cpu = rank.cpu_times()
    leader_after = psutil.Process(leader.pid).cpu_times()
    used_s = rank_cpu.user + rank_cpu.system
    used_s += leader_after.user + leader_after.system - leader_cpu.user - leader_cpu.system
    assert rows[0]["cpu_util_pct"] is None  # nothing to compare the first tick with
    sampled_s = sum(
        b["cpu_util_pct"] / 100 * (b["t"] - a["t"]) for a, b in itertools.pairwise(rows)
    )
    assert used_s > 0.2  # the rank did run (the machine may be busy)
    assert sampled_s == pytest.approx(used_s, abs=0.08)


def test_processes_that_vanish_are_skipped(monkeypatch):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_proc = psutil.Process(gone.pid)
    gone.wait()
    me = psutil.Process()
    monkeypatch.setattr(base_module, "case_processes", lambda root_pid: [gone_proc, me])
    row = HostSampler().sample(os.getpid())[0]
    assert row["processes"] == 1
    assert row["tree_rss_bytes"] == row["proc_rss_max_bytes"] > 0


def test_a_case_that_has_ended_gives_no_samples():
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    sampler = HostSampler(interval_s=0.02)
    sampler.start(ended.pid)
    time.sleep(0.1)
    assert sampler.stop() == []
    assert sampler.unavailable_reason is None


def test_stop_returns_promptly():
    sampler = HostSampler(interval_s=0.5)
    sampler.start(os.getpid())
    time.sleep(0.1)
    t0 = time.monotonic()
    sampler.stop()
    assert time.monotonic() - t0 < 2 * 0.5


def test_ticks_keep_to_a_fixed_schedule():
    interval_s = 0.05
    sampler = HostSampler(interval_s)
    sampler.start(os.getpid())
    time.sleep(1.0)
    rows = sampler.stop()
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(rows[:-1])]  # not stop's reading
    assert 16 <= len(rows) <= 24
    assert statistics.median(gaps) == pytest.approx(interval_s, rel=0.2)


class Broken(Sampler):
    source = "broken"
    columns = ("x",)
    measures = "nothing"

    def sample(self, root_pid):
        raise OSError("disk on fire")


def test_a_failing_sampler_reports_instead_of_raising():
    samplers = SamplerSet([HostSampler(0.02), Broken(0.02)], {"nvml": "not here"})
    samplers.start(os.getpid())
    time.sleep(0.1)
    timeline = samplers.stop()
    assert samplers.unavailable == {
        "nvml": "not here",
        "broken": "broken sampler failed: OSError: disk on fire",
    }
    assert set(timeline["source"]) == {"host"}
    assert list(timeline.columns[:4]) == ["t", "t_rel_s", "source", "device"]
    assert "x" in timeline.columns and timeline["t_rel_s"].min() >= 0


class Hung(Broken):
    source = "hung"

    def sample(self, root_pid):
        threading.Event().wait()  # a driver call that never returns


def test_a_hung_reading_does_not_hang_the_sweep(monkeypatch):
    monkeypatch.setattr("llmbench.measure.sampling.base.STOP_TIMEOUT_S", 0.3)
    samplers = SamplerSet([HostSampler(0.02), Hung(0.02)])
    samplers.start(os.getpid())
    time.sleep(0.1)
    t0 = time.monotonic()
    timeline = samplers.stop()
    assert time.monotonic() - t0 < 2
    assert samplers.unavailable == {
        "hung": "hung sampler hung: a reading did not return within 0.3 s of the case's end"
    }
    assert set(timeline["source"]) == {"host"}


def test_a_sampler_starts_once():
    sampler = HostSampler()
    sampler.start(os.getpid())
    try:
        with pytest.raises(RuntimeError):
            sampler.start(os.getpid())
    finally:
        sampler.stop()
    with pytest.raises(RuntimeError):  # its samples belong to one case
        sampler.start(os.getpid())
