"""DeepSpeed's JIT-compiled ops, built once per sweep before any case runs.

The first use of an op such as cpu_adam compiles it (about a minute on two
cores), then loads it from ``TORCH_EXTENSIONS_DIR``. Building inside the first
case would charge that minute to the case's start-up and could trip its
timeout, so the sweep builds what its cases need first and reports the build
time on its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmbench.define.cases import Case
from llmbench.measure.process import die_with_parent


def ops_for(cases: Iterable[Case], device: str) -> list[str]:
    """Op builders the cases will load (DeepSpeed accelerator builder names)."""
    names = ["FusedAdamBuilder"]
    if device == "cpu":
        names.insert(0, "ShareMemCommBuilder")  # the CPU accelerator's collective fast path
    if any(c.spec.deepspeed.offload_optimizer != "none" for c in cases):
        names.append("CPUAdamBuilder")
    return names


def stale_locks(root: Path) -> list[Path]:
    """torch's extension build locks under ``root`` whose owner is gone.

    torch (``FileBaton``) creates ``<root>/<op>/lock`` and holds it open while
    it builds; every other process waits, forever, until the file goes away.
    A builder killed mid-build (kill -9 of the sweep) leaves it behind, so
    each later sweep waited out its op-build timeout and then hung its first
    case. A lock no live process holds open has no owner.
    """
    locks = [p for p in root.glob("*/lock")] + [p for p in root.glob("*/*/lock")]
    if not locks:
        return []
    import psutil

    held: set[str] = set()
    for proc in psutil.process_iter():
        try:
            held.update(f.path for f in proc.open_files())
        except (psutil.Error, OSError):  # another user's process, or one that just ended
            continue
    return [lock for lock in locks if str(lock) not in held and str(lock.resolve()) not in held]


def clear_stale_locks(root: Path) -> None:
    """Remove stale build locks (see :func:`stale_locks`), one line on stderr for each."""
    for lock in stale_locks(root):
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
            print(
                f"llmbench: removed {lock}, a torch extension build lock whose owner is gone "
                "(an interrupted op build)",
                file=sys.stderr,
                flush=True,
            )


def extensions_root() -> Path:
    """Where torch builds and locks extensions: ``TORCH_EXTENSIONS_DIR`` when set.

    torch's ``get_default_build_root`` ignores the variable; builds under
    another root would then share (and wait on) one llmbench lock and never
    see their own stale torch locks.
    """
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


def build_ops(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Load (building if needed) each op; seconds per op, or the error that stopped it.

    Builders serialise on an flock of their own beside torch's locks: while
    one is held no other llmbench builds, so any torch lock no process holds
    is stale and is cleared before building.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    root = extensions_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "llmbench-build.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # released when this process ends, however it ends
        clear_stale_locks(root)
        return _load_ops(names, get_accelerator(), deepspeed.ops)


def _load_ops(names: Iterable[str], accel: Any, ops: Any) -> dict[str, dict[str, Any]]:

    report: dict[str, dict[str, Any]] = {}
    for name in names:
        builder = accel.create_op_builder(name)
        if builder is None or not ops.__compatible_ops__.get(builder.NAME, False):
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


def build_ops_in_own_group(names: list[str], path: str) -> None:
    """Body of a builder process: its own process group, so a timeout kills ninja and c++ too."""
    if os.getpgid(0) != os.getpid():
        os.setsid()
    die_with_parent()
    build_ops_to_file(names, path)


if __name__ == "__main__":
    print(json.dumps(build_ops(sys.argv[1:])))
