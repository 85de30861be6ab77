"""The planner's questions: ranked configurations, largest micro-batch, fewest GPUs, largest model."""

from __future__ import annotations

import numpy as np
import pytest

from llmbench.plan.assumptions import Assumptions
from llmbench.plan.configs import enumerate_configs
from llmbench.plan.describe import describe_model
from llmbench.plan.predict import predict
from llmbench.plan.search import Query, largest_model, min_gpus, plan
from llmbench.plan.target import gpu_target

ASSUME = Assumptions()
H100 = gpu_target("h100-80gb", ASSUME)


@pytest.fixture(scope="module")
def llama7b_on_8():
    return plan(
        describe_model("llama-7b"), H100, 8, Query(seq_len=2048, precisions=("bf16",)), ASSUME
    )


def test_fitting_configurations_come_first_fastest_first(llama7b_on_8):
    frame = llama7b_on_8.frame
    fits = frame["fits"].astype(bool).to_numpy()
    assert fits.any() and not fits.all()
    assert not fits[np.argmin(fits) :].any()  # no fitting row after the first one that does not fit
    speeds = frame.loc[fits, "tokens_per_s"].to_numpy()
    assert (np.diff(speeds) <= 0).all()
    assert (frame.loc[fits, "total_bytes"] <= H100.memory_bytes).all()
    assert (frame.loc[~fits, "total_bytes"] > H100.memory_bytes).all() or (
        frame.loc[~fits, "host_offload_bytes_per_node"] > ASSUME.host_memory_bytes_per_node.value
    ).any()


def test_the_budget_follows_from_the_speed(llama7b_on_8):
    best = llama7b_on_8.frame.iloc[0]
    tokens = 20 * describe_model("llama-7b").total_params
    assert best["train_tokens"] == tokens
    assert best["train_time_s"] == pytest.approx(tokens / best["tokens_per_s"])
    assert best["gpu_hours"] == pytest.approx(best["train_time_s"] * 8 / 3600)
    assert np.isnan(best["cost"])  # no price given, none assumed
    priced = plan(
        describe_model("llama-7b"),
        H100,
        8,
        Query(seq_len=2048, precisions=("bf16",), cost_per_gpu_hour=2.5),
        ASSUME,
    )
    assert priced.frame.iloc[0]["cost"] == pytest.approx(priced.frame.iloc[0]["gpu_hours"] * 2.5)


def test_largest_micro_batch_is_the_last_that_fits(llama7b_on_8):
    model = describe_model("llama-7b")
    frame = llama7b_on_8.frame
    rows = frame[frame["fits"].astype(bool)].drop_duplicates(
        ["zero_stage", "offload_optimizer", "offload_param", "activation_checkpointing", "tp", "pp"]
    )
    for _, row in rows.head(12).iterrows():
        largest = int(row["max_micro_batch"])
        assert largest >= row["micro_batch"]
        cfg = enumerate_configs(
            model.dims,
            "llama",
            8,
            2048,
            precisions=(row["precision"],),
            checkpointing=(row["activation_checkpointing"],),
            micro_batches=(largest, largest + 1),
            zero_offload=[
                (
                    int(row["zero_stage"]),
                    row["offload_optimizer"] == "cpu",
                    row["offload_param"] == "cpu",
                )
            ],
        )
        cfg = cfg.take((cfg.tp == row["tp"]) & (cfg.pp == row["pp"]))
        totals = predict(model, cfg, H100, ASSUME).frame["total_bytes"].to_numpy()
        assert totals[0] <= H100.memory_bytes < totals[1]


def test_fewest_gpus():
    model = describe_model("llama-13b")
    query = Query(seq_len=2048, precisions=("bf16",), checkpointing=("full",), offload=False)
    n, result = min_gpus(model, H100, query, ASSUME)
    assert n is not None and n > 1
    assert result.frame["fits"].astype(bool).any()
    below = plan(model, H100, n - 1, Query(**{**query.__dict__, "micro_batches": (1,)}), ASSUME)
    assert not below.frame["fits"].astype(bool).any()


def test_largest_model_of_a_family():
    l4 = gpu_target("l4", ASSUME)
    rows = largest_model(
        "gpt2", l4, 1, Query(seq_len=1024, precisions=("bf16",), offload=False), ASSUME
    )
    sizes = [r["total_params"] for r in rows]
    assert sizes == sorted(sizes)
    fits = [r["fits"] for r in rows]
    assert fits[0] and not fits[-1]
    assert fits == sorted(fits, reverse=True)  # once one does not fit, no larger one does


def test_precisions_and_checkpointing_are_the_query_s():
    result = plan(
        describe_model("gpt2-350m"),
        H100,
        2,
        Query(seq_len=1024, precisions=("fp32",), checkpointing=("full",)),
        ASSUME,
    )
    assert set(result.frame["precision"]) == {"fp32"}
    assert set(result.frame["activation_checkpointing"]) == {"full"}
