"""Run directories: durable appends, corrupt lines, concurrent writers, resume bookkeeping."""

from __future__ import annotations

import multiprocessing

import pytest

from llmbench.errors import UserError
from llmbench.judge.result import CaseResult
from llmbench.judge.store import CorruptLineWarning, RunDir, append_line, read_jsonl


def result(i: int, repeat: int = 0) -> CaseResult:
    return CaseResult(
        case_id=f"c{i}",
        label=f"case {i}",
        params={"deepspeed.zero_stage": i % 4},
        status="ok",
        repeat=repeat,
        metrics={"tokens_per_s": 100.0 + i},
    )


def test_create_never_reuses_a_directory(tmp_path):
    a = RunDir.create(tmp_path, "s w/eep")
    b = RunDir.create(tmp_path, "s w/eep")
    assert a.path != b.path and a.path.name.endswith("s-w-eep")


def test_append_and_read_back(tmp_path):
    run = RunDir.create(tmp_path, "s")
    for i in range(3):
        run.append(result(i))
    run.append(result(0, repeat=1))
    assert [r.case_id for r in run.results()] == ["c0", "c1", "c2", "c0"]
    assert run.done() == {("c0", 0), ("c1", 0), ("c2", 0), ("c0", 1)}


def test_corrupt_and_truncated_lines_are_skipped_with_file_and_line(tmp_path):
    run = RunDir.create(tmp_path, "s")
    run.append(result(0))
    with run.results_path.open("a") as fh:
        fh.write("{not json}\n")
    run.append(result(1))
    with run.results_path.open("a") as fh:
        fh.write('{"case_id": "c2", "label": "trunc')  # a crash mid-write
    with pytest.warns(CorruptLineWarning) as warned:
        loaded = run.results()
    assert [r.case_id for r in loaded] == ["c0", "c1"]
    messages = [str(w.message) for w in warned]
    assert any(":2: skipping a corrupt line" in m for m in messages)
    assert any(":4: skipping a corrupt line" in m for m in messages)


def _writer(path: str, who: int, n: int) -> None:
    from pathlib import Path

    for i in range(n):
        append_line(Path(path), result(who * 10_000 + i).to_json())


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    path = tmp_path / "results.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), who, 300)) for who in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = [obj["case_id"] for _, obj in read_jsonl(path)]
    assert len(ids) == 600 and len(set(ids)) == 600


def test_open_rejects_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        RunDir.open(tmp_path)


def test_json_that_is_not_a_case_result_is_skipped_with_a_warning(tmp_path):
    run = RunDir.create(tmp_path, "s")
    run.append(result(0))
    with run.results_path.open("a") as fh:
        fh.write(
            '{"hello": "world"}\n{"case_id": "c9", "label": "x", "params": [], "status": "ok"}\n'
        )
    run.append(result(1))
    with pytest.warns(CorruptLineWarning) as warned:
        assert [r.case_id for r in run.results()] == ["c0", "c1"]
    messages = " ".join(str(w.message) for w in warned)
    assert (
        ":2: skipping a line that is not a case result (missing case_id, label, params, status)"
        in messages
    )
    assert ":3: skipping a line that is not a case result (wrong type of params)" in messages
