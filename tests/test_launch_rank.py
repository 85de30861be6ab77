"""The per-rank entry that DeepSpeed's launcher, srun and mpirun start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest
from launch_cases import case_env, wait_for, write_case

from llmbench.measure.launch.outcome import classify
from llmbench.measure.launch.rank import (
    SCRIPT,
    exit_codes,
    placement,
    rank_environment,
    tasks_on_node,
    write_case_env,
    write_leader,
)


def test_slurm_tasks_per_node_is_expanded():
    assert [tasks_on_node("2(x3),1", n) for n in range(4)] == [2, 2, 2, 1]
    assert tasks_on_node("8", 0) == 8
    with pytest.raises(ValueError, match="not understood"):
        tasks_on_node("2(3)", 0)


def test_each_source_maps_to_the_workers_variables():
    assert placement(
        {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_SIZE": "2"}, "env"
    ) == {
        "RANK": "3",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "4",
        "LOCAL_WORLD_SIZE": "2",
    }
    slurm = {
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS": "7",
        "SLURM_NODEID": "2",
        "SLURM_TASKS_PER_NODE": "3(x2),1",
        "RANK": "0",  # left in the submitting shell; srun's numbering wins
    }
    assert placement(slurm, "slurm") == {
        "RANK": "5",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "7",
        "LOCAL_WORLD_SIZE": "1",
    }
    ompi = {
        "OMPI_COMM_WORLD_RANK": "2",
        "OMPI_COMM_WORLD_LOCAL_RANK": "0",
        "OMPI_COMM_WORLD_SIZE": "4",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
    }
    assert placement(ompi, "openmpi")["RANK"] == "2"


def test_a_rank_without_its_place_refuses_to_start():
    with pytest.raises(RuntimeError, match="started without RANK, LOCAL_RANK from slurm"):
        placement({"SLURM_NTASKS": "2"}, "slurm")
    with pytest.raises(ValueError, match="unknown placement source"):
        placement({}, "torchrun")


def test_the_case_environment_overrides_all_but_the_rendezvous_and_placement():
    inherited = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "node-a"}
    inherited["OMP_NUM_THREADS"] = "64"
    case = {
        "OMP_NUM_THREADS": "4",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29511",
        "RANK": "0",
    }
    env = rank_environment(inherited, case, "env")
    assert env["OMP_NUM_THREADS"] == "4"
    assert env["MASTER_ADDR"] == "node-a"  # the launcher's address wins
    assert env["MASTER_PORT"] == "29511"  # the case file fills what the launcher did not set
    assert env["RANK"] == "1"


def test_exit_codes_are_gathered_into_the_leader_file(tmp_path):
    for rank, code in ((0, 0), (1, -9)):
        (tmp_path / f"exit.rank{rank}.json").write_text(
            json.dumps({"rank": rank, "exit_code": code, "host": "n"})
        )
    (tmp_path / "exit.rank2.json").write_text("{torn")
    codes = exit_codes(tmp_path)
    assert codes == {"0": 0, "1": -9}
    write_leader(tmp_path, codes, job_id="3")
    assert json.loads((tmp_path / "leader.json").read_text()) == {
        "exit_codes": {"0": 0, "1": -9},
        "job_id": "3",
    }


def start_rank(case_dir):
    """rank.py as DeepSpeed's launch.py starts it: by path, with its --local_rank."""
    write_case_env(case_dir, case_env())
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    argv = [sys.executable, "-u", str(SCRIPT), "--local_rank=0", "--placement", "env"]
    proc = subprocess.Popen([*argv, str(case_dir / "task.json")], env=env, start_new_session=True)
    shim = psutil.Process(proc.pid)
    assert wait_for(lambda: shim.children(), 30)
    return proc, shim.children()[0]


@pytest.mark.slow
def test_a_worker_killed_by_sigkill_is_recorded_and_classified_oom(tmp_path):
    """The kernel's OOM killer leaves no record; the supervisor's exit file still tells."""
    case_dir = write_case(tmp_path, world_size=1)
    proc, worker = start_rank(case_dir)
    assert "llmbench.measure.worker" in " ".join(worker.cmdline())
    worker.send_signal(signal.SIGKILL)
    assert proc.wait(30) == 128 + signal.SIGKILL
    assert exit_codes(case_dir) == {"0": -signal.SIGKILL}
    write_leader(case_dir, exit_codes(case_dir))
    status, reason = classify(case_dir, [None], False, 60.0, None)
    assert status == "oom" and reason.startswith("rank 0 was killed by SIGKILL")


@pytest.mark.slow
def test_sigterm_reaches_the_worker_and_is_recorded(tmp_path):
    case_dir = write_case(tmp_path, world_size=1)
    proc, worker = start_rank(case_dir)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    assert exit_codes(case_dir) == {"0": -signal.SIGTERM}
