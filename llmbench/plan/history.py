"""Measured cases read back from the store, as the planner needs them.

A source is a run directory (it holds ``results.jsonl``), a folder of run
directories (``reports/runs``), or the history index (``reports/history.sqlite``),
whose runs are read whole. The same case found twice counts once. Only cases
that ended ``ok`` carry measurements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmbench.errors import UserError
from llmbench.hardware import gpu_spec
from llmbench.judge.store import RESULTS

if TYPE_CHECKING:  # imported where runs are read: a plan without history never needs them
    from llmbench.define.schema import CaseSpec
    from llmbench.judge.result import CaseResult
    from llmbench.judge.runs import Run


@dataclass(frozen=True)
class Measurement:
    """One measured case: its settings, where it ran, and what was measured."""

    run_id: str
    case_id: str
    label: str
    device: str
    """llmbench GPU key (``h100-sxm-80gb``), the raw name of an unknown GPU, or ``cpu``"""
    spec: CaseSpec
    micro_batch: int
    metrics: dict[str, Any]

    @property
    def is_cpu(self) -> bool:
        return self.device == "cpu"


def run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories named directly or found one level below the paths given."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / RESULTS).is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if (p / RESULTS).is_file()))
    return found


def read_sources(paths: Sequence[str | Path]) -> list[Run]:
    """Every run the sources hold: run directories, folders of them, history files."""
    from llmbench.judge.runs import read_run

    runs = [read_run(p) for p in run_dirs(paths)]
    for path in map(Path, paths):
        if path.is_file() and path.suffix == ".sqlite":
            from llmbench.judge.history import History

            history = History(path)
            runs += [run for row in history.runs() if (run := history.load(row.run_id)) is not None]
        elif not path.exists():
            raise UserError("no such run directory or history file", where=str(path))
    return runs


def device_of(result: CaseResult, env: dict[str, Any]) -> str:
    """The GPU key (or ``cpu``) a case ran on, from its ranks or else the run's environment."""
    names = [r.get("device_name") for r in result.ranks if r.get("device_name")]
    if not names:
        names = list((env.get("accelerator_detail") or {}).get("names") or [])
    if not names or names[0] == "cpu" or env.get("accelerator") == "cpu":
        return "cpu"
    spec = gpu_spec(names[0])
    return spec.key if spec else names[0]


def measurement(result: CaseResult, env: dict[str, Any]) -> Measurement | None:
    """The measurement of an ``ok`` case; None when it has none usable."""
    from pydantic import ValidationError

    from llmbench.define.schema import CaseSpec

    if result.status != "ok" or not result.metrics.get("step_time_s_median"):
        return None
    try:
        # results written before model.dropout existed trained with dropout off
        spec = CaseSpec.from_params({"model.dropout": 0.0, **result.params})
    except ValidationError:
        return None  # written by a llmbench whose settings this one cannot read
    samples = result.metrics.get("samples_per_step")
    if not samples:
        return None
    micro_batch = int(samples) // (spec.training.grad_accum * spec.parallel.dp)
    return Measurement(
        run_id=result.run_id,
        case_id=result.case_id,
        label=result.label,
        device=device_of(result, env),
        spec=spec,
        micro_batch=micro_batch,
        metrics=dict(result.metrics),
    )


def measurements(runs: Sequence[Run]) -> list[Measurement]:
    out: dict[tuple[str, str, int], Measurement] = {}
    for run in runs:
        for result in run.results:
            m = measurement(result, run.env)
            if m is not None:
                out.setdefault((m.run_id, m.case_id, result.repeat), m)
    return list(out.values())


def load_measurements(paths: Sequence[str | Path]) -> list[Measurement]:
    return measurements(read_sources(paths))
