"""Units, in one place: byte multiples, and figures formatted for people.

``bytes_``/``seconds``/``rate`` choose a unit per value for tables; ``size_label``
writes an exact size back the way a user would type it (``4MiB``), for labels
and threshold texts.
"""

from __future__ import annotations

import math
from typing import Any

BINARY_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def bytes_(value: Any) -> str:
    if _missing(value):
        return "–"
    value = float(value)
    for unit, size in BINARY_UNITS:
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def seconds(value: Any) -> str:
    if _missing(value):
        return "–"
    value = float(value)
    if abs(value) >= 1:
        return f"{value:.2f} s"
    if abs(value) >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def rate(value: Any) -> str:
    if _missing(value):
        return "–"
    value = float(value)
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f} M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.1f} k"
    return f"{value:,.0f}"


def number(value: Any, digits: int = 3) -> str:
    if _missing(value):
        return "–"
    return f"{float(value):.{digits}g}"


def percent(value: Any) -> str:
    return "–" if _missing(value) else f"{float(value) * 100:.1f} %"


def figure(metric: str, value: Any) -> str:
    """A figure in the unit its metric's name carries (``_bytes``, ``_per_s``, ``_s``)."""
    if isinstance(value, str):
        return value
    if _missing(value):
        return "–"
    if metric.endswith("_bytes"):
        return bytes_(value)
    if "_per_s" in metric:
        return rate(value)
    if metric.endswith(("_s", "_s_median")) or metric.startswith("step_time_s_"):
        return seconds(value)
    if metric == "mfu":
        return percent(value)
    return number(value)


def size_label(size: float) -> str:
    """``4MiB`` when the size is a whole number of a binary unit, else ``1000B``."""
    for unit, scale in BINARY_UNITS:
        if size >= scale and size % scale == 0:
            return f"{size / scale:g}{unit}"
    return f"{size:g}B"
