"""pytest-benchmark JSON → runs in the store and the history, so compare and history cover bench/.

tests/data/bench/*.json are two real ``pytest bench/test_bench_report.py
--benchmark-json`` sessions on the 2-core development machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmbench.cli import cli
from llmbench.errors import UserError
from llmbench.judge.digest import read_digest
from llmbench.judge.history import History, default_metric, trend
from llmbench.judge.ingest import SCENARIO, ingest
from llmbench.judge.store import RunDir

BENCH = sorted((Path(__file__).parent / "data" / "bench").glob("*.json"))


def test_each_benchmark_becomes_a_case(tmp_path):
    data = json.loads(BENCH[0].read_text())
    run, created = ingest(BENCH[0], tmp_path)
    assert created and run.scenario_name == SCENARIO
    assert len(run.results) == len(data["benchmarks"])
    for result, bench in zip(run.results, data["benchmarks"], strict=True):
        stats = bench["stats"]
        assert result.status == "ok" and result.label == bench["name"]
        assert result.step_times_s == stats["data"]
        assert result.metrics["step_time_s_median"] == pytest.approx(stats["median"])
        assert result.metrics["step_time_s_min"] == pytest.approx(stats["min"])
        assert result.metrics["ops_per_s"] == stats["ops"]
    assert run.env["cpu_model"] and run.env["fingerprint"]
    digest = read_digest(RunDir(run.path))  # written before the directory was renamed into place
    assert [(r.case_id, r.metrics) for r in digest] == [(r.case_id, r.metrics) for r in run.results]


def test_ingesting_twice_changes_nothing(tmp_path):
    first, _ = ingest(BENCH[0], tmp_path)
    again, created = ingest(BENCH[0], tmp_path)
    assert not created and again.run_id == first.run_id
    history = History(tmp_path / "h.sqlite")
    assert history.index_run(first, "pytest-benchmark") == len(first.results)
    assert history.index_run(again, "pytest-benchmark") == 0


def test_cli_ingest_then_compare_and_history(tmp_path, cli_runner):
    runs_root, db = tmp_path / "runs", tmp_path / "history.sqlite"
    result = cli_runner.invoke(cli, ["ingest", *map(str, BENCH), "--output-dir", str(runs_root)])
    assert result.exit_code == 0, result.output
    history = History(db)  # the default: beside the output dir
    rows = history.runs()
    assert len(rows) == len(BENCH) and {r.source for r in rows} == {"pytest-benchmark"}
    older, newer = rows[-1].run_id, rows[0].run_id
    same = cli_runner.invoke(cli, ["compare", older, older, "--history", str(db)])
    assert same.exit_code == 0 and "OK: no regression" in same.output
    args = ["compare", older, newer, "--history", str(db), "--json", str(tmp_path / "v.json")]
    judged = cli_runner.invoke(cli, args)  # benchmarks dropped since: missing fails closed
    assert judged.exit_code == 2 and "MISSING" in judged.output, judged.output
    judged = cli_runner.invoke(cli, [*args, "--allow-missing"])
    assert judged.exit_code in (0, 1), judged.output
    verdicts = json.loads((tmp_path / "v.json").read_text())["verdicts"]
    names = [{b["name"] for b in json.loads(p.read_text())["benchmarks"]} for p in BENCH]
    by_metric = {
        m: [v for v in verdicts if v["metric"] == m] for m in ("status", "step_time_s_median")
    }
    assert len(by_metric["step_time_s_median"]) == len(names[0] & names[1])
    assert [v["verdict"] for v in by_metric["status"]] == ["missing"] * len(names[0] - names[1])
    assert all(v["allowed"] for v in verdicts if v["verdict"] == "missing")
    assert default_metric(history) == "step_time_s_median"
    found = trend(history, "ops_per_s", scenario=SCENARIO)
    assert len(found.frame) == len(names[0]) + len(names[1])  # one point per benchmark per run


def test_not_a_benchmark_file(tmp_path, cli_runner):
    bad = tmp_path / "x.json"
    bad.write_text('{"results": []}')
    with pytest.raises(UserError, match="not a pytest-benchmark JSON file"):
        ingest(bad, tmp_path)
    bad.write_text("{")
    result = cli_runner.invoke(cli, ["ingest", str(bad), "--output-dir", str(tmp_path)])
    assert result.exit_code == 2 and "not JSON" in result.output


def test_bracketed_benchmark_names_print_as_they_are(tmp_path, cli_runner):
    """``test_x[csv]`` must not be read as terminal markup by any table."""
    db = tmp_path / "history.sqlite"
    cli_runner.invoke(cli, ["ingest", *map(str, BENCH), "--output-dir", str(tmp_path / "runs")])
    run_id = History(db).runs()[0].run_id
    for args, shown in (
        (["report", run_id], "test_report_10k[csv]"),
        (["history", "--scenario", "bench"], "test_report_10k[csv]"),
        (["history", "--runs"], run_id),  # lists runs, not cases: the run must still print
    ):
        result = cli_runner.invoke(cli, [*args, "--history", str(db)], terminal_width=250)
        assert result.exit_code == 0, result.output
        assert shown in result.output
