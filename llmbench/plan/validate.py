"""How far to trust the planner: predict every measured case of a run and compare.

Each case is predicted with a calibration that leaves that case out (its own
run's other cases and the rest of the history still count), so no case is
judged against figures drawn from itself.

GPU cases compare the predicted allocator peak with ``allocator_peak_bytes``
(and, with the fixed overhead, device memory used with
``device_memory_used_peak_bytes``). CPU cases compare with host RSS, which
also holds ~400 MB of imported libraries: the prediction covers model states,
buffers and activations, and the rest is the fixed overhead calibrated from
the other cases. Unknown stays null with a reason.

A run made with ``run.profile: breakdown`` also checks where the predicted
step time goes: the planner's compute term against the measured compute
phases (forward + autograd's backward, ``COMPUTE_PHASES``), and its
communication terms (exposed data-, tensor- and pipeline-parallel) against the
seconds DeepSpeed's comms logger timed in the step's collectives. Both
measured figures are upper bounds of their kind: under ZeRO-2/3 DeepSpeed runs
its reduction hooks inside autograd, so backward holds some collective time,
and on GPUs the logger synchronises after each collective, so measured
communication is what it costs without overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from llmbench.errors import UserError
from llmbench.judge.runs import Run
from llmbench.plan.assumptions import Assumptions
from llmbench.plan.calibrate import Calibration, Point, invert, target_of
from llmbench.plan.configs import from_specs
from llmbench.plan.history import load_measurements, measurements
from llmbench.plan.memory import ZeroKnobs
from llmbench.plan.predict import predict

COMPUTE_PHASES = ("phase_forward_s_median", "phase_backward_inner_s_median")
"""Measured compute of a step (measure/profile_summary.py's names)."""
COMM_METRIC = "comm_s_median"
"""Measured communication of a step: every collective the comms logger timed."""
PREDICTED_COMM = ("dp_comm_s", "tp_comm_s", "pp_comm_s")
NOT_PROFILED = "the run has no phase breakdown (run it with run.profile=breakdown)"
CPU_COMM = (
    "on CPU the planner has no communication term (gloo's time stays inside the compute "
    "rate it calibrates from measured runs, plan/target.py): its compute is the whole step"
)


def _error(predicted: float | None, measured: float | None) -> float | None:
    if predicted is None or measured is None or not np.isfinite(predicted) or not measured:
        return None
    return (predicted - measured) / measured


def _split(metrics: dict, row: pd.Series, reasons: dict[str, str], cpu: bool) -> dict:
    """Predicted and measured compute and communication seconds per step, errors, and why
    a side is null when it is."""
    compute = [metrics.get(name) for name in COMPUTE_PHASES]
    measured_compute = sum(compute) if all(v is not None for v in compute) else None
    measured_comm = metrics.get(COMM_METRIC) if measured_compute is not None else None
    predicted_compute = float(row["compute_s"])
    predicted_comm = None if cpu else float(sum(row[name] for name in PREDICTED_COMM))
    why = ""
    if measured_compute is None:
        why = next((reasons[n] for n in COMPUTE_PHASES if n in reasons), NOT_PROFILED)
    elif measured_comm is None:
        why = reasons.get(COMM_METRIC, "DeepSpeed's comms logger timed no collective")
    return {
        "predicted_compute_s": predicted_compute,
        "measured_compute_s": measured_compute,
        "compute_error": _error(predicted_compute, measured_compute),
        "predicted_comm_s": predicted_comm,
        "measured_comm_s": measured_comm,
        "comm_error": _error(predicted_comm, measured_comm),
        "breakdown_note": why,
        "predicted_comm_note": CPU_COMM if cpu else "",
    }


def _case_row(
    point: Point, others: list[Point], assumptions: Assumptions, reasons: dict[str, str]
) -> dict:
    m = point.measurement
    target = target_of(m, assumptions)
    cfg = from_specs([m.spec], [m.micro_batch])
    result = predict(
        point.model,
        cfg,
        target,
        assumptions,
        Calibration(others),
        knobs=ZeroKnobs.from_spec(m.spec.deepspeed),
        attention=m.spec.model.attn_implementation,
        world_size=m.spec.parallel.world_size,
        dropout=m.spec.model.dropout,
    )
    row = result.frame.iloc[0]
    if m.is_cpu:
        measured_peak = m.metrics.get("host_rss_peak_bytes")
        measured_name = "host_rss_peak_bytes"
    else:
        measured_peak = m.metrics.get("allocator_peak_bytes")
        measured_name = "allocator_peak_bytes"
    # on GPUs the allocator peak excludes the fixed overhead; on CPUs RSS includes it
    peak = (
        float(row["total_bytes"])
        if m.is_cpu
        else float(row["predicted_bytes"]) * (1 + result.allocator_margin.value)
    )
    tokens = float(row["tokens_per_s"]) if np.isfinite(row["tokens_per_s"]) else None
    out = {
        "run_id": m.run_id,
        "case_id": m.case_id,
        "label": m.label,
        "device": m.device,
        "model_states_bytes": float(row["model_states_bytes"]),
        "buffers_bytes": float(row["buffers_bytes"]),
        "activations_bytes": float(row["activations_bytes"] + row["logits_bytes"]),
        "overhead_bytes": float(row["overhead_bytes"]),
        "predicted_peak_bytes": peak,
        "measured_peak_bytes": measured_peak,
        "measured_peak_metric": measured_name,
        "peak_error": _error(peak, measured_peak),
        "predicted_tokens_per_s": tokens,
        "measured_tokens_per_s": m.metrics.get("tokens_per_s"),
        "tokens_per_s_error": _error(tokens, m.metrics.get("tokens_per_s")),
        "overhead_source": result.fixed_overhead.source,
        "rate_source": result.rate_sources[int(row["rate_source"])],
        **_split(m.metrics, row, reasons, m.is_cpu),
    }
    if not m.is_cpu and m.metrics.get("device_memory_used_peak_bytes") is not None:
        out["predicted_device_used_bytes"] = float(row["total_bytes"])
        out["measured_device_used_bytes"] = m.metrics["device_memory_used_peak_bytes"]
    return out


def validate(
    run: Run, history: Sequence[str | Path] = (), assumptions: Assumptions | None = None
) -> pd.DataFrame:
    """Predicted vs measured peak memory, tokens/s and (profiled runs) compute and
    communication seconds for every measured case of ``run``."""
    assumptions = assumptions or Assumptions()
    cases = measurements([run])
    if not cases:
        raise UserError(
            "no case ended ok: nothing to validate against", where=str(run.path or run.run_id)
        )
    keys = {(c.run_id, c.case_id) for c in cases}
    extra = [m for m in load_measurements(history) if (m.run_id, m.case_id) not in keys]
    points = [invert(m, assumptions) for m in cases]
    extra_points = [invert(m, assumptions) for m in extra]
    reasons = {r.case_id: r.null_reasons for r in run.results}
    rows = []
    for i, point in enumerate(points):
        others = [p for j, p in enumerate(points) if j != i] + extra_points
        m = point.measurement
        rows.append(_case_row(point, others, assumptions, reasons.get(m.case_id, {})))
    return pd.DataFrame(rows)


def summary(frame: pd.DataFrame) -> dict[str, float | int | None]:
    """Median and worst absolute error of memory, throughput, compute and communication."""
    out: dict[str, float | int | None] = {"cases": len(frame)}
    for column in ("peak_error", "tokens_per_s_error", "compute_error", "comm_error"):
        errors = frame[column].dropna().abs() if column in frame else pd.Series(dtype=float)
        out[f"{column}_median_abs"] = float(errors.median()) if len(errors) else None
        out[f"{column}_max_abs"] = float(errors.max()) if len(errors) else None
    return out
