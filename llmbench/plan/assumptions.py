"""Every figure the planner assumes rather than measures, with where it comes from.

Each is printed beside the results it shaped, and each is replaced by a
measured value when the history holds runs that can calibrate it
(``calibrate.py``). None is a measurement made by llmbench.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from llmbench.plan.fitted import FIT_SOURCE, FITTED

GiB = 2**30


@dataclass(frozen=True)
class Assumption:
    value: float
    source: str


@dataclass(frozen=True)
class Assumptions:
    compute_efficiency: Assumption = Assumption(
        FITTED["matmul_fraction.a100"],
        "achievable fraction of dense peak FLOP/s in the model's matmuls; by default the "
        "fitted figure of the GPU's generation (llmbench.plan.published.matmul_fraction), "
        "replaced by --efficiency or by measured runs on the GPU",
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
    intra_node_latency_s: Assumption = Assumption(
        8e-6,
        "latency of one step of an NCCL collective inside a node (NVLink); assumed, of the "
        "order of nccl-tests' small-message times",
    )
    inter_node_latency_s: Assumption = Assumption(
        20e-6,
        "latency of one step of an NCCL collective between nodes (InfiniBand/RoCE); assumed, "
        "of the order of nccl-tests' small-message times across nodes",
    )
    elementwise_tensors: Assumption = Assumption(
        FITTED["elementwise_tensors"],
        "hidden-sized tensors read or written per token and layer (norms, residuals, "
        "activation functions), forward and backward, over HBM; " + FIT_SOURCE,
    )
    launch_s_per_layer: Assumption = Assumption(
        FITTED["launch_s_per_layer"],
        "host time per layer and pass that no GPU work hides (kernel launches); " + FIT_SOURCE,
    )
    optimizer_bytes_per_param: Assumption = Assumption(
        32.0,
        "HBM bytes Adam moves per parameter of the local partition: reads fp32 gradient, "
        "master, two moments (16), writes master and moments (12) and the 16-bit copy, "
        "rounded up to 32 for the flattening copies; memory-bound",
    )
    zero3_hook_s: Assumption = Assumption(
        50e-6,
        "host time DeepSpeed ZeRO-3 spends per parametrised submodule and pass in its "
        "fetch/release hooks (Python, partition bookkeeping, stream syncs); assumed - "
        "measure with a ZeRO-3 run to calibrate",
    )
    overlap_contention: Assumption = Assumption(
        0.2,
        "fraction of overlapped collective time that still slows compute: NCCL kernels "
        "occupy SMs and HBM bandwidth beside the GEMMs; assumed",
    )
    cpu_adam_params_per_s_per_core: Assumption = Assumption(
        8e7,
        "parameters per second one host core updates with DeepSpeed's CPU Adam (AVX); "
        "assumed, of the order of ZeRO-Offload's reported CPU-Adam step times (Ren et al. "
        "2021, section 5: a few seconds for 10B parameters on a 48-core DGX-2 host)",
    )
    host_cores_per_node: Assumption = Assumption(
        112.0,
        "host CPU cores per node that CPU Adam may use: NVIDIA DGX H100, 2 x 56-core Xeon "
        "Platinum 8480C",
    )
    reserved_device_bytes: Assumption = Assumption(
        0.75 * GiB,
        "nominal GPU memory the CUDA driver keeps (ECC, firmware): an 80 GB H100 shows "
        "~79.2 GiB total to cudaMemGetInfo; assumed 0.75 GiB for GPUs without a "
        "reported figure (plan/target.py lists those with one)",
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
