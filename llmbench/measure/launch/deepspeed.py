"""``run.launcher: deepspeed``: each case through DeepSpeed's own launcher.

Every case runs ``python -m deepspeed.launcher.runner … rank.py --placement P
TASK_JSON`` in a new session. DeepSpeed then either starts
``deepspeed.launcher.launch`` here, which starts the ranks (one host that is
this machine), or reaches every host through its pdsh, OpenMPI or SLURM
backend (several hosts, or one remote host with ``--force_multi``). Each rank
is :mod:`llmbench.measure.launch.rank`, which maps the backend's variables, keeps the
rank's log and records its exit code in the (shared) case directory.

Each case gets its own hostfile — the first ``parallel.nodes`` hosts of
``run.hostfile`` with ``world_size / nodes`` slots each — so every backend runs
exactly the case's world: OpenMPI refuses ``--num_nodes``/``--num_gpus`` and
starts one rank per hostfile slot. With ``run.include`` the user's hostfile
and filter go to DeepSpeed unchanged (its pdsh and SLURM backends and its
local path accept a filter; OpenMPI does not).

Stopping a case: here the whole session is one process group. A case on this
machine is killed at once; a case with remote ranks first gets SIGTERM, which
DeepSpeed's pdsh runner answers by killing its remote ranks and mpirun/srun
forward, then the group is killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llmbench.errors import UserError
from llmbench.measure.launch.base import CaseProcess, Launcher
from llmbench.measure.launch.hostfile import (
    format_hostfile,
    local_names,
    parse_include,
    read_hostfile,
)
from llmbench.measure.launch.layout import NodeLayout
from llmbench.measure.launch.outcome import last_meaningful_line
from llmbench.measure.launch.rank import SCRIPT, exit_codes, write_case_env, write_leader
from llmbench.measure.process import die_with_parent, kill_group

if TYPE_CHECKING:
    from llmbench.define.cases import Scenario
    from llmbench.hardware import Accelerator

BACKENDS = ("pdsh", "openmpi", "slurm")
PLACEMENT = {"pdsh": "env", "openmpi": "openmpi", "slurm": "slurm"}
"""Where a rank finds its place: pdsh runs DeepSpeed's launch.py on each node, the others start ranks directly."""
BACKEND_TOOL = {"pdsh": "pdsh", "openmpi": "ompi_info", "slurm": "sinfo"}
"""What DeepSpeed's runner looks for before it uses a backend (backend_exists)."""
FILTERING = ("pdsh", "slurm")
"""Backends that take --include and --num_nodes/--num_gpus (OpenMPIRunner.validate_args refuses them)."""
REMOTE_STOP_S = 5.0
SSH_BACKENDS = ("pdsh", "openmpi")
"""Backends that reach the nodes over ssh (pdsh's ssh module, mpirun's plm_rsh_agent)."""
SSH_CHECK_S = 10
"""ssh's ConnectTimeout when each node is checked before a case: the most a dead node costs."""
OP_BUILD_ENV = ("PATH", "TORCH_EXTENSIONS_DIR")
"""Variables that decide which DeepSpeed op build a rank loads; they travel to every rank.

pdsh and mpirun start remote ranks with sshd's environment, not this one. With
sshd's PATH torch's JIT loader runs another ninja (the system's 1.11, where the
sweep ran the venv's 1.13): the two hash ``.ninja_log`` differently, so each
takes the other's build as stale and rebuilt both ops inside every case's init
(about a minute on two cores, in the pdsh and OpenMPI cases under tox). Without
TORCH_EXTENSIONS_DIR a rank would load, or build, ops where the sweep never built them.
"""
# The characters DeepSpeed leaves unquoted in pdsh's remote command (MultiNodeRunner.add_export)
_SHELL_SAFE = re.compile(r"[\w@%+=:,./-]+")


class DeepSpeedLauncher(Launcher):
    """Cases through ``deepspeed.launcher.runner``; see the module docstring."""

    def __init__(
        self,
        hostfile: str | None = None,
        include: str | None = None,
        master_addr: str | None = None,
        backend: str = "pdsh",
        launcher_args: Sequence[str] = (),
        gpus: bool = False,
        where: str = "scenario",
        device_ids: tuple[int, ...] = (),
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown DeepSpeed backend {backend!r}; one of {', '.join(BACKENDS)}")
        if include and not hostfile:
            raise UserError(
                "selects slots of run.hostfile; set run.hostfile too",
                where=where,
                key="run.include",
            )
        if include and backend not in FILTERING:
            raise UserError(
                f"DeepSpeed's {backend} backend cannot filter hosts; drop run.include",
                where=where,
                key="run.include",
            )
        self.hostfile = Path(hostfile).resolve() if hostfile else None
        self.hosts = read_hostfile(self.hostfile) if self.hostfile else None
        self.include = include
        self.selected = parse_include(include, self.hosts or {}, where) if include else None
        self.master_addr = master_addr
        self.backend = backend
        self.launcher_args = list(launcher_args)
        self.gpus = gpus
        self.device_ids = device_ids
        """This machine's GPUs the sweep may use (NVML = PCI order, CUDA_VISIBLE_DEVICES applied)."""
        self.where = where
        # ranks on other hosts are out of the runner's sight: sample on each node
        self.samples_on_nodes = self.hosts is not None and not _is_local(self.hosts)

    @classmethod
    def for_scenario(cls, scenario: Scenario, accel: Accelerator) -> DeepSpeedLauncher:
        """The launcher for a scenario, refusing before any case runs if one cannot start."""
        run = scenario.run
        key = "run.include" if run.include else "run.hostfile"
        launcher = cls(
            hostfile=run.hostfile,
            include=run.include,
            master_addr=run.master_addr,
            backend=run.deepspeed_backend,
            launcher_args=run.launcher_args,
            gpus=accel.kind == "cuda",
            device_ids=accel.nvml_indices if accel.kind == "cuda" else (),
            where=scenario.lines.get(key, scenario.source),
        )
        for case in scenario.expand():
            par = case.spec.parallel
            hosts = launcher.case_hosts(NodeLayout.of(par.nodes, par.world_size), case.label)
            tool = BACKEND_TOOL[launcher.backend]
            if not _is_local(hosts) and shutil.which(tool) is None:
                raise UserError(
                    f"{case.label} runs on {', '.join(hosts)} through DeepSpeed's "
                    f"{launcher.backend} backend, but {tool} is not installed here",
                    where=launcher.where,
                    key=key,
                )
        return launcher

    def case_hosts(self, layout: NodeLayout, label: str = "the case") -> dict[str, int]:
        """Hosts and slots a case runs on, in rank order."""
        key = "run.include" if self.include else "run.hostfile"
        need = f"{label} needs {layout.nodes} node(s) × {layout.per_node} rank(s)"
        if self.selected is not None:
            hosts = {host: len(slots) for host, slots in self.selected.items()}
            if len(hosts) != layout.nodes or set(hosts.values()) != {layout.per_node}:
                chosen = ", ".join(f"{h}: {n}" for h, n in hosts.items())
                raise UserError(f"{need}; the filter selects {chosen}", where=self.where, key=key)
            return hosts
        if self.hosts is None:
            if layout.nodes > 1:
                raise UserError(
                    f"{need}; name the nodes in a hostfile", where=self.where, key="run.hostfile"
                )
            return {"localhost": layout.per_node}
        first = list(self.hosts.items())[: layout.nodes]
        short = [f"{h} ({n})" for h, n in first if n < layout.per_node]
        if len(first) < layout.nodes or short:
            detail = f"too few slots on {', '.join(short)}" if short else f"{len(first)} host(s)"
            raise UserError(f"{need}; {self.hostfile} has {detail}", where=self.where, key=key)
        return {host: layout.per_node for host, _ in first}

    def command(
        self, hosts: dict[str, int], hostfile: Path, task_json: Path, master_port: int
    ) -> list[str]:
        """The argv that runs one case (no shell anywhere on this machine)."""
        local = _is_local(hosts)
        argv = [
            sys.executable,
            "-u",
            "-m",
            "deepspeed.launcher.runner",
            "--hostfile",
            str(hostfile),
        ]
        if self.include:
            argv += ["--include", self.include]
        elif local and self.gpus and self.device_ids:
            # DeepSpeed gives a host's ranks slots 0..N-1 and sets CUDA_VISIBLE_DEVICES
            # to them, replacing ours: name the devices this sweep may use instead.
            host, slots = next(iter(hosts.items()))
            argv += ["--include", f"{host}:{','.join(map(str, self.device_ids[:slots]))}"]
        elif self.backend in FILTERING:
            argv += ["--num_nodes", str(len(hosts))]  # DeepSpeed's srun backend → --nodes
            if self.gpus:  # its srun backend asks for --gpus-per-node, which a CPU node lacks
                argv += ["--num_gpus", str(next(iter(hosts.values())))]
        argv += ["--master_addr", self._master_addr(hosts), "--master_port", str(master_port)]
        argv += ["--launcher", self.backend]
        if self.launcher_args:
            argv += ["--launcher_args", shlex.join(self.launcher_args)]  # DeepSpeed shlex.splits it
        if local:
            argv.append("--no_ssh_check")  # DeepSpeed ssh-checks the first host of any hostfile
        elif len(hosts) == 1:
            argv.append("--force_multi")  # else DeepSpeed would run a one-host job here
        placement = "env" if local else PLACEMENT[self.backend]
        return [*argv, str(SCRIPT), "--placement", placement, str(task_json)]

    def hostfile_slots(self, hosts: dict[str, int]) -> dict[str, int]:
        """Slots per host in the case's hostfile: enough to hold every id ``--include`` names."""
        if _is_local(hosts) and self.gpus and self.device_ids and not self.include:
            host, slots = next(iter(hosts.items()))
            return {host: max(self.device_ids[:slots]) + 1}
        return hosts

    def _master_addr(self, hosts: dict[str, int]) -> str:
        if self.master_addr:
            return self.master_addr
        return "127.0.0.1" if _is_local(hosts) else next(iter(hosts))

    def start(self, case_dir: Path, world_size: int, env: dict[str, str]) -> CaseProcess:
        case_dir = case_dir.resolve()
        hosts = self.case_hosts(NodeLayout.of_case(case_dir, world_size))
        if self.include and self.hostfile:  # the filter names slots of the user's hostfile
            hostfile = self.hostfile
        else:
            hostfile = case_dir / "hostfile"
            hostfile.write_text(format_hostfile(self.hostfile_slots(hosts)))
        task_json = case_dir / "task.json"
        argv = self.command(hosts, hostfile, task_json, int(env["MASTER_PORT"]))
        master_addr = self._master_addr(hosts)
        remote = not _is_local(hosts)
        if remote and self.backend == "pdsh":
            _check_remote_shell_safe(
                [os.getcwd(), sys.executable, str(SCRIPT), str(task_json), master_addr]
            )
        unreachable = unreachable_hosts(hosts) if remote and self.backend in SSH_BACKENDS else {}
        if unreachable:
            reason = "; ".join(
                f"{h} is not reachable over ssh: {why}" for h, why in unreachable.items()
            )
            write_leader(case_dir, {}, status="error", reason=reason)
            return CaseProcess(poll_fn=lambda: 255, kill_fn=lambda: None)
        built_with = {k: os.environ[k] for k in OP_BUILD_ENV if k in os.environ}
        write_case_env(case_dir, {**built_with, **env, "MASTER_ADDR": master_addr})
        with (case_dir / "launcher.log").open("ab") as log:
            popen = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        return CaseProcess(
            poll_fn=_poller(popen, case_dir), kill_fn=_stopper(popen, remote), pid=popen.pid
        )

    def build_ops(self, names: list[str], out: Path, timeout_s: float) -> dict:
        """Built here, where a one-host case runs.

        Remote nodes load the ops from ``TORCH_EXTENSIONS_DIR``: the same build
        when that is on a shared filesystem and the nodes match this one;
        otherwise each node builds on its first case (inside that case's init).
        """
        from llmbench.measure.launch.local import LocalLauncher

        return LocalLauncher("spawn").build_ops(names, out, timeout_s)


def unreachable_hosts(hosts: Iterable[str]) -> dict[str, str]:
    """The hosts ssh cannot reach, each with ssh's last line; all are tried at once.

    DeepSpeed's runner checks only the first host. When pdsh cannot reach a later
    one, the ranks it did start wait at the rendezvous for a peer that never
    comes, and the case would end only at ``run.timeout_s``, as a timeout.
    """
    checks = {
        host: subprocess.Popen(
            ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CHECK_S}", host, "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in hosts
    }
    failed = {}
    for host, check in checks.items():
        try:
            _, err = check.communicate(timeout=2 * SSH_CHECK_S)
        except subprocess.TimeoutExpired:
            check.kill()
            check.wait()
            err = f"no answer within {2 * SSH_CHECK_S} s"
        if check.returncode != 0:
            lines = [line.strip() for line in err.splitlines() if line.strip()]
            failed[host] = lines[-1] if lines else f"ssh exited with {check.returncode}"
    return failed


def _is_local(hosts: dict[str, int]) -> bool:
    return len(hosts) == 1 and next(iter(hosts)) in local_names()


def _check_remote_shell_safe(values: list[str]) -> None:
    """pdsh hands DeepSpeed's launch command to a remote shell, unquoted."""
    for value in values:
        if not _SHELL_SAFE.fullmatch(value):
            raise UserError(
                f"{value!r} would reach the remote shell of pdsh unquoted; use paths and "
                "names of letters, digits and @%+=:,./-_ only",
                where="run.launcher: deepspeed",
            )


def _poller(popen: subprocess.Popen, case_dir: Path) -> Callable[[], int | None]:
    def poll() -> int | None:
        code = popen.poll()
        if code is None or (case_dir / "leader.json").exists():
            return code
        codes = exit_codes(case_dir)
        if code != 0 and not codes:  # DeepSpeed stopped before any rank started
            line = last_meaningful_line(case_dir / "launcher.log")
            reason = f"DeepSpeed's launcher exited ({code}) before any rank started" + (
                f": {line}" if line else ""
            )
            write_leader(case_dir, codes, status="error", reason=reason)
        else:
            write_leader(case_dir, codes)
        return code

    return poll


def _stopper(popen: subprocess.Popen, remote: bool) -> Callable[[], None]:
    def stop() -> None:
        if remote and popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(REMOTE_STOP_S)
        kill_group(popen.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(0.5)  # reap the runner so poll() sees its end

    return stop
