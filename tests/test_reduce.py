"""Reducing rank records to a case result: slowest rank, replica losses, memory maxima."""

from __future__ import annotations

import pytest

from llmbench.judge.result import CaseResult
from llmbench.measure.metrics import StepShape
from llmbench.measure.record import RankRecord
from llmbench.measure.reduce import fill_metrics, peak_flops


def record(rank, steps, losses, tp_rank=0, dp_rank=0, rss=100, pp_stage=0) -> RankRecord:
    return RankRecord(
        rank=rank,
        world_size=4,
        status="ok",
        step_times_s=steps,
        warmup_times_s=[1.0],
        data_times_s=[0.01] * len(steps),
        losses=losses,
        init_s=2.0 + rank,
        memory={"rss_peak_bytes": rss},
        parameters={"total": 10, "embedding": 2, "non_embedding": 8, "flops_params": 9},
        topology={"tp_rank": tp_rank, "dp_rank": dp_rank, "pp_stage": pp_stage, "dp": 1},
    )


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
    # the busiest rank's own warm-up + steps (rank 0: 1.0 + 0.4), not the slowest-per-step sums
    assert result.metrics["overhead_s"] == pytest.approx(10.0 - 1.0 - 0.4)
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


def test_rank_record_round_trips_as_the_same_type(tmp_path):
    written = record(1, [0.1, 0.2], [3.0, 2.5], tp_rank=1, rss=123)
    written.save(tmp_path / "rank1.json")
    assert RankRecord.load(tmp_path / "rank1.json") == written
    (tmp_path / "torn.json").write_text('{"rank": 0, "world_')
    assert RankRecord.load(tmp_path / "torn.json") is None
    assert RankRecord.load(tmp_path / "missing.json") is None


def test_fp16_steps_the_loss_scaler_skipped_are_not_timed():
    """A skipped step does no optimizer update and is faster: timing it flatters throughput."""
    result = CaseResult(case_id="c", label="l", params={}, status="ok")
    ranks = [record(r, [0.05, 0.2, 0.2, 0.2], [9.0, 8.0, 7.0, 6.0]) for r in range(2)]
    ranks[1].skipped_steps = [0]  # any rank's skip skips the step for all
    ranks[0].optimizer_impl = ranks[1].optimizer_impl = "torch.optim.adamw.AdamW"
    fill_metrics(result, ranks, StepShape(2, 1, 8, dp=2, world_size=2), wall_s=10.0, device="cpu")
    assert result.step_times_s == [0.2, 0.2, 0.2]
    assert result.metrics["step_time_s_median"] == 0.2
    assert result.metrics["steps_skipped"] == 1
    assert result.metrics["measure_s"] == pytest.approx(0.65)  # the window still holds every step
    assert result.losses == [9.0, 8.0, 7.0, 6.0]
    assert result.metrics["optimizer_impl"] == "torch.optim.adamw.AdamW"


def test_overhead_is_never_negative_when_ranks_take_turns_being_slowest():
    result = CaseResult(case_id="c", label="l", params={}, status="ok")
    records = [record(0, [0.1, 0.9], [2.0, 1.0]), record(1, [0.9, 0.1], [2.0, 1.0], dp_rank=1)]
    # each rank was busy 1.0 + 1.0 s; the slowest-per-step sums (1.0 + 1.8 s) exceed the wall
    fill_metrics(result, records, StepShape(2, 1, 8, dp=2, world_size=2), wall_s=2.5, device="cpu")
    assert result.metrics["measure_s"] == pytest.approx(1.8)
    assert result.metrics["overhead_s"] == pytest.approx(0.5)
