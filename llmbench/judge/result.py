"""The case result: one JSON object per finished case in results.jsonl.

Every figure in ``metrics`` was measured or derived from measurements; a figure
that could not be measured is ``None`` and ``null_reasons`` says why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "unsupported", "error", "timeout", "skipped")


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _spell(value: float) -> str:
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity, however deeply nested, replaced by None."""
    if _non_finite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class CaseResult:
    case_id: str
    label: str
    params: dict[str, Any]
    status: str
    reason: str | None = None
    repeat: int = 0
    run_id: str = ""
    scenario: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    null_reasons: dict[str, str] = field(default_factory=dict)
    step_times_s: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    phase_times_s: dict[str, list[float]] = field(default_factory=dict)
    """``run.profile: breakdown``: seconds per timed step in each phase; with ``other`` they add up to the step."""
    profile: dict[str, Any] = field(default_factory=dict)
    """``run.profile`` artefacts: trace files (relative to the run directory), top ops, HTA summary, flops table."""
    ranks: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    """``micro_batch: auto``: every micro-batch size tried, in order, with its outcome and throughput."""
    started_at: str | None = None
    ended_at: str | None = None
    schema: int = SCHEMA_VERSION

    def to_json(self, stored: bool = False) -> str:
        """One JSON line of :meth:`stored` (``stored``: the result already is it).

        orjson writes the dataclass directly (history indexes 10k results in well
        under a second; ``asdict`` deep-copied every list first) and writes any other
        non-finite number, however deeply nested, as null, as :meth:`finite` does.
        """
        return orjson.dumps(
            self if stored else self.stored(), default=str, option=orjson.OPT_SERIALIZE_NUMPY
        ).decode()

    def stored(self) -> CaseResult:
        """The result as results.jsonl and the history keep it: a NaN or infinite figure
        becomes null with its reason (see :meth:`finite`); itself when it has none."""
        needs_reasons = any(map(_non_finite, self.metrics.values())) or any(
            map(_non_finite, self.losses)
        )
        return self.finite() if needs_reasons else self

    def finite(self) -> CaseResult:
        """A copy whose non-finite numbers are ``null``, each metric with the reason.

        JSON has no NaN; refusing to write one would lose the case (and every
        later one). A diverged loss is itself a finding, so the first non-finite
        loss also becomes the case's reason: "loss became NaN at step 3".
        """
        data = asdict(self)
        for name, value in self.metrics.items():
            if _non_finite(value):
                data["metrics"][name] = None
                data["null_reasons"].setdefault(
                    name, f"the value was {_spell(value)} (not a finite number)"
                )
        diverged = next((i for i, loss in enumerate(self.losses) if _non_finite(loss)), None)
        if diverged is not None:
            why = f"loss became {_spell(self.losses[diverged])} at step {diverged + 1}"
            data["reason"] = data["reason"] or why
            for name in ("loss_first", "loss_last"):
                if data["metrics"].get(name, 0) is None:
                    data["null_reasons"][name] = why
        return CaseResult.from_dict(_finite(data))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        """The result a JSON object holds; keys of a newer schema are left out."""
        if data.keys() <= _FIELDS:
            return cls(**data)
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    def set_metric(self, name: str, value: Any, reason: str | None = None) -> None:
        """Record a figure, or its absence with the reason."""
        self.metrics[name] = value
        if value is None and reason:
            self.null_reasons[name] = reason


_FIELDS = frozenset(CaseResult.__dataclass_fields__)
