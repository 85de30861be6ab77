"""Namespace "nodes" on this machine for real multi-node tests, made by ``.ci/multinode.sh``.

The script is the one implementation (users run it by hand too); this module
starts it, hands the tests what they need (hostfile, environment, each node's
processes) and, at the end, checks independently of the script that no
namespace, interface or process of the nodes is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "multinode.sh"
CANNOT = 3
"""The script's exit code when this machine cannot make nodes at all (not root, tool missing)."""
TOOLS = ("pdsh", "mpirun", "ompi_info")
"""What DeepSpeed's two ssh backends run here, besides what the script needs."""
REQUIRED = "LLMBENCH_MULTINODE_REQUIRED"


@dataclass(frozen=True)
class Nodes:
    """Nodes ``{prefix}1 … {prefix}{count}`` at ``{net}.2 …``, with their files in ``dir``."""

    dir: Path
    prefix: str
    net: str
    count: int
    script_env: dict[str, str]

    @property
    def hostfile(self) -> Path:
        return self.dir / "hostfile"

    def name(self, node: int) -> str:
        return f"{self.prefix}{node}"

    def addr(self, node: int) -> str:
        return f"{self.net}.{node + 1}"

    def environment(self) -> dict[str, str]:
        """This process's environment plus what ``DIR/env`` exports (ssh key on PATH, mpirun as root)."""
        out = subprocess.run(
            ["bash", "-c", f". {self.dir / 'env'} && env -0"],
            capture_output=True,
            check=True,
        )
        pairs = (item.split(b"=", 1) for item in out.stdout.split(b"\0") if b"=" in item)
        return {key.decode(): value.decode() for key, value in pairs}

    def processes(self, node: int) -> list[str]:
        """Everything running inside the node except its sshd listener, as ``pid: cmdline``."""
        pids = subprocess.run(
            ["ip", "netns", "pids", self.name(node)], capture_output=True, text=True, check=True
        ).stdout.split()
        sshd = (self.dir / f"sshd.{self.name(node)}.pid").read_text().strip()
        return [f"{pid}: {_cmdline(int(pid))}" for pid in pids if pid != sshd]

    def kill_sshd(self, node: int) -> None:
        os.kill(int((self.dir / f"sshd.{self.name(node)}.pid").read_text()), 9)

    def start_slurm(self) -> None:
        """slurmctld here and a slurmd in every node; partition ``prefix``, SLURM_CONF in DIR/env."""
        out = _script("slurm", env=self.script_env)
        if out.returncode == CANNOT:
            cannot(out.stderr.strip().splitlines()[-1])
        assert out.returncode == 0, out.stderr

    def restart_sshd(self, node: int) -> None:
        _script("sshd", str(node), env=self.script_env, check=True)


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:300]
    except psutil.Error:
        return "(gone)"


def _script(*args: str, env: dict[str, str], check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=check,
    )


def cannot(reason: str) -> None:
    """Skip where no nodes can be made; fail instead where they must be (``.ci/run``)."""
    if os.environ.get(REQUIRED):
        pytest.fail(f"{REQUIRED} is set, but {reason}")
    pytest.skip(reason)


@contextmanager
def namespace_nodes(
    count: int, prefix: str, directory: Path, net: str, slots: int = 1
) -> Iterator[Nodes]:
    """``count`` nodes for the duration of the block; skips only where none can be made."""
    env = {
        "LLMBENCH_NODES_DIR": str(directory),
        "LLMBENCH_NODES_PREFIX": prefix,
        "LLMBENCH_NODES_NET": net,
    }
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        cannot(f"{', '.join(missing)} not installed (.ci/run installs them)")
    up = _script("up", str(count), str(slots), env=env)
    if up.returncode == CANNOT:
        cannot(up.stderr.strip().splitlines()[-1])
    assert up.returncode == 0, up.stdout + up.stderr
    nodes = Nodes(directory, prefix, net, count, env)
    inodes = {os.stat(f"/run/netns/{nodes.name(i)}").st_ino for i in range(1, count + 1)}
    try:
        yield nodes
    finally:
        down = _script("down", env=env)
        left = left_behind(prefix, directory, inodes)
        assert down.returncode == 0 and not left, down.stderr + "\n".join(left)


def left_behind(prefix: str, directory: Path, inodes: set[int] = frozenset()) -> list[str]:
    """Namespaces, interfaces and processes of nodes named ``prefix…``, seen from outside.

    A process keeps its namespace alive after ``ip netns delete``, so processes
    are found by the namespace inode they are in, not by the name.
    """
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [f"namespace {n.split()[0]}" for n in names.splitlines() if n.startswith(prefix)]
    left += [f"interface {n}" for n in os.listdir("/sys/class/net") if n.startswith(prefix)]
    left += [f"directory {directory}"] if directory.exists() else []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            net = os.stat(f"/proc/{proc.pid}/ns/net").st_ino
            cmdline = " ".join(proc.info["cmdline"] or [])
        except (OSError, psutil.Error):
            continue
        if net in inodes or str(directory) in cmdline:
            left.append(f"process {proc.pid}: {cmdline[:200]}")
    return left
