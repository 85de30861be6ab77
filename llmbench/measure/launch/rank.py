"""Per-rank entry for ranks that another program starts: DeepSpeed's launcher, srun, mpirun.

``python -u …/llmbench/measure/launch/rank.py --placement {env,slurm,openmpi} TASK_JSON``
(the ``--local_rank=N`` that DeepSpeed's launch.py adds is ignored). It

1. applies the case's rank environment from ``rank_env.json`` beside the task:
   a rank that pdsh, mpirun or srun starts on another node does not inherit
   the sweep's environment, and the case directory is shared;
2. maps the starting program's variables to the RANK / LOCAL_RANK /
   WORLD_SIZE / LOCAL_WORLD_SIZE the worker reads (``--placement`` names the
   source, so a stale RANK inherited from the submitting shell never wins
   over SLURM_PROCID);
3. runs the worker as its child with output in ``rank<r>.log`` and records the
   child's exit code (negative: the signal that killed it) in
   ``exit.rank<r>.json``. A rank killed by SIGKILL — the kernel's or a cgroup's
   OOM killer — writes no record of its own; this file is what lets the
   runner still say why it ended (:func:`write_leader`).

It is started by file path rather than ``-m`` because DeepSpeed's srun backend
always runs ``python -u SCRIPT``. Its folder then comes first on ``sys.path``
and holds a module named ``deepspeed``, so this file imports only the
standard library and ``llmbench.measure.process``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from llmbench.measure.process import die_with_parent

SCRIPT = Path(__file__).resolve()
ENV_FILE = "rank_env.json"
PLACEMENT_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
RENDEZVOUS_KEYS = ("MASTER_ADDR", "MASTER_PORT")
SOURCES = ("env", "slurm", "openmpi")
SESSION_CHECK_S = 1.0
AGENT_STOP_S = 30.0
NODE_SAMPLER_ENV = (
    "LLMBENCH_NODE_SAMPLER"  # llmbench.measure.sampling.agent.ENV (not imported: see above)
)


def tasks_on_node(tasks_per_node: str, node_id: int) -> int:
    """Tasks SLURM placed on node ``node_id``, from SLURM_TASKS_PER_NODE.

    SLURM compresses runs of equal counts: ``2(x3),1`` means 2, 2, 2, 1
    (sbatch(1), OUTPUT ENVIRONMENT VARIABLES).
    """
    counts: list[int] = []
    for part in tasks_per_node.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            raise ValueError(f"SLURM_TASKS_PER_NODE={tasks_per_node!r} is not understood")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts[node_id]


def placement(environ: Mapping[str, str], source: str) -> dict[str, str]:
    """This rank's place in the job, in the torch.distributed names the worker reads."""
    if source == "env":  # DeepSpeed's launch.py; it calls the ranks per node LOCAL_SIZE
        found = {k: environ.get(k) for k in PLACEMENT_KEYS}
        found["LOCAL_WORLD_SIZE"] = found["LOCAL_WORLD_SIZE"] or environ.get("LOCAL_SIZE")
    elif source == "slurm":
        found = {
            "RANK": environ.get("SLURM_PROCID"),
            "LOCAL_RANK": environ.get("SLURM_LOCALID"),
            "WORLD_SIZE": environ.get("SLURM_NTASKS"),
            "LOCAL_WORLD_SIZE": str(
                tasks_on_node(environ["SLURM_TASKS_PER_NODE"], int(environ.get("SLURM_NODEID", 0)))
            )
            if "SLURM_TASKS_PER_NODE" in environ
            else None,
        }
    elif source == "openmpi":
        found = {
            "RANK": environ.get("OMPI_COMM_WORLD_RANK"),
            "LOCAL_RANK": environ.get("OMPI_COMM_WORLD_LOCAL_RANK"),
            "WORLD_SIZE": environ.get("OMPI_COMM_WORLD_SIZE"),
            "LOCAL_WORLD_SIZE": environ.get("OMPI_COMM_WORLD_LOCAL_SIZE"),
        }
    else:
        raise ValueError(f"unknown placement source {source!r}; one of {', '.join(SOURCES)}")
    missing = [k for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE") if not found[k]]
    if missing:
        raise RuntimeError(f"started without {', '.join(missing)} from {source}")
    return {k: v for k, v in found.items() if v}


def rank_environment(
    environ: Mapping[str, str], case_env: Mapping[str, str], source: str
) -> dict[str, str]:
    """The worker's environment: inherited, then the case's, then its placement.

    MASTER_ADDR/MASTER_PORT from the case file are only a fallback: DeepSpeed's
    launcher and the SLURM job script set the address ranks must agree on.
    """
    env = dict(environ)
    for key, value in case_env.items():
        if key in RENDEZVOUS_KEYS:
            env.setdefault(key, value)
        elif key not in PLACEMENT_KEYS:
            env[key] = value
    env.update(placement(environ, source))
    return env


def write_case_env(case_dir: Path, env: Mapping[str, str]) -> None:
    """Leave the variables every rank needs beside the task, for ranks on other nodes."""
    (case_dir / ENV_FILE).write_text(json.dumps(dict(env), indent=1, sort_keys=True))


def exit_codes(case_dir: Path) -> dict[str, int]:
    """Exit code per rank, from the files the ranks' supervisors left."""
    codes: dict[str, int] = {}
    for path in sorted(case_dir.glob("exit.rank*.json")):
        try:
            data = json.loads(path.read_text())
            codes[str(data["rank"])] = int(data["exit_code"])
        except (OSError, ValueError, KeyError):
            continue
    return codes


def write_leader(case_dir: Path, codes: Mapping[str, int], **facts: object) -> None:
    """``leader.json`` in the shape the local launcher writes, which outcome.classify reads."""
    (case_dir / "leader.json").write_text(json.dumps({"exit_codes": dict(codes), **facts}))


def _supervise(task_json: Path, env: dict[str, str], source: str) -> int:
    rank = env["RANK"]
    case_dir = task_json.parent
    argv = [sys.executable, "-u", "-m", "llmbench.measure.worker", str(task_json)]
    with (case_dir / f"rank{rank}.log").open("ab") as log:
        child = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    # scancel, srun and DeepSpeed's launcher stop ranks with SIGTERM; the
    # worker must get it too, and this process must outlive it to record how it ended.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    agent = _start_node_sampler(case_dir, env)
    code = _wait(child, source)
    _stop(agent)
    record = {"rank": int(rank), "exit_code": code, "host": socket.gethostname()}
    (case_dir / f"exit.rank{rank}.json").write_text(json.dumps(record))
    return code if code >= 0 else 128 - code


def _start_node_sampler(case_dir: Path, env: dict[str, str]) -> subprocess.Popen | None:
    """On local rank 0, when the runner asked for it: sample this node's ranks.

    The agent watches the tree under the process that started this node's
    ranks (slurmstepd, DeepSpeed's launch.py), so every local rank is in it.
    """
    request = env.get(NODE_SAMPLER_ENV)
    if not request or env.get("LOCAL_RANK") != "0":
        return None
    spec = json.loads(request)
    argv = [
        sys.executable,
        "-m",
        "llmbench.measure.sampling.agent",
        str(case_dir),
        "--root",
        str(os.getppid()),
    ]
    argv += ["--kind", spec["kind"], "--interval", str(spec["interval_s"])]
    if spec.get("gpus"):
        argv += ["--gpus", str(spec["gpus"])]
    log = (case_dir / f"agent.{socket.gethostname()}.log").open("ab")
    return subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


def _stop(agent: subprocess.Popen | None) -> None:
    """Let the node sampler write its timeline; it never holds the case up for long."""
    if agent is None:
        return
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(timeout=AGENT_STOP_S)
    except subprocess.TimeoutExpired:
        agent.kill()


def _wait(child: subprocess.Popen, source: str) -> int:
    """The child's exit code; kills it first if the session that started this rank is gone.

    The parent's death signal (die_with_parent) covers the chain rank.py →
    worker, but not DeepSpeed's launch.py, which outlives a killed runner and
    would keep the ranks alive. Under launch.py (``env``) the runner leads the
    session, so its end is the sign to stop; srun and mpirun stop their own.
    """
    session = os.getsid(0)
    watch = source == "env" and session != os.getpid()
    while True:
        try:
            return child.wait(timeout=SESSION_CHECK_S)
        except subprocess.TimeoutExpired:
            if watch and not _alive(session):
                child.kill()


def _alive(pid: int) -> bool:
    """Running, not a zombie: a killed runner stays one until something reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone; or no procfs at all, where nothing can be told: keep going
        return not Path("/proc/self").exists()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmbench.measure.launch.rank")
    parser.add_argument("--placement", choices=SOURCES, required=True)
    parser.add_argument("task_json", type=Path)
    args, _ = parser.parse_known_args(argv)  # DeepSpeed's launch.py appends --local_rank=N
    die_with_parent()
    task_json = args.task_json.resolve()
    env_path = task_json.parent / ENV_FILE
    case_env = json.loads(env_path.read_text()) if env_path.exists() else {}
    env = rank_environment(os.environ, case_env, args.placement)
    return _supervise(task_json, env, args.placement)


if __name__ == "__main__":
    sys.exit(main())
