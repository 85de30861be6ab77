"""Statistics, throughput and FLOPs formulas."""

from __future__ import annotations

import pytest

from llmbench.flops import recompute_flops_per_token, training_flops_per_token
from llmbench.judge.stats import slowest_rank_per_step, step_stats
from llmbench.measure.metrics import StepShape, throughput


def test_step_stats_from_raw_times():
    stats = step_stats([0.1, 0.2, 0.3, 0.4, 1.0])
    assert stats["step_time_s_median"] == pytest.approx(0.3)
    assert stats["step_time_s_min"] == 0.1 and stats["step_time_s_max"] == 1.0
    assert stats["step_time_s_p10"] == pytest.approx(0.14)
    assert stats["step_time_s_p90"] == pytest.approx(0.76)
    assert stats["step_time_s_n"] == 5


def test_empty_times_are_null_not_zero():
    stats = step_stats([])
    assert stats["step_time_s_median"] is None and stats["step_time_s_n"] == 0


def test_slowest_rank_per_step():
    assert slowest_rank_per_step([[1.0, 5.0, 2.0], [3.0, 1.0, 2.5]]) == [3.0, 5.0, 2.5]


def test_throughput_uses_the_median_step():
    shape = StepShape(micro_batch=4, grad_accum=2, seq_len=128, dp=2, world_size=4)
    rates = throughput(shape, 0.5)
    assert rates["tokens_per_step"] == 4 * 2 * 128 * 2
    assert rates["tokens_per_s"] == pytest.approx(2048 / 0.5)
    assert rates["tokens_per_s_per_device"] == pytest.approx(2048 / 0.5 / 4)
    assert throughput(shape, None)["tokens_per_s"] is None


def test_palm_flops_hand_computation():
    # GPT-2 125m at seq 1024: N = 124,439,808 - 786,432 position weights
    n = 124_439_808 - 1024 * 768
    expected = 6 * n + 12 * 12 * 768 * 1024
    assert training_flops_per_token(n, 12, 768, 1024) == expected
    assert recompute_flops_per_token(n, 12, 768, 1024, "full") == 2 * n + 4 * 12 * 768 * 1024
    assert recompute_flops_per_token(n, 12, 768, 1024, "none") == 0
