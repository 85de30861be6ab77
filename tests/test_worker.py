"""How a rank leaves after a failure: record first, then (on CUDA) no NCCL teardown."""

from __future__ import annotations

import json

import pytest

from llmbench.measure import worker
from llmbench.measure.record import RankTask


class OutOfMemoryError(RuntimeError):
    """Named like torch's: the outcome is classified by the exception's name."""


class Exited(Exception):
    pass


@pytest.fixture
def failing_rank(monkeypatch, tmp_path):
    """A rank whose training runs out of memory; os._exit recorded instead of taken."""

    def oom(task, record, phase):
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    exits: list[int] = []

    def hard_exit(code: int) -> None:
        exits.append(code)
        raise Exited

    monkeypatch.setattr(worker, "_train", oom)
    monkeypatch.setattr(worker, "_memory", lambda device: {})
    monkeypatch.setattr(worker.os, "_exit", hard_exit)
    monkeypatch.setattr("llmbench.measure.process.die_with_parent", lambda: None)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")

    def run(device: str) -> list[int]:
        task = RankTask(spec={}, ds_config={}, micro_batch=1, device=device, out_dir=str(tmp_path))
        task.save(tmp_path / "task.json")
        try:
            code = worker.main([str(tmp_path / "task.json")])
        except Exited:
            return exits
        return [f"returned {code}"]

    return run, tmp_path


def test_a_failed_cuda_rank_writes_its_record_then_exits_hard(failing_rank):
    run, case_dir = failing_rank
    assert run("cuda") == [1]
    record = json.loads((case_dir / "rank1.json").read_text())
    assert record["status"] == "error" and record["error_type"] == "OutOfMemoryError"


def test_a_failed_cpu_rank_returns_normally(failing_rank):
    run, case_dir = failing_rank
    assert run("cpu") == ["returned 1"]  # gloo has no teardown that blocks
    assert (case_dir / "rank1.json").exists()


@pytest.mark.slow
def test_a_real_case_records_its_optimizer_and_skipped_steps(write_scenario, tmp_path, ds_ops):
    """DeepSpeed's fused Adam, and torch's AdamW where the sweep had to fall back (torch_adam)."""
    from conftest import read_results, run_dirs, run_llmbench

    path = write_scenario(
        """
        name: optimizers
        model: {family: gpt2, size: tiny}
        training: {seq_len: 32, micro_batch: 2, warmup_steps: 1, steps: 3}
        deepspeed:
          precision: bf16
          config: [{}, {optimizer: {params: {torch_adam: true}}}]
        run: {timeout_s: 300}
        """
    )
    out = run_llmbench(["run", str(path), "--output-dir", str(tmp_path / "runs")])
    assert out.returncode == 0, out.stdout + out.stderr
    results = read_results(run_dirs(tmp_path / "runs")[0])
    impls = sorted(r["metrics"]["optimizer_impl"] for r in results)
    assert impls == ["deepspeed.ops.adam.fused_adam.FusedAdam", "torch.optim.adamw.AdamW"]
    assert [r["metrics"]["steps_skipped"] for r in results] == [0, 0]  # bf16 skips nothing
