"""The case result: one JSON object per finished case in results.jsonl.

Every figure in ``metrics`` was measured or derived from measurements; a figure
that could not be measured is ``None`` and ``null_reasons`` says why.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "unsupported", "error", "timeout", "skipped")


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
    ranks: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    """``micro_batch: auto``: every micro-batch size tried, in order, with its outcome and throughput."""
    started_at: str | None = None
    ended_at: str | None = None
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def set_metric(self, name: str, value: Any, reason: str | None = None) -> None:
        """Record a figure, or its absence with the reason."""
        self.metrics[name] = value
        if value is None and reason:
            self.null_reasons[name] = reason
