"""One pandas DataFrame for any number of runs; every renderer reads this.

A row is one case result (one repeat). Columns: identity (``run_id``,
``case_id``, ``label``, ``repeat``, ``status``, ``reason``), every parameter
under its dotted key (``deepspeed.zero_stage``), every metric under its name
(``tokens_per_s``), and the raw lists (``step_times_s``, ``losses``) as objects.

Loading never crashes on a damaged results file: ``store.read_jsonl`` skips a
corrupt or truncated line with a warning naming the file and line and keeps
every good line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from llmbench.define.sections import is_case_key
from llmbench.errors import UserError
from llmbench.judge.digest import read_digest
from llmbench.judge.result import CaseResult
from llmbench.judge.store import RunDir

if TYPE_CHECKING:  # pandas is imported where a frame is built: compare never builds one
    import pandas as pd

IDENTITY = ["run_id", "scenario", "case_id", "label", "repeat", "status", "reason"]
LISTS = ["step_times_s", "losses", "phase_times_s"]
NON_METRIC = {*IDENTITY, *LISTS, "null_reasons", "started_at", "ended_at", "repeats"}
# Worst first when repeats of one case disagree: a case that errored once is not "ok".
FAILED_STATUSES = ("error", "timeout")
"""Statuses that mean the harness or the case broke, as opposed to a measured limit (oom)."""
STATUS_SEVERITY = {"error": 5, "timeout": 4, "oom": 3, "unsupported": 2, "skipped": 1, "ok": 0}
DEVICE_MEMORY = "device_memory_used_peak_bytes"
"""NVML's view of a device's memory (allocator + CUDA context + fragmentation)."""


@dataclass
class Run:
    """One stored run: its results, and where and with what it ran."""

    run_id: str
    results: list[CaseResult]
    env: dict[str, Any] = field(default_factory=dict)
    scenario: dict[str, Any] = field(default_factory=dict)
    """The resolved scenario.yaml; empty when the run has none (e.g. ingested benchmarks)."""
    path: Path | None = None

    @property
    def scenario_name(self) -> str:
        names = {r.scenario for r in self.results if r.scenario}
        return str(self.scenario.get("name") or (names.pop() if len(names) == 1 else ""))

    @property
    def fingerprint(self) -> str | None:
        return self.env.get("fingerprint")

    @property
    def started_at(self) -> str | None:
        """When its first case started (ISO 8601, UTC), None for a run without results."""
        return min((r.started_at for r in self.results if r.started_at), default=None)


def read_run(path: str | Path, judged_only: bool = False) -> Run:
    """A run directory as a :class:`Run`; its directory name is its run id.

    Results keep the id of the directory they are read from, so a copied or
    renamed run directory is one run, not a mix of two. ``judged_only``: what
    ``compare`` reads is enough, so the run's digest serves when it is
    current (digest.py), at a third of the parsing.
    """
    run_dir = RunDir.open(path)
    results = (read_digest(run_dir) if judged_only else None) or run_dir.results()
    for result in results:
        result.run_id = run_dir.run_id
    scenario: dict[str, Any] = {}
    try:
        loaded = yaml.safe_load((run_dir.path / "scenario.yaml").read_text())
        scenario = loaded if isinstance(loaded, dict) else {}
    except (OSError, yaml.YAMLError):
        pass
    return Run(
        run_id=run_dir.run_id,
        results=results,
        env=run_dir.read_json("env.json") or {},
        scenario=scenario,
        path=run_dir.path,
    )


def read_runs(paths: Sequence[str | Path]) -> list[Run]:
    runs = [read_run(p) for p in paths]
    if not any(run.results for run in runs):
        raise UserError("no results to report", where=", ".join(str(p) for p in paths))
    return runs


def runs_frame(runs: Iterable[Run]) -> pd.DataFrame:
    return results_frame(r for run in runs for r in run.results)


def _param_value(value: Any) -> Any:
    """A parameter as one cell: mappings and lists (``deepspeed.config``) as their JSON text.

    An empty one, what nearly every case holds, is spelled without the encoder
    (the same text; 10k calls of ``json.dumps({})`` took ~35 ms of a report).
    """
    if isinstance(value, (dict, list)):
        if not value:
            return "{}" if isinstance(value, dict) else "[]"
        return json.dumps(value, sort_keys=True)
    return value


def _one_kind(values: pd.Series) -> pd.Series:
    """A parameter column in one kind: mappings and lists as JSON text, and a parameter
    that is a word or a number (``model.dropout: config | 0.1``) as text throughout, so
    the column sorts and groups like any other."""
    kinds = set(map(type, values.dropna()))
    if kinds & {dict, list}:
        values = values.map(_param_value)
        kinds = set(map(type, values.dropna()))
    if str not in kinds or len(kinds) == 1:
        return values
    return values.map(
        lambda v: (
            v if v is None or isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v)
        )
    )


def results_frame(results: Iterable[CaseResult]) -> pd.DataFrame:
    """The frame: identity, parameters, metrics, raw lists, timestamps.

    Parameters and metrics go through pandas' own records constructor (10k
    results in tens of milliseconds, where a Python row per result took ~1 s).
    A key a result lacks is a missing value in its column.
    """
    import pandas as pd

    results = list(results)
    if not results:
        return pd.DataFrame(columns=IDENTITY)
    identity = pd.DataFrame({k: [getattr(r, k) for r in results] for k in IDENTITY})
    params = pd.DataFrame.from_records([r.params for r in results])
    for column in params.columns:
        if params[column].dtype == object:
            params[column] = _one_kind(params[column])
    metrics = pd.DataFrame.from_records([r.metrics for r in results])
    params = params.drop(columns=[c for c in params.columns if c in metrics.columns])
    raw = pd.DataFrame(
        {
            k: [getattr(r, k) for r in results]
            for k in ("null_reasons", *LISTS, "started_at", "ended_at")
        }
    )
    frame = pd.concat([identity, params, metrics, raw], axis=1)
    for column in metrics.columns:
        if frame[column].dtype != object:
            continue
        kinds = set(map(type, frame[column].dropna()))
        if kinds and not kinds & {str, bool, dict, list}:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in ("started_at", "ended_at"):
        frame[column] = pd.to_datetime(frame[column], errors="coerce", utc=True, format="ISO8601")
    frame["status"] = frame["status"].astype("category")
    return frame


def load_runs(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Every result of every run directory given, in one frame."""
    return runs_frame(read_runs(paths))


def param_columns(frame: pd.DataFrame) -> list[str]:
    """The case parameters among the frame's columns, in the order results list them
    (the schema's, for results llmbench wrote)."""
    return [c for c in frame.columns if is_case_key(c)]


def swept_columns(frame: pd.DataFrame) -> list[str]:
    """Parameters that take more than one value across the frame, in schema order.

    A mixed column (object: numbers with None) is compared as text, so 1 and 1.0
    or None and NaN count as the values they print as; a typed one (numbers,
    strings) as it is: its text is the same partition, and copying 39 columns of
    10k values into text took ~20 ms of a report.
    """
    return [
        c
        for c in param_columns(frame)
        if (frame[c] if frame[c].dtype != object else frame[c].astype(str)).nunique(dropna=False)
        > 1
    ]


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric measurement columns, whatever metrics the runs recorded."""
    return [
        c
        for c in frame.select_dtypes("number").columns
        if c not in NON_METRIC and not is_case_key(c)
    ]


def memory_metric(frame: pd.DataFrame) -> str:
    """The peak-memory figure to show: the device's own (NVML) when measured, else the peak."""
    if DEVICE_MEMORY in frame.columns and frame[DEVICE_MEMORY].notna().any():
        return DEVICE_MEMORY
    return "peak_memory_bytes"


def worst_status(statuses: Iterable[str]) -> str:
    return max(statuses, key=lambda s: STATUS_SEVERITY.get(s, len(STATUS_SEVERITY)))


def per_case(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, case): numeric metrics are the median over repeats.

    The status is the worst over repeats (with that repeat's reason): one
    failed repeat makes the case failed, it is not averaged away.
    """
    if frame.empty or frame["repeat"].nunique() <= 1:
        return frame
    keys = ["run_id", "case_id"]
    numeric = metric_columns(frame)
    ordered = frame.assign(
        _severity=frame["status"].astype(str).map(STATUS_SEVERITY).fillna(len(STATUS_SEVERITY))
    ).sort_values("_severity", ascending=False, kind="stable")
    grouped = ordered.groupby(keys, sort=False, observed=True)
    first = grouped.first()
    first[numeric] = grouped[numeric].median()
    first["repeats"] = grouped.size()
    first = first.drop(columns="_severity").reset_index()
    order = frame.drop_duplicates(keys)[keys]
    merged = order.merge(first, on=keys, how="left")
    merged["status"] = merged["status"].astype("category")
    return merged
