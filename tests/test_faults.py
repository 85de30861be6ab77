"""Fault injection on real sweeps: kills, signals, hangs, NaN, full disk, concurrent writers.

Every scenario ends with the same four checks (:func:`settled`): each finished
case is in results.jsonl exactly once, the history passes ``PRAGMA
integrity_check``, no process of the run is left alive, and the exit code is
the documented one. Cases are the tiniest there are (gpt2-tiny, seq 16,
1-2 steps) so the whole suite costs a few minutes on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import pytest

from llmbench.errors import ExitCode
from tests.conftest import interruptible

pytestmark = pytest.mark.slow

TAG = "LLMBENCH_FAULT_TEST"
TINY = """\
name: faults
model: {{family: gpt2, size: tiny}}
training: {{seq_len: 16, micro_batch: 1, warmup_steps: {warmup}, steps: {steps}}}
deepspeed: {{zero_stage: [0, 1]}}
parallel: {{world_size: {world_size}}}
run: {{timeout_s: {timeout}, sampling: false}}
"""


class Sweep:
    """One ``llmbench run`` in the background, tagged so every descendant can be found."""

    def __init__(self, tmp: Path, args: list[str], name: str = "sweep", preexec_fn=interruptible):
        self.tag = uuid.uuid4().hex
        self.out = (tmp / f"{name}.out").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmbench", "run", *args],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            env={**os.environ, TAG: self.tag, "DS_ACCELERATOR": "cpu", "COLUMNS": "200"},
            cwd=tmp,
            preexec_fn=preexec_fn,
        )
        self.log = tmp / f"{name}.out"

    def processes(self) -> list[psutil.Process]:
        """Every live process of this sweep (ranks, leaders, fork server, resource tracker)."""
        found = []
        for p in psutil.process_iter():
            try:
                if p.environ().get(TAG) == self.tag and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.Error:
                continue
        return found

    def wait(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout)
        self.out.close()
        return code

    def output(self) -> str:
        """What it printed, with rich's line wrapping undone (paths and messages on one line)."""
        return " ".join(self.log.read_text().split())


def scenario(
    tmp: Path, world_size: int = 1, steps: int = 2, warmup: int = 1, timeout: float = 120
) -> Path:
    path = tmp / "faults.yaml"
    path.write_text(TINY.format(world_size=world_size, steps=steps, warmup=warmup, timeout=timeout))
    return path


def run_dir(root: Path) -> Path:
    (found,) = [p for p in (root / "runs").iterdir() if p.is_dir()]
    return found


def wait_for(condition, timeout: float = 90, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def running_logs(root: Path, name: str) -> list[Path]:
    """``name`` files of cases that have no result yet, oldest first."""
    done = {r["case_id"] for r in results(root)}
    logs = [p for p in root.glob(f"runs/*/cases/*/{name}") if p.parent.name not in done]
    return sorted(logs, key=lambda p: p.stat().st_mtime)


def phase_of(root: Path) -> str | None:
    """The phase rank 0 of the running case last published."""
    logs = running_logs(root, "phases.rank0.jsonl")
    lines = logs[-1].read_text().splitlines() if logs else []
    return json.loads(lines[-1])["phase"] if lines else None


def results(root: Path) -> list[dict]:
    if not (root / "runs").exists() or not any((root / "runs").iterdir()):
        return []
    path = run_dir(root) / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if whole(line)]


def whole(line: str) -> bool:
    """A complete JSON line (a torn last line is left for the next run to repair)."""
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def settled(
    sweep: Sweep, root: Path, code: int, expected: int, finished: int | None = None
) -> list[dict]:
    """The four promises every fault must keep."""
    assert code == expected, sweep.output()
    found = results(root)
    counts = Counter((r["case_id"], r["repeat"]) for r in found)
    assert all(n == 1 for n in counts.values()), counts
    if finished is not None:
        assert len(found) == finished, sweep.output()
    history = root / "history.sqlite"
    if history.exists():
        with sqlite3.connect(history) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    wait_for(
        lambda: not sweep.processes(), timeout=15, what=f"no process left: {sweep.processes()}"
    )
    return found


def run_args(path: Path, root: Path) -> list[str]:
    return [str(path), "--output-dir", str(root / "runs")]


@pytest.fixture
def root(tmp_path, ds_ops):
    return tmp_path


def test_kill_9_of_the_parent_leaves_nothing_behind_and_resume_finishes_once(root):
    path = scenario(root, steps=8)
    first = Sweep(root, run_args(path, root), "first")
    wait_for(lambda: phase_of(root) == "measure", what="measure phase")
    first.proc.kill()
    first.wait()
    # the fork server, the resource tracker and the case's processes notice and exit
    settled(first, root, -signal.SIGKILL, -signal.SIGKILL, finished=0)
    resume = ["--resume", str(run_dir(root))]
    again = Sweep(root, resume, "resume")
    lock = run_dir(root) / ".lock"
    wait_for(lambda: lock.read_text().strip() == str(again.proc.pid), what="the resume's lock")
    second = Sweep(root, resume, "second")
    assert second.wait() == ExitCode.INVALID
    assert "is running in this run directory" in second.output()
    settled(again, root, again.wait(), ExitCode.OK, finished=2)


def rank_pid(root: Path, rank: int) -> int:
    """The pid rank ``rank`` of the running case wrote into its phase log."""
    logs = running_logs(root, f"phases.rank{rank}.jsonl")
    return json.loads(logs[-1].read_text().splitlines()[0])["pid"]


def test_a_killed_rank_a_killed_leader_and_a_rank_hung_in_a_collective_each_cost_one_case(root):
    path = scenario(root, world_size=2, steps=400, timeout=30)
    path.write_text(path.read_text().replace("zero_stage: [0, 1]", "zero_stage: [0, 1, 2]"))
    sweep = Sweep(root, run_args(path, root))
    for n, fault in enumerate(("kill rank", "kill leader", "hang rank")):
        wait_for(lambda n=n: len(results(root)) == n and phase_of(root) == "measure", what=fault)
        pid = rank_pid(root, 1)
        if fault == "kill rank":
            os.kill(pid, signal.SIGKILL)
        elif fault == "kill leader":
            os.kill(psutil.Process(pid).ppid(), signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGSTOP)  # rank 0 now waits in a collective for ever
    found = settled(sweep, root, sweep.wait(), ExitCode.INVALID, finished=3)
    # a rank killed by SIGKILL looks like the kernel's OOM killer, and is classified so
    assert [r["status"] for r in found][1:] == ["error", "timeout"], sweep.output()
    assert found[0]["status"] in ("oom", "error") and "rank 1" in found[0]["reason"]


@pytest.mark.parametrize(
    ("signum", "phase"),
    [
        (signal.SIGTERM, "init"),
        (signal.SIGINT, "warmup"),
        (signal.SIGTERM, "measure"),
        (signal.SIGINT, "between cases"),
    ],
)
def test_sigterm_and_sigint_at_every_phase_keep_finished_cases_and_exit_130(root, signum, phase):
    path = scenario(root, warmup=8 if phase == "warmup" else 1, steps=8)
    sweep = Sweep(root, run_args(path, root))
    if phase == "between cases":
        wait_for(lambda: len(results(root)) == 1, what="the first result")
    else:
        wait_for(lambda: phase_of(root) == phase, what=phase)
    sweep.proc.send_signal(signum)
    finished = 1 if phase == "between cases" else 0
    settled(sweep, root, sweep.wait(), ExitCode.INTERRUPTED, finished=finished)
    assert f"--resume {run_dir(root)}" in sweep.output()


def test_a_diverging_loss_is_a_finding_and_two_sweeps_share_one_history(root):
    """Two concurrent ``llmbench run`` index into one history; the NaN loss is stored as null with why."""
    path = scenario(root, steps=3)
    path.write_text(
        path.read_text()
        .replace("zero_stage: [0, 1]", "zero_stage: 0")
        .replace("steps: 3}", "steps: 3, lr: 1.0e+30}")
    )
    sweeps = [Sweep(root, run_args(path, root), f"s{i}") for i in range(2)]
    codes = [s.wait() for s in sweeps]
    runs = sorted((p for p in (root / "runs").iterdir() if p.is_dir()), key=lambda p: p.name)
    assert codes == [ExitCode.OK, ExitCode.OK], [s.output()[-2000:] for s in sweeps]
    assert len(runs) == 2
    with sqlite3.connect(root / "history.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    for run in runs:
        (result,) = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
        assert result["status"] == "ok"
        assert result["reason"].startswith("loss became NaN at step")
        assert result["null_reasons"]["loss_last"] == result["reason"]
    for sweep in sweeps:
        wait_for(lambda sweep=sweep: not sweep.processes(), timeout=15, what="no process left")


def test_a_full_disk_while_appending_is_one_clear_error_and_the_next_run_repairs_it(root):
    import resource

    from llmbench.define.loader import load_scenario
    from llmbench.hardware import detect
    from llmbench.judge.result import CaseResult
    from llmbench.judge.store import RunDir
    from llmbench.measure.environment import collect

    path = scenario(root)
    path.write_text(path.read_text().replace("zero_stage: [0, 1]", "zero_stage: 0"))
    run = RunDir.create(root / "runs", "faults")
    run.write_yaml("scenario.yaml", load_scenario(path).resolved())
    run.write_json("env.json", collect(detect("cpu")))
    limit = 256 * 1024
    # padding no report prints: the sweep's own output file is under the same limit
    filler = CaseResult(
        "filler", "an earlier case", {}, "ok", ranks=[{"pad": "x" * (limit - 1500)}]
    )
    run.append(filler)  # results.jsonl now ends a few hundred bytes short of the limit

    def limited() -> None:
        interruptible()
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = ["--resume", str(run.path)]
    full = Sweep(root, args, "full", preexec_fn=limited)
    code = full.wait()
    assert code == ExitCode.INVALID and "cannot store a result" in full.output(), full.output()
    assert "File too large" in full.output() and f"--resume {run.path}" in full.output()
    settled(full, root, code, ExitCode.INVALID, finished=1)
    *_, torn = (run.path / "results.jsonl").read_text().splitlines()
    assert not whole(torn)  # the write stopped part-way, as on a full disk
    again = Sweep(root, args, "again")
    found = settled(again, root, again.wait(), ExitCode.OK, finished=2)
    assert found[0]["case_id"] == "filler"
    lines = (run.path / "results.jsonl").read_text().splitlines()
    assert all(whole(line) for line in lines) and len(lines) == 2
    assert (run.path / "results.jsonl.torn").read_text() == torn + "\n"
    assert "warning: " in again.output() and "cut a torn last line" in again.output()
