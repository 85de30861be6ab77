"""Where and with what a run ran: the provenance saved with every run.

Compare refuses (loudly) to compare runs whose fingerprints differ: a
regression across a driver or library upgrade is not a code regression.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from llmbench import __version__
from llmbench.errors import UserError
from llmbench.hardware import Accelerator
from llmbench.judge.fingerprint import TEST_SLOWDOWN, fingerprint
from llmbench.measure import slowdown

LIBRARIES = ("torch", "deepspeed", "transformers", "tokenizers", "nvidia-ml-py", "pandas", "numpy")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The llmbench checkout's commit, when llmbench runs from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
    )
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def collect(accel: Accelerator) -> dict[str, Any]:
    libs = library_versions()
    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "accelerator": accel.names[0] if accel.kind == "cuda" and accel.names else "cpu",
        "accelerator_count": accel.count,
        "accelerator_detail": accel.to_dict(),
        "driver": accel.driver,
        "cuda_driver_version": accel.cuda_driver_version,
        "llmbench": __version__,
        "llmbench_commit": git_commit(),
        **libs,
    }
    env["fingerprint"] = fingerprint(env)
    env[TEST_SLOWDOWN] = slowdown.fraction()  # test-only hook; compare warns when it is set
    return env


def torch_cuda_version() -> str | None:
    """The CUDA version torch was built with (None: a CPU build); never initialises CUDA."""
    import torch

    return torch.version.cuda


def require_cuda(accel: Accelerator, where: str = "run.device: cuda") -> None:
    """Refuse, in one line, a CUDA run this machine cannot do, instead of quietly using the CPU."""
    import torch

    if torch.version.cuda is None:
        raise UserError(
            f"CUDA was asked for, but torch {torch.__version__} is a build without CUDA "
            "(install torch's CUDA build)",
            where=where,
        )
    if accel.kind != "cuda" or not accel.count:
        raise UserError(
            f"CUDA was asked for, but no GPU is visible ({accel.nvml_error or 'NVML lists none'})",
            where=where,
        )


def nvcc_version(nvcc: str | None) -> str | None:
    """``release X.Y`` from ``nvcc --version``, or None when there is no nvcc."""
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"release (\d+\.\d+)", out.stdout)
    return match.group(1) if match else None


def op_build_outlook(
    torch_cuda: str | None, nvcc: str | None, cuda_home: str | None
) -> tuple[bool, str]:
    """Whether DeepSpeed can JIT-build FusedAdam here, and what a sweep will do either way.

    torch.utils.cpp_extension refuses to build when nvcc's major CUDA version
    differs from torch's and only warns on a minor difference.
    """
    fallback = "cases fall back to torch's AdamW (recorded as optimizer_impl; slower steps)"
    if torch_cuda is None:
        return False, "torch has no CUDA: no CUDA op can be built"
    if cuda_home is None or nvcc is None:
        missing = "nvcc" if nvcc is None else "CUDA_HOME"
        return (
            False,
            f"no {missing} (a pip-only CUDA install): FusedAdam cannot be built; {fallback}",
        )
    if nvcc.split(".")[0] != torch_cuda.split(".")[0]:
        return False, (
            f"nvcc {nvcc} and torch's CUDA {torch_cuda} differ in major version "
            f"(torch refuses to build): {fallback}"
        )
    same = nvcc.split(".")[:2] == torch_cuda.split(".")[:2]
    return True, (
        f"nvcc {nvcc} at {cuda_home} builds FusedAdam for torch's CUDA {torch_cuda}"
        + ("" if same else " (minor versions differ: torch warns, builds)")
        + "; once, cached in TORCH_EXTENSIONS_DIR"
    )


def toolkit_rows() -> list[tuple[str, str, str]]:
    """torch's CUDA build, nvcc, CUDA_HOME and what they mean for DeepSpeed's JIT ops."""
    from torch.utils.cpp_extension import CUDA_HOME

    torch_cuda = torch_cuda_version()
    nvcc_path = shutil.which("nvcc") or (
        os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None
    )
    nvcc = nvcc_version(nvcc_path if nvcc_path and os.path.exists(nvcc_path) else None)
    _, outlook = op_build_outlook(torch_cuda, nvcc, CUDA_HOME)
    return [
        ("ops", "torch CUDA build", torch_cuda or "none (CPU build)"),
        ("ops", "nvcc", f"{nvcc} ({nvcc_path})" if nvcc else "not found"),
        ("ops", "CUDA_HOME", CUDA_HOME or "not set, not found"),
        ("ops", "FusedAdam", outlook),
    ]


def measurement_report(accel: Accelerator, interval_s: float) -> list[tuple[str, str, str]]:
    """What llmbench will measure on this machine, as (section, item, value) rows.

    ``llmbench env`` prints it, like ``ds_report``, so that a missing driver or
    a GPU without a peak-FLOPs entry (MFU null) shows up before a sweep, not after.
    """
    from llmbench.hardware import lookup
    from llmbench.measure.sampling import make_samplers
    from llmbench.units import bytes_

    rows = [("accelerator", "kind", f"{accel.kind} × {accel.count}")]
    for ordinal, (name, index) in enumerate(zip(accel.names, accel.nvml_indices, strict=False)):
        spec, why = lookup(name)
        listed = f"peak-FLOPs table: {spec.key}" if spec else f"MFU null: {why}"
        memory = (
            accel.memory_total_bytes[ordinal] if ordinal < len(accel.memory_total_bytes) else None
        )
        listed += f"; NVML capacity {bytes_(memory)}" if memory else ""
        rows.append(("accelerator", f"gpu{ordinal} (NVML {index})", f"{name} — {listed}"))
    nvml = "ok" if accel.nvml_error is None else f"unavailable: {accel.nvml_error}"
    rows += [
        ("accelerator", "NVML", nvml),
        ("accelerator", "driver", accel.driver or "–"),
        ("accelerator", "CUDA driver", accel.cuda_driver_version or "–"),
        ("host", "CPU", cpu_model()),
        (
            "host",
            "cores",
            f"{psutil.cpu_count()} logical, {psutil.cpu_count(logical=False)} physical",
        ),
        ("host", "memory", bytes_(psutil.virtual_memory().total)),
    ]
    rows += [("libraries", n, v or "not installed") for n, v in library_versions().items()]
    if accel.kind == "cuda":
        rows += toolkit_rows()
    samplers = make_samplers(accel.kind, interval_s, gpus=accel.count)
    rows += [
        ("samplers", s.source, f"every {interval_s:g} s: {s.measures}") for s in samplers.samplers
    ]
    rows += [("samplers", source, f"not run: {why}") for source, why in samplers.not_run.items()]
    return rows
