"""Where and with what a run ran: the provenance saved with every run.

Compare refuses (loudly) to compare runs whose fingerprints differ: a
regression across a driver or library upgrade is not a code regression.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from llmbench import __version__
from llmbench.hardware import Accelerator
from llmbench.judge.fingerprint import fingerprint

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
    return env


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
    samplers = make_samplers(accel.kind, interval_s, gpus=accel.count)
    rows += [
        ("samplers", s.source, f"every {interval_s:g} s: {s.measures}") for s in samplers.samplers
    ]
    rows += [("samplers", source, f"not run: {why}") for source, why in samplers.not_run.items()]
    return rows
