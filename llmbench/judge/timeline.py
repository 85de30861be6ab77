"""The case timeline: every sample as one pandas DataFrame, its CSV file, and phase tags.

One row per sample per device: ``t`` (epoch seconds, the clock the workers
stamp phases with), ``t_rel_s`` (seconds since sampling started), ``source``
(``host`` or ``nvml``), ``device`` (``host``, ``gpu0``, …), after tagging
``phase``, then the samplers' metric columns as floats (NaN: not measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmbench.judge.store import read_jsonl

IDENTITY = ("t", "t_rel_s", "source", "device")
BEFORE_FIRST_PHASE = "launch"
"""Tag of samples taken before rank 0 logged its first phase (process start)."""


@dataclass(frozen=True)
class PhaseEvent:
    """Rank 0 entered ``phase`` at epoch time ``t`` (a line of phases.rank0.jsonl)."""

    phase: str
    t: float


def timeline_frame(
    samples: Sequence[dict[str, Any]], columns: Sequence[str], t0: float | None = None
) -> pd.DataFrame:
    """Samples (dicts) as a frame sorted by time; ``t0`` defaults to the first sample."""
    frame = pd.DataFrame(
        {
            "t": pd.Series([s["t"] for s in samples], dtype="float64"),
            "source": pd.Series([s["source"] for s in samples], dtype="str"),
            "device": pd.Series([s["device"] for s in samples], dtype="str"),
            **{c: pd.Series([s.get(c) for s in samples], dtype="float64") for c in columns},
        }
    )
    start = t0 if t0 is not None else (frame["t"].min() if len(frame) else 0.0)
    frame.insert(1, "t_rel_s", frame["t"] - start)
    return frame.sort_values(["t", "source", "device"], kind="stable", ignore_index=True)


def save_timeline(timeline: pd.DataFrame, path: Path) -> None:
    timeline.to_csv(path, index=False)


def load_timeline(path: Path) -> pd.DataFrame:
    """A saved timeline, identical to the frame that was saved (floats round-trip exactly)."""
    return pd.read_csv(
        path, float_precision="round_trip", dtype={"source": "str", "device": "str", "phase": "str"}
    )


def read_phase_events(case_dir: Path, rank: int = 0) -> list[PhaseEvent]:
    """The phase changes a rank logged, in time order; none when it never started."""
    path = Path(case_dir) / f"phases.rank{rank}.jsonl"
    if not path.exists():
        return []
    events = [
        PhaseEvent(str(obj["phase"]), float(obj["t"]))
        for _, obj in read_jsonl(path)
        if "phase" in obj and "t" in obj
    ]
    return sorted(events, key=lambda e: e.t)


def tag_phases(timeline: pd.DataFrame, events: Sequence[PhaseEvent]) -> pd.DataFrame:
    """A copy with a ``phase`` column: the phase rank 0 was in when each sample was taken."""
    tagged = timeline.copy()
    names = np.array([BEFORE_FIRST_PHASE, *(e.phase for e in events)], dtype=object)
    index = np.searchsorted([e.t for e in events], tagged["t"].to_numpy(), side="right")
    phases = pd.Series(names[index], index=tagged.index, dtype="str")
    if "phase" in tagged:
        tagged["phase"] = phases
    else:
        tagged.insert(len(IDENTITY), "phase", phases)
    return tagged
