"""Per-case overhead and sweep time of ``zero_sweep``, A/B between two commits, as a fresh clone.

Each side is exported with ``git archive`` into an empty directory (no
``__pycache__``, nothing built in the tree: what a fresh clone has) and runs
``llmbench run scenarios/zero_sweep.yaml`` through a console-script-like
launcher, sides alternating round by round. ``overhead_s`` is a case's wall
time minus its warm-up and timed steps (process start, imports not pre-loaded,
model build, ``deepspeed.initialize``, teardown). DeepSpeed's JIT ops are
built once before (shared ``TORCH_EXTENSIONS_DIR``), as the first sweep after
an install does and then reports apart.

    python bench/overhead.py --baseline 8e77a77 --rounds 2        # ~4-5 min on 2 quiet cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = """\
import sys
from llmbench.cli import main
if __name__ == "__main__":
    sys.exit(main())
"""


def export(rev: str, into: Path) -> Path:
    """``rev`` of this repository (``WORKTREE``: the working tree's tracked files) in ``into``."""
    into.mkdir(parents=True)
    if rev == "WORKTREE":
        files = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.split(b"\0")
        for name in filter(None, files):
            source = ROOT / name.decode()
            if source.is_file():
                (into / name.decode()).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, into / name.decode())
    else:
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    (into / "llmbench_cli.py").write_text(LAUNCHER)
    return into


def sweep(tree: Path, out: Path, scenario: str, sets: list[str]) -> dict:
    env = os.environ | {"PYTHONPATH": str(tree), "DS_ACCELERATOR": "cpu", "NO_COLOR": "1"}
    argv = [sys.executable, str(tree / "llmbench_cli.py"), "run", scenario, *sets]
    t0 = time.perf_counter()
    done = subprocess.run(
        [*argv, f"run.output_dir={out}"], cwd=tree, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    results = [
        json.loads(x) for p in out.glob("*/results.jsonl") for x in p.read_text().splitlines()
    ]
    if done.returncode != 0 or not results:
        sys.exit(f"sweep in {tree} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    ok = [r["metrics"] for r in results if r["status"] == "ok"]
    return {
        "sweep_wall_s": wall,
        "overhead_s": [m["overhead_s"] for m in ok],
        "init_s": [m["init_s"] for m in ok],
        "cases": len(results),
        "ok": len(ok),
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}–{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="8e77a77", help="git revision to compare with")
    parser.add_argument("--current", default="WORKTREE", help="git revision, or WORKTREE")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scenario", default="scenarios/zero_sweep.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="overhead-"))
    sides = {
        "baseline": export(args.baseline, work / "baseline"),
        "current": export(args.current, work / "current"),
    }
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    measured: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            print(
                f"round {r + 1}/{args.rounds}: {name} (load {os.getloadavg()[0]:.2f})", flush=True
            )
            measured[name].append(
                sweep(sides[name], work / f"{name}-{r}", args.scenario, args.sets)
            )
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\n{args.scenario}, {args.rounds} rounds; load (1, 5, 15 min) before {load_before}, after {load_after}"
    )
    print(
        "side | rev | overhead_s median [min–max] | init_s median [min–max] | sweep wall s per round"
    )
    for name, rounds in measured.items():
        rev = args.baseline if name == "baseline" else args.current
        overhead = [v for m in rounds for v in m["overhead_s"]]
        init = [v for m in rounds for v in m["init_s"]]
        walls = ", ".join(f"{m['sweep_wall_s']:.0f}" for m in rounds)
        print(
            f"{name} | {rev} | {spread(overhead)} | {spread(init)} | {walls} "
            f"({rounds[0]['ok']}/{rounds[0]['cases']} ok)"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
