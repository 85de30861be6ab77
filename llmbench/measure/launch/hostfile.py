"""Hostfiles and ``--include`` filters in DeepSpeed's format, checked before anything starts.

DeepSpeed reads an MPI-style hostfile (``worker-0 slots=4``; ``#`` comments)
and a filter ``NODE_SPEC[@NODE_SPEC …]`` with ``NODE_SPEC = NAME[:SLOT[,SLOT …]]``
(deepspeed/launcher/runner.py, ``--hostfile`` and ``--include`` help). It
finds mistakes only after the sweep has started a case; reading both here
turns them into one line naming the file and line, before the first case.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from pathlib import Path

from llmbench.errors import UserError

# DeepSpeed's own pattern: anything after slots=N (e.g. MPI's max_slots) is ignored
_LINE = re.compile(r"^(\S+)\s+slots=(\d+)")
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def parse_hostfile(text: str, where: str) -> dict[str, int]:
    """Slots per host, in file order (DeepSpeed gives ranks to hosts in this order)."""
    hosts: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise UserError(
                f"{line!r} is not of the form 'HOST slots=N'", where=f"{where}:{number}"
            )
        host, slots = match.group(1), int(match.group(2))
        if host in hosts:
            raise UserError(f"host {host} is listed twice", where=f"{where}:{number}")
        if slots == 0:
            raise UserError(f"host {host} has no slots", where=f"{where}:{number}")
        hosts[host] = slots
    if not hosts:
        raise UserError("no 'HOST slots=N' line", where=where)
    return hosts


def read_hostfile(path: str | Path) -> dict[str, int]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read the hostfile: {exc.strerror}", where=str(path)) from None
    return parse_hostfile(text, str(path))


def parse_include(spec: str, hosts: Mapping[str, int], where: str) -> dict[str, list[int]]:
    """The slots an ``--include`` filter selects on each host, in hostfile order."""
    chosen: dict[str, set[int]] = {}
    for node in spec.split("@"):
        name, _, slot_text = node.partition(":")
        if name not in hosts:
            raise UserError(
                f"host {name!r} is not in the hostfile ({', '.join(hosts)})",
                where=where,
                key="run.include",
            )
        try:
            slots = {int(s) for s in slot_text.split(",")} if slot_text else set(range(hosts[name]))
        except ValueError:
            raise UserError(
                f"{node!r}: slots must be integers, e.g. {name}:0,1", where=where, key="run.include"
            ) from None
        bad = sorted(s for s in slots if not 0 <= s < hosts[name])
        if bad:
            raise UserError(
                f"host {name} has slots 0-{hosts[name] - 1}, not {bad}",
                where=where,
                key="run.include",
            )
        chosen.setdefault(name, set()).update(slots)
    return {host: sorted(chosen[host]) for host in hosts if host in chosen}


def local_names() -> frozenset[str]:
    """Names under which DeepSpeed's hostfile can mean this machine."""
    full = socket.gethostname()
    return LOCAL_NAMES | {full, full.split(".", 1)[0], socket.getfqdn()}


def format_hostfile(hosts: Mapping[str, int]) -> str:
    return "".join(f"{host} slots={slots}\n" for host, slots in hosts.items())
