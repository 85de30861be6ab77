"""The planner's questions: ranked configurations, largest micro-batch, fewest GPUs, largest model."""

from __future__ import annotations

import numpy as np
import pytest

from llmbench.plan.assumptions import Assumptions
from llmbench.plan.configs import enumerate_configs
from llmbench.plan.describe import describe_model
from llmbench.plan.predict import predict
from llmbench.plan.search import LAYOUT, TIE, Query, largest_model, min_gpus, plan
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
    # fastest first, speeds closer than TIE counting as equal: no fitting row is faster than
    # one ranked above it by more than the tie width
    speeds = frame.loc[fits, "tokens_per_s"].to_numpy()
    best_above = np.maximum.accumulate(speeds)
    assert (speeds <= best_above).all()
    assert (np.minimum.accumulate(speeds) * (1 + TIE) ** 2 >= speeds).all()
    assert (frame.loc[fits, "total_bytes"] <= H100.memory_bytes).all()
    # every row that does not fit is over the device memory or over the host memory
    over_device = frame.loc[~fits, "total_bytes"] > H100.memory_bytes
    over_host = (
        frame.loc[~fits, "host_offload_bytes_per_node"] > ASSUME.host_memory_bytes_per_node.value
    )
    assert (over_device | over_host).all()


def test_micro_batches_run_to_the_memory_limit_not_only_powers_of_two(llama7b_on_8):
    frame = llama7b_on_8.frame
    fitting = frame[frame["fits"].astype(bool)]
    assert {3, 5, 6} <= set(fitting["micro_batch"])
    # every layout is ranked at its largest micro-batch too
    layout = list(LAYOUT)
    largest = fitting.groupby(layout)["max_micro_batch"].first()
    tried = fitting.groupby(layout)["micro_batch"].max()
    assert (tried == largest.clip(upper=64)).all()


def test_a_7b_model_on_one_node_gets_zero_1_or_2_not_zero_3(llama7b_on_8):
    """Practitioners' order when the model fits (transformers' DeepSpeed guide): ZeRO-1/2 first."""
    fitting = llama7b_on_8.frame[llama7b_on_8.frame["fits"].astype(bool)]
    best = fitting.iloc[0]
    assert best["zero_stage"] in (1, 2) and best["micro_batch"] > 1
    assert best["offload_optimizer"] == "none" and best["tp"] == best["pp"] == 1
    z3 = fitting[fitting["zero_stage"] == 3]
    z3_mb1 = z3[z3["micro_batch"] == 1].index.min()
    assert fitting.index.get_loc(best.name) < z3_mb1
    assert best["tokens_per_s_low"] < best["tokens_per_s"] < best["tokens_per_s_high"]


def test_zero_3_wins_where_memory_forces_it():
    # 13B data-parallel on 4 GPUs without offload: ZeRO-1/2 keep 2 + 16/4 bytes per
    # parameter (78 GB) and do not fit; only parameter partitioning does, so it ranks first
    result = plan(
        describe_model("llama-13b"),
        H100,
        4,
        Query(seq_len=2048, precisions=("bf16",), offload=False),
        ASSUME,
    )
    frame = result.frame
    flat = frame[(frame["tp"] == 1) & (frame["pp"] == 1)]
    fitting = flat[flat["fits"].astype(bool)]
    assert set(fitting["zero_stage"]) == {3}
    assert flat.iloc[0]["zero_stage"] == 3


def test_the_budget_scales_with_tokens_gpus_and_price():
    model = describe_model("llama-7b")

    def best(**kw):
        query = Query(seq_len=2048, precisions=("bf16",), micro_batches=(2,), offload=False, **kw)
        return plan(model, H100, 8, query, ASSUME).frame.iloc[0]

    default = best()
    assert default["train_tokens"] == 20 * model.total_params  # Chinchilla's 20 per parameter
    assert np.isnan(default["cost"])  # no price given, none assumed
    one, two = best(tokens=1e9), best(tokens=2e9)
    assert two["train_time_s"] == pytest.approx(2 * one["train_time_s"])
    assert two["gpu_hours"] == pytest.approx(2 * one["gpu_hours"])
    # a day of 8 GPUs is 192 GPU-hours
    assert one["gpu_hours"] == pytest.approx(one["train_time_s"] / 86400 * 192)
    cheap, dear = best(tokens=1e9, cost_per_gpu_hour=2.5), best(tokens=1e9, cost_per_gpu_hour=5.0)
    assert dear["cost"] == pytest.approx(2 * cheap["cost"]) and cheap["cost"] > 0


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
