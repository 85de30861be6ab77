"""``run.launcher: slurm``: the sbatch command and job script, job states, and a real cluster.

The tests marked ``cluster`` submit real jobs to the SLURM cluster that
``.ci/slurm-setup.sh`` starts on this machine; they skip only where sbatch is
not installed, and fail (saying so) when it is installed but not running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_results, run_dirs, run_llmbench
from launch_cases import TINY, case_env, processes_of, ranks_started, wait_for, write_case

from llmbench.errors import UserError
from llmbench.measure.launch.layout import NodeLayout
from llmbench.measure.launch.outcome import classify
from llmbench.measure.launch.rank import SCRIPT
from llmbench.measure.launch.slurm import SlurmLauncher
from llmbench.measure.launch.slurm_job import (
    CaseJob,
    JobInfo,
    SlurmJob,
    job_outcome,
    parse_job,
    slurm_oom_message,
)

DATA = Path(__file__).parent / "data" / "slurm"
CASE = Path("/shared/run/cases/abc")
PY = sys.executable


# --------------------------------------------------------------------------- sbatch and script


def test_every_option_is_one_sbatch_argument():
    slurm = SlurmLauncher(
        partition="gpu",
        account="proj-1",
        time_limit="01:00:00",
        gpus_per_node=4,
        extra_args=["--qos=high", "--exclusive"],
    )
    assert slurm.sbatch_argv(NodeLayout.of(2, 8), CASE, threads=6, workdir=Path("/work")) == [
        "sbatch",
        "--parsable",
        "--job-name=llmbench-abc",
        f"--output={CASE}/slurm-%j.out",
        "--chdir=/work",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--cpus-per-task=6",
        "--gpus-per-node=4",
        "--time=01:00:00",
        "--partition=gpu",
        "--account=proj-1",
        "--qos=high",
        "--exclusive",
        f"{CASE}/job.sh",
    ]


def test_a_cpu_job_asks_for_no_gpus_and_only_the_options_given():
    argv = SlurmLauncher().sbatch_argv(NodeLayout.of(1, 2), CASE, threads=1, workdir=Path("/w"))
    assert argv[5:] == [
        "--nodes=1",
        "--ntasks-per-node=2",
        "--cpus-per-task=1",
        "--time=00:30:00",
        f"{CASE}/job.sh",
    ]


def test_the_job_script_finds_the_first_node_and_a_free_port_there():
    script = SlurmLauncher().job_script(CASE / "task.json")
    assert script == (
        "#!/bin/bash\n"
        "# llmbench case job; sbatch options in submit.json beside this file\n"
        "set -eu\n"
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"\n'
        f"export MASTER_PORT=\"$({PY} -c 'from llmbench.measure.process import free_port; "
        "print(free_port())')\"\n"
        f"exec srun --kill-on-bad-exit=1 {PY} -u {SCRIPT} --placement slurm {CASE}/task.json\n"
    )


def test_a_hostile_master_address_stays_one_quoted_word(tmp_path):
    hostile = "10.0.0.1; touch pwned $(id)"
    script = SlurmLauncher(master_addr=hostile).job_script(tmp_path / "odd dir" / "task.json")
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    export = next(line for line in script.splitlines() if "MASTER_ADDR=" in line)
    shown = subprocess.run(
        ["bash", "-c", f'{export}\nprintf %s "$MASTER_ADDR"'],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == hostile and not (tmp_path / "pwned").exists()
    assert f"'{tmp_path}/odd dir/task.json'" in script


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--nodes=2", "--nodes is set from parallel.nodes"),
        ("-N2", "-N is set from parallel.nodes"),
        ("--time=5", "--time is set from run.slurm.time_limit"),
        ("--array=1-4", "--array is set from one job per case"),
        ("qos=high", "'qos=high' is not an sbatch option"),
        ("--ntasks-per-no=8", "--ntasks-per-no is set from parallel.world_size"),
        ("--nod", "--nod is set from parallel.nodes"),
        ("--tim=5", "--tim is set from run.slurm.time_limit"),
    ],
)
def test_extra_args_cannot_fight_the_case(arg, message):
    with pytest.raises(UserError, match="run.slurm.extra_args: " + message):
        SlurmLauncher(extra_args=[arg], where="s.yaml:9")


# --------------------------------------------------------------------------- job states


@pytest.mark.parametrize(
    ("name", "state", "ended", "outcome"),
    [
        ("pending", "PENDING", False, None),
        ("running", "RUNNING", False, None),
        ("completed", "COMPLETED", True, (0, None, None)),
        ("failed", "FAILED", True, (3, None, None)),
        ("cancelled", "CANCELLED", True, (143, "error", "SLURM job 7 ended CANCELLED")),
        ("timeout", "TIMEOUT", True, (143, "timeout", "SLURM job 7 hit run.slurm.time_limit 1:00")),
    ],
)
def test_recorded_scontrol_lines_map_to_case_outcomes(name, state, ended, outcome):
    """Lines recorded from ``scontrol show job -o`` on the test cluster, one per state."""
    info = parse_job((DATA / f"{name}.txt").read_text())
    assert info.state == state and info.ended is ended
    if outcome:
        assert job_outcome("7", info, "1:00") == outcome
    if name == "pending":
        assert info.reason == "Resources"


def test_out_of_memory_and_node_failures_are_named():
    assert job_outcome("7", JobInfo("OUT_OF_MEMORY", "0:125"), "1:00") == (
        253,
        "oom",
        "SLURM job 7 ended OUT_OF_MEMORY (a step hit its memory limit)",
    )
    assert job_outcome("7", JobInfo("NODE_FAIL", "0:0", "NodeDown"), "1:00") == (
        1,
        "error",
        "SLURM job 7 ended NODE_FAIL (NodeDown)",
    )


def test_a_rank_killed_for_memory_is_classified_oom(tmp_path):
    """srun's own words in the job output (recorded from a real cgroup OOM) name the cause."""
    case_dir = tmp_path
    shutil.copy(DATA / "oom-job.out", case_dir / "slurm-12.out")
    assert slurm_oom_message(case_dir / "slurm-12.out") == "task 0: Out Of Memory"
    job = SlurmJob("12")
    job.final = JobInfo("FAILED", "1:0")
    assert CaseJob(job, case_dir, 2, "00:30:00").poll() == 1
    leader = json.loads((case_dir / "leader.json").read_text())
    assert leader == {
        "exit_codes": {"0": -9, "1": -9},
        "job_id": "12",
        "job_state": "FAILED",
        "status": "oom",
        "reason": "SLURM job 12: task 0: Out Of Memory",
    }
    status, _ = classify(case_dir, [None, None], False, 60.0, None)
    assert status == "oom"


# --------------------------------------------------------------------------- a real cluster


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch is not installed (.ci/slurm-setup.sh installs a one-node cluster)")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    assert "UP" in ping.stdout, (
        f"SLURM is installed but not running; run .ci/slurm-setup.sh\n{ping.stdout}{ping.stderr}"
    )
    config = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, check=True
    ).stdout
    return {"enforces_memory": "task/cgroup" in config}


def test_srun_tasks_find_their_rank_whatever_the_shell_had(cluster):
    code = "import json, os; from llmbench.measure.launch.rank import placement; print(json.dumps(placement(os.environ, 'slurm')))"
    out = subprocess.run(
        ["srun", "--ntasks=2", "--nodes=1", PY, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RANK": "7", "WORLD_SIZE": "9"},
        check=True,
    )
    found = sorted((json.loads(line) for line in out.stdout.splitlines()), key=lambda p: p["RANK"])
    assert found == [
        {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"},
        {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"},
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("ds_ops")
def test_a_sweep_runs_each_case_as_a_job_and_collects_results(cluster, write_scenario, tmp_path):
    sweep_config = (
        "deepspeed:\n  zero_stage: 1\n  precision: fp32\n"
        "  config:\n    - {}\n    - {optimizer: {type: NoSuchOptimizer}}\n"
    )
    path = write_scenario(
        TINY.format(name="slurm", steps=3, world_size=2).replace(
            "deepspeed: {zero_stage: 1, precision: fp32}\n", sweep_config
        )
        # three tiny steps last tens of ms: sample often enough to land inside them
        + "run: {launcher: slurm, sample_interval_s: 0.01, slurm: {time_limit: '00:10:00'}}\n"
    )
    out = run_llmbench(["run", str(path), "--output-dir", str(tmp_path / "runs")])
    assert out.returncode == 2, out.stdout + out.stderr  # one case errored
    (run_dir,) = run_dirs(tmp_path / "runs")
    ok, failed = read_results(run_dir)
    assert ok["status"] == "ok", ok["reason"]
    assert sorted(r["rank"] for r in ok["ranks"]) == [0, 1]
    assert len(ok["step_times_s"]) == 3 and ok["metrics"]["tokens_per_s"] > 0
    assert failed["status"] == "error" and "nosuchoptimizer" in failed["reason"].lower()
    # the node agent sampled the job's processes, outside the runner's process tree
    rank_peaks = [rank["memory"]["rss_peak_bytes"] for rank in ok["ranks"]]
    assert ok["metrics"]["host_tree_rss_peak_bytes"] >= 0.9 * sum(rank_peaks)
    timeline = (run_dir / "cases" / ok["case_id"] / "timeline.csv").read_text()
    assert ",measure," in timeline
    states = []
    for result in (ok, failed):
        case_dir = run_dir / "cases" / result["case_id"]
        leader = json.loads((case_dir / "leader.json").read_text())
        submit = json.loads((case_dir / "submit.json").read_text())
        assert submit["job_id"] == leader["job_id"]
        assert "--ntasks-per-node=2" in submit["argv"] and "--time=00:10:00" in submit["argv"]
        first = json.loads((case_dir / "phases.rank0.jsonl").read_text().splitlines()[0])
        assert first["phase"] == "queued" and first["job_id"] == leader["job_id"]
        assert (case_dir / f"slurm-{leader['job_id']}.out").exists()
        states.append(leader["job_state"])
        assert processes_of(case_dir) == []
    assert states == ["COMPLETED", "FAILED"]
    ops = json.loads((run_dir / "ops.json").read_text())  # built by a job of its own
    assert ops["FusedAdamBuilder"]["error"] is None
    assert list(run_dir.glob("ops-*.log"))


@pytest.mark.slow
@pytest.mark.usefixtures("ds_ops")
def test_a_case_over_its_memory_limit_is_oom(cluster, write_scenario, tmp_path):
    if not cluster["enforces_memory"]:
        pytest.skip("this SLURM cluster does not enforce memory limits (TaskPlugin has no cgroup)")
    path = write_scenario(
        TINY.format(name="oom", steps=3, world_size=2)
        + "run: {launcher: slurm, slurm: {extra_args: ['--mem=300M']}}\n"
    )
    out = run_llmbench(["run", str(path), "--output-dir", str(tmp_path / "runs")])
    (run_dir,) = run_dirs(tmp_path / "runs")
    (result,) = read_results(run_dir)
    case_dir = run_dir / "cases" / result["case_id"]
    leader = json.loads((case_dir / "leader.json").read_text())
    assert leader["job_state"] == "FAILED"  # srun failed; SLURM's own lines say why
    assert leader["status"] == "oom" and "Out Of Memory" in leader["reason"]
    assert -9 in leader["exit_codes"].values()  # the cgroup OOM killer's SIGKILL, as recorded
    # the scheduler's verdict wins over "a peer died of srun's SIGTERM"
    assert result["status"] == "oom" and "Out Of Memory" in result["reason"]
    assert out.returncode == 0, out.stdout + out.stderr  # oom is a result, not a failure


@pytest.mark.slow
def test_cancelling_a_case_ends_its_job_and_every_rank(cluster, tmp_path):
    case_dir = write_case(tmp_path, world_size=2, steps=1_000_000)
    proc = SlurmLauncher(time_limit="00:10:00").start(case_dir, 2, case_env())
    assert proc.pid is None  # nothing of the case is a child of this process
    try:
        assert wait_for(lambda: ranks_started(case_dir, 2), 240)
        assert len(processes_of(case_dir)) >= 5  # srun, 2 × (rank.py, worker)
    finally:
        proc.kill(reap_s=30)
    assert proc.poll() is not None
    assert json.loads((case_dir / "leader.json").read_text())["job_state"] == "CANCELLED"
    assert wait_for(lambda: processes_of(case_dir) == [], 10), processes_of(case_dir)
