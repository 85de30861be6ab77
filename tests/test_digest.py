"""The run digest: compare reads it instead of results.jsonl only while it says the same."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import orjson
import pytest
from golden_runs import DATA, copy_run, runs

from llmbench.cli import cli
from llmbench.judge.compare import compare_runs
from llmbench.judge.digest import DIGEST, UNJUDGED, read_digest, write_digest
from llmbench.judge.report.verdicts import to_json
from llmbench.judge.runs import read_run
from llmbench.judge.store import CorruptLineWarning, RunDir

SETS = sorted({str(p.parent.parent.relative_to(DATA)) for p in DATA.rglob("results.jsonl")})


def _copies(name: str, root: Path) -> list[Path]:
    """Writable copies of a golden set's runs, each with its digest written as a sweep does."""
    copies = [copy_run(path, root / name) for path in runs(name)]
    for path in copies:
        assert write_digest(RunDir(path)), path
    return copies


@pytest.fixture
def run_path(tmp_path) -> Path:
    return _copies("nightly", tmp_path)[0]


@pytest.mark.parametrize("name", SETS)
def test_every_golden_comparison_is_the_same_from_the_digests(name, tmp_path):
    """Each run against the one before it, the earlier ones as its history: the verdicts'
    JSON from the digests is byte for byte the JSON from results.jsonl."""
    paths = _copies(name, tmp_path)
    full = [read_run(p) for p in paths]
    judged = [read_run(p, judged_only=True) for p in paths]
    assert all(r.params == {} for run in judged for r in run.results)  # the digests were read
    for i in range(len(paths)):
        outputs = [
            to_json(compare_runs(side[max(i - 1, 0)], side[i], None, (), True, side[:i]))
            for side in (full, judged)
        ]
        assert outputs[0] == outputs[1], paths[i].name


def test_the_digest_keeps_all_but_what_compare_never_reads(run_path):
    full, kept = RunDir(run_path).results(), read_digest(RunDir(run_path))
    assert [r.case_id for r in kept] == [r.case_id for r in full]
    for whole, digested in zip(full, kept, strict=True):
        for name in UNJUDGED:
            assert getattr(digested, name) in ({}, [])
        assert (digested.metrics, digested.null_reasons, digested.status, digested.started_at) == (
            whole.metrics,
            whole.null_reasons,
            whole.status,
            whole.started_at,
        )
        assert digested.step_times_s == []  # its deciles are among the metrics
    assert (run_path / DIGEST).stat().st_size < (run_path / "results.jsonl").stat().st_size / 2


def test_step_times_are_kept_where_the_deciles_were_not_recorded(run_path):
    results = (run_path / "results.jsonl").read_text().splitlines()
    old = json.loads(results[0])
    for name in ("step_time_s_p10", "step_time_s_p90"):
        del old["metrics"][name]  # as an older llmbench wrote it
    (run_path / "results.jsonl").write_text("\n".join([json.dumps(old), *results[1:]]) + "\n")
    assert write_digest(RunDir(run_path))
    first, second = read_digest(RunDir(run_path))[:2]
    assert first.step_times_s == old["step_times_s"] and len(first.step_times_s) >= 3
    assert second.step_times_s == []


def _rewritten_later(path: Path, text: str) -> None:
    """An edit a second later (a digest is told from its file by size and mtime, as make,
    rsync's quick check and git's index do: a rewrite of the same size within the same
    clock tick as the digest is beyond it)."""
    mtime = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.open("a").write(p.read_text().splitlines()[0] + "\n"),  # a resumed sweep
        lambda p: os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 1)),  # edited
        lambda p: _rewritten_later(p, p.read_text().replace('"ok"', '"no"', 1)),  # same size
    ],
    ids=["appended", "touched", "rewritten"],
)
def test_a_changed_results_file_makes_the_digest_stale(run_path, change):
    change(run_path / "results.jsonl")
    assert read_digest(RunDir(run_path)) is None
    assert read_run(run_path, judged_only=True).results == RunDir(run_path).results()


@pytest.mark.parametrize(
    "damage",
    [
        "empty",
        "no-second-line",
        "header-torn",
        "format",
        "count",
        "list-torn",
        "results-not-a-list",
        "entry-not-an-object",
        "entry-without-case-id",
        "metrics-not-an-object",
    ],
)
def test_a_damaged_digest_is_ignored_and_results_jsonl_read_instead(run_path, damage):
    head, body = (run_path / DIGEST).read_bytes().split(b"\n", 1)
    header, entries = orjson.loads(head), orjson.loads(body)
    first = entries[0]
    damaged = {
        "empty": b"",
        "no-second-line": head,
        "header-torn": head[:-3] + b"\n" + body,
        "format": orjson.dumps({**header, "format": 99}) + b"\n" + body,
        "count": orjson.dumps({**header, "results": len(entries) + 1}) + b"\n" + body,
        "list-torn": head + b"\n" + body[:-10],
        "results-not-a-list": head + b"\n{}",
        "entry-not-an-object": head + b"\n" + orjson.dumps([*entries[:-1], "x"]),
        "entry-without-case-id": head
        + b"\n"
        + orjson.dumps([{k: v for k, v in first.items() if k != "case_id"}, *entries[1:]]),
        "metrics-not-an-object": head + b"\n" + orjson.dumps([{**first, "metrics": []}]),
    }
    (run_path / DIGEST).write_bytes(damaged[damage])
    assert read_digest(RunDir(run_path)) is None
    run = read_run(run_path, judged_only=True)
    assert run.results == RunDir(run_path).results() and run.results[0].params


def test_a_results_file_with_a_corrupt_line_gets_no_digest_and_keeps_warning(tmp_path):
    path = copy_run(runs("nightly")[0], tmp_path)
    with (path / "results.jsonl").open("a") as fh:
        fh.write('{"case_id": "torn", "lab\n')
    assert not write_digest(RunDir(path)) and not (path / DIGEST).exists()
    with pytest.warns(CorruptLineWarning, match=r"results\.jsonl:\d+"):
        read_run(path, judged_only=True)


def test_a_figure_json_cannot_spell_gets_no_digest(tmp_path):
    """Another tool's NaN: orjson would write null, and the digest would judge otherwise."""
    path = copy_run(runs("nightly")[0], tmp_path)
    lines = (path / "results.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["metrics"]["tokens_per_s"] = math.nan
    (path / "results.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert not write_digest(RunDir(path)) and not (path / DIGEST).exists()


def test_compare_gives_the_same_verdicts_with_and_without_digests(tmp_path, cli_runner):
    paths = [copy_run(p, tmp_path / "runs") for p in runs("nightly")[3:5]]
    args = ["compare", *map(str, paths), "--history", str(tmp_path / "h.sqlite")]
    plain = cli_runner.invoke(cli, [*args, "--json", str(tmp_path / "plain.json")])
    for path in paths:
        assert write_digest(RunDir(path))
    digested = cli_runner.invoke(cli, [*args, "--json", str(tmp_path / "digest.json")])
    assert (plain.exit_code, plain.output) == (digested.exit_code, digested.output)
    assert (tmp_path / "plain.json").read_bytes() == (tmp_path / "digest.json").read_bytes()


def test_a_disturbed_profiled_run_names_its_phase_from_the_digest_too(tmp_path):
    """The per-step phase times are the one list ``compare`` reads (a disturbed run's most
    scattered phase): a copy of the golden profiled run, its steps scattered 4× wider and
    its backward phase alternating between 1× and 2×, judged from both sources."""
    (baseline,) = _copies("profile", tmp_path / "base")
    disturbed = copy_run(baseline, tmp_path / "cur")
    lines = []
    for line in (baseline / "results.jsonl").read_text().splitlines():
        result = json.loads(line)
        m, phases = result["metrics"], result["phase_times_s"]
        if result["status"] == "ok" and phases:
            m["step_time_s_p90"] += 3 * (m["step_time_s_p90"] - m["step_time_s_p10"])
            phases["backward"] = [v * (1 + i % 2) for i, v in enumerate(phases["backward"])]
        lines.append(json.dumps(result))
    (disturbed / "results.jsonl").write_text("\n".join(lines) + "\n")
    assert write_digest(RunDir(disturbed))
    outputs = [
        to_json(compare_runs(read_run(baseline, digest), read_run(disturbed, digest)))
        for digest in (False, True)
    ]
    assert outputs[0] == outputs[1]
    assert b"a disturbed run, most in backward" in outputs[0]
