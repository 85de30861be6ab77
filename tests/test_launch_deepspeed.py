"""``run.launcher: deepspeed``: the argv handed to DeepSpeed, and real cases on this machine.

Multi-node backends (pdsh, OpenMPI, srun) cannot run on one machine without
their stacks; for them the argv is checked as written, and DeepSpeed's own
runner code turns it into the command it would execute on the nodes.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, read_results, run_dirs, run_llmbench
from launch_cases import (
    TINY,
    case_env,
    processes_of,
    ranks_started,
    wait_for,
    write_case,
)

from llmbench.define.loader import parse_scenario
from llmbench.errors import UserError
from llmbench.hardware import detect
from llmbench.measure.launch.deepspeed import BACKENDS, PLACEMENT, DeepSpeedLauncher
from llmbench.measure.launch.layout import NodeLayout
from llmbench.measure.launch.rank import SCRIPT

TWO_NODES = "node-a slots=4\nnode-b slots=4\n"
CASE = Path("/shared/run/cases/abc")
PY = sys.executable


def launcher(tmp_path: Path, hostfile_text: str | None = None, **kwargs) -> DeepSpeedLauncher:
    hostfile = None
    if hostfile_text is not None:
        hostfile = tmp_path / "hostfile"
        hostfile.write_text(hostfile_text)
    return DeepSpeedLauncher(hostfile=str(hostfile) if hostfile else None, **kwargs)


def argv_for(ds: DeepSpeedLauncher, nodes: int, world_size: int) -> list[str]:
    hosts = ds.case_hosts(NodeLayout.of(nodes, world_size))
    return ds.command(hosts, CASE / "hostfile", CASE / "task.json", 29511)


def tail(placement: str) -> list[str]:
    return [str(SCRIPT), "--placement", placement, str(CASE / "task.json")]


RUNNER = [PY, "-u", "-m", "deepspeed.launcher.runner", "--hostfile", str(CASE / "hostfile")]


# --------------------------------------------------------------------------- argv


def test_one_local_host_takes_deepspeeds_local_path(tmp_path):
    ds = launcher(tmp_path, "localhost slots=2\n")
    assert argv_for(ds, 1, 2) == [
        *RUNNER,
        *("--num_nodes", "1", "--master_addr", "127.0.0.1", "--master_port", "29511"),
        *("--launcher", "pdsh", "--no_ssh_check"),
        *tail("env"),
    ]


def test_without_a_hostfile_a_one_node_case_runs_on_localhost(tmp_path):
    ds = launcher(tmp_path)
    assert ds.case_hosts(NodeLayout.of(1, 2)) == {"localhost": 2}
    with pytest.raises(UserError, match="needs 2 node"):
        ds.case_hosts(NodeLayout.of(2, 4))


def test_two_nodes_through_pdsh(tmp_path):
    ds = launcher(tmp_path, TWO_NODES, gpus=True)
    assert ds.case_hosts(NodeLayout.of(2, 4)) == {"node-a": 2, "node-b": 2}
    assert argv_for(ds, 2, 4) == [
        *RUNNER,
        *("--num_nodes", "2", "--num_gpus", "2"),
        *("--master_addr", "node-a", "--master_port", "29511", "--launcher", "pdsh"),
        *tail("env"),
    ]


def test_openmpi_gets_no_node_counts_and_its_own_arguments(tmp_path):
    ds = launcher(
        tmp_path,
        TWO_NODES,
        backend="openmpi",
        master_addr="10.0.0.1",
        launcher_args=["--mca", "btl_tcp_if_include", "ib0"],
    )
    assert argv_for(ds, 2, 8) == [
        *RUNNER,
        *("--master_addr", "10.0.0.1", "--master_port", "29511", "--launcher", "openmpi"),
        *("--launcher_args", "--mca btl_tcp_if_include ib0"),
        *tail("openmpi"),
    ]


def test_one_remote_host_is_forced_through_the_backend(tmp_path):
    ds = launcher(tmp_path, "gpu-17 slots=8\n", backend="slurm", gpus=True)
    assert argv_for(ds, 1, 8) == [
        *RUNNER,
        *("--num_nodes", "1", "--num_gpus", "8"),
        *("--master_addr", "gpu-17", "--master_port", "29511", "--launcher", "slurm"),
        "--force_multi",
        *tail("slurm"),
    ]


def test_include_passes_the_users_hostfile_and_filter(tmp_path):
    ds = launcher(tmp_path, "localhost slots=4\n", include="localhost:2,3")
    hosts = ds.case_hosts(NodeLayout.of(1, 2))
    assert hosts == {"localhost": 2}
    argv = ds.command(hosts, ds.hostfile, CASE / "task.json", 29511)
    assert argv[4:8] == ["--hostfile", str(tmp_path / "hostfile"), "--include", "localhost:2,3"]
    assert "--num_nodes" not in argv and "--no_ssh_check" in argv


@pytest.mark.parametrize("backend", BACKENDS)
def test_deepspeed_turns_our_argv_into_the_node_command_we_expect(tmp_path, backend):
    """DeepSpeed's runner (its code, not ours) builds the per-node command from our argv."""
    from deepspeed.launcher import runner as ds_runner

    ds = launcher(tmp_path, TWO_NODES, backend=backend, gpus=backend == "pdsh")
    hosts = ds.case_hosts(NodeLayout.of(2, 4))
    hostfile = tmp_path / "case-hostfile"
    hostfile.write_text("".join(f"{h} slots={n}\n" for h, n in hosts.items()))
    argv = ds.command(hosts, hostfile, CASE / "task.json", 29511)
    args = ds_runner.parse_args(argv[4:])
    pool = ds_runner.fetch_hostfile(args.hostfile)
    active = ds_runner.parse_inclusion_exclusion(pool, args.include, args.exclude)
    active = ds_runner.apply_num_nodes_and_gpus(active, args.num_nodes, args.num_gpus)
    assert dict(active) == {"node-a": [0, 1], "node-b": [0, 1]}
    world_info = ds_runner.encode_world_info(active)
    runner_cls = ds_runner.LAUNCHER_CLASSES[backend]
    runner = (
        runner_cls(args, world_info) if backend == "pdsh" else runner_cls(args, world_info, pool)
    )
    cmd = runner.get_cmd(dict(os.environ), active)
    if backend == "pdsh":
        cmd, kill_cmd, _ = cmd
        assert cmd[:6] == ["pdsh", "-S", "-f", "1024", "-w", "node-a,node-b"]
        assert "--node_rank=%n" in cmd and "--master_addr=node-a" in cmd
        world = next(a for a in cmd if a.startswith("--world_info="))
        assert json.loads(base64.urlsafe_b64decode(world.split("=", 1)[1])) == {
            "node-a": [0, 1],
            "node-b": [0, 1],
        }
        assert kill_cmd[:6] == cmd[:6]  # its stop command reaches the same nodes
    elif backend == "openmpi":
        assert cmd[:5] == ["mpirun", "-n", "4", "-hostfile", str(hostfile)]
    else:
        assert cmd[:3] == ["srun", "-n", "4"] and cmd[cmd.index("--nodes") + 1] == "2"
        assert "--gpus-per-node" not in cmd  # a CPU cluster has no GPU gres to ask for
    assert cmd[-4:] == tail(PLACEMENT[backend])


def test_pdsh_refuses_values_its_remote_shell_would_split(tmp_path):
    ds = launcher(tmp_path, TWO_NODES, master_addr="node-a;reboot")
    case_dir = write_case(tmp_path, world_size=2)
    task = json.loads((case_dir / "task.json").read_text())
    task["spec"]["parallel"]["nodes"] = 2
    (case_dir / "task.json").write_text(json.dumps(task))
    with pytest.raises(UserError, match="remote shell"):
        ds.start(case_dir, 2, case_env())
    assert processes_of(case_dir) == []


# --------------------------------------------------------------------------- user errors


def test_mistakes_are_one_line_before_anything_runs(tmp_path):
    with pytest.raises(UserError, match=r"hostfile:2: 'node-b four' is not of the form"):
        launcher(tmp_path, "node-a slots=4\nnode-b four\n")
    with pytest.raises(UserError, match=r"set run\.hostfile too"):
        launcher(tmp_path, include="localhost:0")
    with pytest.raises(UserError, match=r"host node-a has slots 0-3, not \[4\]"):
        launcher(tmp_path, TWO_NODES, include="node-a:3,4")
    with pytest.raises(UserError, match="openmpi backend cannot filter hosts"):
        launcher(tmp_path, TWO_NODES, include="node-a", backend="openmpi")
    ds = launcher(tmp_path, "node-a slots=2\nnode-b slots=1\n")
    with pytest.raises(UserError, match=r"too few slots on node-b \(1\)"):
        ds.case_hosts(NodeLayout.of(2, 4))
    with pytest.raises(UserError, match="has 2 host"):
        ds.case_hosts(NodeLayout.of(3, 3))


def test_a_scenario_is_checked_against_the_hostfile_before_the_sweep(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost slots=2\n")
    text = TINY.format(name="fit", steps=2, world_size="[2, 4]")
    text += f"run: {{launcher: deepspeed, hostfile: {hostfile}}}\n"
    scenario = parse_scenario(text, source="fit.yaml")
    with pytest.raises(UserError, match=r"^fit.yaml:6: run.hostfile: gpt2-tiny ws4 needs 1 node"):
        DeepSpeedLauncher.for_scenario(scenario, detect("cpu"))


def test_a_multi_node_scenario_needs_the_backend_installed_here(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no pdsh on it, even where CI installed one
    hostfile = tmp_path / "hosts"
    hostfile.write_text(TWO_NODES)
    text = TINY.format(name="two", steps=2, world_size="4, nodes: 2")
    text += f"run: {{launcher: deepspeed, hostfile: {hostfile}}}\n"
    scenario = parse_scenario(text, source="two.yaml")
    with pytest.raises(UserError, match="through DeepSpeed's pdsh backend, but pdsh is not"):
        DeepSpeedLauncher.for_scenario(scenario, detect("cpu"))


# --------------------------------------------------------------------------- real runs


@pytest.mark.slow
@pytest.mark.usefixtures("ds_ops")
def test_a_two_rank_case_runs_on_localhost_from_a_hostfile(write_scenario, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# this machine\nlocalhost slots=2\n")
    path = write_scenario(
        TINY.format(name="dsl", steps=3, world_size=2)
        + f"run: {{launcher: deepspeed, hostfile: {hostfile}}}\n"
    )
    out = run_llmbench(["run", str(path), "--output-dir", str(tmp_path / "runs")])
    assert out.returncode == 0, out.stdout + out.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    (result,) = read_results(run_dir)
    assert result["status"] == "ok", result["reason"]
    assert sorted(r["rank"] for r in result["ranks"]) == [0, 1]
    assert len(result["step_times_s"]) == 3 and all(t > 0 for t in result["step_times_s"])
    assert result["metrics"]["tokens_per_s"] > 0
    case_dir = run_dir / "cases" / result["case_id"]
    assert json.loads((case_dir / "leader.json").read_text()) == {"exit_codes": {"0": 0, "1": 0}}
    assert (case_dir / "hostfile").read_text() == "localhost slots=2\n"
    # ranks over ssh get sshd's environment: the op-build tools' PATH travels in the case's env
    assert json.loads((case_dir / "rank_env.json").read_text())["PATH"] == os.environ["PATH"]
    log = (case_dir / "launcher.log").read_text()
    assert "deepspeed.launcher.launch" in log and "--placement env" in log
    rank_pids = {r["pid"] for r in result["ranks"]}
    assert len(rank_pids) == 2
    assert processes_of(case_dir) == []


@pytest.mark.slow
@pytest.mark.usefixtures("ds_ops")
def test_killing_a_case_takes_down_runner_launch_and_every_rank(tmp_path):
    case_dir = write_case(tmp_path, world_size=2, steps=1_000_000)
    ds = DeepSpeedLauncher()
    proc = ds.start(case_dir, 2, case_env())
    try:
        assert wait_for(lambda: ranks_started(case_dir, 2), 240), (
            case_dir / "launcher.log"
        ).read_text()
        assert len(processes_of(case_dir)) >= 5  # runner, launch.py, 2 × (rank.py, worker)
    finally:
        proc.kill()
    assert proc.poll() is not None
    assert wait_for(lambda: processes_of(case_dir) == [], 5), processes_of(case_dir)


@pytest.mark.slow
@pytest.mark.usefixtures("ds_ops")
def test_a_killed_sweep_leaves_no_rank_of_deepspeeds_launcher_behind(write_scenario, tmp_path):
    """llmbench dies by SIGKILL: its runner follows, launch.py is orphaned, the ranks see it."""
    path = write_scenario(
        TINY.format(name="orphan", steps=1_000_000, world_size=2)
        + "run: {launcher: deepspeed, timeout_s: 600}\n"
    )
    sweep = subprocess.Popen(
        [sys.executable, "-m", "llmbench", "run", str(path), "--output-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: list(tmp_path.glob("*/cases/*/phases.rank1.jsonl")), 300)
        (case_dir,) = tmp_path.glob("*/cases/*")
        assert wait_for(lambda: ranks_started(case_dir, 2), 60)
        assert processes_of(case_dir)
    finally:
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait()
    t0 = time.monotonic()
    assert wait_for(lambda: processes_of(case_dir) == [], 30), processes_of(case_dir)
    assert time.monotonic() - t0 < 30


def test_local_gpus_are_named_so_deepspeed_keeps_cuda_visible_devices(tmp_path):
    """CUDA_VISIBLE_DEVICES=2,3: DeepSpeed would otherwise give the ranks GPUs 0 and 1."""
    ds = launcher(tmp_path, gpus=True, device_ids=(2, 3))
    hosts = ds.case_hosts(NodeLayout.of(1, 2))
    argv = ds.command(hosts, CASE / "hostfile", CASE / "task.json", 29511)
    assert argv[argv.index("--include") + 1] == "localhost:2,3"
    assert "--num_gpus" not in argv and "--num_nodes" not in argv
    assert ds.hostfile_slots(hosts) == {"localhost": 4}  # slots 0-3 exist to be filtered
    one = ds.case_hosts(NodeLayout.of(1, 1))
    assert "localhost:2" in ds.command(one, CASE / "hostfile", CASE / "task.json", 29511)


def test_cpu_ranks_get_no_device_filter(tmp_path):
    ds = launcher(tmp_path, "localhost slots=2\n")
    hosts = ds.case_hosts(NodeLayout.of(1, 2))
    assert "--include" not in argv_for(ds, 1, 2)
    assert ds.hostfile_slots(hosts) == hosts
