"""Memory per GPU, term by term: model states, DeepSpeed buffers, activations, logits.

Model states have three accountings:

* ``llmbench`` (default): what DeepSpeed 0.19 really allocates, read from its
  ZeRO code and checked tensor by tensor with ``probe.py`` on CPU runs of
  ZeRO 0-3 on 1 and 2 ranks. Per parameter, at the optimizer step (the peak):
  mixed precision keeps 2-byte weights, fp32 gradients, an fp32 master copy
  and two fp32 Adam moments (18 bytes without ZeRO); fp32 training keeps 16.
  ZeRO-1/2 partition the fp32 gradients, master and moments; ZeRO-3 also the
  weights and a low-precision gradient partition. DeepSpeed keeps an fp32
  master copy even for fp32 training with ZeRO >= 1.
* ``paper``: Rajbhandari et al. 2020 (ZeRO), section 5: 2Ψ weights, 2Ψ
  gradients, KΨ optimizer states with K = 12 for mixed-precision Adam, divided
  by N_d as the stage partitions them; fp32 extends it with 4Ψ + 4Ψ and K = 8.
* ``deepspeed``: DeepSpeed's own estimators
  (``estimate_zero2_model_states_mem_needs``, ``estimate_zero3_...``),
  reproduced; they exist for ZeRO-2 and ZeRO-3 only.

Buffers are DeepSpeed's real ones in every accounting: ZeRO-1/2 allocate a
``reduce_bucket_size`` gradient bucket (two with ``overlap_comm``) at each
backward; ZeRO-3 keeps one and gathers parameters up to the prefetch bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from llmbench.plan import activations
from llmbench.plan.configs import Configs
from llmbench.plan.describe import ModelDescription

if TYPE_CHECKING:  # building the scenario schema costs more than planning: not at run time
    from llmbench.define.schema import DeepSpeedSpec

ACCOUNTINGS = ("llmbench", "deepspeed", "paper")
_ESTIMATOR_BUFFER_FACTOR = 1.5  # DeepSpeed's additional_buffer_factor default


@dataclass(frozen=True)
class ZeroKnobs:
    """DeepSpeed's ZeRO settings that size buffers; defaults are DeepSpeed 0.19's."""

    reduce_bucket_size: int = 500_000_000
    prefetch_bucket_size: int = 50_000_000
    max_live_parameters: int = 1_000_000_000
    param_persistence_threshold: int = 100_000
    overlap_comm: bool | None = None
    """None: DeepSpeed's default, on for ZeRO-3 only."""
    contiguous_gradients: bool = True

    @classmethod
    def from_spec(cls, ds: DeepSpeedSpec) -> ZeroKnobs:
        given = {
            "reduce_bucket_size": ds.reduce_bucket_size,
            "prefetch_bucket_size": ds.stage3_prefetch_bucket_size,
            "max_live_parameters": ds.stage3_max_live_parameters,
            "param_persistence_threshold": ds.stage3_param_persistence_threshold,
            "overlap_comm": ds.overlap_comm,
            "contiguous_gradients": ds.contiguous_gradients,
        }
        return cls(**{k: v for k, v in given.items() if v is not None})

    def overlap(self, zero: np.ndarray) -> np.ndarray:
        if self.overlap_comm is None:
            return zero == 3
        return np.full(zero.shape, self.overlap_comm)


TERMS = ("params", "grads", "optimizer", "buffers", "activations", "logits")


@dataclass(frozen=True)
class MemoryTerms:
    """Bytes per GPU of the fullest pipeline stage, one entry per configuration."""

    params: np.ndarray
    grads: np.ndarray
    optimizer: np.ndarray
    buffers: np.ndarray
    activations: np.ndarray
    logits: np.ndarray
    """embeddings' masks aside: final norm, head input, logits and the loss"""
    host_per_gpu: np.ndarray
    """host memory that offload needs per GPU (0 without offload), checkpoints included"""
    host_checkpoints: np.ndarray
    """of which activation checkpoints kept in host memory (``cpu_checkpointing``)"""
    stage: np.ndarray
    """0: the first pipeline stage is the fullest, 1: the last"""

    @property
    def model_states(self) -> np.ndarray:
        return self.params + self.grads + self.optimizer

    @property
    def predicted(self) -> np.ndarray:
        """Everything itemised: what the allocator should peak at, before overhead."""
        return self.model_states + self.buffers + self.activations + self.logits

    def as_columns(self) -> dict[str, np.ndarray]:
        return {f"{t}_bytes": getattr(self, t) for t in TERMS} | {
            "model_states_bytes": self.model_states,
            "host_offload_bytes_per_gpu": self.host_per_gpu,
            "host_checkpoint_bytes_per_gpu": self.host_checkpoints,
        }


def _select(first: MemoryTerms, last: MemoryTerms) -> MemoryTerms:
    pick_last = last.predicted > first.predicted
    values = {
        f.name: np.where(pick_last, getattr(last, f.name), getattr(first, f.name))
        for f in fields(MemoryTerms)
        if f.name != "stage"
    }
    return MemoryTerms(**values, stage=pick_last.astype(np.int8))


def stage_params(model: ModelDescription, cfg: Configs, last: bool) -> np.ndarray:
    """Parameters one GPU of a pipeline stage holds before ZeRO partitioning.

    Blocks are split evenly over stages and over tensor-parallel ranks;
    embeddings and head are not split by AutoTP. A head tied to the embedding
    lives on both end stages, as in DeepSpeed's PipelineModule.
    """
    blocks = model.block_params / cfg.pp / cfg.tp
    tail = model.head_params + model.other_params
    single = cfg.pp == 1
    if last:
        tied = model.counts.head_tied and model.embedding_params
        return blocks + tail + np.where(single | bool(tied), model.embedding_params, 0)
    return blocks + model.embedding_params + np.where(single, tail, 0)


def states_llmbench(psi, cfg: Configs, largest_tensor: int):
    """(params, grads, optimizer, host) bytes per GPU as DeepSpeed 0.19 allocates them."""
    n, z, lp = cfg.dp, cfg.zero, cfg.lp_bytes
    mixed = lp == 2
    z3 = z == 3
    partitioned = np.where(z >= 1, n, 1)
    params = np.where(z3, lp * psi / n, lp * psi)
    lp_grad_partition = np.where(z3, lp * psi / n, 0)
    fp32_grads = np.where(z == 0, 4 * psi, 4 * psi / n)
    master = np.where(z == 0, np.where(mixed, 4 * psi, 0), 4 * psi / n)
    moments = 8 * psi / partitioned
    off_opt, off_par = cfg.offload_optimizer.astype(bool), cfg.offload_param.astype(bool)
    # Offloading the optimizer moves the gradient partition to the host too:
    # ZeRO-3 allocates its low-precision one there (stage3.py, self.device is
    # the CPU); ZeRO-1/2 pin a low-precision copy of the partition and a
    # low-precision staging buffer of the largest tensor (stage_1_and_2.py).
    # Measured with probe.py (offload on CPU, where host and device are one
    # memory): the totals of ZeRO-2 and of ZeRO-3 with both offloads agree to
    # the byte at the optimizer step.
    staging = np.where(z3, lp_grad_partition, lp * psi / n + lp * largest_tensor)
    host = np.where(off_opt, fp32_grads + master + moments + staging, 0)
    host = host + np.where(off_par, lp * psi / n, 0)
    params = np.where(off_par, 0, params)
    grads = np.where(off_opt, 0, lp_grad_partition + fp32_grads)
    # ZeRO-1 reduces only at the accumulation boundary: between micro-batches every
    # rank keeps the whole low-precision gradient (probe.py, 4 ranks, grad_accum 2:
    # 2 bytes per parameter mid-accumulation against 4/N at the step). ZeRO-2
    # reduces every micro-batch and keeps only its partition.
    accumulating = (z == 1) & (cfg.grad_accum > 1)
    grads = np.where(accumulating, np.maximum(grads, lp * psi), grads)
    optimizer = np.where(off_opt, 0, master + moments)
    return params, grads, optimizer, host


def states_paper(psi, cfg: Configs):
    """ZeRO paper accounting (Rajbhandari et al. 2020, section 5; ZeRO-Offload, Ren et al. 2021)."""
    n, z, lp = cfg.dp, cfg.zero, cfg.lp_bytes
    k = np.where(lp == 2, 12, 8)
    params = lp * psi / np.where(z == 3, n, 1)
    grads = lp * psi / np.where(z >= 2, n, 1)
    optimizer = k * psi / np.where(z >= 1, n, 1)
    off_opt, off_par = cfg.offload_optimizer.astype(bool), cfg.offload_param.astype(bool)
    host = np.where(off_opt, grads + optimizer, 0) + np.where(off_par, params, 0)
    return (
        np.where(off_par, 0, params),
        np.where(off_opt, 0, grads),
        np.where(off_opt, 0, optimizer),
        host,
    )


def states_deepspeed(psi, largest_module: int, cfg: Configs, gpus_per_node: int):
    """DeepSpeed's estimators, term by term; NaN for ZeRO 0/1, which they do not cover.

    The device total equals ``estimate_zero2_model_states_mem_needs`` /
    ``estimate_zero3_model_states_mem_needs`` (with N = the data-parallel
    degree); the split follows their comments: 2 bytes of fp16 weights,
    4 × the largest layer gathered (ZeRO-3), 2 + 4 bytes of gradients and
    4 + 8 of master weights and moments per partitioned parameter. Their host
    figure is per node and is returned divided by the node's GPUs.
    """
    n, z = cfg.dp, cfg.zero
    off_opt, off_par = cfg.offload_optimizer.astype(bool), cfg.offload_param.astype(bool)
    world = cfg.world_size
    per_node = np.minimum(world, gpus_per_node)
    nodes = np.ceil(world / gpus_per_node)
    psi_int = np.floor(psi)
    largest = 4 * largest_module
    z2_total = np.where(off_opt, 2 * psi_int, 2 * psi_int + np.floor(18 * psi_int / n))
    z3_total = np.where(
        off_par,
        largest,
        np.where(
            off_opt, largest + np.floor(2 * psi_int / n), largest + np.floor(18 * psi_int / n)
        ),
    )
    total = np.where(z == 2, z2_total, np.where(z == 3, z3_total, np.nan))
    params = np.where(
        z == 2,
        2 * psi_int,
        np.where(off_par, largest, np.where(off_opt, z3_total, largest)),
    )
    grads = np.where(off_opt, 0, 6 * psi_int / n)
    grads = np.where(z >= 2, grads, np.nan)
    optimizer = total - params - grads
    f = _ESTIMATOR_BUFFER_FACTOR
    z2_host = np.where(off_opt, psi_int * np.maximum(4 * world, 16) * f, psi_int * 4 * per_node * f)
    z3_host = np.where(
        off_par,
        psi_int * 18 / nodes * f,
        np.where(off_opt, psi_int * 16 / nodes * f, largest_module * 4 * per_node * f),
    )
    host = np.where(z == 2, z2_host, np.where(z == 3, z3_host, np.nan)) / per_node
    return params, grads, optimizer, host


def buffer_bytes(
    model: ModelDescription, psi, persist, cfg: Configs, knobs: ZeroKnobs, resident: bool
):
    """DeepSpeed's communication buffers alive at the memory peak.

    ZeRO-3 also holds, during forward and backward, the parameters it has
    gathered (the module running plus the prefetch bucket, at most
    ``max_live_parameters``) and whole copies of the small tensors it never
    partitions (``param_persistence_threshold``); at the optimizer step those
    are released again, so they are counted here rather than as model states.

    ``resident``: count only the bytes a process touches (host RSS on CPU
    runs), not what it allocates: a bucket larger than the gradients is only
    partly written.
    """
    z, lp = cfg.zero, cfg.lp_bytes
    bucket = np.full(len(cfg), float(knobs.reduce_bucket_size))
    if resident:
        bucket = np.minimum(bucket, psi)
    buckets = np.where(knobs.overlap(z) & (z < 3), 2, 1)
    z12 = np.where(knobs.contiguous_gradients, lp * bucket * buckets, 0)
    z12 = z12 + np.where(cfg.offload_optimizer.astype(bool), lp * model.tensor_numels[0], 0)
    gathered = np.minimum(
        knobs.max_live_parameters,
        np.minimum(model.largest_module_params + knobs.prefetch_bucket_size, psi - persist),
    )
    z3 = lp * (bucket + gathered + persist * (1 - 1 / cfg.dp))
    return np.where(z == 0, 0, np.where(z == 3, z3, z12))


def memory_terms(
    model: ModelDescription,
    cfg: Configs,
    *,
    accounting: str = "llmbench",
    knobs: ZeroKnobs | None = None,
    attention: str = "sdpa",
    device: str = "cuda",
    gpus_per_node: int = 8,
    resident: bool = False,
    dropout: float | str = "config",
    recipe: activations.Recipe | None = None,
) -> MemoryTerms:
    """Every memory term per GPU for every configuration (fullest pipeline stage).

    The ``paper`` accounting takes its activations from the paper too:
    Korthikanti et al.'s count, without flash attention. ``dropout``: the
    case's ``model.dropout`` (``config``: the architecture's own probability).
    ``recipe``: what one layer saves, when the model is not the one
    transformers builds for the family (a published Megatron-LM run).
    """
    knobs = knobs or ZeroKnobs()
    p_drop = activations.dropout_probability(model.family, dropout)
    recipe = recipe or activations.RECIPES[model.family]
    if accounting == "paper":
        recipe, attention = activations.PAPER, "eager"
    act_bytes = cfg.lp_bytes
    stages = []
    for last in (False, True):
        psi = stage_params(model, cfg, last)
        persist = model.persistent_numel(knobs.param_persistence_threshold) / cfg.pp / cfg.tp
        persist = np.minimum(persist, psi)
        if accounting == "llmbench":
            params, grads, optimizer, host = states_llmbench(psi, cfg, model.tensor_numels[0])
        elif accounting == "paper":
            params, grads, optimizer, host = states_paper(psi, cfg)
        elif accounting == "deepspeed":
            params, grads, optimizer, host = states_deepspeed(
                psi, model.largest_module_params, cfg, gpus_per_node
            )
        else:
            raise ValueError(f"unknown accounting {accounting!r}")
        single = cfg.pp == 1
        in_flight = 1 if last else np.minimum(cfg.pp, cfg.grad_accum)
        acts = activations.block_activation_bytes(
            recipe,
            attention,
            model.dims,
            cfg.seq_len,
            cfg.micro_batch,
            act_bytes,
            cfg.tp,
            model.dims.num_layers / cfg.pp,
            in_flight,
            cfg.sequence_parallel.astype(bool),
            cfg.checkpointing,
            device,
            single | (not last),
            p_drop,
            cfg.cpu_checkpointing,
        )
        host_ckpt = activations.host_checkpoint_bytes(
            model.dims,
            cfg.seq_len,
            cfg.micro_batch,
            act_bytes,
            cfg.tp,
            model.dims.num_layers / cfg.pp,
            in_flight,
            cfg.sequence_parallel.astype(bool),
            cfg.checkpointing,
            cfg.cpu_checkpointing,
        )
        logits = activations.logits_loss_bytes(
            recipe, model.dims, model.task, cfg.seq_len, cfg.micro_batch, act_bytes
        )
        stages.append(
            MemoryTerms(
                params=params,
                grads=grads,
                optimizer=optimizer,
                buffers=buffer_bytes(model, psi, persist, cfg, knobs, resident),
                activations=acts,
                logits=np.where(single | last, logits, 0),
                host_per_gpu=host + host_ckpt,
                host_checkpoints=host_ckpt,
                stage=np.full(len(cfg), int(last), dtype=np.int8),
            )
        )
    return _select(*stages)
