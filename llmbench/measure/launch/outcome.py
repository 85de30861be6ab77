"""Classify how a case ended: ok, oom, unsupported, error or timeout, with a reason.

When one rank fails, its peers usually fail next with a communication error
(the collective lost a member); the reason must name the first cause, not the
echo, so records are ranked by how likely they are to be the root cause.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

from llmbench.measure.record import RankRecord

_OOM = re.compile(
    r"out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|std::bad_alloc|Cannot allocate memory",
    re.I,
)
_UNSUPPORTED = re.compile(r"not supported|unsupported|not implemented|NotImplementedError", re.I)
_COMM_ECHO = re.compile(
    r"gloo|nccl|connection (closed|reset)|broken pipe|timed out|store|socket|peer", re.I
)
_MEANINGFUL = re.compile(r"(Error|Exception|error:|Killed|Traceback)", re.I)
_NOISE = re.compile(r"warn|deprecat|FutureWarning|UserWarning", re.I)

MAX_REASON = 400


def classify_error(error_type: str | None, message: str | None) -> str:
    """oom / unsupported / error from an exception's type and message."""
    text = f"{error_type or ''}: {message or ''}"
    if error_type in ("OutOfMemoryError", "MemoryError") or _OOM.search(text):
        return "oom"
    if error_type in ("Unsupported", "NotImplementedError") or _UNSUPPORTED.search(text):
        return "unsupported"
    return "error"


def _priority(record: RankRecord) -> tuple[int, int]:
    status = classify_error(record.error_type, record.error)
    if status != "error":
        return (0, record.rank)
    echo = _COMM_ECHO.search(f"{record.error_type} {record.error}")
    return (2 if echo else 1, record.rank)


def _reason(record: RankRecord) -> str:
    message = (record.error or "").strip().splitlines()
    first = next((line.strip() for line in message if line.strip()), "")
    text = (
        f"{record.error_type}: {first}"
        if first and record.error_type not in ("Unsupported",)
        else first
    )
    return _clip(f"rank {record.rank}: {text or record.error_type}")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def last_meaningful_line(log: Path) -> str | None:
    """The last line of a rank log that looks like an error, not a warning."""
    try:
        lines = log.read_text(errors="replace").splitlines()[-200:]
    except OSError:
        return None
    for line in reversed(lines):
        if _MEANINGFUL.search(line) and not _NOISE.search(line):
            return line.strip()
    return None


def classify(
    case_dir: Path,
    records: list[RankRecord | None],
    timed_out: bool,
    timeout_s: float,
    last_phase: str | None,
) -> tuple[str, str | None]:
    """The status and reason of a finished (or killed) case.

    Rank records are read before a timeout is declared: a rank that ran out of
    memory on one GPU leaves its peers blocked in NCCL until the case is
    killed, and that case ran out of memory; it did not merely take too long.
    """
    failed = [r for r in records if r is not None and r.status != "ok"]
    if timed_out:
        during = f" during {last_phase}" if last_phase else ""
        if not failed:
            return "timeout", f"killed after {timeout_s:g} s{during}"
        first = min(failed, key=_priority)
        status = classify_error(first.error_type, first.error)
        return status, _clip(f"{_reason(first)} (the case was then killed after {timeout_s:g} s)")
    leader = _read_leader(case_dir)
    if leader.get("status") and leader.get(
        "reason"
    ):  # a scheduler's verdict, e.g. SLURM's OOM kill
        return leader["status"], _clip(leader["reason"])
    codes = leader.get("exit_codes", {})
    signalled = [r for r, rec in enumerate(records) if rec is None and codes.get(str(r), 0) < 0]
    if failed:
        first = min(failed, key=_priority)
        # a peer's lost connection is the echo of a rank killed before it could write a record
        if not (signalled and _priority(first)[0] == 2):
            return classify_error(first.error_type, first.error), _reason(first)
    missing = [rank for rank, r in enumerate(records) if r is None]
    if not missing:
        return "ok", None
    # a rank the kernel killed explains its peers' deaths better than the lowest rank number
    rank = next((r for r in missing if codes.get(str(r)) == -signal.SIGKILL), missing[0])
    code = codes.get(str(rank))
    if code is not None and code < 0:
        if -code == signal.SIGKILL:
            why = "killed by SIGKILL without writing a result (most often the kernel's OOM killer)"
            return "oom", f"rank {rank} was {why}"
        known = -code in signal.Signals._value2member_map_
        return "error", f"rank {rank} died from {signal.Signals(-code).name if known else -code}"
    line = last_meaningful_line(case_dir / f"rank{rank}.log")
    return "error", _clip(
        f"rank {rank} exited ({code}) without a result" + (f": {line}" if line else "")
    )


def _read_leader(case_dir: Path) -> dict[str, Any]:
    """What the launcher saw: per-rank exit codes, and a verdict when a scheduler gave one."""
    try:
        return json.loads((case_dir / "leader.json").read_text())
    except (OSError, ValueError):
        return {}
