"""The two records that cross the process boundary: a rank's task and its result.

The launcher writes ``task.json`` (a :class:`RankTask`), every rank writes
``rank<r>.json`` (a :class:`RankRecord`), and the parent reads both back as the
same types — so a field renamed on one side fails loudly on the other instead
of silently reading ``None`` from a dict.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class RankTask:
    """What every rank of a case runs; written by the launcher as task.json."""

    spec: dict[str, Any]
    ds_config: dict[str, Any]
    micro_batch: int
    device: str  # "cpu" or "cuda"
    out_dir: str
    threads: int | None = None
    timeout_s: float = 600.0
    data_dir: str | None = None
    """The prepared corpus (``data: text``), tokenised by the parent before the case started."""
    profile: str = "none"
    """``run.profile``: what the rank collects about where its steps' time goes (profile.py)."""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> RankTask:
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class RankRecord:
    """One rank's raw measurements; the parent reduces these to a case result."""

    rank: int
    world_size: int
    status: str = "error"  # ok | error
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    phase: str = "init"
    step_times_s: list[float] = field(default_factory=list)
    warmup_times_s: list[float] = field(default_factory=list)
    data_times_s: list[float] = field(default_factory=list)
    phase_times_s: dict[str, list[float]] = field(default_factory=dict)
    """``profile: breakdown``: DeepSpeed's timers per timed step (forward, backward, …)."""
    comm_steps: list[dict[str, dict[str, float]]] = field(default_factory=list)
    """``profile: breakdown``: per timed step, ``{op: {calls, bytes, s}}`` from the comms logger."""
    profile: dict[str, Any] = field(default_factory=dict)
    """``trace`` / ``flops``: files written and figures of the extra profiled steps."""
    losses: list[float] = field(default_factory=list)
    init_s: float | None = None
    memory: dict[str, int | None] = field(default_factory=dict)
    parameters: dict[str, int | bool] | None = None
    device_name: str | None = None
    torch_threads: int | None = None
    topology: dict[str, int] | None = None
    pid: int = field(default_factory=os.getpid)
    build_host_rss_growth_bytes: int | None = None
    """Peak host RSS while the model was built, above the RSS before (DeepSpeed's state comes later)."""
    build_device_allocated_bytes: int | None = None
    """CUDA: the allocator's peak while the model was built (None on CPUs)."""
    malloc_mmap_threshold_bytes: int | None = None
    """glibc's mmap threshold fixed by a ZeRO-3 partitioned build for the rest of the case
    (weights.py); None: glibc's own sliding threshold, untouched."""
    optimizer_impl: str | None = None
    """The class that updated the weights (DeepSpeed's FusedAdam or CPU Adam, torch's AdamW)."""
    skipped_steps: list[int] = field(default_factory=list)
    """Indices of timed steps whose optimizer update the fp16 loss scaler skipped (overflow)."""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> RankRecord | None:
        """The record a rank wrote, or None when it never wrote one (killed, torn file)."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
