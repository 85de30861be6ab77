"""DeepSpeed's JIT-compiled ops, built once per sweep before any case runs.

The first use of an op such as cpu_adam compiles it (about a minute on two
cores), then loads it from ``TORCH_EXTENSIONS_DIR``. Building inside the first
case would charge that minute to the case's start-up and could trip its
timeout, so the sweep builds what its cases need first and reports the build
time on its own.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from typing import Any

from llmbench.define.cases import Case


def ops_for(cases: Iterable[Case], device: str) -> list[str]:
    """Op builders the cases will load (DeepSpeed accelerator builder names)."""
    names = ["FusedAdamBuilder"]
    if device == "cpu":
        names.insert(0, "ShareMemCommBuilder")  # the CPU accelerator's collective fast path
    if any(c.spec.deepspeed.offload_optimizer != "none" for c in cases):
        names.append("CPUAdamBuilder")
    return names


def build_ops(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Load (building if needed) each op; seconds per op, or the error that stopped it."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    accel = get_accelerator()
    report: dict[str, dict[str, Any]] = {}
    for name in names:
        builder = accel.create_op_builder(name)
        if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
            report[name] = {"seconds": None, "error": "not available for this accelerator"}
            continue
        t0 = time.perf_counter()
        try:
            builder.load(verbose=False)
            report[name] = {"op": builder.NAME, "seconds": time.perf_counter() - t0, "error": None}
        except Exception as exc:  # the case that needs it will fail and say why
            report[name] = {
                "op": builder.NAME,
                "seconds": None,
                "error": f"{type(exc).__name__}: {exc}",
            }
    return report


OPTIMIZER_OPS = ("FusedAdamBuilder", "CPUAdamBuilder")
"""The ops DeepSpeed's Adam needs: FusedAdam on the device, CPU Adam under ZeRO-Offload."""


def optimizer_fallback(report: dict[str, dict[str, Any]]) -> str | None:
    """Why the sweep must use torch's AdamW instead of DeepSpeed's Adam ops, or None.

    A GPU machine without ``nvcc``/``CUDA_HOME``, or with a toolkit whose
    major version differs from torch's CUDA, cannot JIT-build FusedAdam, and
    every case would fail at ``deepspeed.initialize``. torch's AdamW
    (DeepSpeed's ``torch_adam``) runs instead; it is slower per step, so each
    result records the implementation it used (``optimizer_impl``).
    """
    failed = [
        f"{n}: {report[n]['error']}" for n in OPTIMIZER_OPS if (report.get(n) or {}).get("error")
    ]
    if not failed:
        return None
    return (
        f"DeepSpeed's Adam ops could not be built ({'; '.join(failed)}): every case uses "
        "torch's AdamW (torch_adam), recorded as optimizer_impl"
    )


def build_ops_to_file(names: list[str], path: str) -> None:
    with open(path, "w") as fh:
        json.dump(build_ops(names), fh)


if __name__ == "__main__":
    print(json.dumps(build_ops(sys.argv[1:])))
