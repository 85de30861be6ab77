"""SLURM jobs as a sweep sees them: submitted, watched, cancelled, and what their end means.

Only ``scontrol``, ``scancel`` and ``sbatch`` are used, never ``sacct``: a
small cluster often runs without accounting storage, and ``scontrol`` keeps a
finished job for MinJobAge (300 s by default), far longer than the once-a-second
polling needs.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from llmbench.errors import UserError
from llmbench.measure.launch.rank import exit_codes, write_leader

STATE_CHECK_S = 1.0
COMMAND_TIMEOUT_S = 60.0
ENDED = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
    }
)
"""Base job states after which nothing of the job runs (squeue(1), JOB STATE CODES); COMPLETING is not one."""
VANISHED = "VANISHED"
# srun(1) "task N: Out Of Memory" names the rank; slurmstepd "Detected N oom-kill event(s) in StepId=…"
_OOM_LINES = (
    re.compile(r"task [\d\-,]+: Out Of Memory"),
    re.compile(r"Detected \d+ oom-kill event\(s\) in \S+"),
)


@dataclass(frozen=True)
class JobInfo:
    """What scontrol says about a job: its base state, ``code:signal`` and scheduler reason."""

    state: str
    exit_code: str = "0:0"
    reason: str | None = None

    @property
    def ended(self) -> bool:
        return self.state in ENDED or self.state == VANISHED


def parse_job(text: str) -> JobInfo:
    """One ``scontrol show job -o`` line → JobInfo."""

    def field(name: str) -> str | None:
        match = re.search(rf"(?:^|\s){name}=(\S*)", text)
        return match.group(1) if match else None

    state = field("JobState")
    if state is None:
        raise ValueError(f"no JobState in {text[:200]!r}")
    reason = field("Reason")
    return JobInfo(
        state=state,
        exit_code=field("ExitCode") or "0:0",
        reason=None if reason == "None" else reason,
    )


def job_outcome(job_id: str, info: JobInfo, time_limit: str) -> tuple[int, str | None, str | None]:
    """Case exit code, and the status and reason the scheduler alone knows (else None, None).

    A job SLURM ended for memory or time leaves ranks killed by signals and
    records missing; the runner must hear it from the job state.
    """
    code, _, sig = info.exit_code.partition(":")
    exit_code = int(code) if code.isdigit() and int(code) else 0
    if not exit_code and sig.isdigit() and int(sig):
        exit_code = 128 + int(sig)
    if info.state == "COMPLETED":
        return exit_code, None, None
    exit_code = exit_code or 1
    if info.state == "FAILED":  # a rank failed: its record or exit code says why
        return exit_code, None, None
    if info.state == "OUT_OF_MEMORY":
        return (
            exit_code,
            "oom",
            f"SLURM job {job_id} ended OUT_OF_MEMORY (a step hit its memory limit)",
        )
    if info.state == "TIMEOUT":
        return exit_code, "timeout", f"SLURM job {job_id} hit run.slurm.time_limit {time_limit}"
    if info.state == VANISHED:
        return (
            exit_code,
            "error",
            f"SLURM job {job_id} left the queue before its end state was read",
        )
    why = f" ({info.reason})" if info.reason else ""
    return exit_code, "error", f"SLURM job {job_id} ended {info.state}{why}"


def slurm_oom_message(job_output: Path) -> str | None:
    """What slurmstepd/srun wrote to the job's output when the cgroup OOM killer struck.

    A rank killed for memory makes srun fail, so the job ends FAILED (the
    batch step itself stayed within its limit); only these lines say why.
    """
    try:
        text = job_output.read_text(errors="replace")
    except OSError:
        return None
    for pattern in _OOM_LINES:
        if match := pattern.search(text):
            return match.group(0)
    return None


def run_command(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


class SlurmJob:
    """A submitted job, its state read at most once per STATE_CHECK_S."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.final: JobInfo | None = None
        self._next_check = 0.0

    @classmethod
    def submit(cls, argv: list[str]) -> SlurmJob:
        done = run_command(argv)
        if done.returncode != 0:
            message = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
            raise UserError(f"sbatch refused the job: {message[0]}", where="run.launcher: slurm")
        return cls(done.stdout.strip().split(";")[0])

    def poll(self) -> JobInfo | None:
        """The job's end state once it has ended, else None."""
        if self.final is not None or time.monotonic() < self._next_check:
            return self.final
        self._next_check = time.monotonic() + STATE_CHECK_S
        info = self._query()
        if info is not None and info.ended:
            self.final = info
        return self.final

    def _query(self) -> JobInfo | None:
        try:
            done = run_command(["scontrol", "show", "job", "-o", self.job_id])
        except subprocess.TimeoutExpired:
            return None
        if done.returncode == 0 and done.stdout.strip():
            return parse_job(done.stdout)
        if "Invalid job id" in done.stderr:  # purged after MinJobAge
            return JobInfo(VANISHED)
        return None  # the controller did not answer; ask again later

    def cancel(self) -> None:
        if self.final is None:
            run_command(["scancel", self.job_id])


class CaseJob:
    """A case's job as the runner polls it: once ended, leader.json is written for outcome.py."""

    def __init__(self, job: SlurmJob, case_dir: Path, world_size: int, time_limit: str):
        self.job = job
        self.case_dir = case_dir
        self.world_size = world_size
        self.time_limit = time_limit
        self.code: int | None = None

    def poll(self) -> int | None:
        if self.code is not None:
            return self.code
        info = self.job.poll()
        if info is None:
            return None
        code, status, reason = job_outcome(self.job.job_id, info, self.time_limit)
        oom = slurm_oom_message(self.case_dir / f"slurm-{self.job.job_id}.out")
        if oom and status is None:  # a step OOMed, the batch script then failed
            status, reason = "oom", f"SLURM job {self.job.job_id}: {oom}"
        codes = exit_codes(self.case_dir)
        if status == "oom":  # what outcome.py reads today as "killed, most often for memory"
            for rank in range(self.world_size):
                codes.setdefault(str(rank), -signal.SIGKILL)
        facts = {"job_id": self.job.job_id, "job_state": info.state}
        if status:
            facts.update(status=status, reason=reason)
        write_leader(self.case_dir, codes, **facts)
        self.code = code
        return code
