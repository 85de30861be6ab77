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


def test_pending_cases_interleave_repeats_and_skip_done():
    cases = parse_scenario("deepspeed: {zero_stage: [0, 1]}").expand()
    todo = pending_cases(cases, 2, {(cases[0].id, 0)})
    assert [(p.case.id, p.repeat) for p in todo] == [
        (cases[1].id, 0),
        (cases[0].id, 1),
        (cases[1].id, 1),
    ]
