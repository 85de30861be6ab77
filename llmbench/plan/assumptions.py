"""Every figure the planner assumes rather than measures, with where it comes from.

Each is printed beside the results it shaped, and each is replaced by a
measured value when the history holds runs that can calibrate it
(``calibrate.py``). None is a measurement made by llmbench.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

GiB = 2**30


@dataclass(frozen=True)
class Assumption:
    value: float
    source: str


@dataclass(frozen=True)
class Assumptions:
    compute_efficiency: Assumption = Assumption(
        0.40,
        "sustained fraction of dense peak FLOP/s while computing; assumed 0.40, below "
        "Megatron-LM's 52 % of peak at 1T parameters on A100s (Narayanan et al. 2021) and "
        "PaLM's 46.2 % MFU / 57.8 % HFU (Chowdhery et al. 2022), because transformers "
        "models under DeepSpeed lack Megatron's fused kernels",
    )
    link_efficiency: Assumption = Assumption(
        0.70,
        "achieved fraction of the per-direction link bandwidth in NCCL collectives; "
        "assumed, not measured - pass your nccl-tests bus bandwidth ratio",
    )
    inter_node_bytes_s: Assumption = Assumption(
        50e9,
        "per-GPU network bandwidth between nodes, one 400 Gb/s NIC per GPU as in "
        "NVIDIA DGX H100 (50 GB/s per direction)",
    )
    host_link_bytes_s: Assumption = Assumption(
        25e9,
        "GPU-host copy bandwidth for offload: ~80 % of PCIe 4.0 x16's 31.5 GB/s per "
        "direction (PCI-SIG); assumed",
    )
    cpu_adam_params_per_s: Assumption = Assumption(
        1.4e9,
        "parameters per second DeepSpeed's CPU Adam updates per GPU: memory-bound at "
        "~28 bytes read+written per parameter over an assumed 40 GB/s of host memory "
        "bandwidth per GPU (a 2-socket server's ~320 GB/s shared by 8 GPUs); assumed",
    )
    fixed_overhead_bytes: Assumption = Assumption(
        1.0 * GiB,
        "device memory outside PyTorch's allocator (CUDA context, NCCL communicator "
        "buffers, allocator reserve); assumed 1 GiB until runs with "
        "device_memory_used_peak_bytes calibrate it",
    )
    allocator_margin: Assumption = Assumption(
        0.10,
        "allocator peak above the itemised prediction (fragmentation, temporaries of the "
        "optimizer step and collectives); assumed 10 % until runs with "
        "allocator_peak_bytes calibrate it",
    )
    host_memory_bytes_per_node: Assumption = Assumption(
        2e12,
        "host memory per node that offload may use: NVIDIA DGX H100's 2 TB of system memory "
        "for 8 GPUs; assumed",
    )
    tokens_per_param: Assumption = Assumption(
        20.0,
        "compute-optimal training tokens per parameter, Hoffmann et al. 2022 (Chinchilla)",
    )

    def with_values(self, **values: float | None) -> Assumptions:
        """Override values given by the user; their source says so."""
        changed = {
            name: Assumption(float(v), "given on the command line")
            for name, v in values.items()
            if v is not None
        }
        return replace(self, **changed)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            f.name: {"value": getattr(self, f.name).value, "source": getattr(self, f.name).source}
            for f in fields(self)
        }
