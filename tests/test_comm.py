"""Bandwidth formulas of the communication benchmark (nccl-tests' definitions)."""

from __future__ import annotations

import pytest

from llmbench.measure.comm import bandwidths


@pytest.mark.parametrize(
    ("op", "factor"),
    [
        ("all_reduce", 2 * 7 / 8),
        ("all_gather", 7 / 8),
        ("reduce_scatter", 7 / 8),
        ("broadcast", 1.0),
    ],
)
def test_bus_bandwidth_factors_for_eight_ranks(op, factor):
    bw = bandwidths(op, 8 * 10**9, 8, 2.0)
    assert bw["algbw_gb_s"] == pytest.approx(4.0)
    assert bw["busbw_gb_s"] == pytest.approx(4.0 * factor)


def test_no_time_no_bandwidth():
    assert bandwidths("all_reduce", 1024, 2, None) == {"algbw_gb_s": None, "busbw_gb_s": None}
