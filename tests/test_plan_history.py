"""Reading measured cases from run directories, folders of them and the history index."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmbench.errors import UserError
from llmbench.judge.history import History
from llmbench.judge.result import CaseResult
from llmbench.plan.history import device_of, load_measurements, read_sources, run_dirs

GOLDEN = Path(__file__).parent / "data" / "runs" / "sweep"


def test_sources_are_run_dirs_or_folders_of_them():
    (run,) = run_dirs([GOLDEN])
    assert run_dirs([run]) == [run]
    assert run_dirs([GOLDEN / "nothing-here"]) == []


def test_only_ok_cases_are_measurements():
    found = load_measurements([GOLDEN])
    assert {m.label for m in found} == {
        "gpt2-tiny z0 ws1 tp1",
        "gpt2-tiny z2 ws1 tp1",
        "gpt2-mini z0 ws1 tp1",
        "gpt2-mini z2 ws1 tp1",
    }
    for m in found:
        assert m.device == "cpu"
        assert m.micro_batch == m.spec.training.micro_batch
        assert m.metrics["step_time_s_median"] > 0


def test_the_history_index_counts_each_case_once(tmp_path):
    history = History(tmp_path / "history.sqlite")
    history.index_paths([p for p in GOLDEN.iterdir()])
    runs = read_sources([tmp_path / "history.sqlite"])
    assert len(runs) == 1
    both = load_measurements([tmp_path / "history.sqlite", GOLDEN])
    assert len(both) == 4


def test_a_missing_source_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such run directory or history file"):
        read_sources([tmp_path / "nope"])


def test_the_device_comes_from_the_ranks_or_the_environment():
    def result(names):
        return CaseResult("c", "l", {}, "ok", ranks=[{"device_name": n} for n in names])

    assert device_of(result(["NVIDIA H100 80GB HBM3"]), {}) == "h100-sxm-80gb"
    assert device_of(result(["cpu"]), {}) == "cpu"
    assert (
        device_of(result([]), {"accelerator_detail": {"names": ["NVIDIA A100-SXM4-80GB"]}})
        == "a100-sxm-80gb"
    )
    assert device_of(result(["Some Future GPU"]), {}) == "Some Future GPU"
