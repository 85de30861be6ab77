"""``run --compare-to``: baseline resolution, outputs, recorded verdicts; one real end-to-end run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from conftest import run_dirs, run_llmbench
from golden_runs import copy_run, runs
from rich.console import Console

from llmbench.judge.history import History
from llmbench.judge.regression import CompareOptions, compare_finished_run, index_finished_run
from llmbench.judge.store import RunDir

T2, T1 = runs("repeats/t2")[0], runs("repeats/t1")[0]
NIGHTLY = runs("nightly")


@pytest.fixture
def console():
    return Console(width=160, record=True)


def _after_run(path, options, console, code=0):
    run_dir = RunDir(path)
    history = index_finished_run(run_dir, console)
    return compare_finished_run(run_dir, options, history, console, code), history


def test_latest_is_the_last_good_run_and_a_regression_is_recorded(tmp_path, console):
    root = tmp_path / "runs"
    # nightly runs 5 and 6: one thread, then two threads on a loaded machine: 10x slower
    base_src, cur_src = NIGHTLY[4], NIGHTLY[5]
    baseline, current = copy_run(base_src, root), copy_run(cur_src, root)
    assert _after_run(baseline, CompareOptions("latest"), console)[0] == 0
    assert "no baseline" in console.export_text()
    code, history = _after_run(current, CompareOptions("latest"), console)
    assert code == 1
    assert history.path == tmp_path / "history.sqlite"
    out = current / "compare"
    assert sorted(p.name for p in out.iterdir()) == [
        "junit.xml",
        "report.html",
        "summary.md",
        "verdicts.json",
    ]
    assert json.loads((out / "verdicts.json").read_text())["baseline"] == base_src.name
    assert ET.parse(out / "junit.xml").getroot().find("testsuite").get("failures") == "4"
    assert base_src.name in (out / "report.html").read_text()  # both runs side by side
    rows = {r.run_id: r for r in history.runs()}
    assert rows[cur_src.name].exit_code == 1 and rows[base_src.name].exit_code == 0
    fingerprint = rows[cur_src.name].fingerprint
    # the regressed run must not become the next night's baseline ...
    assert history.last_good("nightly", fingerprint, exclude="next").run_id == base_src.name
    # ... until someone accepts it
    history.mark(cur_src.name, "good", "two threads on purpose")
    assert history.last_good("nightly", fingerprint, exclude="next").run_id == cur_src.name


def test_latest_never_picks_a_later_run(tmp_path, console):
    root = tmp_path / "runs"
    later, current = copy_run(NIGHTLY[5], root), copy_run(NIGHTLY[4], root)
    History(tmp_path / "history.sqlite").index_paths([later])
    assert _after_run(current, CompareOptions("latest"), console)[0] == 0
    assert "no baseline" in console.export_text()


def test_run_code_and_compare_code_combine(tmp_path, console):
    root = tmp_path / "runs"
    History(tmp_path / "history.sqlite").index_paths([copy_run(NIGHTLY[3], root)])
    current = copy_run(NIGHTLY[4], root)  # no regression against run 4
    assert _after_run(current, CompareOptions("latest"), console, code=2)[0] == 2


def test_explicit_baseline_directory_and_thresholds(tmp_path, console):
    current = copy_run(T1, tmp_path / "runs")
    options = CompareOptions(str(T2), ("tokens_per_s:-50%", "step_time_s_median:+50%"), None)
    assert _after_run(current, options, console)[0] == 0


def test_an_invalid_baseline_is_exit_2_and_the_run_stays_indexed(tmp_path, console):
    current = copy_run(T1, tmp_path / "runs")
    code, history = _after_run(current, CompareOptions("no-such-run"), console)
    assert code == 2 and "no-such-run" in console.export_text()
    assert [r.run_id for r in history.runs()] == [T1.name]


@pytest.mark.slow
def test_run_compare_to_latest_end_to_end(tmp_path, ds_ops):
    """Two real tiny runs: the first has no baseline, the second is judged against it."""
    args = [
        "run",
        "scenarios/zero_sweep.yaml",
        "deepspeed.zero_stage=0",
        "parallel.world_size=1",
        "deepspeed.precision=fp32",
        "training.steps=6",
        "training.warmup_steps=1",
        "--output-dir",
        str(tmp_path / "runs"),
        "--compare-to",
        "latest",
    ]
    first = run_llmbench(args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no baseline" in first.stdout
    second = run_llmbench(args)
    assert second.returncode in (0, 1), second.stdout + second.stderr  # 1 if the machine got busier
    older, newer = run_dirs(tmp_path / "runs")
    verdicts = json.loads((newer / "compare" / "verdicts.json").read_text())
    assert verdicts["baseline"] == older.name and verdicts["exit_code"] == second.returncode
    assert {v["metric"] for v in verdicts["verdicts"]} >= {"tokens_per_s", "step_time_s_median"}
    listed = run_llmbench(["history", "--history", str(tmp_path / "history.sqlite"), "--runs"])
    assert older.name in listed.stdout and newer.name in listed.stdout


def test_a_broken_history_is_not_a_silent_no_baseline(tmp_path, console):
    current = copy_run(T1, tmp_path / "runs")
    (tmp_path / "history.sqlite").write_text("not a database")
    code, history = _after_run(current, CompareOptions("latest"), console)
    assert history is None and code == 2
    text = console.export_text()
    assert "run not indexed" in text and "history is unavailable" in text


def test_run_compare_to_fails_closed_on_lost_cases(tmp_path, console):
    """``run --compare-to``: a run that lost a baseline case exits 2 unless --allow-missing."""
    root = tmp_path / "runs"
    History(tmp_path / "history.sqlite").index_paths([copy_run(NIGHTLY[3], root)])
    current = copy_run(NIGHTLY[4], root)
    results = current / "results.jsonl"
    results.write_text(results.read_text().splitlines()[0] + "\n")
    code, _ = _after_run(current, CompareOptions("latest"), console)
    assert code == 2 and "MISSING" in console.export_text()
    allowed = CompareOptions("latest", allow_missing=True)
    assert _after_run(current, allowed, console)[0] == 0


def test_history_runs_give_the_noise_band(tmp_path, console):
    """``latest`` also brings the good runs before it: their spread is the history band."""
    root = tmp_path / "runs"
    levels = runs("levels")
    History(tmp_path / "history.sqlite").index_paths([copy_run(p, root) for p in levels[:6]])
    current = copy_run(levels[6], root)
    code, _ = _after_run(current, CompareOptions("latest"), console)
    data = json.loads((current / "compare" / "verdicts.json").read_text())
    step = next(v for v in data["verdicts"] if v["metric"] == "step_time_s_median")
    assert step["band_source"] == "history of 6 runs"
    assert code == 0


def test_a_run_with_no_results_is_judged_without_a_crash(tmp_path, console):
    root = tmp_path / "runs"
    empty = copy_run(NIGHTLY[4], root)
    (empty / "results.jsonl").write_text("")
    code, _ = _after_run(empty, CompareOptions("latest"), console)  # no baseline, no report
    assert code == 2 and not (empty / "compare" / "report.html").exists()
    assert "MISSING: the run stored no results" in console.export_text()
    code, _ = _after_run(empty, CompareOptions(str(NIGHTLY[3])), console)
    assert code == 2 and "has no results" in console.export_text()
