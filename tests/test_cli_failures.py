"""Every way a command fails ends in one line and a documented exit code (README's table)."""

from __future__ import annotations

import os
import re

import yaml

from llmbench.cli import cli
from llmbench.errors import ExitCode
from llmbench.judge.store import RunDir

TINY = """\
name: tiny
model: {family: gpt2, size: tiny}
training: {steps: 1, warmup_steps: 0, seq_len: 16, micro_batch: 1}
"""


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_an_internal_error_exits_3_with_one_line_naming_the_traceback_file(
    cli_runner, write_scenario, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("boom [/x]")

    monkeypatch.setattr("llmbench.define.loader.load_scenario", broken)
    out = cli_runner.invoke(cli, ["validate", str(write_scenario(TINY))])
    assert out.exit_code == ExitCode.INTERNAL == 3
    line = one_line(out.output)
    found = re.fullmatch(
        r"error: internal error \(RuntimeError: boom \[/x\]\); traceback in (\S+); please report it",
        line,
    )
    assert found, line
    with open(found.group(1)) as fh:
        assert "RuntimeError: boom" in fh.read()
    os.unlink(found.group(1))


def test_a_user_error_containing_markup_is_printed_verbatim(cli_runner, write_scenario):
    path = write_scenario("model: {family: gpt2, size: '[/bold]x[rank0]:'}\n")
    out = cli_runner.invoke(cli, ["validate", str(path)])
    assert out.exit_code == ExitCode.INVALID
    assert "'[/bold]x[rank0]:' is not a gpt2 size" in one_line(out.output)


def test_an_empty_scenario_is_exit_2(cli_runner, write_scenario):
    out = cli_runner.invoke(cli, ["run", "--dry-run", str(write_scenario(""))])
    assert out.exit_code == ExitCode.INVALID
    assert one_line(out.output).endswith(
        "scenario.yaml: the scenario file is empty (a scenario names at least a model: section)"
    )


def test_max_cases_is_an_explicit_opt_in(cli_runner, write_scenario):
    path = write_scenario("training:\n  seed: [1, 2, 3]\n")
    out = cli_runner.invoke(cli, ["validate", "--max-cases", "2", str(path)])
    assert out.exit_code == ExitCode.INVALID
    assert "raise the cap with --max-cases 3" in one_line(out.output)
    assert cli_runner.invoke(cli, ["validate", "--max-cases", "3", str(path)]).exit_code == 0


def test_a_report_to_an_unwritable_path_is_one_line_exit_2(cli_runner, tmp_path):
    from tests.golden_runs import runs

    target = tmp_path / "no" / "such" / "dir" / "r.md"
    out = cli_runner.invoke(
        cli, ["report", str(runs("nightly")[0]), "--format", "markdown", "-o", str(target)]
    )
    assert out.exit_code == ExitCode.INVALID
    assert one_line(out.output) == f"error: {target}: No such file or directory"


def _stored_run(tmp_path, write_scenario, env: dict) -> tuple:
    from llmbench.define.loader import load_scenario

    source = write_scenario(TINY)
    run = RunDir.create(tmp_path / "runs", "tiny")
    run.write_yaml("scenario.yaml", load_scenario(source, ["training.steps=2"]).resolved())
    run.write_json("env.json", env)
    return source, run


def test_resume_refuses_another_scenario_or_other_overrides_with_a_one_line_diff(
    cli_runner, write_scenario, tmp_path
):
    source, run = _stored_run(tmp_path, write_scenario, {})
    out = cli_runner.invoke(cli, ["run", str(source), "--resume", str(run.path)])
    assert out.exit_code == ExitCode.INVALID
    line = one_line(out.output)
    assert "differs from the run being resumed (training.steps: 2 → 1)" in line
    assert line.endswith(f"llmbench run --resume {run.path}")
    out = cli_runner.invoke(cli, ["run", "--resume", str(run.path), "training.steps=3"])
    assert out.exit_code == ExitCode.INVALID
    assert "--resume alone reruns with the run's own settings" in one_line(out.output)


def test_resume_refuses_another_environment(cli_runner, write_scenario, tmp_path):
    _, run = _stored_run(tmp_path, write_scenario, {"accelerator": "cpu", "torch": "0.0.1"})
    out = cli_runner.invoke(cli, ["run", "--resume", str(run.path)])
    assert out.exit_code == ExitCode.INVALID
    assert re.search(
        r"this environment differs from the run's \(.*torch: 0\.0\.1 → ", one_line(out.output)
    )


def test_the_stored_scenario_of_a_run_loads_back_as_itself(write_scenario, tmp_path):
    _, run = _stored_run(tmp_path, write_scenario, {})
    from llmbench.measure.sweep import resume_scenario

    again = resume_scenario(run.path, None)
    assert yaml.safe_load((run.path / "scenario.yaml").read_text()) == again.resolved()
