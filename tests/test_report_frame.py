"""The results frame: real golden runs in, one typed DataFrame out, damaged lines skipped."""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest
from golden_runs import copy_run, runs

from llmbench.cli import cli
from llmbench.judge.runs import (
    DEVICE_MEMORY,
    load_runs,
    memory_metric,
    metric_columns,
    per_case,
    read_run,
    runs_frame,
)
from llmbench.judge.store import CorruptLineWarning

SWEEP = runs("sweep")[0]
T1 = runs("repeats/t1")[0]


def test_one_frame_typed_columns_status_kept():
    frame = load_runs([SWEEP])
    assert len(frame) == 6
    assert frame["tokens_per_s"].dtype == "float64"
    assert frame["deepspeed.zero_stage"].dtype == "int64"
    assert isinstance(frame["status"].dtype, pd.CategoricalDtype)
    assert sorted(frame["status"].astype(str)) == ["ok", "ok", "ok", "ok", "skipped", "unsupported"]
    assert frame.loc[frame["status"] == "skipped", "tokens_per_s"].isna().all()
    assert all(isinstance(s, list) for s in frame["step_times_s"])
    assert "tokens_per_s" in metric_columns(frame) and "repeat" not in metric_columns(frame)


def test_many_runs_in_one_frame():
    frame = runs_frame([read_run(p) for p in runs("nightly")])
    assert frame["run_id"].nunique() == 8 and len(frame) == 16


def test_corrupt_and_truncated_lines_are_skipped_with_file_and_line(tmp_path):
    run = copy_run(SWEEP, tmp_path)
    lines = (run / "results.jsonl").read_text().splitlines()
    damaged = [lines[0], "{not json", *lines[1:], lines[2][: len(lines[2]) // 2]]
    (run / "results.jsonl").write_text("\n".join(damaged))  # last line cut mid-write
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = load_runs([run])
    messages = [str(w.message) for w in caught if issubclass(w.category, CorruptLineWarning)]
    assert len(messages) == 2
    assert messages[0].startswith(f"{run / 'results.jsonl'}:2:")
    assert messages[1].startswith(f"{run / 'results.jsonl'}:{len(damaged)}:")
    assert len(frame) == 6  # every good line kept


def test_cli_reports_damaged_lines_as_warnings(tmp_path, cli_runner):
    run = copy_run(SWEEP, tmp_path)
    with (run / "results.jsonl").open("a") as fh:
        fh.write('{"case_id": "trunc')
    result = cli_runner.invoke(cli, ["report", str(run), "--format", "csv"])
    assert result.exit_code == 0
    assert f"warning: {run / 'results.jsonl'}:7: skipping a corrupt line" in result.output
    assert result.output.count("\n") >= 7


def test_per_case_takes_medians_and_the_worst_status(tmp_path):
    frame = load_runs([T1])
    cases = per_case(frame)
    assert len(cases) == 1 and cases["repeats"].iloc[0] == 4
    assert cases["tokens_per_s"].iloc[0] == pytest.approx(frame["tokens_per_s"].median())
    run = copy_run(T1, tmp_path)
    lines = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    lines[2].update(status="error", reason="edited copy: repeat 2 failed")
    (run / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    worst = per_case(load_runs([run]))
    assert worst["status"].iloc[0] == "error"
    assert worst["reason"].iloc[0] == "edited copy: repeat 2 failed"


def test_memory_metric_prefers_the_device_figure():
    frame = load_runs([SWEEP])
    assert memory_metric(frame) == "peak_memory_bytes"  # a CPU run: no NVML figure
    # the column the NVML sampler adds; its values here only exercise the choice
    with_device = frame.assign(**{DEVICE_MEMORY: frame["peak_memory_bytes"] * 2})
    assert memory_metric(with_device) == DEVICE_MEMORY
    assert memory_metric(frame.assign(**{DEVICE_MEMORY: float("nan")})) == "peak_memory_bytes"


def test_json_lines_that_are_not_results_are_skipped_too(tmp_path):
    run = copy_run(SWEEP, tmp_path)
    with (run / "results.jsonl").open("a") as fh:
        fh.write('{"case_id": "x"}\n')
        fh.write(
            json.dumps({"case_id": "y", "label": "y", "params": {}, "status": "ok", "metrics": 5})
            + "\n"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = load_runs([run])
    messages = [str(w.message) for w in caught if issubclass(w.category, CorruptLineWarning)]
    assert [m.split(": skipping")[0] for m in messages] == [
        f"{run / 'results.jsonl'}:7",
        f"{run / 'results.jsonl'}:8",
    ]
    assert "wrong type of metrics" in messages[1] and len(frame) == 6


def test_a_parameter_that_is_a_word_or_a_number_is_text_and_sorts():
    from llmbench.judge.result import CaseResult
    from llmbench.judge.runs import results_frame

    results = [
        CaseResult(str(i), "", {"model.dropout": d}, "ok")
        for i, d in enumerate(["config", 0.0, 0.1])
    ]
    frame = results_frame(results)
    assert list(frame["model.dropout"]) == ["config", "0", "0.1"]
    assert list(frame.sort_values("model.dropout")["model.dropout"]) == ["0", "0.1", "config"]
