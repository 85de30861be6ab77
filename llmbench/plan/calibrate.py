"""Calibration: measured runs turned into the planner's efficiency and overhead figures.

Each measured case is run backwards through the same models the planner runs
forwards:

* compute efficiency: the achievable matmul fraction of the GPU's dense peak
  that makes ``throughput.step_time`` reproduce the measured median step time,
  every other term kept (for CPUs, which have no published peak, the FLOP/s);
* fixed overhead: device memory used (NVML) minus the allocator peak - CUDA
  context, NCCL, allocator reserve; on CPU runs, host RSS minus the predicted
  resident bytes - the imported libraries;
* allocator margin: allocator peak over the itemised prediction.

A plan takes, per configuration, the median of the measured cases that match
it most closely (same device always; then the same model, first with the
whole configuration, then with the same precision and checkpointing; then the
same model size class likewise; then precision; then anything on that
device) and names what it used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llmbench.errors import UserError
from llmbench.plan.assumptions import Assumption, Assumptions
from llmbench.plan.configs import CHECKPOINTING, PRECISIONS, Configs, from_specs
from llmbench.plan.describe import ModelDescription, describe_model
from llmbench.plan.history import Measurement
from llmbench.plan.memory import ZeroKnobs, memory_terms
from llmbench.plan.target import Target, cpu_target, gpu_target
from llmbench.plan.throughput import Device, Shape, implied_fraction

SIZE_CLASSES = ((1e8, "<100M"), (1e9, "100M-1B"), (1e10, "1B-10B"), (1e11, "10B-100B"))
CONFIG_KEYS = ("zero", "offload_optimizer", "offload_param", "checkpointing", "tp", "pp")
LEVELS = (
    (("model", "precision", *CONFIG_KEYS), "same model and configuration"),
    (("model", "precision", "checkpointing"), "same model, precision, checkpointing"),
    (("size_class", "precision", *CONFIG_KEYS), "same size class and configuration"),
    (("size_class", "precision", "checkpointing"), "same size class, precision, checkpointing"),
    (("precision",), "same precision"),
    ((), "any configuration"),
)


def size_class(total_params: float) -> str:
    for bound, name in SIZE_CLASSES:
        if total_params < bound:
            return name
    return ">=100B"


def model_of(spec) -> ModelDescription:
    return describe_model(
        f"{spec.model.family}-{spec.model.size}",
        overrides=spec.model.dim_overrides() or None,
        task=spec.task,
    )


def target_of(m: Measurement, assumptions: Assumptions) -> Target:
    per_node = m.spec.parallel.world_size // m.spec.parallel.nodes
    if m.is_cpu:
        return cpu_target(per_node)
    try:
        return gpu_target(m.device, assumptions, per_node)
    except UserError:  # a GPU missing from the table: its memory figures still count
        return Target(device=m.device, name=m.device, kind="cuda", memory_bytes=None)


@dataclass(frozen=True)
class Point:
    """One measured case inverted through the model."""

    measurement: Measurement
    model: ModelDescription
    predicted_bytes: float
    """itemised prediction: allocator semantics on GPUs, resident bytes on CPUs"""
    measured_peak_bytes: float | None
    fixed_overhead_bytes: float | None
    margin: float | None
    sustained_flops: float | None
    efficiency: float | None
    comm_removed: bool | None


def invert(m: Measurement, assumptions: Assumptions) -> Point:
    model = model_of(m.spec)
    target = target_of(m, assumptions)
    cfg = from_specs([m.spec], [m.micro_batch])
    mem = memory_terms(
        model,
        cfg,
        knobs=ZeroKnobs.from_spec(m.spec.deepspeed),
        attention=m.spec.model.attn_implementation,
        dropout=m.spec.model.dropout,
        device=target.kind,
        gpus_per_node=target.gpus_per_node,
        resident=m.is_cpu,
    )
    predicted = float(mem.predicted[0])
    metrics = m.metrics
    if m.is_cpu:
        peak = metrics.get("host_rss_peak_bytes")
        fixed = peak - predicted if peak is not None else None
        margin = None
    else:
        peak = metrics.get("allocator_peak_bytes")
        used = metrics.get("device_memory_used_peak_bytes")
        fixed = used - peak if used is not None and peak is not None else None
        margin = peak / predicted - 1 if peak is not None else None
    sustained = efficiency = removed = None
    if target.links is not None:
        measured = np.array([metrics["step_time_s_median"]])
        shape = Shape.of(model, cfg)
        if m.is_cpu:
            # a CPU has no peak: the FLOP/s that reproduces the step is the rate
            unit = Device(np.ones(1), np.inf, target.links, pure_compute=True)
            flops, found = implied_fraction(shape, cfg, unit, assumptions, measured)
            sustained, removed = float(flops[0]), bool(found[0])
        else:
            peak_flops = target.peak(m.spec.deepspeed.precision)
            if peak_flops:
                device = Device(
                    np.array([peak_flops]),
                    target.memory_bytes_s,
                    target.links,
                    host_cores_per_node=target.host_cores_per_node,
                )
                fraction, found = implied_fraction(shape, cfg, device, assumptions, measured)
                efficiency, removed = float(fraction[0]), bool(found[0])
                sustained = efficiency * peak_flops
    return Point(m, model, predicted, peak, fixed, margin, sustained, efficiency, removed)


class Calibration:
    """Measured figures by device, looked up for planned configurations."""

    def __init__(self, points: Sequence[Point]):
        self.points = list(points)
        rows = []
        for p in self.points:
            s = p.measurement.spec
            rows.append(
                {
                    "device": p.measurement.device,
                    "world_size": s.parallel.world_size,
                    "model": p.model.name,
                    "size_class": size_class(p.model.total_params),
                    "precision": PRECISIONS.index(s.deepspeed.precision),
                    "zero": s.deepspeed.zero_stage,
                    "offload_optimizer": s.deepspeed.offload_optimizer != "none",
                    "offload_param": s.deepspeed.offload_param != "none",
                    "checkpointing": CHECKPOINTING.index(s.deepspeed.activation_checkpointing),
                    "tp": s.parallel.tp,
                    "pp": s.parallel.pp,
                    # GPUs: efficiency (portable across precisions); CPUs: FLOP/s
                    "rate": p.efficiency if p.efficiency is not None else p.sustained_flops,
                    "fixed": p.fixed_overhead_bytes,
                    "margin": p.margin,
                    "run_id": p.measurement.run_id,
                }
            )
        self.frame = pd.DataFrame(rows)

    @classmethod
    def from_measurements(
        cls, measurements: Sequence[Measurement], assumptions: Assumptions
    ) -> Calibration:
        return cls([invert(m, assumptions) for m in measurements])

    def _on(self, target: Target, world_size: int | None) -> pd.DataFrame:
        if self.frame.empty:
            return self.frame
        rows = self.frame[self.frame["device"] == target.device]
        if target.kind == "cpu" and world_size is not None:
            # ranks share the host's cores: a rate holds only for the same rank count
            rows = rows[rows["world_size"] == world_size]
        return rows

    def runs_on(self, target: Target, world_size: int | None = None) -> list[str]:
        """Run ids whose cases calibrate this device."""
        rows = self._on(target, world_size)
        return sorted(set(rows["run_id"])) if not rows.empty else []

    def overhead(
        self, target: Target, assumptions: Assumptions, world_size: int | None = None
    ) -> tuple[Assumption, Assumption]:
        """(fixed bytes, allocator margin) for the device, measured when the history allows."""
        rows = self._on(target, world_size)
        fixed, margin = assumptions.fixed_overhead_bytes, assumptions.allocator_margin
        if target.kind == "cpu":
            margin = Assumption(
                0.0,
                "host RSS has no separate allocator peak; everything unexplained is fixed overhead",
            )
        if not rows.empty:
            f = rows["fixed"].dropna()
            if len(f):
                what = (
                    "host RSS minus predicted resident bytes"
                    if target.kind == "cpu"
                    else "device memory used minus allocator peak"
                )
                fixed = Assumption(
                    float(f.median()),
                    f"measured: median {what} over {len(f)} case(s) on {target.device}",
                )
            g = rows["margin"].dropna()
            if len(g):
                margin = Assumption(
                    float(g.median()),
                    f"measured: median allocator peak over prediction, {len(g)} case(s) on {target.device}",
                )
        return fixed, margin

    def rates(
        self,
        target: Target,
        model: ModelDescription,
        cfg: Configs,
        default: float | None,
        default_source: str,
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Per configuration: the rate (efficiency on GPUs, FLOP/s on CPUs) and the index of its source."""
        values = np.full(len(cfg), np.nan if default is None else default)
        source_of = np.zeros(len(cfg), dtype=np.int64)
        sources = [default_source]
        if self.frame.empty:
            return values, source_of, sources
        wanted = pd.DataFrame(
            {
                "model": model.name,
                "size_class": size_class(model.total_params),
                "precision": cfg.precision,
                "zero": cfg.zero,
                "offload_optimizer": cfg.offload_optimizer.astype(bool),
                "offload_param": cfg.offload_param.astype(bool),
                "checkpointing": cfg.checkpointing,
                "tp": cfg.tp,
                "pp": cfg.pp,
                "world_size": cfg.world_size,
            }
        )
        filled = np.zeros(len(cfg), dtype=bool)
        for keys, what in LEVELS:
            keys = list(keys) + (["world_size"] if target.kind == "cpu" else [])
            rows = self._on(target, None).dropna(subset=["rate"])
            if rows.empty:
                break
            if not keys:
                value = float(rows["rate"].median())
                sources.append(
                    f"measured: median of {len(rows)} case(s) on {target.device}, {what}"
                )
                values[~filled] = value
                source_of[~filled] = len(sources) - 1
                filled[:] = True
                break
            grouped = rows.groupby(keys)["rate"].agg(["median", "size"]).reset_index()
            hit = wanted[keys].merge(grouped, on=keys, how="left")
            take = hit["median"].notna().to_numpy() & ~filled
            if take.any():
                sources.append(f"measured on {target.device}, {what}")
                values[take] = hit["median"].to_numpy()[take]
                source_of[take] = len(sources) - 1
                filled |= take
            if filled.all():
                break
        return values, source_of, sources
