"""The machine checks before a case runs, and the order cases and repeats run in."""

from __future__ import annotations

from llmbench.define.loader import parse_scenario
from llmbench.hardware import Accelerator
from llmbench.measure.runner import pending_cases, skip_reason


def test_machine_checks():
    cpu = Accelerator("cpu", 2, ("cpu",), (), None, None, None)
    gpu = Accelerator("cuda", 1, ("NVIDIA H200",), (0,), "560", "12.8", None)
    (one,) = parse_scenario("parallel: {world_size: 2}").expand()
    (two_nodes,) = parse_scenario("parallel: {world_size: 2, nodes: 2}").expand()
    assert skip_reason(one, cpu, "local") is None
    assert skip_reason(one, gpu, "local") == "needs 2 GPUs per node, this machine has 1"
    assert "local launcher runs one node" in skip_reason(two_nodes, cpu, "local")
    # SLURM nodes have their own GPUs: this machine's count decides nothing for them
    assert skip_reason(one, gpu, "slurm", ranks_here=False) is None
    (four,) = parse_scenario("parallel: {world_size: 4}").expand()
    assert "2 CPU cores" in skip_reason(four, cpu, "local")
    assert skip_reason(four, cpu, "local", oversubscribe=True) is None
    assert skip_reason(one, gpu, "local", oversubscribe=True) is not None  # GPUs cannot be shared


def test_pending_cases_interleave_repeats_and_skip_done():
    cases = parse_scenario("deepspeed: {zero_stage: [0, 1]}").expand()
    todo = pending_cases(cases, 2, {(cases[0].id, 0)})
    assert [(p.case.id, p.repeat) for p in todo] == [
        (cases[1].id, 0),
        (cases[0].id, 1),
        (cases[1].id, 1),
    ]


def test_a_case_with_a_failed_rank_is_stopped_before_its_time_limit(tmp_path, monkeypatch):
    """Its peers would wait in NCCL until the limit; the OOM rank's record is the answer."""
    import time

    from llmbench.define.schema import RunSpec
    from llmbench.measure import runner as runner_module
    from llmbench.measure.launch.base import CaseProcess
    from llmbench.measure.record import RankRecord

    monkeypatch.setattr(runner_module, "FAILED_RANK_GRACE_S", 0.3)
    killed: list[float] = []
    hung = CaseProcess(poll_fn=lambda: None if not killed else -9, kill_fn=lambda: killed.append(1))
    runner = runner_module.Runner.__new__(runner_module.Runner)
    runner.run, runner.observer = RunSpec(timeout_s=60), None
    RankRecord(rank=0, world_size=2, status="ok").save(tmp_path / "rank0.json")
    (tmp_path / "rank_env.json").write_text('{"MASTER_PORT": "29500"}')  # not a record
    assert not runner_module.a_rank_failed(tmp_path)
    RankRecord(rank=1, world_size=2, error_type="OutOfMemoryError").save(tmp_path / "rank1.json")
    assert runner_module.a_rank_failed(tmp_path)
    t0 = time.monotonic()
    timed_out, _ = runner._wait(hung, tmp_path, t0)
    assert killed and not timed_out and time.monotonic() - t0 < 5
