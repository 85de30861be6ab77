"""The pivot: cases laid out on a grid of swept settings (e.g. model size × ZeRO stage).

Rows and columns are chosen from the dimensions that vary across the frame;
each cell is one case with its throughput, peak memory and speed-up over a
reference case, and the best cell is marked. Every renderer (terminal,
Markdown, HTML) draws the same :class:`Pivot`, so they cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from llmbench import units
from llmbench.errors import UserError, did_you_mean
from llmbench.judge.runs import memory_metric, per_case, swept_columns

# Settings people compare side by side; the first one swept becomes the columns.
PREFERRED_COLUMNS = (
    "deepspeed.zero_stage",
    "parallel.world_size",
    "deepspeed.precision",
    "deepspeed.offload_optimizer",
    "deepspeed.offload_param",
    "training.micro_batch",
)
THROUGHPUT = "tokens_per_s"
STEP_TIME = "step_time_s_median"

Key = tuple[Any, ...]


@dataclass(frozen=True)
class Cell:
    run_id: str
    case_id: str
    label: str
    status: str
    reason: str | None
    tokens_per_s: float | None
    step_time_s: float | None
    memory_bytes: float | None
    speedup: float | None
    """Throughput over the reference case's (step-time ratio when there is no throughput)."""
    best: bool


@dataclass(frozen=True)
class Pivot:
    row_keys: tuple[str, ...]
    col_keys: tuple[str, ...]
    rows: list[Key]
    cols: list[Key]
    cells: dict[tuple[Key, Key], Cell]
    memory_metric: str
    reference: Cell | None

    def cell(self, row: Key, col: Key) -> Cell | None:
        return self.cells.get((row, col))

    def col_title(self, col: Key) -> str:
        return ", ".join(f"{short(k)}={v}" for k, v in zip(self.col_keys, col, strict=True))


def short(column: str) -> str:
    return column.rsplit(".", 1)[-1]


def dimensions(frame: pd.DataFrame) -> list[str]:
    """Swept settings, plus the run when several runs are shown together."""
    dims = swept_columns(frame)
    if frame["run_id"].nunique() > 1:
        dims.append("run_id")
    return dims


def choose_axes(
    frame: pd.DataFrame, rows: Sequence[str] = (), cols: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """Rows and columns of the grid; every varying dimension lands on one of them."""
    dims = dimensions(frame)
    for key in (*rows, *cols):
        if key not in frame.columns:
            raise UserError(
                f"not a setting of these runs{did_you_mean(key, dims)}", where="pivot", key=key
            )
    if not cols:
        rest = [d for d in dims if d not in rows]
        preferred = [c for c in PREFERRED_COLUMNS if c in rest]
        cols = preferred[:1] or (rest[-1:] if len(rest) > 1 else [])
    rows = list(rows) + [d for d in dims if d not in rows and d not in cols]
    return rows or ["label"], list(cols)


def _key_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _number(value: Any) -> float | None:
    """A figure, or None for a missing one (None, NaN, pandas' NA)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _unique_keys(cases: pd.DataFrame, rows: list[str], cols: list[str]) -> list[str]:
    """Add label, then run, to the rows until every case has a cell of its own."""
    for extra in ("label", "run_id"):
        if not cases.duplicated(subset=rows + cols).any():
            break
        if extra not in rows + cols:
            rows = [*rows, extra]
    return rows


def _find_reference(cases: pd.DataFrame, reference: str | None) -> pd.Series | None:
    ok = cases[cases["status"].astype(str) == "ok"]
    if reference is None:
        return ok.iloc[0] if len(ok) else None
    match = cases[(cases["case_id"] == reference) | (cases["label"] == reference)]
    if match.empty:
        raise UserError(
            f"no case with this id or label{did_you_mean(reference, cases['label'].astype(str))}",
            where="pivot",
            key=f"reference {reference}",
        )
    return match.iloc[0]


def build_pivot(
    frame: pd.DataFrame,
    rows: Sequence[str] = (),
    cols: Sequence[str] = (),
    reference: str | None = None,
) -> Pivot:
    """Lay the cases of ``frame`` (repeats reduced to medians) out on a grid."""
    cases = per_case(frame)
    row_keys, col_keys = choose_axes(cases, rows, cols)
    row_keys = _unique_keys(cases, row_keys, col_keys)
    memory = memory_metric(cases)
    ref = _find_reference(cases, reference)
    ref_tokens = _number(ref.get(THROUGHPUT)) if ref is not None else None
    ref_step = _number(ref.get(STEP_TIME)) if ref is not None else None

    def value(row: dict[str, Any], column: str) -> float | None:
        return _number(row.get(column)) if row["status"] == "ok" else None

    ok = cases[cases["status"].astype(str) == "ok"]
    best_id: tuple[str, str] | None = None
    for column, pick in ((THROUGHPUT, "idxmax"), (STEP_TIME, "idxmin")):
        if column in ok.columns and ok[column].notna().any():
            best = ok.loc[getattr(ok[column], pick)()]
            best_id = (best["run_id"], best["case_id"])
            break

    cells: dict[tuple[Key, Key], Cell] = {}
    row_order: dict[Key, None] = {}
    col_order: dict[Key, None] = {}
    needed = [*row_keys, *col_keys, "run_id", "case_id", "label", "status", "reason"]
    needed += [c for c in (THROUGHPUT, STEP_TIME, memory) if c in cases.columns]
    needed = list(dict.fromkeys(needed))
    # column lists zipped into rows: pandas' to_dict("records") took half of a 10k-case pivot
    for values in zip(*(cases[c].tolist() for c in needed), strict=True):
        row = dict(zip(needed, values, strict=True))
        r_key = tuple(_key_value(row[k]) for k in row_keys)
        c_key = tuple(_key_value(row[k]) for k in col_keys)
        row_order.setdefault(r_key)
        col_order.setdefault(c_key)
        tokens, step = value(row, THROUGHPUT), value(row, STEP_TIME)
        if tokens is not None and ref_tokens:
            speedup = tokens / ref_tokens
        elif tokens is None and ref_tokens is None and step and ref_step:
            speedup = ref_step / step
        else:
            speedup = None
        reason = row.get("reason")
        cells[(r_key, c_key)] = Cell(
            run_id=str(row["run_id"]),
            case_id=str(row["case_id"]),
            label=str(row["label"]),
            status=str(row["status"]),
            reason=reason if isinstance(reason, str) else None,
            tokens_per_s=tokens,
            step_time_s=step,
            memory_bytes=value(row, memory),
            speedup=speedup,
            best=best_id == (row["run_id"], row["case_id"]),
        )
    ref_cell = (
        next(c for c in cells.values() if (c.run_id, c.case_id) == (ref["run_id"], ref["case_id"]))
        if ref is not None
        else None
    )
    return Pivot(
        row_keys=tuple(row_keys),
        col_keys=tuple(col_keys),
        rows=list(row_order),
        cols=list(col_order),
        cells=cells,
        memory_metric=memory,
        reference=ref_cell,
    )


def cell_lines(cell: Cell | None) -> list[str]:
    """The text of one cell, line by line; every renderer shows exactly this."""
    if cell is None:
        return ["–"]
    if cell.status != "ok":
        return [cell.status]
    lines = []
    if cell.tokens_per_s is not None:
        lines.append(f"{units.rate(cell.tokens_per_s)} tok/s")
    elif cell.step_time_s is not None:
        lines.append(f"{units.seconds(cell.step_time_s)}/step")
    lines.append(units.bytes_(cell.memory_bytes))
    if cell.speedup is not None:
        lines.append(f"×{cell.speedup:.2f}")
    return lines


def legend(pivot: Pivot) -> str:
    """One sentence saying what the cells hold and what the speed-up is relative to."""
    memory = "device memory (NVML)" if pivot.memory_metric != "peak_memory_bytes" else "peak memory"
    text = f"Cells: throughput, {memory}, speed-up"
    if pivot.reference is not None:
        text += f" vs {pivot.reference.label}"
        if pivot.rows and len({c.run_id for c in pivot.cells.values()}) > 1:
            text += f" ({pivot.reference.run_id})"
    return text + "; best cell marked."
