"""Cost of ``report``, ``compare`` and ``history`` (indexing, trends) on 10,000 stored case results.

The inputs are real results — the golden nightly runs of tests/data/runs —
repeated under distinct case ids until each run holds 10,000: every figure in
them was measured, only the number of cases is scaled. Each run gets its
digest as a sweep writes it when it ends (judge/digest.py); ``compare`` is also
timed without it. The whole commands (``llmbench report``, ``compare``,
``history --index`` in a fresh process, imports included) are timed as well,
since that is what a user or a CI job waits for.

    pytest bench/test_bench_report.py --benchmark-only --benchmark-json=reports/bench.json
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from llmbench.judge.compare import compare_runs
from llmbench.judge.digest import DIGEST, write_digest
from llmbench.judge.history import History, trend
from llmbench.judge.report.render import render
from llmbench.judge.runs import read_run, runs_frame
from llmbench.judge.store import RunDir

CASES = 10_000
GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "data" / "runs" / "nightly"


def _scaled(source: Path, root: Path, name: str = "", started_at: str = "") -> Path:
    """A copy of a golden run whose results are repeated to CASES cases (under the run id
    ``name`` and starting at ``started_at``, when given), with its digest as a sweep leaves it."""
    target = root / (name or source.name)
    target.mkdir(parents=True)
    for file in ("env.json", "scenario.yaml"):
        shutil.copy(source / file, target / file)
    results = [json.loads(x) for x in (source / "results.jsonl").read_text().splitlines()]
    if started_at:
        results = [{**r, "started_at": started_at} for r in results]
    with (target / "results.jsonl").open("w") as fh:
        for i in range(CASES // len(results)):
            for r in results:
                fh.write(
                    json.dumps(
                        {**r, "case_id": f"{r['case_id']}{i:05d}", "label": f"{r['label']} #{i}"}
                    )
                    + "\n"
                )
    assert write_digest(RunDir(target))
    return target


@pytest.fixture(scope="module")
def scaled(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    golden = sorted(p for p in GOLDEN.iterdir() if p.is_dir())
    return _scaled(golden[3], root), _scaled(golden[4], root)


def test_read_10k(benchmark, scaled):
    """The floor under every command: 10,000 result lines (42 MB) parsed and validated."""
    run = benchmark(read_run, scaled[1])
    assert len(run.results) == CASES


def test_read_digest_10k(benchmark, scaled):
    """What ``compare`` reads of a run that has its digest."""
    run = benchmark(read_run, scaled[1], judged_only=True)
    assert len(run.results) == CASES and not run.results[0].params


def test_load_10k(benchmark, scaled):
    frame = benchmark(lambda: runs_frame([read_run(scaled[1])]))
    assert len(frame) == CASES


@pytest.mark.parametrize("fmt", ["terminal", "markdown", "html", "csv"])
def test_report_10k(benchmark, scaled, fmt):
    run = read_run(scaled[1])

    def report() -> int:
        rendered = render([run], fmt)
        if isinstance(rendered, str):
            return len(rendered)
        out = io.StringIO()
        Console(file=out, width=160).print(rendered)
        return len(out.getvalue())

    assert benchmark.pedantic(report, rounds=3, iterations=1) > 0


def test_compare_10k(benchmark, scaled):
    base, current = read_run(scaled[0]), read_run(scaled[1])
    comparison = benchmark.pedantic(compare_runs, (base, current), rounds=3, iterations=1)
    assert len({v.case_id for v in comparison.verdicts}) == CASES


def test_history_index_10k(benchmark, scaled, tmp_path):
    run = read_run(scaled[1])
    counter = iter(range(1000))

    def index() -> int:
        return History(tmp_path / f"h{next(counter)}.sqlite").index_run(run)

    assert benchmark.pedantic(index, rounds=3, iterations=1) == CASES


def test_history_trend_10k(benchmark, scaled, tmp_path):
    """``llmbench history --metric`` on a history holding the 10,000 cases: bands and change
    points per case."""
    history = History(tmp_path / "trend.sqlite")
    history.index_run(read_run(scaled[0]))
    history.index_run(read_run(scaled[1]))
    frame = benchmark.pedantic(lambda: trend(history, "tokens_per_s").frame, rounds=3)
    assert frame["case_id"].nunique() == CASES


def _command(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmbench", *args], capture_output=True, text=True, timeout=600
    )


def test_whole_command_report_terminal_10k(benchmark, scaled):
    done = benchmark.pedantic(_command, (["report", str(scaled[1])],), rounds=3, iterations=1)
    assert done.returncode == 0, done.stderr


def test_whole_command_history_index_10k(benchmark, scaled, tmp_path):
    counter = iter(range(1000))

    def index() -> subprocess.CompletedProcess:
        history = tmp_path / f"h{next(counter)}.sqlite"
        return _command(["history", "--index", str(scaled[1]), "--history", str(history)])

    done = benchmark.pedantic(index, rounds=3, iterations=1)
    assert done.returncode == 0, done.stderr


def test_whole_command_report_10k(benchmark, scaled, tmp_path):
    out = tmp_path / "report.html"
    done = benchmark.pedantic(
        _command,
        (["report", str(scaled[1]), "--format", "html", "-o", str(out)],),
        rounds=3,
        iterations=1,
    )
    assert done.returncode == 0, done.stderr


NIGHTS = 11


@pytest.fixture(scope="module")
def nightly_history(tmp_path_factory) -> tuple[Path, Path]:
    """NIGHTS scaled nightly runs a day apart, each indexed as its run indexes itself: the
    last is judged against the one before, the ten before it its noise band (the nightly's
    ``compare latest``)."""
    root = tmp_path_factory.mktemp("nights")
    golden = sorted(p for p in GOLDEN.iterdir() if p.is_dir())
    history = History(root / "history.sqlite")
    paths = []
    for night in range(1, NIGHTS + 1):
        name, day = f"202611{night:02d}-000000-nightly", f"2026-11-{night:02d}T00:00:00+00:00"
        paths.append(_scaled(golden[3 + night % 2], root, name, day))
        history.index_run(read_run(paths[-1]))
    return history.path, paths[-1]


def test_whole_command_compare_latest_with_history_10k(benchmark, nightly_history, tmp_path):
    history, current = nightly_history
    args = ["compare", "latest", str(current), "--history", str(history)]
    done = benchmark.pedantic(
        _command, ([*args, "--json", str(tmp_path / "v.json")],), rounds=3, iterations=1
    )
    assert done.returncode in (0, 1), done.stderr
    verdicts = json.loads((tmp_path / "v.json").read_text())["verdicts"]
    assert any(v["band_source"] == f"history of {NIGHTS - 1} runs" for v in verdicts)


@pytest.mark.parametrize("digest", [True, False], ids=["digest", "no-digest"])
def test_whole_command_compare_10k(benchmark, scaled, tmp_path, digest):
    """Two run directories, no history (``--history`` names an empty place: a history
    beside the working directory would add its runs' noise bands)."""
    runs = scaled
    if not digest:
        runs = tuple(Path(shutil.copytree(p, tmp_path / p.name)) for p in scaled)
        for path in runs:
            (path / DIGEST).unlink()
    args = ["compare", *map(str, runs), "--json", str(tmp_path / "v.json")]
    args += ["--history", str(tmp_path / "none.sqlite")]
    done = benchmark.pedantic(_command, (args,), rounds=3, iterations=1)
    assert done.returncode in (0, 1), done.stderr
