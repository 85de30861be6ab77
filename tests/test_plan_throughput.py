"""Step-time model: same FLOPs as measured MFU, physical terms that move the right way, inversion."""

from __future__ import annotations

import numpy as np
import pytest

from llmbench.flops import recompute_flops_per_token, training_flops_per_token
from llmbench.plan.assumptions import Assumptions
from llmbench.plan.configs import enumerate_configs
from llmbench.plan.describe import describe_model
from llmbench.plan.throughput import (
    Device,
    Links,
    Shape,
    collective_s,
    flops_per_token,
    implied_fraction,
    step_time,
)

ASSUME = Assumptions()
MODEL = describe_model("llama-7b")
LINKS = Links.for_gpu(900e9, ASSUME, 8)


def _device(n: int) -> Device:
    return Device(np.full(n, 989e12), 3.35e12, LINKS, host_cores_per_node=112)


def _configs(gpus=8, **kw):
    kw = {"precisions": ("bf16",), "checkpointing": ("none",), **kw}
    return enumerate_configs(MODEL.dims, "llama", gpus, 2048, **kw)


def _time(cfg, fraction=0.6):
    return step_time(Shape.of(MODEL, cfg), cfg, _device(len(cfg)), fraction, ASSUME)


def test_flops_per_token_are_the_measured_mfu_formula():
    cfg = _configs(checkpointing=("none", "selective", "full"))
    model_flops, hw_flops = flops_per_token(Shape.of(MODEL, cfg), cfg)
    c = MODEL.counts
    base = training_flops_per_token(c.flops_params, c.num_layers, 4096, 2048)
    assert (model_flops == base).all()
    for i, name in enumerate(("none", "selective", "full")):
        extra = recompute_flops_per_token(c.flops_params, c.num_layers, 4096, 2048, name)
        assert (hw_flops[cfg.checkpointing == i] == base + extra).all()


def test_one_gpu_has_no_communication_and_runs_below_the_matmul_rate():
    cfg = _configs(1, micro_batches=(4,), zero_offload=[(0, False, False)])
    t = _time(cfg)
    _, hw = flops_per_token(Shape.of(MODEL, cfg), cfg)
    ideal = hw[0] * 4 * 2048 / (0.6 * 989e12)
    assert t.dp_comm_s[0] == t.tp_comm_s[0] == t.pp_comm_s[0] == t.offload_s[0] == 0
    assert t.step_s[0] > ideal  # memory traffic, launches and the optimizer step come on top
    # on one GPU the optimizer step (~64 ms) and HBM-bound work (~0.1 s) add ~40 %
    assert t.step_s[0] < 1.5 * ideal
    assert t.tokens_per_s[0] == pytest.approx(4 * 2048 / t.step_s[0])


def test_larger_micro_batches_run_faster_per_token():
    cfg = _configs(micro_batches=(1, 2, 4, 8), zero_offload=[(2, False, False)])
    flat = cfg.take((cfg.tp == 1) & (cfg.pp == 1))
    speeds = _time(flat).tokens_per_s
    assert (np.diff(speeds) > 0).all()


def test_collectives_pay_latency_and_bandwidth_and_cross_nodes_slower():
    # a ring reduce-scatter moves (n-1)/n of the buffer and pays n-1 latencies
    one_node = collective_s(1e9, np.array([8]), np.array([8]), LINKS)[0]
    assert one_node == pytest.approx(
        7 * LINKS.intra_node_latency_s + 7 / 8 * 1e9 / LINKS.intra_node_bytes_s
    )
    tiny = collective_s(8.0, np.array([8]), np.array([8]), LINKS)[0]
    assert tiny == pytest.approx(7 * LINKS.intra_node_latency_s, rel=1e-3)  # latency-bound
    two_nodes = collective_s(1e9, np.array([16]), np.array([8]), LINKS)[0]
    assert two_nodes > one_node  # the second hop goes over the slower NIC


def test_zero3_pays_for_its_gathers_and_more_when_recomputing():
    cfg = _configs(
        micro_batches=(1,),
        checkpointing=("none", "full"),
        zero_offload=[(2, False, False), (3, False, False)],
    )
    flat = cfg.take((cfg.tp == 1) & (cfg.pp == 1))
    t = _time(flat)
    z2, z3 = flat.zero == 2, flat.zero == 3
    none, full = flat.checkpointing == 0, flat.checkpointing == 2
    assert (t.dp_comm_s[z3 & none] > t.dp_comm_s[z2 & none]).all()
    # the recompute re-gathers every layer: ZeRO-3's cost grows, ZeRO-2's does not
    assert t.dp_comm_s[z3 & full][0] > t.dp_comm_s[z3 & none][0]
    assert t.dp_comm_s[z2 & full][0] == pytest.approx(t.dp_comm_s[z2 & none][0])


def test_cpu_adam_speeds_up_with_host_cores():
    cfg = _configs(1, micro_batches=(4,), zero_offload=[(2, True, False)])
    shape = Shape.of(MODEL, cfg)
    few = step_time(shape, cfg, Device(np.full(1, 989e12), 3.35e12, LINKS, 8), 0.6, ASSUME)
    many = step_time(shape, cfg, Device(np.full(1, 989e12), 3.35e12, LINKS, 112), 0.6, ASSUME)
    assert few.offload_s[0] > many.offload_s[0] > 0


def test_inverting_the_model_recovers_the_matmul_fraction():
    cfg = _configs(16, micro_batches=(1, 8), grad_accum=4)
    truth = _time(cfg, 0.55)
    recovered, found = implied_fraction(
        Shape.of(MODEL, cfg), cfg, _device(len(cfg)), ASSUME, truth.step_s
    )
    assert found.all()
    assert recovered == pytest.approx(np.full(len(cfg), 0.55), rel=1e-6)
