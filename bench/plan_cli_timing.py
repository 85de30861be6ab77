"""Interleaved end-to-end timings of ``llmbench plan`` for one or more source trees.

    python bench/plan_cli_timing.py ROUNDS NAME=TREE [NAME=TREE ...]
    # e.g. before=/tmp/before (git archive <commit> llmbench | tar -x -C /tmp/before) after=.

Each round runs every command once per tree, in fresh processes, interleaved so
load from other work falls on all alike; prints wall and CPU-second medians
and the 1-minute load of each round.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "rank": ["--model", "llama-7b", "--gpu", "h100-80gb", "--gpus", "8"],
    "largest-model": ["--model", "llama-7b", "--gpu", "a100-40gb", "--gpus", "8", "--largest-model"],
    "min-gpus": ["--model", "llama-70b", "--gpu", "h100", "--min-gpus"],
}  # fmt: skip


def main(argv: list[str]) -> int:
    rounds, trees = int(argv[0]), dict(a.split("=", 1) for a in argv[1:])
    times: dict[tuple[str, str], list[tuple[float, float]]] = {
        (c, t): [] for c in COMMANDS for t in trees
    }
    loads = []
    for _ in range(rounds):
        for command, args in COMMANDS.items():
            for name, tree in trees.items():
                env = {**os.environ, "PYTHONPATH": os.path.abspath(tree), "DS_ACCELERATOR": "cpu"}
                argv_ = [sys.executable, "-m", "llmbench", "plan", "--no-calibration", *args]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run(argv_, env=env, cwd="/tmp", capture_output=True, check=True)
                wall = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                times[(command, name)].append((wall, cpu))
        loads.append(round(os.getloadavg()[0], 1))
    print("1-minute load per round:", loads)
    for (command, name), values in times.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"{command:14} {name:8} wall median {wall:5.2f} s  CPU median {cpu:5.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
