"""The history never takes a partial, conflicting or unserialisable run, and never lives in /tmp's parent."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from llmbench.errors import UserError
from llmbench.judge.history import History, history_next_to
from llmbench.judge.ingest import ingest
from llmbench.judge.result import CaseResult
from llmbench.judge.runs import read_run
from llmbench.judge.store import RunDir

BENCH = sorted((Path(__file__).parent / "data" / "bench").glob("*.json"))


def a_run(root: Path, tokens_per_s: float = 100.0) -> RunDir:
    run = RunDir.create(root, "s")
    run.write_yaml("scenario.yaml", {"name": "s"})
    run.write_json("env.json", {"accelerator": "cpu", "fingerprint": "f"})
    run.append(
        CaseResult(
            "c0", "case 0", {}, "ok", run_id=run.run_id, metrics={"tokens_per_s": tokens_per_s}
        )
    )
    return run


def test_a_second_run_under_an_existing_id_with_other_results_is_refused(tmp_path):
    history = History(tmp_path / "h.sqlite")
    first = a_run(tmp_path / "host-a")
    assert history.index_run(read_run(first.path)) == 1
    twin = tmp_path / "host-b" / first.run_id
    shutil.copytree(first.path, twin)
    assert history.index_run(read_run(twin)) == 0  # the same run, copied: nothing new, no error
    lines = (
        (twin / "results.jsonl").read_text().replace('"tokens_per_s":100.0', '"tokens_per_s":5.0')
    )
    (twin / "results.jsonl").write_text(lines)
    with pytest.raises(
        UserError,
        match=f"run id {first.run_id} is already in the history .* with different case c0",
    ):
        history.index_run(read_run(twin))


def test_a_nan_in_a_results_file_is_indexed_as_null(tmp_path):
    run = a_run(tmp_path)
    with run.results_path.open("a") as fh:  # written by hand or by an older llmbench
        fh.write(
            '{"case_id":"c1","label":"x","params":{},"status":"ok","metrics":{"tokens_per_s":NaN}}\n'
        )
    history = History(tmp_path / "h.sqlite")
    assert history.index_run(read_run(run.path)) == 2
    stored = history.load(run.run_id)
    assert {r.case_id: r.metrics["tokens_per_s"] for r in stored.results} == {
        "c0": 100.0,
        "c1": None,
    }


def test_a_benchmark_file_with_nan_statistics_is_ingested(tmp_path):
    data = json.loads(BENCH[0].read_text())
    data["benchmarks"][0]["stats"]["ops"] = float("nan")
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(data))
    run, created = ingest(path, tmp_path / "runs")
    assert created and run.results[0].metrics["ops_per_s"] is None
    assert History(tmp_path / "h.sqlite").index_run(run) == len(data["benchmarks"])


def test_an_ingest_that_fails_part_way_leaves_no_run(tmp_path, monkeypatch):
    import llmbench.judge.ingest as module

    real = module.case_result
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(module, "case_result", failing)
    with pytest.raises(OSError):
        ingest(BENCH[0], tmp_path / "runs")
    assert list((tmp_path / "runs").iterdir()) == []
    monkeypatch.setattr(module, "case_result", real)
    _, created = ingest(BENCH[0], tmp_path / "runs")
    assert created


def test_two_benchmark_files_of_the_same_name_and_second_get_two_ids(tmp_path):
    data = json.loads(BENCH[0].read_text())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "bench.json").write_text(json.dumps(data))
    data["benchmarks"] = data["benchmarks"][:1]
    (tmp_path / "b" / "bench.json").write_text(json.dumps(data))
    first, _ = ingest(tmp_path / "a" / "bench.json", tmp_path / "runs")
    second, created = ingest(tmp_path / "b" / "bench.json", tmp_path / "runs")
    assert created and first.run_id != second.run_id


def test_the_history_does_not_default_into_a_world_writable_directory(tmp_path):
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    assert shared.stat().st_mode & stat.S_IWOTH
    assert history_next_to(shared / "runs") == shared / "runs" / "history.sqlite"
    private = tmp_path / "reports"
    private.mkdir(mode=0o755)
    assert history_next_to(private / "runs") == private / "history.sqlite"
