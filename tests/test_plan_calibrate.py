"""Calibration: measured cases run backwards through the models, then looked up per configuration.

GPU results cannot be produced on this machine, so the GPU case below is
written by the test itself from the model at a known efficiency and overhead
(it checks the arithmetic round trip, not a GPU); the CPU cases are the golden
runs of tests/data/runs, measured on a 2-core CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmbench.define.cases import Case
from llmbench.define.schema import CaseSpec
from llmbench.judge.result import CaseResult
from llmbench.plan.assumptions import Assumptions
from llmbench.plan.calibrate import Calibration, invert, size_class
from llmbench.plan.configs import enumerate_configs, from_specs
from llmbench.plan.describe import describe_model
from llmbench.plan.history import load_measurements
from llmbench.plan.memory import memory_terms
from llmbench.plan.predict import predict
from llmbench.plan.published import matmul_fraction
from llmbench.plan.target import gpu_target
from llmbench.plan.throughput import Device, Shape, step_time

GOLDEN = Path(__file__).parent / "data" / "runs" / "sweep"
GiB = 2**30


def write_gpu_run(root: Path, efficiency: float, fixed_bytes: float, margin: float) -> Path:
    """A run directory holding one H100 case whose figures follow the model exactly."""
    spec = CaseSpec.model_validate(
        {
            "model": {"family": "gpt2", "size": "125m"},
            "training": {"seq_len": 1024, "micro_batch": 8},
            "deepspeed": {"zero_stage": 2, "precision": "bf16"},
            "parallel": {"world_size": 8},
        }
    )
    assumptions = Assumptions()
    target = gpu_target("h100-80gb", assumptions)
    model = describe_model("gpt2-125m")
    cfg = from_specs([spec], [8])
    device = Device(
        np.array([target.peak("bf16")]),
        target.memory_bytes_s,
        target.links,
        host_cores_per_node=target.host_cores_per_node,
    )
    step = step_time(Shape.of(model, cfg), cfg, device, efficiency, assumptions)
    predicted = float(memory_terms(model, cfg).predicted[0])
    case = Case.from_spec(spec)
    result = CaseResult(
        case_id=case.id,
        label="gpt2-125m z2 ws8",
        params=case.params,
        status="ok",
        run_id=root.name,
        metrics={
            "step_time_s_median": float(step.step_s[0]),
            "samples_per_step": 8 * 8,
            "tokens_per_s": float(step.tokens_per_s[0]),
            "allocator_peak_bytes": predicted * (1 + margin),
            "device_memory_used_peak_bytes": predicted * (1 + margin) + fixed_bytes,
        },
        ranks=[{"rank": r, "device_name": "NVIDIA H100 80GB HBM3"} for r in range(8)],
    )
    root.mkdir(parents=True)
    (root / "results.jsonl").write_text(result.to_json() + "\n")
    (root / "env.json").write_text(json.dumps({"accelerator": "cuda"}))
    return root


def test_a_gpu_case_calibrates_efficiency_and_overhead(tmp_path):
    run = write_gpu_run(tmp_path / "gpu-run", efficiency=0.33, fixed_bytes=2 * GiB, margin=0.07)
    assumptions = Assumptions()
    (measurement,) = load_measurements([run])
    assert measurement.device == "h100-sxm-80gb" and measurement.micro_batch == 8
    point = invert(measurement, assumptions)
    assert point.efficiency == pytest.approx(0.33)
    assert point.fixed_overhead_bytes == pytest.approx(2 * GiB)
    assert point.margin == pytest.approx(0.07)

    calibration = Calibration([point])
    target = gpu_target("h100-80gb", assumptions)
    fixed, margin = calibration.overhead(target, assumptions)
    assert (fixed.value, margin.value) == (pytest.approx(2 * GiB), pytest.approx(0.07))
    assert fixed.source.startswith("measured") and margin.source.startswith("measured")

    model = describe_model("gpt2-125m")
    cfg = enumerate_configs(model.dims, "gpt2", 8, 1024)
    result = predict(model, cfg, target, assumptions, calibration)
    same = (
        (cfg.zero == 2)
        & (cfg.precision == 0)
        & ~cfg.offload_optimizer.astype(bool)
        & (cfg.checkpointing == 0)
    )
    assert result.frame["efficiency"][same].to_numpy() == pytest.approx(0.33)
    sources = {result.rate_sources[i] for i in result.frame["rate_source"][same]}
    assert sources == {"measured on h100-sxm-80gb, same model and configuration"}
    # nothing was measured in fp32: the broadest match (any configuration) still beats the default
    fp32 = result.frame["precision"] == "fp32"
    assert all(
        result.rate_sources[i].startswith("measured") for i in result.frame["rate_source"][fp32]
    )


def test_another_gpu_keeps_the_stated_defaults(tmp_path):
    run = write_gpu_run(tmp_path / "gpu-run", efficiency=0.33, fixed_bytes=2 * GiB, margin=0.07)
    assumptions = Assumptions()
    calibration = Calibration.from_measurements(load_measurements([run]), assumptions)
    a100 = gpu_target("a100-80gb", assumptions)
    fixed, margin = calibration.overhead(a100, assumptions)
    assert fixed == assumptions.fixed_overhead_bytes and margin == assumptions.allocator_margin
    model = describe_model("gpt2-125m")
    result = predict(
        model, enumerate_configs(model.dims, "gpt2", 8, 1024), a100, assumptions, calibration
    )
    # no measured run on an A100: the A100's fitted matmul fraction, and its source, stand
    fraction, source = matmul_fraction("a100-sxm-80gb", assumptions)
    assert (result.frame["efficiency"] == fraction).all()
    assert result.rate_sources == [source]
    assert "fitted on published runs" in source


def test_cpu_runs_calibrate_rates_and_the_fixed_overhead():
    assumptions = Assumptions()
    points = [invert(m, assumptions) for m in load_measurements([GOLDEN])]
    assert len(points) == 4  # the golden sweep's ok cases
    for p in points:
        assert p.efficiency is None  # no peak FLOP/s for a CPU
        assert p.sustained_flops > 0
        # RSS minus model states, buffers and activations: the imported libraries
        assert 300e6 < p.fixed_overhead_bytes < 700e6


def test_size_classes():
    assert size_class(5e7) == "<100M"
    assert size_class(6.7e9) == "1B-10B"
    assert size_class(7e11) == ">=100B"
