"""Reducing rank records to a case result, and the machine checks before a case runs."""

from __future__ import annotations

import pytest

from llmbench.hardware import Accelerator
from llmbench.metrics import StepShape
from llmbench.result import CaseResult
from llmbench.runner import fill_metrics, peak_flops, pending_cases, skip_reason
from llmbench.scenario import parse_scenario


def record(rank, steps, losses, tp_rank=0, dp_rank=0, rss=100, pp_stage=0):
    return {
        "rank": rank,
        "status": "ok",
        "step_times_s": steps,
        "warmup_times_s": [1.0],
        "data_times_s": [0.01] * len(steps),
        "losses": losses,
        "init_s": 2.0 + rank,
        "memory": {"rss_peak_bytes": rss},
        "parameters": {"total": 10, "embedding": 2, "non_embedding": 8, "flops_params": 9},
        "topology": {"tp_rank": tp_rank, "dp_rank": dp_rank, "pp_stage": pp_stage, "dp": 1},
    }


def test_slowest_rank_loss_of_replicas_and_max_memory():
    result = CaseResult(case_id="c", label="l", params={}, status="ok")
    records = [
        record(0, [0.1, 0.3], [2.0, 1.0], tp_rank=0, dp_rank=0, rss=300),
        record(
            1, [0.2, 0.2], [2.0, 1.0], tp_rank=1, dp_rank=0, rss=500
        ),  # TP peer: same batch, same loss
        record(2, [0.1, 0.1], [4.0, 3.0], tp_rank=0, dp_rank=1, rss=400),
        record(3, [0.1, 0.1], [4.0, 3.0], tp_rank=1, dp_rank=1, rss=200),
    ]
    fill_metrics(result, records, StepShape(2, 1, 8, dp=2, world_size=4), wall_s=10.0, device="cpu")
    assert result.step_times_s == [0.2, 0.3]
    assert result.losses == [3.0, 2.0]  # mean over the two data-parallel replicas, TP peers once
    assert result.metrics["host_rss_peak_bytes"] == 500  # max over ranks, never the sum
    assert result.metrics["peak_memory_bytes"] == 500
    assert result.metrics["init_s"] == 5.0
    assert result.metrics["overhead_s"] == pytest.approx(10.0 - 1.0 - 0.5)
    assert result.metrics["allocator_peak_bytes"] is None
    assert result.null_reasons["allocator_peak_bytes"] == "no CUDA allocator on a CPU run"


def test_peak_flops_lookup():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == (pytest.approx(989.4e12), None)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32") == (pytest.approx(19.5e12), None)
    assert peak_flops("cpu", "bf16") == (None, "no peak FLOP/s figure for CPUs")
    assert peak_flops("Tesla V100-SXM2-32GB", "bf16") == (
        None,
        "NVIDIA V100 SXM2 32GB has no bf16 peak",
    )
    assert peak_flops("Mystery GPU", "bf16")[1].startswith(
        "'Mystery GPU' is not in llmbench's GPU table"
    )


def test_machine_checks():
    cpu = Accelerator("cpu", 2, ("cpu",), (), None, None, None)
    gpu = Accelerator("cuda", 1, ("NVIDIA H200",), (0,), "560", "12.8", None)
    (one,) = parse_scenario("parallel: {world_size: 2}").expand()
    (two_nodes,) = parse_scenario("parallel: {world_size: 2, nodes: 2}").expand()
    assert skip_reason(one, cpu, "local") is None
    assert skip_reason(one, gpu, "local") == "needs 2 GPUs per node, this machine has 1"
    assert "local launcher runs one node" in skip_reason(two_nodes, cpu, "local")
    # SLURM nodes have their own GPUs: this machine's count decides nothing for them
    assert skip_reason(one, gpu, "slurm", ranks_here=False) is None


def test_pending_cases_interleave_repeats_and_skip_done():
    cases = parse_scenario("deepspeed: {zero_stage: [0, 1]}").expand()
    todo = pending_cases(cases, 2, {(cases[0].id, 0)})
    assert [(p.case.id, p.repeat) for p in todo] == [
        (cases[1].id, 0),
        (cases[0].id, 1),
        (cases[1].id, 1),
    ]
