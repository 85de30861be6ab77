"""Predicted against measured, case by case, each predicted without its own measurement."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from llmbench.judge.runs import read_run
from llmbench.measure.profile import PIPELINE_NO_TIMERS
from llmbench.plan.render import validation_frame, validation_lines
from llmbench.plan.validate import CPU_COMM, NOT_PROFILED, summary, validate
from tests.conftest import run_dirs, run_llmbench

GOLDEN = Path(__file__).parent / "data" / "runs" / "sweep"
PROFILED = Path(__file__).parent / "data" / "runs" / "profile"


def test_every_measured_case_is_predicted():
    (run_dir,) = sorted(p for p in GOLDEN.iterdir() if p.is_dir())
    frame = validate(read_run(run_dir))
    assert len(frame) == 4
    assert (frame["measured_peak_metric"] == "host_rss_peak_bytes").all()
    # RSS = predicted model states, buffers and activations + the libraries,
    # calibrated from the other three cases
    assert frame["peak_error"].abs().max() < 0.25
    assert frame["tokens_per_s_error"].notna().all()
    assert all(s.startswith("measured on cpu") for s in frame["rate_source"])
    assert all("3 case(s)" in s for s in frame["overhead_source"])
    stats = summary(frame)
    assert stats["cases"] == 4 and stats["peak_error_median_abs"] is not None


def test_a_single_case_has_nothing_to_calibrate_from(tmp_path):
    (run_dir,) = sorted(p for p in GOLDEN.iterdir() if p.is_dir())
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    one = tmp_path / "one"
    one.mkdir()
    (one / "results.jsonl").write_text(lines[0] + "\n")
    (one / "env.json").write_text((run_dir / "env.json").read_text())
    (row,) = validate(read_run(one)).to_dict("records")
    assert row["predicted_tokens_per_s"] is None and row["tokens_per_s_error"] is None
    assert row["rate_source"].startswith("no measured rate")
    assert row["overhead_source"].startswith("device memory outside")  # the stated default


def test_a_profiled_run_compares_compute_and_communication():
    """tests/data/runs/profile (run.profile=breakdown, ZeRO 0/2/3 × 1-2 ranks, a pp=2 case):
    measured compute = forward + autograd backward phases, communication = the comms
    logger's seconds; on CPU the planner has no communication term, and says so."""
    (run_dir,) = sorted(p for p in PROFILED.iterdir() if p.is_dir())
    run = read_run(run_dir)
    frame = validate(run)
    metrics = {r.case_id: r.metrics for r in run.results}
    for row in frame.to_dict("records"):
        m = metrics[row["case_id"]]
        assert row["predicted_compute_s"] > 0 and pd.isna(row["predicted_comm_s"])
        assert row["predicted_comm_note"] == CPU_COMM
        if m["phase_forward_s_median"] is None:  # the pipeline case
            assert pd.isna(row["measured_compute_s"]) and pd.isna(row["compute_error"])
            assert row["breakdown_note"] == PIPELINE_NO_TIMERS
            continue
        compute = m["phase_forward_s_median"] + m["phase_backward_inner_s_median"]
        assert row["measured_compute_s"] == pytest.approx(compute)
        assert row["measured_comm_s"] == m["comm_s_median"] > 0
        assert row["compute_error"] == pytest.approx(row["predicted_compute_s"] / compute - 1)
    table = validation_frame(frame)
    assert {"pred compute", "meas compute", "pred comm", "meas comm"} <= set(table.columns)
    lines = validation_lines(frame, summary(frame))
    assert f"communication: {CPU_COMM}" in lines
    assert any(line.endswith(f"no breakdown: {PIPELINE_NO_TIMERS}") for line in lines)


def test_an_unprofiled_run_says_how_to_get_the_split():
    (run_dir,) = sorted(p for p in GOLDEN.iterdir() if p.is_dir())
    frame = validate(read_run(run_dir))
    assert frame["measured_compute_s"].isna().all()
    assert set(frame["breakdown_note"]) == {NOT_PROFILED}
    assert "pred compute" not in validation_frame(frame).columns
    assert f"compute vs communication: {NOT_PROFILED}" in validation_lines(frame, summary(frame))


@pytest.mark.slow
def test_validate_a_fresh_cpu_run(tmp_path, ds_ops):
    out = tmp_path / "runs"
    ran = run_llmbench(
        [
            "run",
            "scenarios/zero_sweep.yaml",
            "deepspeed.zero_stage=[0,2,3]",
            "deepspeed.precision=bf16",
            "parallel.world_size=1",
            "training.warmup_steps=1",
            "training.steps=4",
            "run.profile=breakdown",
            "--output-dir",
            str(out),
        ]
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    (run_dir,) = run_dirs(out)
    shown = run_llmbench(["plan", "--validate", str(run_dir), "--history", str(run_dir)])
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "predicted vs measured" in shown.stdout and "mem err" in shown.stdout
    assert "compute error: median" in shown.stdout  # (headers may fold in a narrow terminal)
    as_json = run_llmbench(
        ["plan", "--validate", str(run_dir), "--history", str(run_dir), "--format", "json"]
    )
    doc = json.loads(as_json.stdout)
    assert doc["summary"]["cases"] == 3
    for case in doc["cases"]:
        assert case["measured_peak_bytes"] > case["model_states_bytes"] > 0
        assert case["peak_error"] is not None and abs(case["peak_error"]) < 0.25
        assert case["predicted_tokens_per_s"] > 0 and case["measured_tokens_per_s"] > 0
        assert case["measured_compute_s"] > 0 and case["predicted_compute_s"] > 0
