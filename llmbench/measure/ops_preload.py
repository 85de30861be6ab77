"""Builds and loads the sweep's DeepSpeed ops when the fork server imports this module.

Loading an op, even one already built, costs a process about a second on two
CPU cores: DeepSpeed's JIT loader probes the CPU and the toolchain with some
fifteen subprocesses (``lscpu``, ``dmesg``, two ``python -m cpuinfo``
interpreters, ``c++``, three ``ninja`` runs) before it imports the ``.so``. Every
rank of every case paid it twice (``fused_adam`` in ``deepspeed.initialize``,
``deepspeed_shm_comm`` in ``init_distributed``), which was most of a case's
``init_s``. DeepSpeed keeps loaded ops in a process-wide cache, so loading them
once in the fork server, before it forks anything, lets every rank inherit them.

The fork server's only hook is its list of modules to import, hence the work
on import; it happens only when the launcher put a request in ``OPS_ENV``.
"""

from __future__ import annotations

import json
import os
import sys

from llmbench.measure.ops import build_ops_to_file

OPS_ENV = "LLMBENCH_FORK_SERVER_OPS"
"""JSON ``{"names": [builder names], "report": path, "preload": [modules]}``: what to load,
where to say how it went, and the server's other imports (to say which failed)."""


def _load_requested() -> None:
    request = os.environ.get(OPS_ENV)
    if request:
        wanted = json.loads(request)
        build_ops_to_file(wanted["names"], wanted["report"])
        _say_what_was_not_preloaded(wanted.get("preload", []))


def _say_what_was_not_preloaded(preload: list[str]) -> None:
    """The fork server skips a preload module that fails to import without a word; say it.

    Every case would pay that import again (seconds for DeepSpeed's lazily imported
    optimizer modules), which is how a per-case overhead silently doubles.
    """
    missing = [m for m in preload if m != "__main__" and m not in sys.modules]
    if missing:
        print(
            f"llmbench: the fork server could not import {', '.join(missing)}; every case imports them again",
            file=sys.stderr,
        )


_load_requested()
