"""Local launcher: all ranks of a case on this machine, in one new session.

Two ways to start ranks, both under a per-case *leader* process that calls
``setsid`` (so its pid is the group every rank belongs to), starts the ranks,
reaps them and, when one rank fails, gives the others a short grace period and
then kills them so a crash never turns into a hang in a collective:

* ``fork``: the leader is forked from a multiprocessing *forkserver* that
  imported torch, transformers and deepspeed once per sweep, and forks the
  ranks itself. Start-up dominates small cases (``import deepspeed`` alone is
  seconds), so this makes sweeps several times faster while every case still
  gets fresh processes. No accelerator is touched before the fork.
* ``spawn``: the leader and every rank are fresh interpreters
  (``python -m llmbench.measure.worker``); slower, but makes no assumption about what
  may be imported before a fork. Default on CUDA machines.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from llmbench.measure.launch.base import CaseProcess, Launcher
from llmbench.measure.process import die_with_parent, kill_group

FAIL_GRACE_S = 5.0
PRELOAD = [
    # first: a fork server whose parent dies exits at once, whatever it is importing
    "llmbench.measure.launch.watchdog",
    "torch",
    "transformers",
    "deepspeed",
    "transformers.models.gpt2.modeling_gpt2",
    "transformers.models.llama.modeling_llama",
    "transformers.models.distilbert.modeling_distilbert",
    "transformers.models.bert.modeling_bert",
    # imported lazily inside deepspeed.initialize; the muon module alone pulls in
    # torch._dynamo (~2 s), which every case would otherwise pay again
    "deepspeed.runtime.zero.muon.muon_optimizer",
    "deepspeed.runtime.zero.stage_1_and_2",
    "deepspeed.runtime.zero.stage3",
    "deepspeed.runtime.pipe.engine",
    "deepspeed.ops.adam",
    "llmbench.measure.worker",
    "llmbench.measure.training",
    "llmbench.measure.data.text",
    # last: loads the sweep's DeepSpeed ops once for every rank (see the module)
    "llmbench.measure.ops_preload",
    # the parent's main script (the ``llmbench`` console script imports the whole CLI):
    # run once here, or multiprocessing re-runs it in every case's leader
    "__main__",
]


def rank_env(env: dict[str, str], rank: int, world_size: int) -> dict[str, str]:
    return {
        **env,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
    }


def lead_case(case_dir: str, world_size: int, env: dict[str, str], start_method: str) -> int:
    """Body of the leader process: start the ranks, reap them, fail fast."""
    if os.getpgid(0) != os.getpid():
        os.setsid()
    die_with_parent()
    children: dict[int, int] = {}
    for rank in range(world_size):
        env_r = rank_env(env, rank, world_size)
        pid = (
            _fork_rank(case_dir, rank, env_r)
            if start_method == "fork"
            else _spawn_rank(case_dir, rank, env_r)
        )
        children[pid] = rank
    exit_codes = _supervise(children)
    (Path(case_dir) / "leader.json").write_text(json.dumps({"exit_codes": exit_codes}))
    return 0 if all(code == 0 for code in exit_codes.values()) else 1


def _lead_and_exit(case_dir: str, world_size: int, env: dict[str, str], start_method: str) -> None:
    sys.exit(lead_case(case_dir, world_size, env, start_method))


def _supervise(children: dict[int, int]) -> dict[str, int]:
    """Reap every rank; once one fails, kill the rest after a grace period."""
    codes: dict[str, int] = {}
    failed_at: float | None = None
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            if failed_at is not None and time.monotonic() - failed_at > FAIL_GRACE_S:
                for other in children:
                    _kill(other)
            time.sleep(0.05)
            continue
        rank = children.pop(pid, None)
        if rank is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        codes[str(rank)] = code
        if code != 0 and failed_at is None:
            failed_at = time.monotonic()
    return codes


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _log_fd(case_dir: str, rank: int) -> int:
    return os.open(
        Path(case_dir) / f"rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
    )


def _fork_rank(case_dir: str, rank: int, env: dict[str, str]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        die_with_parent()
        log = _log_fd(case_dir, rank)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ.update(env)
        from llmbench.measure.record import RankTask
        from llmbench.measure.worker import run_rank

        record = run_rank(RankTask.load(Path(case_dir) / "task.json"))
        code = 0 if record.status == "ok" else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _spawn_rank(case_dir: str, rank: int, env: dict[str, str]) -> int:
    log = str(Path(case_dir) / f"rank{rank}.log")
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    actions = [(os.POSIX_SPAWN_OPEN, 1, log, flags, 0o644), (os.POSIX_SPAWN_DUP2, 1, 2)]
    argv = [sys.executable, "-m", "llmbench.measure.worker", str(Path(case_dir) / "task.json")]
    return os.posix_spawn(sys.executable, argv, {**os.environ, **env}, file_actions=actions)


def run_in_own_group(argv: list[str], stdout: IO[str], timeout_s: float) -> int | None:
    """Run ``argv`` in a new session; on timeout kill its whole group (compilers included).

    None when it timed out. ``subprocess.run(timeout=)`` kills only the child,
    leaving the ninja and c++ it started running and holding torch's build lock.
    """
    popen = subprocess.Popen(argv, stdout=stdout, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(popen.pid)
        popen.wait()
        return None
    except BaseException:
        kill_group(popen.pid)
        raise


def _group(leader: int, poll: Callable[[], int | None]) -> CaseProcess:
    """The leader called setsid, so its pid names the process group of every rank."""
    return CaseProcess(poll_fn=poll, kill_fn=lambda: kill_group(leader), pid=leader)


class LocalLauncher(Launcher):
    """Runs each case's ranks on this machine; see the module docstring for the two modes."""

    def __init__(self, start_method: str = "fork"):
        if start_method not in ("fork", "spawn"):
            raise ValueError(start_method)
        self.start_method = start_method
        self._ctx = None
        if start_method == "fork":
            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload(PRELOAD)

    def start(self, case_dir: Path, world_size: int, env: dict[str, str]) -> CaseProcess:
        if self._ctx is not None:
            proc = self._ctx.Process(
                target=_lead_and_exit, args=(str(case_dir), world_size, env, "fork"), daemon=False
            )
            proc.start()
            return _group(proc.pid, lambda: proc.exitcode)
        argv = [
            sys.executable,
            "-m",
            "llmbench.measure.launch.local",
            str(case_dir),
            str(world_size),
            json.dumps(env),
        ]
        popen = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL)
        return _group(popen.pid, popen.poll)

    def build_ops(self, names: list[str], out: Path, timeout_s: float) -> dict:
        from llmbench.measure.ops import build_ops_in_own_group

        server = self._start_server_with_ops(names, out, timeout_s) if self._ctx else None
        if server == "timeout":
            why = f"the op build did not finish in {timeout_s:g} s; cases start with spawn"
            return {name: {"seconds": None, "error": why} for name in names}
        if server == "running":  # started earlier by another launcher in this process
            proc = self._ctx.Process(target=build_ops_in_own_group, args=(names, str(out)))
            proc.start()
            proc.join(timeout_s)
            if proc.exitcode is None:
                kill_group(proc.pid)  # the builder called setsid: ninja and c++ go with it
                proc.join()
        elif server is None:
            with out.open("w") as fh:
                run_in_own_group(
                    [sys.executable, "-m", "llmbench.measure.ops", *names], fh, timeout_s
                )
        try:
            return json.loads(out.read_text())
        except (OSError, ValueError):
            return {
                name: {"seconds": None, "error": "the op build did not finish"} for name in names
            }

    def _start_server_with_ops(self, names: list[str], out: Path, timeout_s: float) -> str:
        """Start the fork server, which builds and loads ``names`` before it forks anything.

        ``built`` when the server wrote the op report, ``running`` when it had been
        started before (its imports are done; it did not build), ``timeout``. The
        server forks nothing until its imports are done, so it is started from a
        thread: a build that outlives ``timeout_s`` makes the sweep fall back to
        ``spawn`` instead of hanging.
        """
        from llmbench.measure.ops_preload import OPS_ENV

        os.environ[OPS_ENV] = json.dumps({"names": names, "report": str(out), "preload": PRELOAD})
        try:
            first = self._ctx.Process(target=_serving)
            starter = threading.Thread(target=lambda: (first.start(), first.join()), daemon=True)
            starter.start()
            starter.join(timeout_s)
        finally:
            del os.environ[OPS_ENV]
        if starter.is_alive():
            self._ctx, self.start_method = None, "spawn"
            return "timeout"
        return "built" if out.exists() else "running"


def _serving() -> None:
    """The fork server's first child: it exists once the server's imports are done."""


if __name__ == "__main__":
    sys.exit(lead_case(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), "spawn"))
