"""Collective-communication benchmark: one collective per step, bandwidths as nccl-tests defines them.

Algorithm bandwidth is message size ÷ time. Bus bandwidth rescales it so that
every collective reads against the same hardware link speed (nccl-tests,
doc/PERFORMANCE.md): all_reduce moves 2(n−1)/n of the data per rank,
all_gather and reduce_scatter (n−1)/n, broadcast all of it once.
"""

from __future__ import annotations

from collections.abc import Callable

BUS_FACTORS: dict[str, Callable[[int], float]] = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
}
ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def bandwidths(
    op: str, size_bytes: int, world_size: int, seconds: float | None
) -> dict[str, float | None]:
    """Algorithm and bus bandwidth in GB/s (10⁹ bytes/s, as nccl-tests prints them)."""
    if not seconds:
        return {"algbw_gb_s": None, "busbw_gb_s": None}
    algbw = size_bytes / seconds / 1e9
    return {"algbw_gb_s": algbw, "busbw_gb_s": algbw * BUS_FACTORS[op](world_size)}


def collective(op: str, size_bytes: int, dtype: str, world_size: int, device) -> Callable[[], None]:
    """One call of the collective on buffers allocated once, before timing.

    Buffers hold zeros so that repeated reductions never overflow into inf/NaN
    arithmetic, which some hardware runs at a different speed.
    """
    import torch
    import torch.distributed as dist

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    elements = size_bytes // ELEMENT_BYTES[dtype]
    full = torch.zeros(elements, dtype=torch_dtype, device=device)
    shard = torch.zeros(elements // world_size, dtype=torch_dtype, device=device)
    calls: dict[str, Callable[[], None]] = {
        "all_reduce": lambda: dist.all_reduce(full),
        "all_gather": lambda: dist.all_gather_into_tensor(full, shard),
        "reduce_scatter": lambda: dist.reduce_scatter_tensor(shard, full),
        "broadcast": lambda: dist.broadcast(full, src=0),
    }
    return calls[op]
