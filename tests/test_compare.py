"""Regression verdicts on real golden runs (tests/golden_runs.py says how each was recorded)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from golden_runs import copy_run, runs

from llmbench.cli import cli
from llmbench.errors import UserError
from llmbench.judge.compare import DEFAULT_ALPHA, compare_runs, min_attainable_p
from llmbench.judge.runs import Run, read_run
from llmbench.judge.stats import step_stats
from llmbench.judge.thresholds import Thresholds, parse_option, parse_spec

NIGHTLY = runs("nightly")
T2, T1 = runs("repeats/t2")[0], runs("repeats/t1")[0]


def _edit_results(run: Path, edit) -> None:
    """Rewrite a copied run's results.jsonl line by line with ``edit(dict)``."""
    path = run / "results.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(edit(obj)) + "\n" for obj in lines))


def _by(comparison, verdict: str) -> list:
    return [v for v in comparison.verdicts if v.verdict == verdict]


def test_golden_slowdown_runs_are_what_they_claim():
    assert "threads_per_rank: 2" in (T2 / "scenario.yaml").read_text()
    assert "threads_per_rank: 1" in (T1 / "scenario.yaml").read_text()


def test_same_run_against_itself_flags_nothing(cli_runner):
    result = cli_runner.invoke(cli, ["compare", str(NIGHTLY[4]), str(NIGHTLY[4])])
    assert result.exit_code == 0, result.output
    comparison = compare_runs(read_run(NIGHTLY[4]), read_run(NIGHTLY[4]))
    assert comparison.verdicts
    assert {v.verdict for v in comparison.verdicts} == {"unchanged"}


def test_fewer_threads_is_a_regression(cli_runner):
    comparison = compare_runs(read_run(T2), read_run(T1))
    regressions = {v.metric for v in _by(comparison, "regression")}
    assert {"tokens_per_s", "step_time_s_median"} <= regressions
    tokens = next(v for v in comparison.verdicts if v.metric == "tokens_per_s")
    assert tokens.change_rel < -0.05 and tokens.p_value < DEFAULT_ALPHA
    # 4 repeats a side cannot reach p < 0.01, so the pooled steps were tested
    assert tokens.test == "Mann-Whitney U on steps" and tokens.n_baseline == 40
    result = cli_runner.invoke(cli, ["compare", str(T2), str(T1)])
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in result.output


def test_repeats_are_the_samples_when_they_can_reach_alpha():
    assert min_attainable_p(4, 4) == pytest.approx(2 / 70)
    comparison = compare_runs(read_run(T2), read_run(T1), alpha=0.05)
    tokens = next(v for v in comparison.verdicts if v.metric == "tokens_per_s")
    assert tokens.test == "Mann-Whitney U on repeats" and tokens.n_current == 4
    assert tokens.verdict == "regression"


def test_reverse_direction_is_an_improvement(cli_runner):
    comparison = compare_runs(read_run(T1), read_run(T2))
    assert not _by(comparison, "regression")
    assert {v.metric for v in _by(comparison, "improvement")} >= {"tokens_per_s"}
    assert cli_runner.invoke(cli, ["compare", str(T1), str(T2)]).exit_code == 0


def test_noise_beyond_the_threshold_is_noisy_not_a_regression():
    # Two real runs of the same settings; the z2 case moved 5.7 % by noise alone.
    comparison = compare_runs(read_run(NIGHTLY[3]), read_run(NIGHTLY[4]))
    z2 = next(v for v in comparison.verdicts if v.metric == "tokens_per_s" and "z2" in v.label)
    assert z2.change_rel < -0.05
    assert z2.verdict == "noisy" and z2.p_value >= DEFAULT_ALPHA
    assert comparison.exit_code == 0


def _half(run: Run, start: int) -> Run:
    """Every other timed step of each case, its figures recomputed from those steps."""
    results = []
    for r in run.results:
        steps = r.step_times_s[start::2]
        metrics = {**r.metrics, **step_stats(steps)}
        metrics["tokens_per_s"] = r.metrics["tokens_per_step"] / metrics["step_time_s_median"]
        results.append(replace(r, step_times_s=steps, metrics=metrics))
    return replace(run, results=results)


def test_halves_of_one_run_are_pure_noise():
    """Even vs odd steps of each real run: one run's conditions, so any change is noise."""
    beyond = 0
    for path in NIGHTLY:
        run = read_run(path)
        comparison = compare_runs(_half(run, 0), _half(run, 1))
        assert not _by(comparison, "regression") and not _by(comparison, "improvement")
        beyond += len(_by(comparison, "noisy"))
    assert beyond >= 10  # many of them moved beyond the 5 % thresholds, none was flagged


def test_ok_turned_oom_is_a_regression(tmp_path, cli_runner):
    base = NIGHTLY[4]
    current = copy_run(base, tmp_path)

    def oom(obj):  # CPU runs do not OOM on demand: a copy of a real result, status edited
        if "z0" in obj["label"]:
            obj.update(status="oom", reason="CUDA out of memory (edited copy)", metrics={})
        return obj

    _edit_results(current, oom)
    comparison = compare_runs(read_run(base), read_run(current))
    status = [v for v in comparison.verdicts if v.metric == "status"]
    assert [(v.verdict, v.baseline, v.current) for v in status] == [("regression", "ok", "oom")]
    assert comparison.exit_code == 1
    assert cli_runner.invoke(cli, ["compare", str(base), str(current)]).exit_code == 1


def test_a_case_that_errored_exits_2(tmp_path, cli_runner):
    current = copy_run(NIGHTLY[4], tmp_path)
    _edit_results(current, lambda o: {**o, "status": "error", "reason": "edited copy"})
    comparison = compare_runs(read_run(NIGHTLY[4]), read_run(current))
    assert comparison.exit_code == 2 and len(comparison.errored) == 2
    assert cli_runner.invoke(cli, ["compare", str(NIGHTLY[4]), str(current)]).exit_code == 2


def test_new_and_missing_cases(tmp_path):
    current = copy_run(NIGHTLY[4], tmp_path)
    _edit_results(
        current, lambda o: {**o, "case_id": o["case_id"] + "x"} if "z2" in o["label"] else o
    )
    comparison = compare_runs(read_run(NIGHTLY[4]), read_run(current))
    assert [v.verdict for v in comparison.verdicts if v.metric == "status"] == ["new", "missing"]
    assert comparison.exit_code == 0


def test_different_environments_are_refused_unless_allowed(tmp_path, cli_runner):
    current = copy_run(NIGHTLY[4], tmp_path)
    env = json.loads((current / "env.json").read_text())
    env["torch"] = "9.9.9"
    (current / "env.json").write_text(json.dumps(env))
    with pytest.raises(UserError, match=r"torch: 2\.13\.0\+cpu → 9\.9\.9"):
        compare_runs(read_run(NIGHTLY[4]), read_run(current))
    refused = cli_runner.invoke(cli, ["compare", str(NIGHTLY[4]), str(current)])
    assert refused.exit_code == 2 and "allow-env-mismatch" in refused.output
    forced = cli_runner.invoke(
        cli, ["compare", str(NIGHTLY[4]), str(current), "--allow-env-mismatch"]
    )
    assert forced.exit_code == 0 and "ENVIRONMENTS DIFFER" in forced.output


def test_thresholds_parse_and_override():
    assert parse_option("tokens_per_s:-3%")[1].rel == pytest.approx(0.03)
    memory = parse_spec("peak_memory_bytes", "+2%,+256MiB", "t")
    assert memory.worse == 1 and memory.limit(2**30) == 256 * 2**20
    assert memory.limit(100 * 2**30) == pytest.approx(2 * 2**30)
    assert parse_spec("mfu", "3%", "t").worse == -1  # direction inferred from the name
    assert parse_spec("mfu", "off", "t") is None
    for bad in ("tokens_per_s", "tokens_per_s:fast", "x:+1%,-1%", "odd_metric:5%"):
        with pytest.raises(UserError):
            parse_option(bad)


def test_a_tighter_threshold_turns_noise_into_unchanged(tmp_path):
    thresholds = Thresholds.build(
        "nightly", options=["tokens_per_s:-10%", "step_time_s_median:+10%"]
    )
    comparison = compare_runs(read_run(NIGHTLY[3]), read_run(NIGHTLY[4]), thresholds)
    z2 = [v for v in comparison.verdicts if "z2" in v.label and v.metric != "peak_memory_bytes"]
    assert {v.verdict for v in z2} == {"unchanged"}


def test_thresholds_file_per_scenario(tmp_path):
    path = tmp_path / "thresholds.yaml"
    path.write_text('"*": {tokens_per_s: -50%}\nnightly: {tokens_per_s: -1%}\nother: {mfu: off}\n')
    nightly = Thresholds.build("nightly", path)
    assert nightly.for_metric("tokens_per_s").rel == pytest.approx(0.01)
    assert Thresholds.build("sweep", path).for_metric("tokens_per_s").rel == pytest.approx(0.5)
    path.write_text("nightly:\n  tokens_per_s: quick\n")
    with pytest.raises(UserError, match=r"thresholds.yaml:2: tokens_per_s"):
        Thresholds.build("nightly", path)


def test_outputs_parse(tmp_path, cli_runner):
    import xml.etree.ElementTree as ET

    md, junit, js = tmp_path / "s.md", tmp_path / "j.xml", tmp_path / "v.json"
    result = cli_runner.invoke(
        cli,
        [
            "compare",
            str(T2),
            str(T1),
            "--markdown",
            str(md),
            "--junit",
            str(junit),
            "--json",
            str(js),
        ],
    )
    assert result.exit_code == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(cases) == int(suite.get("tests")) == 3
    assert len(failures) == int(suite.get("failures")) == 2
    data = json.loads(js.read_text())
    assert data["exit_code"] == 1 and data["counts"]["regression"] == 2
    text = md.read_text()
    assert text.startswith("## llmbench compare: REGRESSION") and "| tokens\\_per\\_s |" in text


def test_unknown_run_is_a_usage_error(cli_runner, tmp_path):
    result = cli_runner.invoke(
        cli, ["compare", "no-such-run", str(T1), "--history", str(tmp_path / "h.sqlite")]
    )
    assert result.exit_code == 2 and "no-such-run" in result.output
