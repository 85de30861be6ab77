"""One pandas DataFrame for any number of runs; every renderer reads this.

A row is one case result (one repeat). Columns: identity (``run_id``,
``case_id``, ``label``, ``repeat``, ``status``, ``reason``), every parameter
under its dotted key (``deepspeed.zero_stage``), every metric under its name
(``tokens_per_s``), and the raw lists (``step_times_s``, ``losses``) as objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from llmbench.errors import UserError
from llmbench.result import CaseResult
from llmbench.scenario import CASE_KEYS
from llmbench.store import RunDir

IDENTITY = ["run_id", "scenario", "case_id", "label", "repeat", "status", "reason"]
LISTS = ["step_times_s", "losses"]


def _row(result: CaseResult) -> dict[str, Any]:
    row: dict[str, Any] = {k: getattr(result, k) for k in IDENTITY}
    for key, value in result.params.items():
        row[key] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
    row.update(result.metrics)
    row["null_reasons"] = result.null_reasons
    row["step_times_s"] = result.step_times_s
    row["losses"] = result.losses
    row["started_at"] = result.started_at
    row["ended_at"] = result.ended_at
    return row


def results_frame(results: Iterable[CaseResult]) -> pd.DataFrame:
    frame = pd.DataFrame([_row(r) for r in results])
    if frame.empty:
        return pd.DataFrame(columns=IDENTITY)
    for column in frame.columns:
        if column in LISTS or column == "null_reasons":
            continue
        if frame[column].dtype == object:
            converted = pd.to_numeric(frame[column], errors="coerce")
            if (
                converted.notna().sum() == frame[column].notna().sum()
                and frame[column].map(lambda v: not isinstance(v, (str, bool))).all()
            ):
                frame[column] = converted
    for column in ("started_at", "ended_at"):
        frame[column] = pd.to_datetime(frame[column], errors="coerce", utc=True)
    frame["status"] = frame["status"].astype("category")
    return frame


def load_runs(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Every result of every run directory given, in one frame."""
    results: list[CaseResult] = []
    for path in paths:
        run = RunDir.open(path)
        results.extend(run.results())
    if not results:
        raise UserError("no results to report", where=", ".join(str(p) for p in paths))
    return results_frame(results)


def param_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in CASE_KEYS if c in frame.columns]


def swept_columns(frame: pd.DataFrame) -> list[str]:
    """Parameters that take more than one value across the frame, in schema order."""
    return [c for c in param_columns(frame) if frame[c].astype(str).nunique(dropna=False) > 1]


def per_case(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, case): numeric metrics are the median over repeats."""
    if frame.empty or frame["repeat"].nunique() <= 1:
        return frame
    keys = ["run_id", "case_id"]
    numeric = [
        c for c in frame.select_dtypes("number").columns if c != "repeat" and c not in CASE_KEYS
    ]
    first = frame.groupby(keys, sort=False, observed=True).first()
    first[numeric] = frame.groupby(keys, sort=False, observed=True)[numeric].median()
    first["repeats"] = frame.groupby(keys, sort=False, observed=True).size()
    return first.reset_index()
