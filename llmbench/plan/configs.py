"""Training configurations as parallel numpy arrays, so thousands are evaluated at once.

A configuration is what ``CaseSpec`` calls ZeRO stage, precision, offload,
activation checkpointing, tensor/pipeline/data-parallel degrees, micro-batch
and gradient accumulation. The planner enumerates them (``enumerate_configs``)
or takes them from measured cases (``from_specs``); every model in this
package then works on whole arrays, one entry per configuration.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from llmbench.define.models import FAMILIES, Dims

if TYPE_CHECKING:  # building the scenario schema costs more than planning: not at run time
    from llmbench.define.schema import CaseSpec

PRECISIONS = ("bf16", "fp16", "fp32")
CHECKPOINTING = ("none", "selective", "full")
# (zero stage, offload optimizer, offload parameters) that DeepSpeed accepts
ZERO_OFFLOAD = (
    (0, False, False),
    (1, False, False),
    (1, True, False),
    (2, False, False),
    (2, True, False),
    (3, False, False),
    (3, True, False),
    (3, True, True),
)
MICRO_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class Configs:
    """One entry per configuration; every field is a numpy array of the same length."""

    zero: np.ndarray
    precision: np.ndarray
    """index into PRECISIONS"""
    offload_optimizer: np.ndarray
    offload_param: np.ndarray
    checkpointing: np.ndarray
    """index into CHECKPOINTING: 0 none, 1 selective, 2 full"""
    tp: np.ndarray
    pp: np.ndarray
    dp: np.ndarray
    micro_batch: np.ndarray
    grad_accum: np.ndarray
    sequence_parallel: np.ndarray
    seq_len: np.ndarray
    cpu_checkpointing: np.ndarray
    """DeepSpeed's ``activation_checkpointing.cpu_checkpointing`` (with full recomputation):
    each layer's checkpointed input lives in host memory between forward and backward"""

    def __len__(self) -> int:
        return len(self.zero)

    @property
    def world_size(self) -> np.ndarray:
        return self.tp * self.pp * self.dp

    @property
    def lp_bytes(self) -> np.ndarray:
        """Bytes per element of parameters, gradients and activations (fp32 master aside)."""
        return np.where(self.precision == PRECISIONS.index("fp32"), 4, 2)

    def take(self, index: np.ndarray) -> Configs:
        return Configs(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def replace(self, **arrays: Any) -> Configs:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in arrays.items():
            values[name] = np.broadcast_to(np.asarray(value), self.zero.shape).copy()
        return Configs(**values)

    def row(self, i: int) -> dict[str, Any]:
        """Configuration ``i`` under the dotted names results use."""
        return {
            "deepspeed.zero_stage": int(self.zero[i]),
            "deepspeed.precision": PRECISIONS[self.precision[i]],
            "deepspeed.offload_optimizer": "cpu" if self.offload_optimizer[i] else "none",
            "deepspeed.offload_param": "cpu" if self.offload_param[i] else "none",
            "deepspeed.activation_checkpointing": CHECKPOINTING[self.checkpointing[i]],
            "parallel.tp": int(self.tp[i]),
            "parallel.pp": int(self.pp[i]),
            "parallel.dp": int(self.dp[i]),
            "training.micro_batch": int(self.micro_batch[i]),
            "training.grad_accum": int(self.grad_accum[i]),
            "training.seq_len": int(self.seq_len[i]),
            "deepspeed.cpu_checkpointing": bool(self.cpu_checkpointing[i]),
        }


def _columns(rows: Sequence[tuple], names: Sequence[str]) -> dict[str, np.ndarray]:
    if not rows:
        return {n: np.zeros(0, dtype=np.int64) for n in names}
    arr = np.asarray(rows, dtype=np.int64)
    return {n: arr[:, i] for i, n in enumerate(names)}


def parallel_degrees(
    dims: Dims, family: str, gpus: int, gpus_per_node: int
) -> list[tuple[int, int]]:
    """(tp, pp) pairs the family supports that divide ``gpus``.

    TP must divide the attention heads (and KV heads) and stay inside a node;
    PP must divide the layers. Families DeepSpeed cannot split get (1, 1) only.
    """
    fam = FAMILIES[family]
    tps = [
        t
        for t in (1, 2, 4, 8)
        if t == 1
        or (
            fam.autotp and t <= gpus_per_node and dims.num_heads % t == 0 and dims.kv_heads % t == 0
        )
    ]
    pps = [p for p in (1, 2, 4, 8, 16) if p == 1 or (fam.pipeline and dims.num_layers % p == 0)]
    return [(t, p) for t in tps for p in pps if gpus % (t * p) == 0]


def enumerate_configs(
    dims: Dims,
    family: str,
    gpus: int,
    seq_len: int,
    *,
    gpus_per_node: int = 8,
    precisions: Sequence[str] = ("bf16", "fp16", "fp32"),
    checkpointing: Sequence[str] = ("none", "full"),
    micro_batches: Sequence[int] = MICRO_BATCHES,
    global_batch: int | None = None,
    grad_accum: int = 1,
    zero_offload: Sequence[tuple[int, bool, bool]] = ZERO_OFFLOAD,
    cpu_checkpointing: bool = False,
) -> Configs:
    """Every configuration DeepSpeed accepts for this model on ``gpus`` GPUs.

    With ``global_batch`` (samples per optimizer step) the gradient
    accumulation follows from it and configurations that cannot reach it
    exactly are left out; otherwise ``grad_accum`` is used as given.
    Pipeline parallelism is combined with ZeRO 0/1 only (DeepSpeed's rule).
    No sequence parallelism: DeepSpeed AutoTP has none. ``cpu_checkpointing``
    adds, beside each full-recomputation configuration, the same one with its
    checkpoints in host memory (DeepSpeed's checkpointing only moves what it
    checkpoints, so only full recomputation has the option).
    """
    rows = []
    for (tp, pp), (z, off_opt, off_par), prec, ckpt, mb, on_cpu in itertools.product(
        parallel_degrees(dims, family, gpus, gpus_per_node),
        zero_offload,
        precisions,
        checkpointing,
        micro_batches,
        (False, True) if cpu_checkpointing else (False,),
    ):
        if (pp > 1 and z > 1) or (on_cpu and ckpt != "full"):
            continue
        dp = gpus // (tp * pp)
        if global_batch is not None:
            if global_batch % (mb * dp):
                continue
            ga = global_batch // (mb * dp)
        else:
            ga = grad_accum
        rows.append(
            (
                z,
                PRECISIONS.index(prec),
                off_opt,
                off_par,
                CHECKPOINTING.index(ckpt),
                tp,
                pp,
                dp,
                mb,
                ga,
                0,
                seq_len,
                on_cpu,
            )
        )
    return Configs(**_columns(rows, [f.name for f in fields(Configs)]))


def from_specs(specs: Sequence[CaseSpec], micro_batches: Sequence[int]) -> Configs:
    """The configurations of measured cases (``micro_batches``: what each case ran)."""
    rows = [
        (
            s.deepspeed.zero_stage,
            PRECISIONS.index(s.deepspeed.precision),
            s.deepspeed.offload_optimizer != "none",
            s.deepspeed.offload_param != "none",
            CHECKPOINTING.index(s.deepspeed.activation_checkpointing),
            s.parallel.tp,
            s.parallel.pp,
            s.parallel.dp,
            mb,
            s.training.grad_accum,
            0,
            s.training.seq_len,
            0,  # llmbench's own runs checkpoint with torch.utils.checkpoint, on the device
        )
        for s, mb in zip(specs, micro_batches, strict=True)
    ]
    return Configs(**_columns(rows, [f.name for f in fields(Configs)]))
