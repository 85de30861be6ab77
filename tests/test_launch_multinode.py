"""Real multi-node runs: two network-namespace nodes with their own sshd (tests/multinode.py).

DeepSpeed's launcher reaches the nodes over ssh through its pdsh and OpenMPI
backends, one rank per node (two cores here: 2 × 2 would oversubscribe them),
with ZeRO-2 and ZeRO-3 on a tiny model. Each node runs its own sampler agent,
and the result holds both timelines. Faults: a node whose sshd is dead, and a
rank killed on node 2 in the middle of a step. The nodes skip only where this
machine cannot make them (not root, or tools missing);
``.ci/run`` installs the tools.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, read_results, run_dirs
from launch_cases import wait_for
from multinode import CANNOT, SCRIPT, Nodes, cannot, left_behind, namespace_nodes

from llmbench.judge.timeline import read_phase_events
from llmbench.measure.sampling.summary import measure_window

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ds_ops")]

PREFIX = "llmbt"  # not the script's default, so nodes made by hand are left alone
NET = "10.213.78"
SCENARIO = """\
name: multinode-{backend}
model: {{family: gpt2, size: tiny}}
training: {{seq_len: 32, micro_batch: 2, warmup_steps: 1, steps: {steps}, lr: 0.001}}
deepspeed: {{zero_stage: {zero}, precision: fp32}}
parallel: {{world_size: 2, nodes: 2}}
run:
  launcher: deepspeed
  deepspeed_backend: {backend}
  hostfile: {hostfile}
  timeout_s: 120
  sample_interval_s: 0.01
"""
"""Three tiny steps last tens of ms: each node's agent samples often enough to land inside them."""
NO_BINDING = "  launcher_args: [--bind-to, none]\n"
"""mpirun binds each rank to its node's core 0 — the same core here, where the nodes share the CPUs."""


@pytest.fixture(scope="module")
def nodes(tmp_path_factory) -> Nodes:
    with namespace_nodes(2, PREFIX, tmp_path_factory.mktemp("nodes"), NET) as made:
        yield made


def scenario(
    nodes: Nodes, root: Path, backend: str, zero: str, steps: int = 3, extra: str = ""
) -> Path:
    text = SCENARIO.format(backend=backend, zero=zero, steps=steps, hostfile=nodes.hostfile)
    if backend == "openmpi":
        text += NO_BINDING
    path = root / f"{backend}.yaml"
    path.write_text(extra + text)
    return path


def llmbench(nodes: Nodes, path: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "llmbench", "run", str(path), "--output-dir", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**nodes.environment(), "COLUMNS": "200"},
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = proc.communicate(timeout=timeout)
    return output


def layout(result: dict) -> tuple[int, int]:
    """(world size, ZeRO stage) of a result."""
    return result["params"]["parallel.world_size"], result["params"]["deepspeed.zero_stage"]


def stop(proc: subprocess.Popen) -> None:
    """After a failed assertion: SIGTERM lets llmbench stop its case on the nodes first."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def measuring(out: Path) -> Path | None:
    """Rank 1's phase file once it is in the measured steps."""
    found = list(out.glob("*/cases/*/phases.rank1.jsonl"))
    return found[0] if found and '"measure"' in found[0].read_text() else None


def case_dir(out: Path, result: dict) -> Path:
    (run_dir,) = run_dirs(out)
    return run_dir / "cases" / result["case_id"]


def assert_nodes_idle(
    nodes: Nodes, also_running: tuple[str, ...] = (), within_s: float = 15.0
) -> None:
    """Only each node's sshd (and the daemons named) still run there, once what is on its
    way out has gone: SLURM's per-step ``slurmstepd`` can outlive the job's ``srun`` by a
    moment while it reports the step's end (a clean-clone CI run caught one). A rank
    left behind would still be there when ``within_s`` is up."""
    deadline = time.monotonic() + within_s
    for node in (1, 2):
        while True:
            left = [p for p in nodes.processes(node) if not any(d in p for d in also_running)]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert left == [], f"left running on {nodes.name(node)}"


def test_pdsh_zero2_zero3_on_two_nodes_match_the_one_rank_reference(nodes, tmp_path):
    path = scenario(nodes, tmp_path, "pdsh", "[2, 3]", extra="check: loss_parity\n")
    proc = llmbench(nodes, path, tmp_path / "out")
    output = finish(proc)
    assert proc.returncode == 0, output
    (run_dir,) = run_dirs(tmp_path / "out")
    results = {layout(r): r for r in read_results(run_dir)}
    assert set(results) == {(1, 0), (2, 2), (2, 3)}  # the 1-rank reference was added
    assert all(r["status"] == "ok" for r in results.values()), output
    reference = results.pop((1, 0))
    for result in results.values():
        directory = case_dir(tmp_path / "out", result)
        hosts = [json.loads(p.read_text())["host"] for p in sorted(directory.glob("exit.rank*"))]
        assert hosts == [nodes.name(1), nodes.name(2)]  # one rank on each node
        metrics = result["metrics"]
        assert metrics["loss_parity_ok"] is True, result
        assert metrics["loss_parity_max_abs_dev"] < 1e-4
        assert len(result["losses"]) == len(reference["losses"]) == 3
        # both node agents' timelines, merged: each node sampled its own rank while it trained
        timeline = pd.read_csv(directory / "timeline.csv")
        measure = timeline[timeline["phase"] == "measure"]
        per_node = measure.groupby("host")["tree_rss_bytes"].max()
        assert sorted(per_node.index) == [nodes.name(1), nodes.name(2)]
        assert (per_node > 100 * 2**20).all(), per_node  # a worker with torch loaded, per node
        assert sorted(timeline["device"].unique()) == ["n0.host", "n1.host"]
        # the figure's window is the measure phase cut at the summed step time (the final
        # barrier before teardown is out: summary.measure_window), the timeline's tag is not
        window = measure_window(read_phase_events(directory), metrics["measure_s"])
        peak = window.rows(timeline[timeline["source"] == "host"])["tree_rss_bytes"].max()
        assert metrics["host_tree_rss_peak_bytes"] == pytest.approx(peak)
    assert_nodes_idle(nodes)


def test_openmpi_a_rank_killed_on_node_2_ends_its_case_and_the_next_runs(nodes, tmp_path):
    out = tmp_path / "out"
    proc = llmbench(nodes, scenario(nodes, tmp_path, "openmpi", "[2, 3]", steps=20), out)
    try:
        # rank 1 runs on node 2; its phase file names its worker's pid
        started = wait_for(lambda: measuring(out) is not None, timeout_s=120, step_s=0.05)
        assert started, finish(proc)
        phases = measuring(out)
        first_case = phases.parent
        worker = json.loads(phases.read_text().splitlines()[0])["pid"]
        assert any(p.startswith(f"{worker}:") for p in nodes.processes(2))
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        ended = wait_for(lambda: (first_case.parent.parent / "results.jsonl").exists(), 60)
        ended_after = time.monotonic() - killed
        assert ended, "the case did not end after its rank was killed"
        for node in (1, 2):
            still = [p for p in nodes.processes(node) if str(first_case) in p]
            assert still == [], f"case 1 still running on {nodes.name(node)}"
        output = finish(proc)
    finally:
        stop(proc)
    first, second = read_results(first_case.parent.parent)
    assert first["status"] != "ok" and first["reason"].startswith("rank 1 "), first
    assert ended_after < 30
    assert second["status"] == "ok" and layout(second) == (2, 3), output
    hosts = {json.loads(p.read_text())["host"] for p in case_dir(out, second).glob("exit.rank*")}
    assert hosts == {nodes.name(1), nodes.name(2)}
    assert sorted(pd.read_csv(case_dir(out, second) / "timeline.csv")["host"].unique()) == [
        nodes.name(1),
        nodes.name(2),
    ]
    assert_nodes_idle(nodes)


def test_a_node_without_sshd_fails_its_case_naming_the_host(nodes, tmp_path):
    nodes.kill_sshd(2)
    try:
        proc = llmbench(nodes, scenario(nodes, tmp_path, "pdsh", "2", steps=2), tmp_path / "out")
        output = finish(proc, timeout=120)
    finally:
        nodes.restart_sshd(2)
    (result,) = read_results(run_dirs(tmp_path / "out")[0])
    assert result["status"] == "error", output
    assert nodes.addr(2) in result["reason"] and "ssh" in result["reason"], result["reason"]
    assert_nodes_idle(nodes)


def test_slurm_runs_zero3_across_two_nodes_one_slurmd_each(nodes, tmp_path):
    """Last here: from now on the nodes' environment names this cluster's SLURM_CONF."""
    nodes.start_slurm()
    path = tmp_path / "slurm.yaml"
    text = SCENARIO.format(backend="pdsh", zero=3, steps=2, hostfile=nodes.hostfile)
    path.write_text(
        text.split("run:")[0] + f"run: {{launcher: slurm, slurm: {{partition: {PREFIX}}}}}\n"
    )
    proc = llmbench(nodes, path, tmp_path / "out")
    output = finish(proc)
    assert proc.returncode == 0, output
    (result,) = read_results(run_dirs(tmp_path / "out")[0])
    directory = case_dir(tmp_path / "out", result)
    hosts = [json.loads(p.read_text())["host"] for p in sorted(directory.glob("exit.rank*"))]
    assert result["status"] == "ok" and hosts == [nodes.name(1), nodes.name(2)], output
    timeline = pd.read_csv(directory / "timeline.csv")
    assert sorted(timeline["host"].unique()) == [nodes.name(1), nodes.name(2)]
    assert_nodes_idle(nodes, also_running=("slurmd",))


def test_nodes_that_fail_half_made_are_removed(tmp_path):
    """``up`` removes what it made when a step fails (here: sshd cannot start)."""
    env = {
        **os.environ,
        "LLMBENCH_NODES_DIR": str(tmp_path / "broken"),
        "LLMBENCH_NODES_PREFIX": "llmbx",
        "LLMBENCH_NODES_NET": "10.213.79",
        "LLMBENCH_NODES_SSHD": "/bin/false",
    }
    up = subprocess.run(
        ["bash", str(SCRIPT), "up", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if up.returncode == CANNOT:
        cannot(up.stderr.strip())
    assert up.returncode == 1 and "removing what it made" in up.stderr, up.stderr
    assert left_behind("llmbx", tmp_path / "broken") == []
