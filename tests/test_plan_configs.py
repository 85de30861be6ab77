"""Enumerating the configurations DeepSpeed accepts, and reading them from measured cases."""

from __future__ import annotations

import numpy as np

from llmbench.define.models import resolve_dims
from llmbench.define.schema import CaseSpec
from llmbench.plan.configs import (
    CHECKPOINTING,
    PRECISIONS,
    ZERO_OFFLOAD,
    enumerate_configs,
    from_specs,
    parallel_degrees,
)

LLAMA_7B = resolve_dims("llama", "7b")


def test_every_configuration_uses_all_gpus_and_deepspeeds_rules():
    cfg = enumerate_configs(LLAMA_7B, "llama", 8, 2048)
    assert len(cfg) > 1000
    assert (cfg.world_size == 8).all()
    assert (cfg.zero[cfg.pp > 1] <= 1).all()  # pipeline only with ZeRO 0/1
    assert (LLAMA_7B.num_heads % cfg.tp == 0).all()
    assert (LLAMA_7B.num_layers % cfg.pp == 0).all()
    assert not (cfg.offload_param & (cfg.zero != 3)).any()
    assert not (cfg.offload_optimizer & (cfg.zero == 0)).any()
    combos = {
        (int(z), bool(o), bool(p))
        for z, o, p in zip(cfg.zero, cfg.offload_optimizer, cfg.offload_param, strict=True)
    }
    assert combos == set(ZERO_OFFLOAD)


def test_families_without_autotp_or_pipeline_get_none():
    assert parallel_degrees(resolve_dims("gpt2", "1.5b"), "gpt2", 8, 8) == [
        (1, 1),
        (1, 2),
        (1, 4),
        (1, 8),
    ]
    assert parallel_degrees(resolve_dims("bert", "340m"), "bert", 8, 8) == [(1, 1)]
    # tensor parallelism stays inside a node
    assert max(t for t, _ in parallel_degrees(LLAMA_7B, "llama", 16, 4)) == 4


def test_global_batch_fixes_gradient_accumulation():
    cfg = enumerate_configs(LLAMA_7B, "llama", 8, 2048, global_batch=64)
    assert (cfg.micro_batch * cfg.dp * cfg.grad_accum == 64).all()
    assert set(np.unique(cfg.micro_batch)) <= {1, 2, 4, 8, 16, 32, 64}


def test_measured_cases_become_configurations():
    spec = CaseSpec.model_validate(
        {
            "deepspeed": {
                "zero_stage": 3,
                "precision": "fp32",
                "offload_optimizer": "cpu",
                "activation_checkpointing": "full",
            },
            "parallel": {"world_size": 4},
            "training": {"seq_len": 256, "grad_accum": 2},
        }
    )
    cfg = from_specs([spec], [3])
    row = cfg.row(0)
    assert row["deepspeed.zero_stage"] == 3
    assert row["deepspeed.precision"] == "fp32" and PRECISIONS[cfg.precision[0]] == "fp32"
    assert row["deepspeed.offload_optimizer"] == "cpu"
    assert CHECKPOINTING[cfg.checkpointing[0]] == "full"
    assert (row["parallel.dp"], row["training.micro_batch"], row["training.grad_accum"]) == (
        4,
        3,
        2,
    )
    assert cfg.lp_bytes[0] == 4
    assert len(cfg.take(np.array([0, 0]))) == 2


def test_cpu_checkpointing_is_offered_beside_full_recomputation_only():
    cfg = enumerate_configs(
        resolve_dims("gpt2", "125m"), "gpt2", 1, 1024, micro_batches=(1,), cpu_checkpointing=True
    )
    on = cfg.cpu_checkpointing.astype(bool)
    assert on.any() and (cfg.checkpointing[on] == 2).all()
    assert on.sum() == (cfg.checkpointing[~on] == 2).sum()
    plain = enumerate_configs(resolve_dims("gpt2", "125m"), "gpt2", 1, 1024, micro_batches=(1,))
    assert not plain.cpu_checkpointing.any() and len(plain) == (~on).sum()
