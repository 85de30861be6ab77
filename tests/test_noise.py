"""Noise bands: the between-run spread a change must clear (llmbench/judge/noise.py)."""

from __future__ import annotations

import numpy as np
import pytest

from llmbench.judge.noise import (
    MIN_HISTORY,
    NOISE_Z,
    Band,
    best,
    history_band,
    noise_band,
    process_spread,
    repeats_band,
    robust_sd,
    step_scatter,
)


def test_history_band_is_robust_to_one_wild_run():
    calm = [100.0, 101.0, 99.0, 100.5, 99.5, 100.0]
    band = history_band([*calm, 400.0])  # one night under a noisy neighbour
    assert band.source == "history of 7 runs"
    logs = np.log([*calm, 400.0])
    half = NOISE_Z * 1.4826 * np.median(np.abs(logs - np.median(logs)))
    assert (band.low, band.high) == pytest.approx((100.0 * np.exp(-half), 100.0 * np.exp(half)))
    assert band.high < 105.0  # a 5 % slowdown still clears it


def test_bands_of_positive_figures_are_ratios():
    """Multiplicative noise: never a negative time, and time and throughput bands agree."""
    times = [1.0, 2.0, 1.5, 3.0, 0.5, 2.5]  # a machine whose load swings several-fold
    band = history_band(times)
    assert band.low > 0
    inverse = history_band([1 / t for t in times])
    assert (inverse.low, inverse.high) == pytest.approx((1 / band.high, 1 / band.low))
    signed = history_band([-1.0, 0.0, 1.0, 0.5, -0.5])  # not all positive: linear
    assert signed.low == pytest.approx(-NOISE_Z * 1.4826 * 0.5)


def test_history_needs_enough_runs():
    assert history_band([1.0] * (MIN_HISTORY - 1)) is None
    assert history_band([1.0] * MIN_HISTORY) == Band(1.0, 1.0, f"history of {MIN_HISTORY} runs")


def test_repeats_band_pools_both_runs_spread_around_the_baseline():
    band = repeats_band([-1.0, 0.0, 1.0], [9.0, 10.0, 11.0], worse=-1)
    # residuals ±1 around each mean: pooled SD sqrt(4 / 4) = 1; a level shift adds nothing;
    # centred on the baseline's best process (for a throughput, the highest)
    assert (band.low, band.high) == pytest.approx((1.0 - NOISE_Z, 1.0 + NOISE_Z))
    assert band.source == "repeats 3+3"
    assert repeats_band([10.0], [20.0, 21.0], worse=1) is None


def test_a_runs_figure_is_its_best_process():
    assert best([0.03, 0.09, 0.027], worse=1) == 0.027  # step time: the fastest
    assert best([900.0, 300.0], worse=-1) == 900.0  # throughput: the highest


def test_the_history_decides_once_it_is_long_enough():
    """One stalled process of three inflates the repeats band; the history is not fooled."""
    history = [1.0, 1.02, 0.98, 1.01, 0.99]
    stalled = ([1.0, 1.01, 5.0], [1.2, 1.21, 1.19])
    assert noise_band(history[:4], *stalled, 1) == repeats_band(*stalled, 1)
    band = noise_band(history, *stalled, 1)
    assert band == history_band(history) and band.high < 1.2 < repeats_band(*stalled, 1).high
    assert noise_band([], [1.0], [1.0], 1) is None


def test_step_scatter_is_the_median_process_spread():
    steady, jumpy = [1.0] * 10, [1.0, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0]
    assert process_spread(steady) == 0.0
    assert process_spread(jumpy) == pytest.approx(2.0)  # (p90 3 - p10 1) / 1
    assert process_spread([1.0, 2.0]) is None  # too few steps to tell
    assert step_scatter(map(process_spread, [steady, jumpy, jumpy])) == pytest.approx(2.0)
    assert step_scatter([None]) is None


def test_a_process_spread_reads_the_recorded_deciles_and_agrees_with_the_steps():
    import random

    from llmbench.judge.stats import step_stats

    rng = random.Random(1)
    steps = [rng.uniform(0.1, 0.3) for _ in range(30)]
    recorded = step_stats(steps)
    assert process_spread(steps, recorded) == pytest.approx(process_spread(steps), rel=1e-12)
    assert process_spread([], recorded) == process_spread(steps, recorded)  # steps not read
    assert process_spread(steps[:2], step_stats(steps[:2])) is None
    assert process_spread(steps, {"step_time_s_p10": None}) == process_spread(steps)  # computed


def test_robust_sd_of_a_normal_sample_is_its_sd():
    sample = np.random.default_rng(0).normal(0.0, 2.0, 20_000)
    assert robust_sd(sample) == pytest.approx(2.0, rel=0.03)


def test_step_scatter_deciles_are_numpys_linear_percentiles():
    import random

    import numpy as np

    from llmbench.judge.noise import deciles_10_50_90

    rng = random.Random(0)
    for n in (3, 4, 10, 31):
        steps = [rng.uniform(0.1, 0.2) for _ in range(n)]
        assert deciles_10_50_90(steps) == pytest.approx(
            np.percentile(steps, [10, 50, 90]), rel=1e-12
        )
    with_gap = [0.1, None, 0.3, 0.2]
    assert np.isnan(deciles_10_50_90(with_gap)).any()  # a missing step: numpy's NaN, as before
