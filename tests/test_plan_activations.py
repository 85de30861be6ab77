"""Activation memory: Korthikanti et al. 2022 by hand, and the recipes against what autograd saves."""

from __future__ import annotations

import numpy as np
import pytest

from llmbench.define.models import Dims, resolve_dims
from llmbench.plan import activations
from llmbench.plan.activations import (
    PAPER,
    RECIPES,
    block_activation_bytes,
    dropout_probability,
    saved_activation_bytes,
)
from llmbench.plan.probe import measure_activations, spec_from_overrides

# GPT-3 175B's shape (Korthikanti et al. 2022, table 3): a = 96, h = 12288, s = 2048
GPT3 = Dims(96, 12288, 96, 4 * 12288, 51200, 2048)
S, B, H, A, L = 2048, 1, 12288, 96, 96
SBH = S * B * H


def layers(tp=1, sp=False, ckpt=0, pp=1, grad_accum=1, layers_on_stage=1, in_flight=1):
    return float(
        block_activation_bytes(
            PAPER,
            "eager",
            GPT3,
            S,
            B,
            2,
            tp,
            layers_on_stage,
            in_flight,
            np.asarray(sp),
            np.asarray(ckpt),
            "cuda",
            False,
            0.1,  # the paper counts dropout masks: GPT-3 trains with dropout on
        )
    )


def test_one_layer_is_sbh_34_plus_5as_over_h():
    assert layers() == SBH * (34 + 5 * A * S / H)  # = 1,444,675,584 bytes, by hand below
    assert SBH * (34 + 5 * A * S / H) == 2048 * 12288 * (34 + 80) == 2_868_903_936


def test_tensor_parallel_without_sequence_parallel():
    # table 2: sbh (10 + 24/t + 5as/(ht))
    assert layers(tp=8) == pytest.approx(SBH * (10 + 24 / 8 + 5 * A * S / (H * 8)))


def test_tensor_and_sequence_parallel():
    # table 2: sbh/t (34 + 5as/h)
    assert layers(tp=8, sp=True) == pytest.approx(SBH / 8 * (34 + 5 * A * S / H))


def test_selective_recompute_drops_the_attention_core():
    # table 2: sbh (10 + 24/t) without SP, 34 sbh/t with SP
    assert layers(tp=8, ckpt=1) == pytest.approx(SBH * (10 + 24 / 8))
    assert layers(tp=8, sp=True, ckpt=1) == pytest.approx(SBH * 34 / 8)


def test_full_recompute_keeps_each_layer_input_plus_one_working_layer():
    stored = layers(ckpt=2, layers_on_stage=L)
    assert stored == pytest.approx(2 * SBH * L + SBH * (34 + 5 * A * S / H))


def test_first_pipeline_stage_holds_p_micro_batches():
    # L/p layers for p micro-batches in flight: the whole model's activations
    p = 8
    assert layers(layers_on_stage=L / p, in_flight=p) == pytest.approx(L * layers())


def test_flash_attention_keeps_a_log_sum_exp_not_seq_squared():
    core = activations.attention_core_bytes(PAPER, "sdpa", GPT3, S, B, 2, "cuda")
    assert core == 4 * A * S * B


def test_without_dropout_no_mask_is_kept():
    kept = layers()
    masks = 2 * SBH * 1 + A * S * S * B * 1  # residual masks, attention-probability mask
    dropped = 2 * A * S * S * B  # and the dropped probabilities the next matmul keeps
    no_dropout = block_activation_bytes(
        PAPER, "eager", GPT3, S, B, 2, 1, 1, 1, np.asarray(False), np.asarray(0), "cuda", False, 0.0
    )
    assert kept - float(no_dropout) == masks + dropped


def test_config_dropout_is_the_architectures_own():
    # transformers' config classes: GPT2Config resid/embd/attn_pdrop 0.1, LlamaConfig 0.0
    assert dropout_probability("gpt2", "config") == 0.1
    assert dropout_probability("llama", "config") == 0.0
    assert dropout_probability("gpt2", 0.0) == 0.0


def test_flash_attention_on_a_gpu_keeps_no_dropout_mask():
    core = activations.attention_core_bytes(PAPER, "sdpa", GPT3, S, B, 2, "cuda", 0.1)
    assert core == 4 * A * S * B


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("checkpointing", ["none", "full"])
@pytest.mark.parametrize("dropout", ["0", "0.1"])
def test_recipes_match_what_autograd_saves(family, attention, precision, checkpointing, dropout):
    # the model is built with the dropout the prediction is made for: 0.1 is GPT-2's
    # own (model.dropout: config); on a CPU, SDPA with dropout runs PyTorch's math path
    spec = spec_from_overrides(
        [
            f"model.family={family}",
            "model.size=tiny",
            f"model.attn_implementation={attention}",
            f"deepspeed.precision={precision}",
            f"deepspeed.activation_checkpointing={checkpointing}",
            f"model.dropout={dropout}",
            "training.seq_len=128",
        ]
    )
    measured = measure_activations(spec, micro_batch=2)["saved_bytes"]
    predicted = saved_activation_bytes(
        RECIPES[family],
        attention,
        resolve_dims(family, "tiny"),
        "causal-lm",
        128,
        2,
        2 if precision == "bf16" else 4,
        np.asarray({"none": 0, "full": 2}[checkpointing]),
        "cpu",
        dropout_probability(family, spec.model.dropout),
    )
    # measured on gpt2/llama mini and tiny: within 3 % (tensors of size seq or smaller are not itemised)
    assert float(predicted) == pytest.approx(measured, rel=0.03)
