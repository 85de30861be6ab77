"""``run.launcher: slurm``: each case is one SLURM batch job whose ranks srun starts.

Per case the launcher writes ``job.sh`` into the case directory and submits it
with ``sbatch``. Every scheduling option — nodes, tasks per node, CPUs per
task, GPUs per node, partition, account, time limit, ``run.slurm.extra_args``
— is one element of the sbatch argv, never shell text; the script itself
holds only ``shlex.quote``-d paths. On the job's first node the script takes
``MASTER_ADDR`` from the scenario or ``scontrol show hostnames
"$SLURM_JOB_NODELIST"`` and a ``MASTER_PORT`` that is free there, then
``srun --kill-on-bad-exit=1`` starts :mod:`llmbench.measure.launch.rank` on every
task, which maps SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS to the worker's
variables.

The case directory (under the run directory) must be on a filesystem the
nodes share, as must the Python environment: ranks write their records there
and the runner reads them as for a local case.

The runner waits as for any case: ``poll`` reads the job's state (scontrol, at
most once a second) and, once the job has left the machine, maps its end
state onto the case (:mod:`llmbench.measure.launch.slurm_job`). At the runner's timeout, or on
Ctrl-C, the job is cancelled with ``scancel``.

One job per case rather than one job array per sweep: the runner runs one
case at a time through :class:`~llmbench.measure.launch.base.Launcher`, and a case
measured while other cases of the sweep share its nodes would not measure the
case alone.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llmbench.errors import UserError
from llmbench.measure.launch.base import CaseProcess, Launcher
from llmbench.measure.launch.layout import NodeLayout
from llmbench.measure.launch.rank import SCRIPT, write_case_env
from llmbench.measure.launch.slurm_job import STATE_CHECK_S, CaseJob, SlurmJob

if TYPE_CHECKING:
    from llmbench.define.cases import Scenario
    from llmbench.hardware import Accelerator

# Options the launcher sets from the case or from their own run.slurm field.
_OWN_OPTIONS = {
    "--nodes": "parallel.nodes",
    "-N": "parallel.nodes",
    "--ntasks": "parallel.world_size",
    "-n": "parallel.world_size",
    "--ntasks-per-node": "parallel.world_size",
    "--cpus-per-task": "run.threads_per_rank",
    "-c": "run.threads_per_rank",
    "--gpus-per-node": "run.slurm.gpus_per_node",
    "--partition": "run.slurm.partition",
    "-p": "run.slurm.partition",
    "--account": "run.slurm.account",
    "-A": "run.slurm.account",
    "--time": "run.slurm.time_limit",
    "-t": "run.slurm.time_limit",
    "--output": "the case directory",
    "-o": "the case directory",
    "--error": "the case directory",
    "-e": "the case directory",
    "--chdir": "the working directory",
    "-D": "the working directory",
    "--job-name": "the case id",
    "-J": "the case id",
    "--array": "one job per case",
    "-a": "one job per case",
    "--wait": "the runner's wait",
    "-W": "the runner's wait",
    "--parsable": "the launcher",
}
_FREE_PORT = "from llmbench.measure.process import free_port; print(free_port())"
_BUILD_OPS = "import sys; from llmbench.measure.ops import build_ops_to_file; build_ops_to_file(sys.argv[2:], sys.argv[1])"


def _own_option(name: str) -> str | None:
    """The option of llmbench's own that ``name`` sets, or None.

    sbatch (getopt_long) accepts any unambiguous prefix of a long option:
    ``--ntasks-per-no=8`` is ``--ntasks-per-node=8``, so prefixes are refused too.
    """
    if name in _OWN_OPTIONS:
        return name
    if name.startswith("--") and len(name) > 2:
        return next((own for own in _OWN_OPTIONS if own.startswith(name)), None)
    return None


class SlurmLauncher(Launcher):
    """Cases as SLURM jobs; see the module docstring."""

    samples_on_nodes = True  # jobs run under slurmstepd, outside the runner's process tree

    def __init__(
        self,
        partition: str | None = None,
        account: str | None = None,
        time_limit: str = "00:30:00",
        gpus_per_node: int | None = None,
        extra_args: Sequence[str] = (),
        master_addr: str | None = None,
        where: str = "scenario",
    ):
        for arg in extra_args:
            name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
            if not arg.startswith("-"):
                raise UserError(
                    f"{arg!r} is not an sbatch option (like --qos=high)",
                    where=where,
                    key="run.slurm.extra_args",
                )
            own = _own_option(name)
            if own is not None:
                raise UserError(
                    f"{name} is set from {_OWN_OPTIONS[own]}",
                    where=where,
                    key="run.slurm.extra_args",
                )
        self.partition = partition
        self.account = account
        self.time_limit = time_limit
        self.gpus_per_node = gpus_per_node
        self.extra_args = list(extra_args)
        self.master_addr = master_addr

    @classmethod
    def for_scenario(cls, scenario: Scenario, accel: Accelerator) -> SlurmLauncher:
        if shutil.which("sbatch") is None:
            raise UserError(
                "run.launcher: slurm needs sbatch, scontrol and scancel on PATH",
                where=scenario.lines.get("run.launcher", scenario.source),
            )
        spec = scenario.run.slurm
        gpus = spec.gpus_per_node
        if gpus is None and accel.kind == "cuda":
            gpus = max(
                c.spec.parallel.world_size // c.spec.parallel.nodes for c in scenario.expand()
            )
        return cls(
            partition=spec.partition,
            account=spec.account,
            time_limit=spec.time_limit,
            gpus_per_node=gpus,
            extra_args=spec.extra_args,
            master_addr=scenario.run.master_addr,
            where=scenario.lines.get("run.slurm.extra_args", scenario.source),
        )

    def _placement_options(self) -> list[str]:
        argv = [f"--time={self.time_limit}"]
        if self.partition:
            argv.append(f"--partition={self.partition}")
        if self.account:
            argv.append(f"--account={self.account}")
        return argv + self.extra_args

    def sbatch_argv(
        self, layout: NodeLayout, case_dir: Path, threads: int, workdir: Path
    ) -> list[str]:
        """The sbatch command of one case (its script is ``case_dir/job.sh``)."""
        argv = [
            "sbatch",
            "--parsable",
            f"--job-name=llmbench-{case_dir.name}",
            f"--output={case_dir / 'slurm-%j.out'}",
            f"--chdir={workdir}",
            f"--nodes={layout.nodes}",
            f"--ntasks-per-node={layout.per_node}",
            f"--cpus-per-task={threads}",
        ]
        if self.gpus_per_node:
            argv.append(f"--gpus-per-node={self.gpus_per_node}")
        return [*argv, *self._placement_options(), str(case_dir / "job.sh")]

    def job_script(self, task_json: Path) -> str:
        """Rendezvous on the first node, then one rank per task; every value quoted."""
        python = shlex.quote(sys.executable)
        addr = (
            shlex.quote(self.master_addr)
            if self.master_addr
            else '"$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"'
        )
        return (
            "#!/bin/bash\n"
            "# llmbench case job; sbatch options in submit.json beside this file\n"
            "set -eu\n"
            f"export MASTER_ADDR={addr}\n"
            f'export MASTER_PORT="$({python} -c {shlex.quote(_FREE_PORT)})"\n'
            f"exec srun --kill-on-bad-exit=1 {python} -u {shlex.quote(str(SCRIPT))}"
            f" --placement slurm {shlex.quote(str(task_json))}\n"
        )

    def start(self, case_dir: Path, world_size: int, env: dict[str, str]) -> CaseProcess:
        case_dir = case_dir.resolve()
        layout = NodeLayout.of_case(case_dir, world_size)
        rank_env = {k: v for k, v in env.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
        write_case_env(case_dir, rank_env)
        (case_dir / "job.sh").write_text(self.job_script(case_dir / "task.json"))
        threads = int(env.get("OMP_NUM_THREADS", "1"))
        argv = self.sbatch_argv(layout, case_dir, threads, Path.cwd())
        job = SlurmJob.submit(argv)
        (case_dir / "submit.json").write_text(json.dumps({"argv": argv, "job_id": job.job_id}))
        with (case_dir / "phases.rank0.jsonl").open("a") as fh:  # the runner shows it until init
            fh.write(json.dumps({"phase": "queued", "t": time.time(), "job_id": job.job_id}) + "\n")
        case = CaseJob(job, case_dir, world_size, self.time_limit)
        return CaseProcess(poll_fn=case.poll, kill_fn=job.cancel, pid=None)

    def build_ops(self, names: list[str], out: Path, timeout_s: float) -> dict:
        """Built by a one-task job on a node like the ranks', since the build is per machine type."""
        out = out.resolve()
        out.unlink(missing_ok=True)  # a resumed run must not read the last build's report
        script = out.with_name("ops-job.sh")
        args = " ".join(shlex.quote(a) for a in [str(out), *names])
        script.write_text(
            "#!/bin/bash\nset -eu\n"
            f"exec {shlex.quote(sys.executable)} -c {shlex.quote(_BUILD_OPS)} {args}\n"
        )
        argv = [
            "sbatch",
            "--parsable",
            "--job-name=llmbench-ops",
            f"--output={out.with_name('ops-%j.log')}",
            f"--chdir={Path.cwd()}",
            "--nodes=1",
            "--ntasks=1",
            *(["--gpus-per-node=1"] if self.gpus_per_node else []),
            *self._placement_options(),
            str(script),
        ]
        job = SlurmJob.submit(argv)
        deadline = time.monotonic() + timeout_s
        while (info := job.poll()) is None and time.monotonic() < deadline:
            time.sleep(STATE_CHECK_S / 4)
        if info is None:
            job.cancel()
        try:
            return json.loads(out.read_text())
        except (OSError, ValueError):
            ended = f"ended {info.state}" if info else f"was cancelled after {timeout_s:g} s"
            why = f"the op build job {job.job_id} {ended} without a report"
            return {name: {"seconds": None, "error": why} for name in names}
