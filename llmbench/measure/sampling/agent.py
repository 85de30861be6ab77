"""A node's sampler, for cases whose ranks run where the runner cannot watch them.

Under SLURM, or DeepSpeed's launcher on other hosts, the runner has no local
process tree to sample. Local rank 0's supervisor (llmbench/measure/launch/rank.py)
then starts this agent on its node, watching the tree under the process that
started the node's ranks (slurmstepd, DeepSpeed's launch.py). It samples until
SIGTERM or until that process is gone, and leaves ``timeline.<host>.csv`` and
``timeline.<host>.json`` (why a source gave nothing) in the shared case
directory, where the runner merges every node's file.

    python -m llmbench.measure.sampling.agent CASE_DIR --root PID --kind cuda --interval 0.1 --gpus 8
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import threading
from pathlib import Path

import pandas as pd

from llmbench.judge.timeline import load_timeline
from llmbench.measure.sampling import make_samplers, save_timeline

ENV = "LLMBENCH_NODE_SAMPLER"
"""Set by the runner for launchers that sample on the nodes: JSON {kind, interval_s, gpus}."""


def node_files(case_dir: Path, host: str) -> tuple[Path, Path]:
    return case_dir / f"timeline.{host}.csv", case_dir / f"timeline.{host}.json"


def run_agent(case_dir: Path, root: int, kind: str, interval_s: float, gpus: int | None) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    samplers = make_samplers(kind, interval_s, gpus=gpus)
    # the agent lives inside the tree it watches; it must not count itself
    samplers.ignore(os.getpid())
    samplers.start(root)
    while not stop.wait(interval_s):
        if not _alive(root):
            break
    timeline = samplers.stop()
    host = socket.gethostname()
    timeline.insert(0, "host", host)
    csv, reasons = node_files(case_dir, host)
    save_timeline(timeline, csv)
    reasons.write_text(json.dumps(samplers.unavailable))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge_node_timelines(case_dir: Path) -> tuple[pd.DataFrame | None, dict[str, str]]:
    """Every node's timeline as one frame, devices named per node when there are several.

    One node keeps the plain names (``gpu0``), so results read the same as a local
    run's; several become ``n<i>.gpu0`` in host-name order, and peaks stay per device.
    """
    files = sorted(case_dir.glob("timeline.*.csv"))
    if not files:
        return None, {}
    frames, reasons = [], {}
    for index, csv in enumerate(files):
        frame = load_timeline(csv)
        if len(files) > 1:
            frame["device"] = frame["device"].map(lambda d, i=index: f"n{i}.{d}")
        frames.append(frame)
        extra = csv.with_suffix(".json")
        if extra.exists():
            reasons.update(json.loads(extra.read_text()))
    merged = pd.concat(frames, ignore_index=True).sort_values(
        ["t", "source", "device"], kind="stable", ignore_index=True
    )
    merged["t_rel_s"] = merged["t"] - merged["t"].min()
    return merged, reasons


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="llmbench.measure.sampling.agent", description=__doc__.splitlines()[0]
    )
    parser.add_argument("case_dir", type=Path)
    parser.add_argument(
        "--root", type=int, required=True, help="pid whose process tree is the case on this node"
    )
    parser.add_argument("--kind", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--gpus", type=int, default=None)
    args = parser.parse_args(argv)
    run_agent(args.case_dir, args.root, args.kind, args.interval, args.gpus)


if __name__ == "__main__":
    main()
