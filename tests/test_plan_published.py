"""The step-time model against published large-scale runs: fitted on some, judged on the rest."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llmbench.plan import published
from llmbench.plan.fitted import FITTED, HELDOUT_ERROR
from llmbench.plan.published_plan import plan_run

# (predicted − published) / published on every held-out row, with the shipped constants;
# the same table is in llmbench/plan/README.md
HELD_OUT = {
    "mpt-350m-a100-s2048": -0.044,
    "mpt-1b-a100-s2048": -0.044,
    "mpt-7b-a100-s2048": -0.019,
    "mpt-30b-a100-s2048": -0.111,
    "mpt-13b-a100-s4096": -0.133,
    "mpt-3b-a100-s512": -0.090,
    "mpt-1b-h100-s2048": -0.033,
    "mpt-3b-h100-s4096": 0.039,
    "mpt-7b-h100-s4096": -0.084,
    "mpt-13b-h100-s4096": -0.083,
    "mpt-70b-h100-64gpu": -0.091,
    "megatron-175b-selective": -0.050,
    "megatron-1t-selective": -0.013,
    "megatron-1.7b": 0.152,
    "megatron-7.5b": -0.068,
    "megatron-39.1b": 0.015,
    "megatron-145.6b": 0.048,
    "megatron-529.6b": 0.028,
    "zero-offload-10b-v100": -0.115,
}


def test_every_held_out_run_is_within_20_percent():
    errors = published.errors(FITTED, split="holdout")
    assert set(errors) == set(HELD_OUT)
    for run_id, error in errors.items():
        assert abs(error) <= 0.20, run_id
        assert error == pytest.approx(HELD_OUT[run_id], abs=0.002), run_id
    assert min(errors.values()) == pytest.approx(HELDOUT_ERROR["min"], abs=0.001)
    assert max(errors.values()) == pytest.approx(HELDOUT_ERROR["max"], abs=0.001)


def test_every_source_and_gpu_generation_is_held_out_somewhere():
    runs = published.load()
    held = [r for r in runs if r.split == "holdout"]
    single_row = {r.source for r in runs if sum(q.source == r.source for q in runs) == 1}
    assert {r.source for r in held} | single_row == {r.source for r in runs}
    assert {published.generation(r.gpu) for r in held} == {"a100", "h100", "v100"}
    assert all(r.tokens_per_s_per_gpu > 0 for r in runs)


@pytest.mark.slow
def test_the_shipped_constants_are_the_fit_of_the_fit_rows():
    assert published.fit() == pytest.approx(FITTED, rel=0.01)


def _showcase() -> published.Run:
    (run,) = [r for r in published.load() if r.id == "zero-offload-10b-v100"]
    return run


def test_the_zero_offload_showcase_fits_at_its_published_settings():
    # 10B GPT-2, micro-batch 10, sequence 1024, fp16, ZeRO-2 + CPU Adam, full recomputation
    # with cpu_checkpointing, on one V100 32GB (DeepSpeedExamples' 10B ZeRO-Offload script)
    run = _showcase()
    row = plan_run(run).frame.iloc[0]
    assert bool(row["fits"]), row["total_bytes"] / 2**30
    assert row["max_micro_batch"] >= 10
    # the 50 checkpointed layer inputs (2 bytes × tokens × hidden each) live in host memory
    assert row["host_checkpoint_bytes_per_gpu"] == 50 * 2 * 10 * 1024 * 4096
    assert row["checkpoint_transfer_s"] > 0
    # kept on the GPU instead, they do not leave room for micro-batch 10
    on_gpu = replace(run, cfg=run.cfg.replace(cpu_checkpointing=0))
    row = plan_run(on_gpu).frame.iloc[0]
    assert not bool(row["fits"])
    assert row["host_checkpoint_bytes_per_gpu"] == 0


def test_the_zero_offload_showcase_is_within_20_percent_of_40_tflops():
    tokens = published.predict_run(_showcase(), FITTED)
    # Megatron's count with full recomputation, as the paper's 40 TFLOP/s
    layers, h, s, v = 50, 4096, 1024, 50257
    per_token = 96 * layers * h * h * (1 + s / (6 * h) + v / (16 * layers * h))
    tflops = tokens * per_token / 1e12
    assert tflops == pytest.approx(40, rel=0.20)
