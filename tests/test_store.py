"""Run directories: durable appends, corrupt lines, concurrent writers, resume bookkeeping."""

from __future__ import annotations

import gc
import multiprocessing
import os

import pytest

from llmbench.errors import UserError
from llmbench.judge.result import CaseResult
from llmbench.judge.store import CorruptLineWarning, RunDir, append_line, gc_paused, read_jsonl


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
    assert a.path != b.path
    assert a.path.name.split("-")[2:5] == ["s", "w", "eep"]


def test_run_ids_from_the_same_second_and_scenario_differ_across_machines(tmp_path):
    """Two machines sharing a history: same UTC second, same scenario, separate roots."""
    a = RunDir.create(tmp_path / "host-a", "nightly")
    b = RunDir.create(tmp_path / "host-b", "nightly")
    assert a.run_id != b.run_id


def test_a_long_scenario_name_still_makes_a_valid_directory(tmp_path):
    run = RunDir.create(tmp_path, "x" * 300)
    assert run.path.is_dir() and len(run.path.name) < 120


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


def test_a_torn_last_line_is_cut_and_kept_before_the_next_append(tmp_path):
    run = RunDir.create(tmp_path, "s")
    run.append(result(0))
    with run.results_path.open("a") as fh:
        fh.write('{"case_id": "c1", "label": "tor')  # a crash mid-write
    with pytest.warns(CorruptLineWarning, match="cut a torn last line"):
        run.append(result(2))
    assert [r.case_id for r in run.results()] == ["c0", "c2"]
    kept = run.results_path.with_name("results.jsonl.torn").read_text()
    assert kept == '{"case_id": "c1", "label": "tor\n'


def test_a_whole_last_line_missing_only_its_newline_is_kept(tmp_path):
    run = RunDir.create(tmp_path, "s")
    run.append(result(0))
    run.results_path.write_text(run.results_path.read_text().rstrip("\n"))
    run.append(result(1))
    assert [r.case_id for r in run.results()] == ["c0", "c1"]
    assert not run.results_path.with_name("results.jsonl.torn").exists()


def test_non_finite_figures_are_stored_as_null_with_a_reason(tmp_path):
    run = RunDir.create(tmp_path, "s")
    bad = result(0)
    bad.losses = [2.0, float("nan")]
    bad.metrics.update(loss_last=float("nan"), tokens_per_s=float("inf"))
    run.append(bad)
    (back,) = run.results()
    assert back.metrics["tokens_per_s"] is None and back.metrics["loss_last"] is None
    assert back.null_reasons["loss_last"] == "loss became NaN at step 2"
    assert back.null_reasons["tokens_per_s"] == "the value was inf (not a finite number)"
    assert back.losses == [2.0, None] and back.reason == "loss became NaN at step 2"


def _append_under_size_limit(path: str, limit: int) -> str:
    import resource
    from pathlib import Path

    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        append_line(Path(path), result(1).to_json())
    except OSError as exc:
        return f"{exc.filename}: {exc.strerror}"
    return "written"


def test_a_full_disk_mid_append_names_the_file_and_the_next_append_repairs_it(tmp_path):
    """RLIMIT_FSIZE in a real process: the write stops part-way, as on a full disk."""
    path = tmp_path / "results.jsonl"
    append_line(path, result(0).to_json())
    limit = path.stat().st_size + 40
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        said = pool.apply(_append_under_size_limit, (str(path), limit))
    assert said == f"{path}: File too large"
    assert path.stat().st_size == limit  # a torn fragment is left behind
    with pytest.warns(CorruptLineWarning, match="cut a torn last line"):
        append_line(path, result(2).to_json())
    assert [obj["case_id"] for _, obj in read_jsonl(path)] == ["c0", "c2"]


def test_a_second_sweep_in_the_same_run_directory_is_refused(tmp_path):
    run = RunDir.create(tmp_path, "s")
    refused = pytest.raises(UserError, match=rf"another llmbench \(pid {os.getpid()}\) is running")
    with run.locked(), refused, RunDir(run.path).locked():
        pass
    with run.locked():  # released on exit
        pass


def test_lines_only_pythons_json_accepts_are_still_read(tmp_path):
    """orjson reads results; a NaN written by another tool falls back to json, not to 'corrupt'."""
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": NaN}\n{"b": 1}\n')
    read = list(read_jsonl(path))
    assert [n for n, _ in read] == [1, 2] and read[1][1] == {"b": 1}
    assert read[0][1]["a"] != read[0][1]["a"]  # NaN


def test_a_non_finite_number_deep_in_a_result_is_written_as_null(tmp_path):
    run = RunDir.create(tmp_path, "s")
    deep = result(0)
    deep.ranks = [{"init_s": float("inf"), "nested": [float("nan"), 1.0]}]
    deep.step_times_s = [0.1, float("nan")]
    run.append(deep)
    (back,) = run.results()
    assert back.ranks == [{"init_s": None, "nested": [None, 1.0]}]
    assert back.step_times_s == [0.1, None] and back.null_reasons == deep.null_reasons


def test_gc_paused_turns_the_collector_off_and_back_as_it_was():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()
