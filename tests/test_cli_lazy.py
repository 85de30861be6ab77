"""The command group loads a command's module only when that command is used."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from llmbench.cli import COMMANDS, base, cli


def test_the_table_names_every_command_and_its_module():
    for module in set(COMMANDS.values()):
        importlib.import_module(f"llmbench.cli.{module}")
    assert set(base.cli.commands) == set(COMMANDS)
    for name, module in COMMANDS.items():
        assert base.cli.commands[name].callback.__module__ == f"llmbench.cli.{module}", name


def test_help_lists_every_command_with_its_help_line():
    out = CliRunner().invoke(cli, ["--help"])
    assert out.exit_code == 0
    for name in COMMANDS:
        command = cli.get_command(None, name)
        assert command is not None and command.get_short_help_str()
        assert f"  {name} " in out.output and command.get_short_help_str()[:20] in out.output


def test_plan_does_not_import_the_other_wings_commands():
    code = (
        "import sys; from llmbench.cli import cli; cli.get_command(None, 'plan'); "
        "print(sorted(m for m in sys.modules if m.startswith('llmbench.cli.') "
        "or m == 'llmbench.define.schema'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['llmbench.cli.base',", "'llmbench.cli.plan']"]


HEAVY = ("numpy", "pandas", "pydantic")
GOLDEN = sorted(p for p in (Path(__file__).parent / "data" / "runs" / "nightly").iterdir())


def _heavy_modules_loaded(argv: list[str]) -> list[str]:
    """Run an llmbench command in a fresh interpreter; which of HEAVY it imported."""
    code = (
        "import sys; from llmbench.cli import cli\n"
        f"try: cli({argv!r}, standalone_mode=False)\n"
        "except SystemExit: pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.splitlines()[-1])


def test_compare_does_not_load_pandas_or_the_scenario_schema(tmp_path):
    """compare judges results, not frames or scenarios: numpy (~50 ms), pandas (~0.2 s) and the
    schema's pydantic (~0.1 s) are not its to pay."""
    argv = ["compare", str(GOLDEN[0]), str(GOLDEN[1]), "--markdown", str(tmp_path / "s.md")]
    assert _heavy_modules_loaded(argv) == []
    assert (tmp_path / "s.md").read_text().startswith("## llmbench compare")


def test_indexing_a_run_does_not_load_pandas(tmp_path):
    """A nightly's ``history --index`` shows no table, so it pays for no frame library."""
    db = tmp_path / "h.sqlite"
    assert _heavy_modules_loaded(["history", "--history", str(db), "--index", str(GOLDEN[0])]) == []
    from llmbench.judge.history import History

    assert [r.run_id for r in History(db).runs()] == [GOLDEN[0].name]


def test_report_does_not_load_the_scenario_schema():
    """Parameter columns are told by their section prefix (llmbench/define/sections.py),
    so a report builds its frame without pydantic's models (~0.1 s)."""
    assert _heavy_modules_loaded(["report", str(GOLDEN[0])]) == ["numpy", "pandas"]


def test_a_judge_command_leaves_without_teardown_but_with_all_its_output(tmp_path):
    """``main`` ends a judge command with os._exit (nothing freed one by one): the exit
    code, the whole terminal output and the files are those of the command group's run."""
    argv = ["compare", str(GOLDEN[0]), str(GOLDEN[1]), "--json", str(tmp_path / "v.json")]
    in_process = CliRunner().invoke(cli, argv, env={"COLUMNS": "160"})
    (tmp_path / "v.json").rename(tmp_path / "in_process.json")
    env = {**os.environ, "COLUMNS": "160"}
    out = subprocess.run(
        [sys.executable, "-m", "llmbench", *argv], capture_output=True, text=True, env=env
    )
    assert out.returncode == in_process.exit_code
    assert out.stdout == in_process.output and out.stdout.count("\n") > 10
    assert (tmp_path / "v.json").read_text() == (tmp_path / "in_process.json").read_text()
