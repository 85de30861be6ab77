"""Cost of ``llmbench plan``: every configuration of a model evaluated at once.

The planner must stay interactive: enumerating and predicting at least 10,000
configurations (memory terms, fit, largest micro-batch, speed, budget) should
take well under a second. Parameter counts are computed once per model and
cached, as the command does; the enumeration and the arithmetic are timed.

    pytest bench/test_bench_plan.py --benchmark-only --benchmark-json=reports/bench.json
"""

from __future__ import annotations

from llmbench.plan.assumptions import Assumptions
from llmbench.plan.describe import describe_model
from llmbench.plan.search import Query, plan
from llmbench.plan.target import gpu_target

ASSUME = Assumptions()
QUERY = Query(
    seq_len=4096,
    precisions=("bf16", "fp16", "fp32"),
    checkpointing=("none", "selective", "full"),
    micro_batches=tuple(range(1, 33)),
)


def test_plan_over_10k_configurations(benchmark):
    model = describe_model("llama-70b")  # counted from its anatomy, then cached
    target = gpu_target("h100-80gb", ASSUME)
    result = benchmark(plan, model, target, 64, QUERY, ASSUME)
    assert len(result.frame) >= 10_000
    assert result.frame["fits"].astype(bool).any()
