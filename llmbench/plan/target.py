"""The device a plan is for: a GPU from the table, or the host CPU of a measured run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from llmbench.errors import UserError, did_you_mean
from llmbench.hardware import GPUS, gpu_spec
from llmbench.plan.assumptions import Assumptions
from llmbench.plan.throughput import Links


@dataclass(frozen=True)
class Target:
    """What the models need to know about the device the configurations run on."""

    device: str
    """GPU key or ``cpu``"""
    name: str
    kind: str
    """``cuda`` (any GPU: CUDA allocator semantics) or ``cpu``"""
    memory_bytes: float | None
    peak_flops: dict[str, float] = field(default_factory=dict)
    links: Links | None = None
    gpus_per_node: int = 8
    source: str = ""
    memory_bytes_s: float = math.inf
    """HBM bandwidth (GPU datasheet)"""
    host_cores_per_node: float = 0.0
    nominal_memory_bytes: float | None = None
    """the datasheet capacity; ``memory_bytes`` is what allocations can use"""
    memory_source: str = ""
    """where ``memory_bytes`` comes from"""

    def peak(self, precision: str) -> float | None:
        return self.peak_flops.get(precision)


# Total capacity the CUDA driver leaves to a process (torch.cuda's total_memory, which
# PyTorch prints in its out-of-memory messages), where a public report states it; the
# driver keeps ECC and firmware reservations out of the nominal binary capacity.
_VISIBLE_GIB: dict[str, tuple[float, str]] = {
    key: (31.74, "PyTorch reports '31.74 GiB total capacity' on a V100 32GB "
          "(github.com/liucongg/ChatGLM-Finetuning/issues/73)")
    for key in ("v100-sxm2-32gb", "v100-pcie-32gb")
} | {
    key: (15.78, "PyTorch reports '15.78 GiB total capacity' on a V100 16GB "
          "(github.com/kchengiva/Shift-GCN/issues/34)")
    for key in ("v100-sxm2-16gb", "v100-pcie-16gb")
}  # fmt: skip


def usable_memory_bytes(key: str, nominal: float, assumptions: Assumptions) -> tuple[float, str]:
    """What allocations can use on one GPU, and where the figure comes from."""
    if key in _VISIBLE_GIB:
        gib, source = _VISIBLE_GIB[key]
        return gib * 2**30, source
    reserved = assumptions.reserved_device_bytes
    return nominal - reserved.value, f"nominal - {reserved.value / 2**30:g} GiB: {reserved.source}"


def gpu_target(name: str, assumptions: Assumptions, gpus_per_node: int = 8) -> Target:
    spec = gpu_spec(name)
    if spec is None:
        keys = [*GPUS, *(a for s in GPUS.values() for a in s.aliases)]
        raise UserError(
            f"unknown GPU {name!r}{did_you_mean(name, keys)}; known: {', '.join(GPUS)}", key="gpu"
        )
    from llmbench.plan.published import host_link_bytes_s

    usable, usable_source = usable_memory_bytes(spec.key, float(spec.memory_bytes), assumptions)
    return Target(
        device=spec.key,
        name=spec.name,
        kind="cuda",
        memory_bytes=usable,
        memory_source=usable_source,
        peak_flops=dict(spec.peak_flops),
        links=Links.for_gpu(
            spec.interconnect_bytes_s,
            assumptions,
            gpus_per_node,
            host_bytes_s=host_link_bytes_s(spec.key)[0],
        ),
        gpus_per_node=gpus_per_node,
        source=spec.source,
        memory_bytes_s=spec.memory_bandwidth_bytes_s,
        host_cores_per_node=assumptions.host_cores_per_node.value,
        nominal_memory_bytes=float(spec.memory_bytes),
    )


def cpu_target(ranks_per_host: int) -> Target:
    """The CPU of a measured run: no peak FLOP/s figure exists, communication is not modelled.

    Ranks talk through gloo over shared memory; its time is left inside the
    measured compute rate instead of being modelled.
    """
    return Target(
        device="cpu",
        name="host CPU",
        kind="cpu",
        memory_bytes=None,
        links=Links(math.inf, math.inf, math.inf, ranks_per_host),
        gpus_per_node=ranks_per_host,
        source="no peak FLOP/s is published for CPUs; compute rates come from measured runs",
    )
