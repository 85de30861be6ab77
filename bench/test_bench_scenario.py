"""The harness's own costs before anything runs: loading and expanding scenarios."""

from __future__ import annotations

from llmbench.define.loader import parse_scenario

# 2 families × 5 sequence lengths × 2 micro-batches × 32 seeds × 4 ZeRO stages × 2 precisions × 2 world sizes
SEEDS = ", ".join(str(s) for s in range(32))
MATRIX = f"""\
model: {{family: [gpt2, llama], size: tiny}}
training: {{seq_len: [16, 32, 64, 128, 256], micro_batch: [2, 4], seed: [{SEEDS}]}}
deepspeed: {{zero_stage: [0, 1, 2, 3], precision: [bf16, fp32]}}
parallel: {{world_size: [1, 2]}}
"""


def test_load_and_expand_a_10240_case_matrix(benchmark):
    cases = benchmark(lambda: parse_scenario(MATRIX).expand())
    assert len(cases) == 10_240 and len({c.id for c in cases}) == 10_240
    benchmark.extra_info["cases"] = len(cases)
