"""Cost of one sampler tick over a case-like process tree: the harness's overhead per tick.

The tree is a leader with N sleeping "ranks", as the local launcher makes.
The NVML tick runs against the fake pynvml from the tests, so it measures
llmbench's own work per tick (tree discovery, the per-device reads, row
building), not the driver's latency; on a GPU machine time the real one.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmbench.measure.sampling import HostSampler, NvmlSampler

LEADER = textwrap.dedent(
    """
    import subprocess, sys
    ranks = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
             for _ in range(int(sys.argv[1]))]
    print("ready", flush=True)
    for r in ranks:
        r.wait()
    """
)


TESTS = Path(__file__).resolve().parents[1] / "tests"


@pytest.fixture(params=[2, 8], ids=lambda n: f"{n}ranks")
def case_tree(request):
    """Pid of a leader whose ranks are all running."""
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER, str(request.param)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert leader.stdout.readline().strip() == "ready"
    yield leader.pid
    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()


def test_host_tick(benchmark, case_tree):
    sampler = HostSampler()
    benchmark.extra_info["what"] = "host sampler, one tick (psutil)"
    rows = benchmark(sampler.sample, case_tree)
    assert rows and rows[0]["processes"] > 1


def test_nvml_tick_with_fake_nvml(benchmark, case_tree, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    fake = importlib.import_module("fake_pynvml")
    gpus = [fake.FakeGpu(uuid=f"GPU-{i}", processes={case_tree: 2**30}) for i in range(8)]
    monkeypatch.setitem(sys.modules, "pynvml", fake.FakeNvml(gpus))
    sampler = NvmlSampler(interval_s=3600, gpus=8)  # its thread reads once, then waits
    sampler.start(case_tree)
    benchmark.extra_info["what"] = "NVML sampler, one tick over 8 GPUs, FAKE pynvml (no driver)"
    try:
        rows = benchmark(sampler.sample, case_tree)
    finally:
        sampler.stop()
    assert len(rows) == 8 and sampler.unavailable_reason is None
