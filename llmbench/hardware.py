"""Accelerator detection and the table of GPU peak FLOP/s, memory and bandwidth.

Detection goes through NVML, not torch: the parent process of a sweep never
initialises CUDA (ranks are forked from it) and stays light.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

GiB = 2**30
TFLOPS = 1e12


@dataclass(frozen=True)
class GpuSpec:
    """Dense (no sparsity) peak throughput and capacity of one GPU model."""

    key: str
    name: str
    memory_bytes: int  # as marketed; HBM capacities are binary (80 GB = 80 GiB)
    peak_flops: dict[str, float]  # dtype -> dense FLOP/s
    memory_bandwidth_bytes_s: float
    interconnect_bytes_s: float  # per-GPU peer bandwidth, both directions together, as marketed
    source: str
    nvml_names: tuple[str, ...]
    """The names NVML and torch report for it, matched exactly (see ``lookup``)."""
    aliases: tuple[str, ...] = field(default=())

    def peak(self, dtype: str) -> float | None:
        return self.peak_flops.get(dtype)


def _spec(
    key, name, mem_gib, fp32, tf32, bf16, fp16, hbm_gb_s, link_gb_s, source, names, aliases=()
) -> GpuSpec:
    flops = {"fp32": fp32, "tf32": tf32, "bf16": bf16, "fp16": fp16}
    return GpuSpec(
        key=key,
        name=name,
        memory_bytes=int(mem_gib * GiB),
        peak_flops={k: v * TFLOPS for k, v in flops.items() if v is not None},
        memory_bandwidth_bytes_s=hbm_gb_s * 1e9,
        interconnect_bytes_s=link_gb_s * 1e9,
        source=source,
        nvml_names=tuple(names.split("|")),
        aliases=tuple(aliases),
    )


_A100 = (
    "NVIDIA A100 Tensor Core GPU datasheet (2021): FP32 19.5, TF32 156, BF16/FP16 312 TFLOPS dense"
)
_H100 = "NVIDIA H100 Tensor Core GPU datasheet (2023), SXM5: FP32 67, TF32 494.7, BF16/FP16 989.4 TFLOPS dense (half the with-sparsity figures)"
_H100P = "NVIDIA H100 Tensor Core GPU datasheet (2023), PCIe: FP32 51, TF32 378, BF16/FP16 756.5 TFLOPS dense"
_H200 = "NVIDIA H200 Tensor Core GPU datasheet (2024), SXM: FP32 67, TF32 494.7, BF16/FP16 989.4 TFLOPS dense; 141 GB HBM3e at 4.8 TB/s"
_V100 = "NVIDIA V100 Tensor Core GPU datasheet (2020): SXM2 FP32 15.7 / FP16 tensor 125; PCIe FP32 14 / FP16 tensor 112 TFLOPS; no BF16 or TF32"

# Each figure below is the vendor's published dense peak; sparsity doubles are never used.
# Columns: key, name, memory GiB, FP32, TF32, BF16, FP16 TFLOP/s, HBM GB/s, peer link GB/s, source,
# the exact names NVML reports ("|" between several; the "NVIDIA "/"Tesla " prefix is optional), aliases.
# Names are exact on purpose: "NVIDIA H200 NVL" (a lower-power PCIe card) and "NVIDIA GH200 480GB"
# both contain "H200" and have other peaks, so neither gets the H200 SXM row.
_L4 = "NVIDIA L4 datasheet (2023): FP32 30.3, TF32 60, BF16/FP16 121 TFLOPS dense"
_L40S = "NVIDIA L40S datasheet (2023): FP32 91.6, TF32 183, BF16/FP16 362.05 TFLOPS dense"
_A10G = (
    "NVIDIA A10 datasheet (2021): FP32 31.2, TF32 62.5, BF16/FP16 125 TFLOPS dense; the A10G is "
    "AWS's variant of this GA102 part and NVIDIA publishes no separate figure"
)
_MI300X = (
    "AMD Instinct MI300X datasheet (2023): FP32 matrix 163.4, TF32 653.7, BF16/FP16 1307.4 TFLOPS "
    "dense; 896 GB/s Infinity Fabric"
)
# fmt: off
GPUS: dict[str, GpuSpec] = {
    s.key: s
    for s in [
        _spec("a100-sxm-40gb", "NVIDIA A100 SXM4 40GB", 40, 19.5, 156, 312, 312, 1555, 600, _A100, "A100-SXM4-40GB", ["a100-40gb"]),
        _spec("a100-sxm-80gb", "NVIDIA A100 SXM4 80GB", 80, 19.5, 156, 312, 312, 2039, 600, _A100, "A100-SXM4-80GB", ["a100-80gb", "a100"]),
        _spec("a100-pcie-40gb", "NVIDIA A100 PCIe 40GB", 40, 19.5, 156, 312, 312, 1555, 64, _A100, "A100-PCIE-40GB"),
        _spec("a100-pcie-80gb", "NVIDIA A100 PCIe 80GB", 80, 19.5, 156, 312, 312, 1935, 64, _A100, "A100 80GB PCIe"),
        _spec("h100-sxm-80gb", "NVIDIA H100 SXM5 80GB", 80, 67, 494.7, 989.4, 989.4, 3350, 900, _H100, "H100 80GB HBM3", ["h100-80gb", "h100"]),
        _spec("h100-pcie-80gb", "NVIDIA H100 PCIe 80GB", 80, 51, 378, 756.5, 756.5, 2000, 128, _H100P, "H100 PCIe", ["h100-pcie"]),
        _spec("h200-141gb", "NVIDIA H200 SXM 141GB", 141, 67, 494.7, 989.4, 989.4, 4800, 900, _H200, "H200", ["h200"]),
        _spec("l4-24gb", "NVIDIA L4", 24, 30.3, 60, 121, 121, 300, 64, _L4, "L4", ["l4"]),
        _spec("l40s-48gb", "NVIDIA L40S", 48, 91.6, 183, 362.05, 362.05, 864, 64, _L40S, "L40S", ["l40s"]),
        _spec("a10g-24gb", "NVIDIA A10G", 24, 31.2, 62.5, 125, 125, 600, 64, _A10G, "A10G", ["a10g"]),
        _spec("v100-sxm2-16gb", "NVIDIA V100 SXM2 16GB", 16, 15.7, None, None, 125, 900, 300, _V100, "V100-SXM2-16GB"),
        _spec("v100-sxm2-32gb", "NVIDIA V100 SXM2 32GB", 32, 15.7, None, None, 125, 900, 300, _V100, "V100-SXM2-32GB", ["v100"]),
        _spec("v100-pcie-16gb", "NVIDIA V100 PCIe 16GB", 16, 14, None, None, 112, 900, 32, _V100, "V100-PCIE-16GB"),
        _spec("v100-pcie-32gb", "NVIDIA V100 PCIe 32GB", 32, 14, None, None, 112, 900, 32, _V100, "V100-PCIE-32GB"),
        _spec("mi300x-192gb", "AMD Instinct MI300X", 192, 163.4, 653.7, 1307.4, 1307.4, 5300, 896, _MI300X, "AMD Instinct MI300X", ["mi300x"]),
    ]
}
# fmt: on


_VENDOR = re.compile(r"^(nvidia|tesla)\s+", re.IGNORECASE)
MIG = re.compile(r"\bMIG\b")
"""NVML names a MIG instance after its GPU plus the profile: ``… MIG 1g.10gb``."""


def _normalised(name: str) -> str:
    return _VENDOR.sub("", " ".join(name.split())).casefold()


def lookup(name: str) -> tuple[GpuSpec | None, str | None]:
    """The table row of a GPU (llmbench key, alias, or exact NVML/torch name), or why there is none.

    A MIG instance gets no row: it is a slice of its GPU with a fraction of
    its multiprocessors, and no vendor publishes that fraction's peak.
    """
    lowered = name.lower()
    for spec in GPUS.values():
        if lowered == spec.key or lowered in spec.aliases:
            return spec, None
    if MIG.search(name):
        return None, f"{name!r} is a MIG instance: no published peak for a slice of a GPU"
    wanted = _normalised(name)
    for spec in GPUS.values():
        if wanted in (_normalised(n) for n in spec.nvml_names):
            return spec, None
    return None, f"{name!r} is not in llmbench's GPU table (llmbench/hardware.py)"


def gpu_spec(name: str) -> GpuSpec | None:
    """Look a GPU up by llmbench key, alias, or the exact name NVML/torch report."""
    return lookup(name)[0]


@dataclass(frozen=True)
class Accelerator:
    """What this machine trains on, as far as the parent process can tell."""

    kind: str  # "cuda" or "cpu"
    count: int
    names: tuple[str, ...]
    nvml_indices: tuple[int, ...]
    driver: str | None
    cuda_driver_version: str | None
    nvml_error: str | None
    memory_total_bytes: tuple[int | None, ...] = ()
    """Each device's capacity as NVML reports it (memory info v2's total), not the table's."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "count": self.count,
            "names": list(self.names),
            "nvml_indices": list(self.nvml_indices),
            "driver": self.driver,
            "cuda_driver_version": self.cuda_driver_version,
            "nvml_error": self.nvml_error,
            "memory_total_bytes": list(self.memory_total_bytes),
        }


def visible_nvml_indices(nvml, count: int) -> list[int]:
    """NVML indices of the GPUs this process may use, in CUDA's order."""
    return [index for index, _ in visible_devices(nvml, count)]


def visible_devices(nvml, count: int) -> list[tuple[int, Any]]:
    """(NVML index, NVML handle) of each device this process may use, in CUDA's order.

    With ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (llmbench sets it for every rank) CUDA
    numbers devices like NVML; ``CUDA_VISIBLE_DEVICES`` then selects and
    reorders them, by index, by GPU UUID, or by MIG UUID (``MIG-<uuid>``, or
    the older ``MIG-GPU-<gpu uuid>/<gi>/<ci>``). A MIG device's handle is its
    own (its name says MIG); its index is its parent GPU's.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    if visible is None:
        return list(enumerate(handles))
    found: list[tuple[int, Any]] = []
    uuids = None
    for token in (t.strip() for t in visible.split(",")):
        if not token:
            continue
        if token.lstrip("-").isdigit():
            idx = int(token)
            if idx < 0 or idx >= count:
                break  # CUDA stops at the first invalid entry
            found.append((idx, handles[idx]))
            continue
        if uuids is None:
            uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]
        if token.startswith("MIG-"):
            mig = _mig_device(nvml, handles, uuids, token)
            if mig is None:
                break
            found.append(mig)
            continue
        match = [
            i for i, u in enumerate(uuids) if u.startswith(token) or u.startswith("GPU-" + token)
        ]
        if len(match) != 1:
            break
        found.append((match[0], handles[match[0]]))
    return found


def _mig_device(nvml, handles: list[Any], uuids: list[str], token: str) -> tuple[int, Any] | None:
    """The parent index and MIG handle a ``CUDA_VISIBLE_DEVICES`` MIG entry names."""
    if token.startswith("MIG-GPU-"):  # MIG-GPU-<gpu uuid>/<gi>/<ci> (drivers before R470)
        parent = token[len("MIG-") :].split("/")[0]
        match = [i for i, u in enumerate(uuids) if u == parent]
        return (match[0], handles[match[0]]) if len(match) == 1 else None
    for index, handle in enumerate(handles):
        try:
            slots = nvml.nvmlDeviceGetMaxMigDeviceCount(handle)
        except Exception:  # not MIG-capable, or an old binding
            continue
        for slot in range(slots):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except Exception:  # an empty slot
                continue
            if _text(nvml.nvmlDeviceGetUUID(mig)).startswith(token):
                return index, mig
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _memory_total(nvml, handle: Any) -> int | None:
    """The device's capacity from NVML (v2, else v1: both report the same total)."""
    for kwargs in ({"version": getattr(nvml, "nvmlMemory_v2", None)}, {}):
        try:
            return int(nvml.nvmlDeviceGetMemoryInfo(handle, **kwargs).total)
        except Exception:  # no v2 in this driver or binding; then v1; else unknown
            continue
    return None


def load_nvml():
    """Import and initialise pynvml; raises with the reason when it cannot."""
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def detect(prefer: str = "auto") -> Accelerator:
    """Find the GPUs NVML sees (honouring CUDA_VISIBLE_DEVICES), else the CPU."""
    error: str | None = None
    if prefer != "cpu":
        try:
            nvml = load_nvml()
            try:
                count = nvml.nvmlDeviceGetCount()
                devices = visible_devices(nvml, count)
                indices = [index for index, _ in devices]
                names = tuple(_text(nvml.nvmlDeviceGetName(h)) for _, h in devices)
                memory = tuple(_memory_total(nvml, h) for _, h in devices)
                driver = _text(nvml.nvmlSystemGetDriverVersion())
                cuda = nvml.nvmlSystemGetCudaDriverVersion_v2()
                if indices:
                    return Accelerator(
                        "cuda",
                        len(indices),
                        names,
                        tuple(indices),
                        driver,
                        f"{cuda // 1000}.{cuda % 1000 // 10}",
                        None,
                        memory,
                    )
                error = "no GPU visible (CUDA_VISIBLE_DEVICES)" if count else "NVML reports no GPU"
            finally:
                nvml.nvmlShutdown()
        except Exception as exc:  # no library, no driver, no device: all mean "no GPU here"
            error = f"{type(exc).__name__}: {exc}"
    if prefer == "cuda":
        return Accelerator("cuda", 0, (), (), None, None, error)
    return Accelerator("cpu", os.cpu_count() or 1, ("cpu",), (), None, None, error)
