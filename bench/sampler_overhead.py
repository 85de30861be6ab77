"""A/B: does sampling perturb what it measures? Step time with samplers off, at 100 ms and at 10 ms.

The same small case is run as whole ``llmbench run`` invocations, the three
settings interleaved round by round (A B C A B C …) so that drift of a shared
machine hits all three alike. Each run's median step time is its figure; the
overhead of a setting is the median, over rounds, of its step time divided by
the same round's samplers-off step time.

    python bench/sampler_overhead.py --rounds 5 [KEY=VALUE ...]

Prints a table and writes reports/sampler_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "off": ["run.sampling=false"],
    "100ms": ["run.sampling=true", "run.sample_interval_s=0.1"],
    "10ms": ["run.sampling=true", "run.sample_interval_s=0.01"],
}
CASE = [
    "deepspeed.zero_stage=2",
    "deepspeed.precision=bf16",
    "parallel.world_size=2",
    "training.steps=40",
    "training.warmup_steps=5",
]


def median_step_s(overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "llmbench",
            "run",
            str(ROOT / "scenarios/zero_sweep.yaml"),
            *overrides,
            "--output-dir",
            out,
        ]
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        (results,) = Path(out).glob("*/results.jsonl")
        (result,) = [json.loads(line) for line in results.read_text().splitlines()]
        if result["status"] != "ok":
            raise RuntimeError(f"case {result['status']}: {result['reason']}")
        return result["metrics"]["step_time_s_median"]


def ratio_report(times: dict[str, list[float]], baseline: str) -> dict[str, dict]:
    """Each setting's median step and its per-round ratio to ``baseline`` (median, min, max).

    Ratios are taken round by round, so drift of a shared machine cancels; printed and returned.
    """
    report = {}
    for name, runs in times.items():
        ratios = [t / base for t, base in zip(runs, times[baseline], strict=True)]
        report[name] = {
            "step_time_s_median": statistics.median(runs),
            f"ratio_to_{baseline}_median": statistics.median(ratios),
            f"ratio_to_{baseline}_min": min(ratios),
            f"ratio_to_{baseline}_max": max(ratios),
            "runs": runs,
        }
        print(
            f"{name:>9}: median step {statistics.median(runs) * 1e3:.2f} ms, ratio to {baseline} "
            f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})"
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="extra KEY=VALUE overrides of the case")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for round_ in range(args.rounds):
        for name, extra in SETTINGS.items():
            times[name].append(median_step_s(CASE + args.overrides + extra))
        print(
            f"round {round_ + 1}: "
            + ", ".join(f"{n} {times[n][-1] * 1e3:.2f} ms" for n in SETTINGS),
            flush=True,
        )
    report = ratio_report(times, "off")
    out = ROOT / "reports" / "sampler_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"case": CASE + args.overrides, "rounds": args.rounds, "settings": report}, indent=2
        )
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
