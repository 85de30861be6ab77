"""Shipped GPU scenarios are sized so that NVML's power, energy and utilisation are reported.

A measure phase under MIN_NVML_WINDOW_S gets those figures as null. The bound
here is generous to the hardware: every case's timed work is divided by 60 %
of the fastest dense peak in llmbench's GPU table, more than any of these
models reaches, so a real device can only take longer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmbench.define.loader import load_scenario
from llmbench.define.models import meta_parameter_counts
from llmbench.flops import training_flops_per_token
from llmbench.hardware import GPUS
from llmbench.measure.sampling.summary import MIN_NVML_WINDOW_S

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.yaml"))
GPU_SCENARIOS = [p for p in SCENARIOS if load_scenario(p).run.device == "cuda"]
BEST_MFU = 0.6


def shortest_measure_s(spec) -> float:
    dims = spec.dims()
    n = meta_parameter_counts(spec.model.family, dims, spec.task).flops_params
    per_token = training_flops_per_token(
        n, dims.num_layers, dims.hidden_size, spec.training.seq_len
    )
    tr, par = spec.training, spec.parallel
    tokens_per_device = tr.micro_batch * tr.grad_accum * tr.seq_len / (par.tp * par.pp)
    fastest = max(g.peak(spec.deepspeed.precision) or 0 for g in GPUS.values())
    return tr.steps * tokens_per_device * per_token / (BEST_MFU * fastest)


def test_the_gpu_scenarios_are_found():
    assert {"gpu_smoke", "zero_sweep_gpu", "gpu_validate"} <= {p.stem for p in GPU_SCENARIOS}


@pytest.mark.parametrize("path", GPU_SCENARIOS, ids=lambda p: p.stem)
def test_every_gpu_case_measures_long_enough_for_nvml(path):
    short = {
        case.label: round(shortest_measure_s(case.spec), 2)
        for case in load_scenario(path).expand()
        if not case.spec.is_comm and shortest_measure_s(case.spec) < MIN_NVML_WINDOW_S
    }
    assert short == {}, f"measure phases under {MIN_NVML_WINDOW_S} s even at the fastest"
