"""Model-state accountings (ZeRO paper, DeepSpeed's estimators, DeepSpeed's real allocation) and buffers."""

from __future__ import annotations

import numpy as np
import pytest

from llmbench.define.schema import CaseSpec
from llmbench.plan.configs import enumerate_configs, from_specs
from llmbench.plan.describe import describe_model
from llmbench.plan.memory import (
    ZeroKnobs,
    buffer_bytes,
    memory_terms,
    states_deepspeed,
    states_llmbench,
    states_paper,
)


def configs(
    zero: int, dp: int, precision: str = "bf16", offload_opt=False, offload_param=False, **extra
):
    spec = CaseSpec.model_validate(
        {
            "deepspeed": {
                "zero_stage": zero,
                "precision": precision,
                "offload_optimizer": "cpu" if offload_opt else "none",
                "offload_param": "cpu" if offload_param else "none",
                **extra.get("deepspeed", {}),
            },
            "parallel": {
                "world_size": dp * extra.get("tp", 1) * extra.get("pp", 1),
                "tp": extra.get("tp", 1),
                "pp": extra.get("pp", 1),
            },
            "training": {"seq_len": extra.get("seq_len", 128)},
        }
    )
    return from_specs([spec], [extra.get("micro_batch", 1)])


@pytest.mark.parametrize(
    ("zero", "gb"),
    [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)],
)
def test_paper_accounting_reproduces_the_zero_paper_example(zero, gb):
    # Rajbhandari et al. 2020, figure 1: Ψ = 7.5 B, N_d = 64, K = 12
    params, grads, optimizer, _ = states_paper(7.5e9, configs(zero, 64))
    assert float((params + grads + optimizer)[0]) / 1e9 == pytest.approx(gb, abs=0.05)


def test_paper_offload_moves_gradients_and_optimizer_to_the_host():
    params, grads, optimizer, host = states_paper(1e9, configs(2, 4, offload_opt=True))
    assert (params[0], grads[0], optimizer[0]) == (2e9, 0, 0)
    assert host[0] == pytest.approx(2e9 / 4 + 12e9 / 4)


def _zero2(psi, gpus_per_node, nodes, offload):
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    return estimate_zero2_model_states_mem_needs(psi, gpus_per_node, nodes, cpu_offload=offload)


def _zero3(psi, largest, gpus_per_node, nodes, offload_opt, offload_param):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
        psi,
        largest,
        gpus_per_node,
        nodes,
        cpu_offload=offload_opt,
        cpu_offload_params=offload_param,
    )
    return cpu, gpu


@pytest.mark.parametrize(
    ("psi", "largest", "per_node", "nodes"),
    [
        (6_738_415_616, 131_072_000, 8, 1),
        (123_456_789, 1_234_567, 4, 3),
        (70_553_706_496, 262_144_000, 8, 16),
    ],
)
@pytest.mark.parametrize(
    ("zero", "offload_opt", "offload_param"),
    [(2, False, False), (2, True, False), (3, False, False), (3, True, False), (3, True, True)],
)
def test_deepspeed_accounting_matches_deepspeeds_estimators(
    psi, largest, per_node, nodes, zero, offload_opt, offload_param
):
    cfg = configs(zero, per_node * nodes, offload_opt=offload_opt, offload_param=offload_param)
    params, grads, optimizer, host = states_deepspeed(np.float64(psi), largest, cfg, per_node)
    if zero == 2:
        cpu, gpu = _zero2(psi, per_node, nodes, offload_opt)
    else:
        cpu, gpu = _zero3(psi, largest, per_node, nodes, offload_opt, offload_param)
    assert float((params + grads + optimizer)[0]) == gpu
    assert float(host[0]) * per_node == pytest.approx(cpu)


def test_deepspeed_accounting_has_no_figure_for_stages_0_and_1():
    for zero in (0, 1):
        _, grads, optimizer, host = states_deepspeed(np.float64(1e9), 1e6, configs(zero, 8), 8)
        assert np.isnan(grads[0]) and np.isnan(optimizer[0]) and np.isnan(host[0])


@pytest.mark.parametrize(
    ("zero", "precision", "bytes_per_param"),
    [
        # per parameter on one of N = 4 ranks, as measured with probe.py (tests/test_plan_probe.py)
        (0, "bf16", 18),  # 2 weights + 4 fp32 grads + 4 master + 8 Adam
        (0, "fp32", 16),  # 4 + 4 + 8, no master copy
        (1, "bf16", 2 + 16 / 4),
        (2, "bf16", 2 + 16 / 4),
        (2, "fp32", 4 + 16 / 4),  # DeepSpeed keeps an fp32 master partition even in fp32
        (3, "bf16", 20 / 4),  # + a bf16 gradient partition
        (3, "fp32", 24 / 4),
    ],
)
def test_llmbench_accounting_per_parameter(zero, precision, bytes_per_param):
    psi = 1_000_000.0
    params, grads, optimizer, host = states_llmbench(
        psi, configs(zero, 4, precision), largest_tensor=1000
    )
    assert float((params + grads + optimizer)[0]) == pytest.approx(bytes_per_param * psi)
    assert host[0] == 0


def test_llmbench_offload_keeps_states_on_the_host():
    psi = 1_000_000.0
    params, grads, optimizer, host = states_llmbench(
        psi, configs(3, 4, offload_opt=True, offload_param=True), 1000
    )
    assert (params[0], grads[0], optimizer[0]) == (0, 0, 0)
    # fp32 grads, master, moments, the bf16 gradient partition and the bf16 weights
    assert host[0] == pytest.approx((4 + 4 + 8 + 2 + 2) * psi / 4)


def test_zero3_gathers_and_keeps_small_tensors_whole_in_forward_and_backward():
    model = describe_model("gpt2-mini")
    psi = np.array([float(model.total_params)])
    persist = float(model.persistent_numel(100_000))
    assert 0 < persist < model.total_params
    buffers = buffer_bytes(model, psi, persist, configs(3, 4), ZeroKnobs(), resident=False)
    gathered = min(model.largest_module_params + 50_000_000, model.total_params - persist)
    assert buffers[0] == pytest.approx(2 * (500_000_000 + gathered + persist * 3 / 4))


def test_buffers_are_deepspeeds_reduce_bucket():
    model = describe_model("gpt2-tiny")
    psi = np.array([float(model.total_params)])
    knobs = ZeroKnobs()
    z2 = buffer_bytes(model, psi, 0.0, configs(2, 2), knobs, resident=False)
    assert z2[0] == 2 * 500_000_000  # bf16 bucket of reduce_bucket_size elements
    overlapped = buffer_bytes(
        model, psi, 0.0, configs(2, 2), ZeroKnobs(overlap_comm=True), resident=False
    )
    assert overlapped[0] == 2 * z2[0]
    touched = buffer_bytes(model, psi, 0.0, configs(2, 2, "fp32"), knobs, resident=True)
    assert touched[0] == 4 * model.total_params  # on CPU only the written part is resident
    assert buffer_bytes(model, psi, 0.0, configs(0, 2), knobs, resident=False)[0] == 0


def test_memory_terms_take_the_fullest_pipeline_stage():
    model = describe_model("llama-tiny")
    cfg = configs(1, 1, pp=2, seq_len=64, micro_batch=2)
    cfg = cfg.replace(grad_accum=4)
    terms = memory_terms(model, cfg)
    first = model.embedding_params + model.block_params / 2
    last = model.block_params / 2 + model.head_params + model.other_params
    chosen = first if terms.stage[0] == 0 else last
    assert terms.params[0] == pytest.approx(2 * chosen)
    assert terms.predicted[0] == pytest.approx(
        terms.model_states[0] + terms.buffers[0] + terms.activations[0] + terms.logits[0]
    )


def test_zero1_accumulation_keeps_the_whole_low_precision_gradient():
    """Measured with probe.py (4 ranks, grad_accum 2): ZeRO-1 holds 2 bytes/param of gradient."""
    model = describe_model("llama-7b")
    cfg = enumerate_configs(
        model.dims, "llama", 8, 2048, precisions=("bf16",), checkpointing=("none",),
        micro_batches=(1,), zero_offload=[(1, False, False), (2, False, False)],
    )  # fmt: skip
    flat = cfg.take((cfg.tp == 1) & (cfg.pp == 1))
    one = memory_terms(model, flat)
    two = memory_terms(model, flat.replace(grad_accum=2))
    psi = model.total_params
    z1, z2 = flat.zero == 1, flat.zero == 2
    assert one.grads[z1][0] == pytest.approx(4 * psi / 8)  # fp32 partition at the step
    assert two.grads[z1][0] == pytest.approx(2 * psi)  # whole bf16 gradient between micro-batches
    assert two.grads[z2][0] == one.grads[z2][0]  # ZeRO-2 reduces every micro-batch


def test_cpu_checkpointing_moves_every_checkpoint_to_host_memory():
    model = describe_model("llama-7b")
    cfg = enumerate_configs(
        model.dims,
        "llama",
        8,
        2048,
        precisions=("bf16",),
        checkpointing=("full",),
        micro_batches=(2,),
        zero_offload=((2, False, False),),
        cpu_checkpointing=True,
    )
    assert cfg.cpu_checkpointing.sum() * 2 == len(cfg)
    terms = memory_terms(model, cfg)
    on_host = cfg.cpu_checkpointing.astype(bool) & (cfg.tp == 1) & (cfg.pp == 1)
    on_gpu = ~cfg.cpu_checkpointing.astype(bool) & (cfg.tp == 1) & (cfg.pp == 1)
    checkpoints = 32 * 2 * 2 * 2048 * 4096  # layers × 2 bytes × micro-batch × seq × hidden
    assert terms.host_checkpoints[on_host] == pytest.approx(checkpoints)
    assert terms.host_checkpoints[on_gpu] == 0
    moved = terms.activations[on_gpu] - terms.activations[on_host]
    assert moved == pytest.approx(checkpoints)
    assert terms.host_per_gpu[on_host] - terms.host_per_gpu[on_gpu] == pytest.approx(checkpoints)


def test_dropout_masks_are_counted_only_when_dropout_is_on():
    model = describe_model("gpt2-125m")
    cfg = configs(0, 1, seq_len=1024)
    off = memory_terms(model, cfg, dropout=0.0).activations[0]
    on = memory_terms(model, cfg).activations[0]  # config: GPT-2's own 0.1
    # on a GPU with flash attention: two residual masks per layer and the embedding's,
    # one byte per element
    assert on - off == (2 * 12 + 1) * 1024 * 768
