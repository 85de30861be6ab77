"""Figures formatted in the unit their metric's name carries; missing values are a dash."""

from __future__ import annotations

import math

import pytest

from llmbench import units


@pytest.mark.parametrize(
    ("metric", "value", "text"),
    [
        ("tokens_per_s", 12_345.6, "12.3 k"),
        ("peak_memory_bytes", 2**30, "1.00 GiB"),
        ("step_time_s_median", 0.0123, "12.3 ms"),
        ("overhead_s", 1.5, "1.50 s"),
        ("mfu", 0.256, "25.6 %"),
        ("loss_last", 2.34567, "2.35"),
        ("tokens_per_s", None, "–"),
        ("tokens_per_s", math.nan, "–"),
        ("status", "oom", "oom"),
    ],
)
def test_figure_takes_the_unit_from_the_metric_name(metric, value, text):
    assert units.figure(metric, value) == text


def test_size_label_writes_what_a_user_would_type():
    assert units.size_label(4 * 2**20) == "4MiB"
    assert units.size_label(1000) == "1000B"
