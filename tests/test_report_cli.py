"""``llmbench report`` through the CLI on the real golden sweep, in every format."""

from __future__ import annotations

import io
import json

import pandas as pd
from golden_runs import DATA, runs

from llmbench.cli import cli
from llmbench.judge.history import History

SWEEP = runs("sweep")[0]


def test_terminal(cli_runner):
    result = cli_runner.invoke(cli, ["report", str(SWEEP)], terminal_width=160)
    assert result.exit_code == 0, result.output
    for text in ("Throughput and memory", "zero_stage=0", "Cases", "needs 4 ranks", "Environment"):
        assert text in result.output


def test_markdown_html_files(cli_runner, tmp_path):
    for fmt, head in (("markdown", "# llmbench report"), ("html", "<!DOCTYPE html>")):
        out = tmp_path / f"report.{fmt}"
        result = cli_runner.invoke(cli, ["report", str(SWEEP), "--format", fmt, "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert out.read_text().startswith(head)


def test_csv_and_json_keep_unknowns_unknown(cli_runner):
    csv = cli_runner.invoke(cli, ["report", str(SWEEP), "--format", "csv"])
    frame = pd.read_csv(io.StringIO(csv.output))
    assert csv.exit_code == 0 and len(frame) == 6
    assert frame.loc[frame["status"] == "skipped", "tokens_per_s"].isna().all()
    records = json.loads(cli_runner.invoke(cli, ["report", str(SWEEP), "--format", "json"]).output)
    skipped = next(r for r in records if r["status"] == "skipped")
    assert skipped["tokens_per_s"] is None and skipped["step_times_s"] == []
    refused = next(r for r in records if r["status"] == "unsupported")
    assert refused["null_reasons"]["tokens_per_s"] == "case unsupported"


def test_pivot_options(cli_runner):
    result = cli_runner.invoke(
        cli,
        [
            "report",
            str(SWEEP),
            "--format",
            "markdown",
            "--rows",
            "deepspeed.zero_stage",
            "--cols",
            "model.size",
        ],
    )
    assert result.exit_code == 0 and "| size=tiny | size=mini |" in result.output
    bad = cli_runner.invoke(cli, ["report", str(SWEEP), "--cols", "model.sise"])
    assert bad.exit_code == 2 and "did you mean model.size" in bad.output


def test_stored_run_id(cli_runner, tmp_path):
    db = tmp_path / "h.sqlite"
    History(db).index_paths([DATA / "nightly"])
    run_id = runs("nightly")[0].name
    result = cli_runner.invoke(cli, ["report", run_id, "--history", str(db), "--format", "csv"])
    assert result.exit_code == 0 and run_id in result.output


def test_bad_input_exits_2(cli_runner, tmp_path):
    result = cli_runner.invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "neither a run directory" not in result.output
    assert "not a run directory" in result.output
