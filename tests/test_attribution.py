"""A step-time change of a profiled case is attributed to the phases that moved."""

from __future__ import annotations

from llmbench.judge.attribution import attribute, phase_of, profile_metrics
from llmbench.judge.compare import Comparison, Verdict


def _verdict(metric: str, base: float, cur: float, verdict: str = "unchanged") -> Verdict:
    return Verdict(
        "c1", "gpt2-tiny z2", metric, verdict, base, cur, cur - base, (cur - base) / base
    )


def test_an_injected_optimizer_slowdown_is_named_first():
    """20 ms injected into the optimizer step of a 100 ms step: optimizer_step leads."""
    comparison = Comparison("base", "cur", "s")
    comparison.verdicts = [
        _verdict("step_time_s_median", 0.100, 0.121, "regression"),
        _verdict("phase_forward_s_median", 0.030, 0.0305),
        _verdict("phase_backward_s_median", 0.050, 0.0505),
        _verdict("phase_optimizer_step_s_median", 0.018, 0.038, "regression"),
        _verdict("phase_other_s_median", 0.002, 0.002),
    ]
    (found,) = attribute(comparison)
    assert found.phases[0][0] == "optimizer_step"
    assert found.text().startswith("step_time +21 % — optimizer_step +111 %, ")


def test_no_attribution_without_a_step_change_or_phases():
    comparison = Comparison("base", "cur", "s")
    comparison.verdicts = [
        _verdict("step_time_s_median", 0.100, 0.101),
        _verdict("phase_forward_s_median", 0.030, 0.040, "regression"),
    ]
    assert attribute(comparison) == []
    comparison.verdicts = [_verdict("step_time_s_median", 0.100, 0.200, "regression")]
    assert attribute(comparison) == []


def test_names():
    assert phase_of("phase_optimizer_step_s_median") == "optimizer_step"
    assert phase_of("phase_share_forward") is None
    assert profile_metrics(["tokens_per_s", "phase_forward_s_median", "comm_bytes_per_step"]) == [
        "comm_bytes_per_step",
        "phase_forward_s_median",
    ]
