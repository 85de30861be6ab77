"""The SQLite history: indexing real golden runs, baselines, append-only storage, change points."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from golden_runs import DATA, copy_run, runs

from llmbench.cli import cli
from llmbench.errors import UserError
from llmbench.judge.digest import DIGEST, encode, write_digest
from llmbench.judge.history import (
    SCHEMA_VERSION,
    History,
    change_points,
    resolve_run,
    rolling_bands,
    trend,
)
from llmbench.judge.noise import MIN_HISTORY, history_band
from llmbench.judge.regression import LATEST, CompareOptions, judge
from llmbench.judge.report.verdicts import to_json
from llmbench.judge.runs import read_run
from llmbench.judge.store import RunDir

NIGHTLY = runs("nightly")
HISTORY = runs("history")
LEVELS = runs("levels")
REPEATS = [*runs("repeats/t2"), *runs("repeats/t1")]


def _results(paths) -> int:
    return sum(len(read_run(p).results) for p in paths)


@pytest.fixture
def history(tmp_path):
    h = History(tmp_path / "history.sqlite")
    h.index_paths([DATA / "nightly"])
    return h


def test_index_stores_runs_whole(history):
    rows = history.runs()
    assert [r.run_id for r in rows] == [p.name for p in reversed(NIGHTLY)]
    assert rows[0].scenario == "nightly" and rows[0].fingerprint == "c859ec5ef670"
    assert rows[0].statuses == {"ok": 2} and rows[0].cases == 2
    stored = history.load(NIGHTLY[2].name)
    original = read_run(NIGHTLY[2])
    assert [r.to_json() for r in stored.results] == [r.to_json() for r in original.results]
    assert stored.env == original.env


def test_indexing_again_adds_only_new_results(history, tmp_path):
    assert history.index_paths([NIGHTLY[0]]) == [(NIGHTLY[0].name, 0)]
    partial = copy_run(NIGHTLY[0], tmp_path / "runs")
    lines = (partial / "results.jsonl").read_text().splitlines()
    (partial / "results.jsonl").write_text(lines[0] + "\n")  # as if interrupted after case 1
    fresh = History(tmp_path / "fresh.sqlite")
    assert fresh.index_run(read_run(partial)) == 1
    (partial / "results.jsonl").write_text("\n".join(lines) + "\n")  # resumed
    assert fresh.index_run(read_run(partial)) == 1
    assert fresh.runs()[0].cases == 2


def test_history_is_append_only(history):
    with sqlite3.connect(history.path) as db:
        for statement in ("UPDATE results SET status = 'ok'", "DELETE FROM runs"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(statement)


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "h.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(UserError, match="newer llmbench"):
        History(path).runs()


def test_a_schema_1_file_is_read_as_is_and_upgraded_by_the_next_write(history):
    """Schema 1 kept a row per metric besides each record; 2 reads metrics from the records."""
    expected = trend(history, "tokens_per_s").frame
    with sqlite3.connect(history.path) as db:  # back to what schema 1 wrote
        db.executescript(
            "CREATE TABLE metrics (run_id TEXT, case_id TEXT, repeat INTEGER, name TEXT, "
            "value REAL, PRIMARY KEY (run_id, case_id, repeat, name));"
            "CREATE INDEX metrics_by_name ON metrics (name, case_id);"
            "CREATE TRIGGER metrics_no_delete BEFORE DELETE ON metrics "
            "BEGIN SELECT RAISE(ABORT, 'the history is append-only'); END;"
            "PRAGMA user_version = 1;"
        )
    pd.testing.assert_frame_equal(trend(history, "tokens_per_s").frame, expected)
    history.record_verdict(NIGHTLY[0].name, None, 0, "ok")
    with sqlite3.connect(history.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master")}
    assert "metrics" not in tables and "metrics_by_name" not in tables and "digests" in tables
    pd.testing.assert_frame_equal(trend(history, "tokens_per_s").frame, expected)
    assert "tokens_per_s" in history.metric_names() and history.has_metric("tokens_per_s")
    assert not history.has_metric('no "such" metric')


def _judged_latest(history: History) -> bytes:
    """``compare latest`` of the history set's ninth run, its history the noise band."""
    current = read_run(HISTORY[8])
    comparison, _ = judge(CompareOptions(LATEST), current, history, judged_only=True)
    return to_json(comparison)


def test_a_baseline_and_its_noise_band_load_from_digests_and_judge_the_same(tmp_path):
    history = History(tmp_path / "h.sqlite")
    history.index_paths([DATA / "history"])
    baseline = history.load(HISTORY[7].name, judged_only=True)
    assert len(baseline.results) == len(read_run(HISTORY[7]).results)
    assert all(r.params == {} and r.losses == [] for r in baseline.results)  # from the digest
    from_digests = _judged_latest(history)
    with sqlite3.connect(history.path) as db:  # as schema 2 left it: no digests
        db.executescript("DROP TABLE digests; PRAGMA user_version = 2;")
    assert history.load(HISTORY[7].name, judged_only=True).results[0].params  # from records
    assert _judged_latest(history) == from_digests
    assert b'"history of ' in from_digests  # the band came from the stored runs


def test_a_resumed_run_indexed_again_gets_a_digest_of_all_it_holds(tmp_path):
    partial = copy_run(NIGHTLY[0], tmp_path / "runs")
    lines = (partial / "results.jsonl").read_text().splitlines()
    (partial / "results.jsonl").write_text(lines[0] + "\n")
    history = History(tmp_path / "h.sqlite")
    history.index_run(read_run(partial))
    (partial / "results.jsonl").write_text("\n".join(lines) + "\n")
    history.index_run(read_run(partial))
    loaded = history.load(partial.name, judged_only=True)
    assert [r.case_id for r in loaded.results] == [json.loads(line)["case_id"] for line in lines]
    assert not loaded.results[0].params


def test_a_run_indexed_whole_stores_the_digest_its_directory_has(tmp_path):
    """The same encoding either way; a stale directory digest plays no part, and a run
    whose lines carry another id (a renamed directory) is stored under its own."""
    runs_root = tmp_path / "runs"
    fresh, stale = copy_run(NIGHTLY[0], runs_root), copy_run(NIGHTLY[1], runs_root)
    renamed = Path(shutil.copytree(NIGHTLY[2], runs_root / "renamed"))  # lines keep the old id
    for path in (fresh, stale, renamed):
        assert write_digest(RunDir(path))
    extra = json.loads((stale / "results.jsonl").read_text().splitlines()[0])
    with (stale / "results.jsonl").open("a") as fh:  # appended after its digest: stale
        fh.write(json.dumps({**extra, "case_id": "extra", "status": "oom"}) + "\n")
    history = History(tmp_path / "h.sqlite")
    for path in (fresh, stale, renamed):
        history.index_run(read_run(path))
    with sqlite3.connect(history.path) as db:
        stored = dict(db.execute("SELECT run_id, digest FROM digests"))
    assert stored[fresh.name] == (fresh / DIGEST).read_bytes().split(b"\n", 1)[1]
    assert stored[stale.name] == encode([r.stored() for r in read_run(stale).results])
    for path in (fresh, stale, renamed):
        judged = history.load(path.name, judged_only=True).results
        assert {r.run_id for r in judged} == {r.run_id for r in history.load(path.name).results}
    assert {r.run_id for r in history.load("renamed", judged_only=True).results} == {"renamed"}


@pytest.mark.parametrize(
    "row", [(5, 1, b"[]"), (2, 99, b"[]"), (2, 1, b"[{"), (2, 1, b'[{"case_id": 1}, {}]')]
)
def test_a_digest_that_is_not_the_indexed_results_is_not_used(history, row):
    """Too few results, another format, damaged: the run loads from its records."""
    with sqlite3.connect(history.path) as db:
        db.execute("INSERT INTO digests VALUES (?, ?, ?, ?)", (NIGHTLY[0].name, *row))
    loaded = history.load(NIGHTLY[0].name, judged_only=True)
    assert [r.to_json() for r in loaded.results] == [
        r.to_json() for r in read_run(NIGHTLY[0]).results
    ]


def test_wal_mode(history):
    with sqlite3.connect(history.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_last_good_skips_regressions_until_accepted(history):
    newest, previous = NIGHTLY[-1].name, NIGHTLY[-2].name
    good = history.last_good("nightly", "c859ec5ef670", exclude="none")
    assert good.run_id == newest
    history.record_verdict(newest, previous, 1, "REGRESSION: 2 regression(s)")
    assert history.last_good("nightly", "c859ec5ef670", exclude="none").run_id == previous
    history.mark(newest, "good", "accepted: threads changed on purpose")
    assert history.last_good("nightly", "c859ec5ef670", exclude="none").run_id == newest
    history.mark(newest, "bad")
    assert history.last_good("nightly", "c859ec5ef670", exclude=previous).run_id == NIGHTLY[-3].name
    assert history.last_good("nightly", "other-fingerprint", exclude="none") is None
    with pytest.raises(UserError, match="no such run"):
        history.mark("nope", "good")


def test_resolve_by_path_results_file_or_id(history):
    assert resolve_run(NIGHTLY[0], None).run_id == NIGHTLY[0].name
    assert resolve_run(NIGHTLY[0] / "results.jsonl", None).run_id == NIGHTLY[0].name
    assert resolve_run(NIGHTLY[1].name, history).results
    with pytest.raises(UserError, match="neither a run directory"):
        resolve_run("nope", history)


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    path = tmp_path / "history.sqlite"
    script = textwrap.dedent(
        """
        import sys
        from llmbench.judge.history import History
        h = History(sys.argv[1])
        tag, folders = sys.argv[2], sys.argv[3:]
        for i in range(40):
            h.record_verdict(f"{tag}-{i}", None, 0, tag)
        h.index_paths(folders)
        """
    )
    a = [str(DATA / "nightly"), str(DATA / "repeats" / "t2")]
    b = [str(DATA / "history"), str(DATA / "repeats" / "t2")]  # the repeats run by both
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), tag, *folders])
        for tag, folders in (("a", a), ("b", b))
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    with sqlite3.connect(path) as db:
        verdicts = db.execute("SELECT headline, COUNT(*) FROM verdicts GROUP BY 1").fetchall()
        results = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        runs_count = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert sorted(verdicts) == [("a", 40), ("b", 40)]
    assert runs_count == len(NIGHTLY) + len(HISTORY) + 1
    assert results == _results(NIGHTLY) + _results(HISTORY) + _results(runs("repeats/t2"))


def test_change_point_at_the_real_thread_change(tmp_path):
    history = History(tmp_path / "h.sqlite")
    history.index_paths([DATA / "levels"])
    threads = ["threads_per_rank: 2" in (p / "scenario.yaml").read_text() for p in LEVELS]
    switch = threads.index(True)  # first run with 2 threads instead of 1
    for metric in ("tokens_per_s", "step_time_s_median"):
        found = trend(history, metric)
        assert found.frame["change_point"].tolist() == [i == switch for i in range(len(LEVELS))]
    assert not trend(history, "peak_memory_bytes").frame["change_point"].any()


def test_errored_runs_stay_out_of_trends_and_baselines(tmp_path):
    history = History(tmp_path / "h.sqlite")
    history.index_paths([DATA / "history"])
    errored = HISTORY[-1]
    assert {r.status for r in read_run(errored).results} == {"error"}
    found = trend(history, "tokens_per_s")
    assert errored.name not in set(found.frame["run_id"])
    assert len(found.frame) == 2 * (len(HISTORY) - 1)
    good = history.last_good("nightly", "c859ec5ef670", exclude="none")
    assert good.run_id == HISTORY[-2].name


def test_trend_carries_the_band_each_run_was_judged_by(tmp_path):
    history = History(tmp_path / "h.sqlite")
    history.index_paths([DATA / "levels"])
    frame = trend(history, "step_time_s_median").frame
    values = frame["value"].tolist()
    # no band until MIN_HISTORY earlier runs; then the band of exactly the runs before
    assert frame["band_low"].isna().tolist() == [i < MIN_HISTORY for i in range(len(LEVELS))]
    for k in range(MIN_HISTORY, len(LEVELS)):
        band = history_band(values[:k])
        assert (frame["band_low"][k], frame["band_high"][k]) == pytest.approx((band.low, band.high))


def test_rolling_bands_only_use_runs_of_the_same_environment():
    values = [1.0, 1.1, 0.9, 1.0, 1.05, 5.0, 5.1, 1.0]
    bands = rolling_bands(values, ["a"] * 5 + ["b", "b", "a"])
    assert bands[:5] == [None] * 5 and bands[5] is None and bands[6] is None
    assert bands[7] == history_band(values[:5])


def test_no_change_point_in_a_flat_series():
    values = [100.0, 103.0, 98.0, 101.0, 99.0, 102.0, 100.0, 97.0]
    assert change_points(values, "tokens_per_s") == []
    assert change_points([*values, 80.0, 79.0, 81.0], "tokens_per_s") == [8]


def test_small_shift_under_the_threshold_is_not_a_change_point():
    # a 3 % step is consistent and far beyond the noise, but within compare's 5 %
    values = [100.0, 100.1, 99.9, 100.0, 97.0, 97.1, 96.9, 97.0]
    assert change_points(values, "tokens_per_s") == []


def test_cli_index_trend_plot_and_runs(tmp_path, cli_runner):
    db = str(tmp_path / "h.sqlite")
    out = cli_runner.invoke(cli, ["history", "--history", db, "--index", str(DATA / "levels")])
    assert out.exit_code == 0 and f"indexed {LEVELS[0].name}" in out.output
    plot = tmp_path / "trend.png"
    out = cli_runner.invoke(cli, ["history", "--history", db, "--plot", str(plot)])
    assert out.exit_code == 0, out.output
    assert "tokens_per_s over runs" in out.output and "change point" in out.output
    assert "noise band" in out.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = cli_runner.invoke(
        cli, ["history", "--history", db, "--metric", "peak_memory_bytes", "--format", "json"]
    )
    rows = json.loads(out.output)
    assert (
        out.exit_code == 0
        and rows
        and {"run_id", "value", "band_low", "change_point"} <= set(rows[0])
    )
    out = cli_runner.invoke(cli, ["history", "--history", db, "--runs"], terminal_width=200)
    assert out.exit_code == 0 and LEVELS[-1].name in out.output
    out = cli_runner.invoke(cli, ["history", "--history", db, "--metric", "no_such_metric"])
    assert out.exit_code == 2 and "no_such_metric" in out.output
    out = cli_runner.invoke(cli, ["history", "--history", str(tmp_path / "none.sqlite")])
    assert out.exit_code == 2 and "no history yet" in out.output


def test_trend_shows_each_runs_best_process_as_the_gate_judges_it(tmp_path):
    history = History(tmp_path / "h.sqlite")
    gate = runs("gate")[:3]
    history.index_paths(gate)
    for metric, pick in (("step_time_s_median", min), ("tokens_per_s", max)):
        frame = trend(history, metric).frame.set_index("run_id")
        for path in gate:
            values = [r.metrics[metric] for r in read_run(path).results]
            assert len(values) == 3 and frame.loc[path.name, "value"] == pick(values)
