"""GPU-side preflight of bench/gpu_validate.sh: what the machine says about itself, as JSON.

Read straight from NVML (nvidia-ml-py), torch and nvcc rather than through
llmbench, so that the verdict (llmbench.judge.gpu_validation) can hold
llmbench's own view (``llmbench env``, also captured here) against an
independent one. Every reading that fails is kept as ``{"error": ...}``: a
preflight never stops the validation, the verdict says what was missing.

    python3 bench/gpu_preflight.py OUT.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # any failure is a finding, not a crash
        return {"error": f"{type(exc).__name__}: {exc}"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_view() -> dict[str, Any]:
    import pynvml as nvml

    nvml.nvmlInit()
    try:
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(index)
            v1 = _try(lambda h=h: nvml.nvmlDeviceGetMemoryInfo(h))
            v2 = _try(lambda h=h: nvml.nvmlDeviceGetMemoryInfo(h, version=nvml.nvmlMemory_v2))
            devices.append(
                {
                    "index": index,
                    "name": _try(lambda h=h: _text(nvml.nvmlDeviceGetName(h))),
                    "uuid": _try(lambda h=h: _text(nvml.nvmlDeviceGetUUID(h))),
                    "memory_v1": v1
                    if isinstance(v1, dict)
                    else {"total": v1.total, "used": v1.used, "free": v1.free},
                    "memory_v2": v2
                    if isinstance(v2, dict)
                    else {
                        "total": v2.total,
                        "reserved": v2.reserved,
                        "used": v2.used,
                        "free": v2.free,
                    },
                    "enforced_power_limit_w": _try(
                        lambda h=h: nvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000
                    ),
                    "power_w": _try(lambda h=h: nvml.nvmlDeviceGetPowerUsage(h) / 1000),
                    "mig_mode": _try(lambda h=h: list(nvml.nvmlDeviceGetMigMode(h))),
                }
            )
        return {
            "driver": _try(lambda: _text(nvml.nvmlSystemGetDriverVersion())),
            "devices": devices,
        }
    finally:
        nvml.nvmlShutdown()


def torch_view() -> dict[str, Any]:
    import torch

    view: dict[str, Any] = {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "available": torch.cuda.is_available(),
    }
    if view["available"]:
        props = torch.cuda.get_device_properties(0)
        view.update(
            device_name=props.name,
            total_memory_bytes=props.total_memory,
            capability=f"{props.major}.{props.minor}",
        )
    return view


def toolkit_view() -> dict[str, Any]:
    nvcc = shutil.which("nvcc")
    version = None
    if nvcc:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30)
        version = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr
    return {"nvcc": nvcc, "nvcc_version": version, "CUDA_HOME": os.environ.get("CUDA_HOME")}


def llmbench_env() -> dict[str, Any]:
    """``llmbench env`` as a user runs it (exit code, text) and its rows as data."""
    out = subprocess.run(
        [sys.executable, "-m", "llmbench", "env", "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    view: dict[str, Any] = {"exit_code": out.returncode, "output": out.stdout + out.stderr}

    def rows() -> list[list[str]]:
        from llmbench.hardware import detect
        from llmbench.measure.environment import measurement_report

        return [list(r) for r in measurement_report(detect(), 0.1)]

    view["rows"] = _try(rows)
    return view


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    report = {
        "nvml": _try(nvml_view),
        "torch": _try(torch_view),
        "toolkit": _try(toolkit_view),
        "llmbench_env": _try(llmbench_env),
    }
    with open(sys.argv[1], "w") as fh:
        json.dump(report, fh, indent=1, default=str)
    print(json.dumps(report, indent=1, default=str)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
