"""The node sampler agent: samples a process tree until told to stop, merged per node."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pandas as pd

from llmbench.measure.sampling import save_timeline
from llmbench.measure.sampling.agent import merge_node_timelines, node_files


def test_agent_samples_until_sigterm_and_leaves_its_files(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmbench.measure.sampling.agent",
                str(tmp_path),
                "--root",
                str(sleeper.pid),
                "--kind",
                "cpu",
                "--interval",
                "0.05",
            ]
        )
        time.sleep(2.0)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        sleeper.kill()
    (csv,) = tmp_path.glob("timeline.*.csv")
    frame = pd.read_csv(csv)
    assert len(frame) >= 5 and (frame["tree_rss_bytes"] > 0).all()
    assert frame["processes"].max() == 1  # the sleeper only: the agent never counts itself
    reasons = json.loads(csv.with_suffix(".json").read_text())
    assert reasons["nvml"] == "no GPU sampled on a cpu run"


def _node(tmp_path, host, t0):
    frame = pd.DataFrame(
        {
            "host": host,
            "t": [t0, t0 + 0.1],
            "t_rel_s": [0.0, 0.1],
            "source": "nvml",
            "device": "gpu0",
            "memory_used_bytes": [1.0, 2.0],
        }
    )
    csv, reasons = node_files(tmp_path, host)
    save_timeline(frame, csv)
    reasons.write_text(json.dumps({"gpu0.power_w": f"not supported on {host}"}))


def test_one_node_keeps_plain_device_names(tmp_path):
    _node(tmp_path, "alpha", 100.0)
    merged, reasons = merge_node_timelines(tmp_path)
    assert set(merged["device"]) == {"gpu0"} and reasons == {
        "gpu0.power_w": "not supported on alpha"
    }


def test_several_nodes_get_one_device_name_each(tmp_path):
    _node(tmp_path, "beta", 100.05)
    _node(tmp_path, "alpha", 100.0)
    merged, _ = merge_node_timelines(tmp_path)
    assert list(merged["device"]) == ["n0.gpu0", "n1.gpu0", "n0.gpu0", "n1.gpu0"]
    assert merged["t_rel_s"].iloc[0] == 0.0


def test_no_node_files_no_timeline(tmp_path):
    assert merge_node_timelines(tmp_path) == (None, {})
