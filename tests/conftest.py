"""Shared fixtures: scenario files, the CLI runner, real llmbench sweeps on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("DS_ACCELERATOR", "cpu")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def write_scenario(tmp_path):
    """Write YAML text (dedented) to a file and return its path."""

    def write(text: str, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def cli_runner():
    return CliRunner()


@pytest.fixture(scope="session")
def ds_ops():
    """Build DeepSpeed's CPU JIT ops once, before any timed or time-limited test.

    A fresh machine compiles them on first use (about a minute on two cores);
    that must not land inside a case that a test gives a short timeout.
    """
    out = subprocess.run(
        [sys.executable, "-m", "llmbench.measure.ops", "ShareMemCommBuilder", "FusedAdamBuilder"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "DS_ACCELERATOR": "cpu"},
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_llmbench(
    args: list[str], cwd: Path | None = None, timeout: float = 900, **kwargs
) -> subprocess.CompletedProcess:
    """``llmbench ARGS`` as a user runs it: a fresh process, real exit code."""
    return subprocess.run(
        [sys.executable, "-m", "llmbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env={**os.environ, "COLUMNS": "200"},
        **kwargs,
    )


def interruptible() -> None:
    """``preexec_fn`` for a child a test will send SIGINT: the signal's default action.

    A test run started in the background by a non-interactive shell inherits
    SIGINT ignored (POSIX), and Python then installs no KeyboardInterrupt
    handler in its children: the test's Ctrl-C would never arrive.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def read_results(run_dir: Path) -> list[dict]:
    return [
        json.loads(line)
        for line in (run_dir / "results.jsonl").read_text().splitlines()
        if line.strip()
    ]
