"""Case → DeepSpeed config."""

from __future__ import annotations

from llmbench.define.schema import CaseSpec
from llmbench.measure.dsconfig import deep_merge, deepspeed_config


def spec(**sections) -> CaseSpec:
    return CaseSpec.model_validate(sections)


def test_batch_settings():
    cfg = deepspeed_config(
        spec(training={"grad_accum": 2}, parallel={"world_size": 4, "tp": 2}), micro_batch=3
    )
    assert cfg["train_micro_batch_size_per_gpu"] == 3
    assert cfg["gradient_accumulation_steps"] == 2
    assert "train_batch_size" not in cfg  # DeepSpeed derives it from its own data-parallel groups
    assert cfg["tensor_parallel"] == {"autotp_size": 2}


def test_precision_and_zero_and_offload():
    cfg = deepspeed_config(
        spec(
            deepspeed={
                "zero_stage": 3,
                "precision": "fp16",
                "offload_param": "cpu",
                "offload_optimizer": "cpu",
                "overlap_comm": True,
            }
        ),
        1,
    )
    assert cfg["fp16"]["enabled"] and "bf16" not in cfg
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 3 and zero["overlap_comm"] is True
    assert zero["offload_param"]["device"] == "cpu" and zero["offload_optimizer"]["device"] == "cpu"
    assert "reduce_bucket_size" not in zero  # unset knobs keep DeepSpeed's defaults
    fp32 = deepspeed_config(spec(deepspeed={"precision": "fp32"}), 1)
    assert "fp16" not in fp32 and "bf16" not in fp32


def test_raw_config_is_merged_last():
    cfg = deepspeed_config(
        spec(
            deepspeed={
                "zero_stage": 2,
                "config": {
                    "zero_optimization": {"reduce_bucket_size": 10},
                    "gradient_clipping": 0.5,
                },
            }
        ),
        1,
    )
    assert cfg["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 10}
    assert cfg["gradient_clipping"] == 0.5


def test_deep_merge_does_not_mutate():
    base = {"a": {"b": 1}}
    merged = deep_merge(base, {"a": {"c": 2}})
    assert merged == {"a": {"b": 1, "c": 2}} and base == {"a": {"b": 1}}


def test_torch_adam_fallback_when_deepspeed_ops_cannot_be_built():
    cfg = deepspeed_config(spec(), micro_batch=1, torch_adam=True)
    assert cfg["optimizer"]["params"]["torch_adam"] is True
    assert "zero_force_ds_cpu_optimizer" not in cfg
    offload = deepspeed_config(
        spec(deepspeed={"zero_stage": 2, "offload_optimizer": "cpu"}),
        micro_batch=1,
        torch_adam=True,
    )
    assert offload["zero_force_ds_cpu_optimizer"] is False  # else DeepSpeed insists on CPU Adam
    assert "torch_adam" not in deepspeed_config(spec(), micro_batch=1)["optimizer"]["params"]
