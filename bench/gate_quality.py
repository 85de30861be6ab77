"""How good is the regression gate on this machine? False alarms and detection power.

Rerunnable benchmark (not a unit test; it takes tens of minutes):

    DS_ACCELERATOR=cpu python bench/gate_quality.py collect reports/gate
    python bench/gate_quality.py evaluate reports/gate --fewer 3 --fewer 5

What repeats buy: ``bench/gate.yaml`` runs 8, and ``evaluate --fewer 3 --fewer 5``
judges the same runs as if made with only their first 3 and 5 repeats as well.
``--set KEY=VALUE`` and ``--env NAME=VALUE`` on ``collect`` apply to every run
(e.g. ``--set run.start_method=spawn``).

``collect`` runs ``bench/gate.yaml`` back to back, one ``llmbench run`` after
another, unchanged code every time except for two kinds of deliberate
slowdown interleaved among the unchanged runs (so both see the same load):

* ``threads1``: a real slowdown, one core instead of two
  (``run.threads_per_rank=1``);
* ``injected``: ``LLMBENCH_TEST_SLOWDOWN=0.1``, the test-only hook that makes
  every timed step sleep 0.1 × its own time (llmbench/measure/slowdown.py;
  the run's env.json records it and compare warns about it).

Every run (all kinds alike) gets ``OMP_WAIT_POLICY=PASSIVE``: on a machine
shared with other work, OpenMP threads that spin while they wait for each
other turn a 2-thread step into a scheduler lottery. Measured here under a
1-minute load average of 15-20 on 2 cores: tiny GPT-2 steps of ~2.5 s with
spinning threads against ~0.1 s passive, and "one core instead of two" ran
14× *faster* than two spinning threads — a benchmark of the OS scheduler,
not of the code. Each run's kind, its directory, the settings above and the
machine's load average before and after are appended to ``plan.jsonl``. ``evaluate`` then judges, with
llmbench's own compare:

* every unchanged run against the unchanged run before it, with the unchanged
  runs before that as its history (what ``run --compare-to latest`` does each
  night) — any exit 1 is a false alarm;
* every slowed run the same way — exit 1 with a regression on the step-time
  metrics is a detection.

It prints a table per comparison and the totals (also as JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmbench.judge.runs import Run

SCENARIO = Path(__file__).with_name("gate.yaml")
LLMBENCH_RUN = (sys.executable, "-m", "llmbench", "run")
SHARED = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Environment of every run (see the module docstring)."""
KINDS = {
    "unchanged": ([], {}),
    "threads1": (["run.threads_per_rank=1"], {}),
    "injected": ([], {"LLMBENCH_TEST_SLOWDOWN": "0.1"}),
}


def schedule(unchanged: int, slowed: int, warm: int) -> list[str]:
    """``warm`` unchanged runs first (a history), then each slowed run after two unchanged ones."""
    order = ["unchanged"] * min(warm, unchanged)
    left = unchanged - len(order)
    slow = ["threads1", "injected"] * slowed
    for kind in slow:
        take = min(2, left)
        order += ["unchanged"] * take + [kind]
        left -= take
    return order + ["unchanged"] * left


def collect(
    out: Path,
    unchanged: int,
    slowed: int,
    warm: int,
    sets: Sequence[str] = (),
    extra_env: dict[str, str] | None = None,
) -> None:
    """Run the schedule; ``sets`` (llmbench overrides) and ``extra_env`` apply to every run."""
    out.mkdir(parents=True, exist_ok=True)
    plan = out / "plan.jsonl"
    done = len(plan.read_text().splitlines()) if plan.exists() else 0
    order = schedule(unchanged, slowed, warm)
    for index, kind in enumerate(order[done:], start=done):
        overrides, env = KINDS[kind]
        load_before = os.getloadavg()
        runs_root = out / "runs"
        before = set(runs_root.iterdir()) if runs_root.exists() else set()
        started = time.monotonic()
        shared = {**SHARED, **(extra_env or {})}
        proc = subprocess.run(
            [*LLMBENCH_RUN, str(SCENARIO), *sets, *overrides, "--output-dir", str(out / "runs")],
            env={**os.environ, **shared, **env},
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - started
        new = sorted(set(runs_root.iterdir()) - before) if runs_root.exists() else []
        entry = {
            "index": index,
            "kind": kind,
            "run_dir": str(new[0]) if len(new) == 1 else None,
            "exit_code": proc.returncode,
            "env": {**shared, **env},
            "sets": [*sets, *overrides],
            "wall_s": round(wall, 1),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        }
        with plan.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
        print(json.dumps(entry), flush=True)


# --------------------------------------------------------------------------- evaluate

MODES = {
    "repeats+history": (None, True),
    "repeats only": (None, False),
    "1 repeat+history": (1, True),
}
"""Gate variants judged on the same runs: (repeats kept per run, use the history)."""
DETECTED = {"tokens_per_s", "step_time_s_median"}


def _trimmed(run: Run, repeats: int | None) -> Run:
    """The run as if it had been made with only its first ``repeats`` repeats."""
    if repeats is None:
        return run
    return replace(run, results=[r for r in run.results if r.repeat < repeats])


def evaluate(out: Path, fewer: Sequence[int] = ()) -> dict[str, Any]:
    """Judge the collected runs in every mode of MODES, plus "N repeats+history" for
    each N in ``fewer`` (the runs as if made with their first N repeats only)."""
    modes = {**MODES, **{f"{n} repeats+history": (n, True) for n in fewer}}
    # imported here: ``collect`` only drives ``llmbench run`` and may use another checkout
    from llmbench.judge.compare import compare_runs
    from llmbench.judge.report.verdicts import band_text
    from llmbench.judge.runs import read_run

    entries = [json.loads(line) for line in (out / "plan.jsonl").read_text().splitlines()]
    # by name under OUT/runs: the folder may have been moved since it was collected
    runs = {
        e["run_dir"]: read_run(out / "runs" / Path(e["run_dir"]).name)
        for e in entries
        if e["run_dir"]
    }
    rows = []
    for mode, (repeats, use_history) in modes.items():
        earlier: list[Run] = []
        for entry in entries:
            run = runs.get(entry["run_dir"])
            if run is None or entry["exit_code"] != 0:
                continue
            if earlier:
                current = _trimmed(run, repeats)
                history = [_trimmed(r, repeats) for r in earlier] if use_history else []
                comparison = compare_runs(_trimmed(earlier[-1], repeats), current, history=history)
                judged = [v for v in comparison.verdicts if v.metric in DETECTED]
                step = next((v for v in judged if v.metric == "step_time_s_median"), None)
                rows.append(
                    {
                        "mode": mode,
                        "index": entry["index"],
                        "kind": entry["kind"],
                        "exit_code": comparison.exit_code,
                        "regressions": [
                            v.metric for v in comparison.verdicts if v.verdict == "regression"
                        ],
                        "step_time_change": step.change_rel if step else None,
                        "band": band_text(step) if step else "",
                        "load": entry["load_before"][0],
                    }
                )
            if entry["kind"] == "unchanged":
                earlier.append(run)
    summary: dict[str, Any] = {}
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        unchanged = [r for r in mine if r["kind"] == "unchanged"]
        summary[mode] = {
            "false_alarms": sum(r["exit_code"] == 1 for r in unchanged),
            "comparisons": len(unchanged),
            **{
                kind: {
                    "caught": sum(DETECTED & set(r["regressions"]) != set() for r in slowed),
                    "runs": len(slowed),
                }
                for kind in ("threads1", "injected")
                if (slowed := [r for r in mine if r["kind"] == kind])
            },
        }
    walls = [e["wall_s"] for e in entries if e["kind"] == "unchanged"]
    loads = [e["load_before"][0] for e in entries]
    summary["wall_s_per_run_median"] = statistics.median(walls) if walls else None
    summary["load_1min_range"] = [min(loads), max(loads)] if loads else None
    return {"rows": rows, "summary": summary}


def _print(result: dict[str, Any]) -> None:
    print(
        f"{'mode':18} {'run':>4} {'kind':10} {'exit':>4} {'step time':>10}  noise band (step time)"
    )
    for r in result["rows"]:
        change = "" if r["step_time_change"] is None else f"{r['step_time_change'] * 100:+.1f} %"
        print(
            f"{r['mode']:18} {r['index']:>4} {r['kind']:10} {r['exit_code']:>4} {change:>10}  "
            f"{r['band']}  load {r['load']:.1f}"
        )
    print(json.dumps(result["summary"], indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="run the scenario back to back (resumes a partial plan)")
    c.add_argument("out", type=Path)
    c.add_argument("--unchanged", type=int, default=22, help="unchanged runs [22: 21 comparisons]")
    c.add_argument("--slowed", type=int, default=3, help="runs of each slowdown kind [3]")
    c.add_argument("--warm", type=int, default=5, help="unchanged runs before the first slowed one")
    c.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="llmbench override for every run, e.g. run.repeats=5 (repeatable)",
    )
    c.add_argument(
        "--env",
        dest="envs",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for every run (repeatable)",
    )
    e = sub.add_parser("evaluate", help="judge the collected runs with llmbench's compare")
    e.add_argument("out", type=Path)
    e.add_argument("--json", type=Path, help="also write rows and totals here")
    e.add_argument(
        "--fewer",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="also judge the runs as if made with only their first N repeats (repeatable)",
    )
    args = parser.parse_args()
    if args.command == "collect":
        extra_env = dict(item.split("=", 1) for item in args.envs)
        collect(args.out, args.unchanged, args.slowed, args.warm, args.sets, extra_env)
    else:
        result = evaluate(args.out, args.fewer)
        _print(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
