"""A case's sampled figures, from its measure phase only.

Across devices, peaks are reduced by max (each rank owns its device; summing
peaks would describe no moment that happened) and energies by sum (they
add). A figure that cannot be derived is None and its reason says why; a
figure over several devices is None when any device lacks it, since a partial
sum or mean would be silently wrong.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from llmbench.judge.timeline import PhaseEvent
from llmbench.measure.sampling.nvml import clock_event_names

NO_SAMPLES = "no samples in the measure phase (phase shorter than the sampling interval)"
MIN_NVML_WINDOW_S = 5.0
"""Shortest measure phase whose NVML power, energy and utilisation are reported.

``nvmlDeviceGetPowerUsage`` is a trailing average over about 1 s on recent
GPUs and utilisation is sampled over a 1/6-1 s window (NVML API reference,
nvmlDeviceGetPowerUsage, nvmlDeviceGetUtilizationRates), so a window of a few
tenths of a second mostly measures the steps before it. At 5 s the averaging
edges are at most ~20 % of the window. Memory peaks, temperature and clock
events are instantaneous readings and are kept for shorter phases.
"""
NO_MEASURE = "the workers never reached the measure phase"


@dataclass(frozen=True)
class Window:
    """The measure phase in epoch seconds; ``end`` is inf when no later phase was logged."""

    start: float
    end: float

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["t"] >= self.start) & (frame["t"] <= self.end)]


def measure_window(events: Sequence[PhaseEvent], measure_s: float | None = None) -> Window | None:
    """From rank 0's ``measure`` event to its next event, or to ``measure_s`` after it if sooner.

    Rank 0 logs ``teardown`` only after a final barrier and
    ``destroy_process_group``; passing the summed step times as ``measure_s``
    keeps that teardown out of per-step energy. ``measure_s`` sums the slowest
    rank of each step, so it can outlast rank 0's own steps: the window never
    runs past rank 0's next event, or it would take in samples that the
    timeline tags with that next phase (tag_phases uses the same events).
    """
    start = next((e.t for e in events if e.phase == "measure"), None)
    if start is None:
        return None
    end = min((e.t for e in events if e.t > start), default=math.inf)
    return Window(start, end if measure_s is None else min(end, start + measure_s))


@dataclass(frozen=True)
class _Figure:
    name: str
    """The figure over all devices."""
    column: str
    over_samples: str  # "max" | "mean": per device, over the samples in the window
    over_devices: str  # "max" | "mean" | "sum" (and "or" for bitmasks)
    per_device: str | None = None
    """Also reported per device as ``gpu<i>_<per_device>``."""
    averaged: bool = False
    """NVML averages it over a window of its own: null for phases under MIN_NVML_WINDOW_S."""


NVML_FIGURES = (
    _Figure(
        "device_memory_used_peak_bytes", "memory_used_bytes", "max", "max", "memory_used_peak_bytes"
    ),
    _Figure(
        "device_case_memory_peak_bytes", "case_memory_bytes", "max", "max", "case_memory_peak_bytes"
    ),
    _Figure("gpu_util_mean_pct", "gpu_util_pct", "mean", "mean", averaged=True),
    _Figure("gpu_memory_util_mean_pct", "memory_util_pct", "mean", "mean", averaged=True),
    _Figure("power_w_mean", "power_w", "mean", "mean", "power_w_mean", averaged=True),
    _Figure("power_w_mean_total", "power_w", "mean", "sum", averaged=True),
    _Figure("temperature_c_max", "temperature_c", "max", "max"),
    _Figure("sm_clock_mhz_mean", "sm_clock_mhz", "mean", "mean"),
)
ENERGY_FIGURES = ("energy_j", "energy_j_per_step", "energy_j_per_token")
NVML_NAMES = (*(f.name for f in NVML_FIGURES), *ENERGY_FIGURES, "throttle_reasons")
HOST_FIGURES = (
    ("host_tree_rss_peak_bytes", "tree_rss_bytes", "max"),
    ("host_cpu_util_mean_pct", "cpu_util_pct", "mean"),
)

Found = tuple[Any, str | None]
"""A figure and, when it is None, why."""


class _Figures:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.reasons: dict[str, str] = {}

    def set(self, name: str, found: Found) -> None:
        value, reason = found
        self.values[name] = value
        if value is None:
            self.reasons[name] = reason or "not measured"


def summarize(
    timeline: pd.DataFrame,
    events: Sequence[PhaseEvent],
    *,
    steps: int | None,
    tokens_per_step: int | None,
    unavailable: dict[str, str],
    measure_s: float | None = None,
    min_window_s: float = MIN_NVML_WINDOW_S,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The case's host and NVML figures over its measure phase, and a reason for each None.

    ``steps``: measured optimizer steps; ``tokens_per_step``: global tokens per
    step; ``unavailable``: SamplerSet.unavailable (reasons by source and by
    ``"<device>.<column>"``); ``measure_s``: see measure_window; ``min_window_s``:
    see MIN_NVML_WINDOW_S.
    """
    out = _Figures()
    window = measure_window(events, measure_s)
    _host(out, timeline, window, unavailable)
    _nvml(out, timeline, window, unavailable, steps, tokens_per_step, min_window_s)
    return out.values, out.reasons


def _rows(timeline: pd.DataFrame, source: str) -> pd.DataFrame:
    return timeline[timeline["source"] == source]


def _source_reason(
    timeline: pd.DataFrame, source: str, window: Window | None, unavailable: dict[str, str]
) -> str | None:
    """Why none of a source's figures exist, if that is the case."""
    if source in unavailable:
        return unavailable[source]
    if window is None:
        return NO_MEASURE
    if _rows(timeline, source).empty:
        return f"the {source} sampler took no samples"
    return None


def _reduce(rows: pd.DataFrame, column: str, how: str, missing: str) -> Found:
    if rows.empty:
        return None, NO_SAMPLES
    values = rows[column].dropna() if column in rows else pd.Series(dtype="float64")
    if values.empty:
        return None, missing
    value = float(values.max() if how == "max" else values.mean())
    return (int(value) if column.endswith("_bytes") else value), None


def _host(
    out: _Figures, timeline: pd.DataFrame, window: Window | None, unavailable: dict[str, str]
) -> None:
    reason = _source_reason(timeline, "host", window, unavailable)
    for name, column, how in HOST_FIGURES:
        if reason or window is None:
            out.set(name, (None, reason))
            continue
        rows = window.rows(_rows(timeline, "host"))
        out.set(name, _reduce(rows, column, how, f"no {column} reading in the measure phase"))


def _nvml(
    out: _Figures,
    timeline: pd.DataFrame,
    window: Window | None,
    unavailable: dict[str, str],
    steps: int | None,
    tokens_per_step: int | None,
    min_window_s: float,
) -> None:
    reason = _source_reason(timeline, "nvml", window, unavailable)
    if reason or window is None:
        for name in NVML_NAMES:
            out.set(name, (None, reason))
        return
    nvml = _rows(timeline, "nvml")
    devices = sorted(nvml["device"].unique(), key=_device_order)
    per_device = {d: nvml[nvml["device"] == d] for d in devices}

    def missing(device: str, column: str) -> str:
        return unavailable.get(
            f"{device}.{column}", f"NVML reported no {column} for {device} in the measure phase"
        )

    length = min(window.end, float(nvml["t"].max())) - window.start
    short = (
        f"measure phase {length:.2f} s is shorter than the {min_window_s:g} s NVML's power "
        "and utilisation averaging needs (run more or longer steps)"
        if length < min_window_s
        else None
    )
    for fig in NVML_FIGURES:
        found = {
            d: (None, short)
            if fig.averaged and short
            else _reduce(window.rows(rows), fig.column, fig.over_samples, missing(d, fig.column))
            for d, rows in per_device.items()
        }
        if fig.per_device:
            for d, value in found.items():
                out.set(f"{d}_{fig.per_device}", value)
        out.set(fig.name, _over_devices(found, fig.over_devices))

    energy = {
        d: (None, short) if short else _energy_j(rows, window, missing(d, "energy_j"))
        for d, rows in per_device.items()
    }
    for d, value in energy.items():
        out.set(f"{d}_energy_j", value)
    total = _over_devices(energy, "sum")
    out.set("energy_j", total)
    out.set("energy_j_per_step", _per(total, steps, "no measured steps"))
    tokens = steps * tokens_per_step if steps and tokens_per_step else None
    out.set("energy_j_per_token", _per(total, tokens, "no measured tokens"))
    events = {
        d: _clock_events(window.rows(rows), missing(d, "clock_event_mask"))
        for d, rows in per_device.items()
    }
    mask, why = _over_devices(events, "or")
    out.set("throttle_reasons", (clock_event_names(mask) if mask is not None else None, why))


def _device_order(device: str) -> tuple[str, int]:
    """gpu2 before gpu10; on several nodes (``n1.gpu0``) node first."""
    node, _, gpu = device.rpartition("gpu")
    return node, int(gpu) if gpu.isdigit() else -1


def _over_devices(found: dict[str, Found], how: str) -> Found:
    for device, (value, reason) in found.items():
        if value is None:
            return None, f"{device}: {reason}"
    values = [value for value, _ in found.values()]
    if how == "max":
        return max(values), None
    if how == "or":
        return functools.reduce(operator.or_, values), None
    total = sum(values)
    return (total if how == "sum" else total / len(values)), None


def _energy_j(rows: pd.DataFrame, window: Window, missing: str) -> Found:
    """Counter delta over the window, the counter interpolated linearly at both edges."""
    readings = rows[["t", "energy_j"]].dropna().sort_values("t")
    if readings.empty:
        return None, missing
    t, joules = readings["t"].to_numpy(), readings["energy_j"].to_numpy()
    end = window.end if math.isfinite(window.end) else t[-1]
    if t[0] > window.start or t[-1] < end:
        return None, "energy counter not sampled on both sides of the measure window"
    delta = float(np.interp(end, t, joules) - np.interp(window.start, t, joules))
    if delta < 0:
        return None, "energy counter went backwards (driver reloaded?)"
    return delta, None


def _per(total: Found, count: int | None, no_count: str) -> Found:
    value, reason = total
    if value is None:
        return None, reason
    if not count:
        return None, no_count
    return value / count, None


def _clock_events(rows: pd.DataFrame, missing: str) -> Found:
    """Every clock event reason bit set in any sample of one device."""
    if rows.empty:
        return None, NO_SAMPLES
    masks = rows["clock_event_mask"].dropna()
    if masks.empty:
        return None, missing
    return int(np.bitwise_or.reduce(masks.astype("int64").to_numpy())), None
