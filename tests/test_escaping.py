"""Data printed through rich is data: ``[/x]`` never crashes a display and ``[rank0]:`` survives."""

from __future__ import annotations

from rich.console import Console

from llmbench.cli import cli
from llmbench.judge.result import CaseResult
from llmbench.judge.store import RunDir

HOSTILE = "[/x] gpt2 [rank0]: [bold]"


def hostile_run(root, name: str = HOSTILE) -> RunDir:
    run = RunDir.create(root, "s")
    run.write_yaml("scenario.yaml", {"name": name})
    run.write_json("env.json", {"accelerator": "cpu"})
    for i, status in enumerate(("ok", "error")):
        run.append(
            CaseResult(
                case_id=f"c{i}",
                label=f"{HOSTILE} {i}",
                params={"deepspeed.zero_stage": i},
                status=status,
                reason=None if status == "ok" else "[rank0]: RuntimeError: [/oops]",
                run_id=run.run_id,
                scenario=name,
                metrics={"tokens_per_s": 10.0, "step_time_s_median": 0.1},
            )
        )
    return run


def rendered(*renderables) -> str:
    console = Console(record=True, width=200, file=open("/dev/null", "w"))  # noqa: SIM115
    for r in renderables:
        console.print(r)
    return console.export_text()


def test_live_sweep_lines_and_tables_show_labels_and_reasons_verbatim(tmp_path):
    from llmbench.define.loader import parse_scenario
    from llmbench.judge.report.console import comparison_table
    from llmbench.judge.runs import results_frame
    from llmbench.measure.progress import LiveProgress, result_line
    from llmbench.measure.sweep import dry_run_table

    run = hostile_run(tmp_path)
    results = run.results()
    scenario = parse_scenario(f"name: '{HOSTILE}'\nmodel: {{family: gpt2, size: tiny}}\n")
    text = rendered(
        result_line(results[1]),
        comparison_table(results_frame(results), title=HOSTILE),
        dry_run_table(scenario, scenario.expand()),
    )
    assert "[rank0]: RuntimeError: [/oops]" in text
    assert text.count(HOSTILE) >= 3  # the result line and both titles
    console = Console(file=open("/dev/null", "w"), force_terminal=True)  # noqa: SIM115
    with LiveProgress(console, 1) as progress:
        progress.case_started(0, 1, scenario.expand()[0], 0)
        progress.case_phase("[/measure]")
        progress.case_finished(results[1])


def test_report_and_history_commands_print_hostile_names(cli_runner, tmp_path):
    run = hostile_run(tmp_path / "runs")
    out = cli_runner.invoke(cli, ["report", str(run.path)])
    assert out.exit_code == 0, out.output
    assert HOSTILE in out.output and "[rank0]: RuntimeError: [/oops]" in out.output
    history = str(tmp_path / "h.sqlite")
    out = cli_runner.invoke(
        cli, ["history", "--history", history, "--index", str(run.path), "--runs"]
    )
    assert out.exit_code == 0, out.output
    out = cli_runner.invoke(cli, ["history", "--history", history, "--metric", "tokens_per_s"])
    assert out.exit_code == 0, out.output
    assert HOSTILE in out.output


def test_csv_export_cannot_carry_a_spreadsheet_formula(tmp_path):
    import pandas as pd

    from llmbench.judge.report.export import to_csv

    frame = pd.DataFrame(
        {
            "label": ['=HYPERLINK("x")', "+1", "-cmd", "@SUM(A1)", "plain"],
            "tokens_per_s": [-1.5, 1, 2, 3, 4],
        }
    )
    rows = to_csv(frame).splitlines()
    assert rows[1:] == [
        '"\'=HYPERLINK(""x"")",-1.5',
        "'+1,1.0",
        "'-cmd,2.0",
        "'@SUM(A1),3.0",
        "plain,4.0",
    ]
