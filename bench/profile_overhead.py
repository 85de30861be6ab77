"""A/B: what does each run.profile mode cost the timed steps? Step time vs ``profile: none``.

One case (ZeRO-2, bf16, 2 ranks, tiny GPT-2) is run as whole ``llmbench run``
invocations, the four modes interleaved round by round and rotated (A B C D,
B C D A, …) so drift of a shared machine hits every mode alike. Each run's
median step time is its figure; a mode's overhead is the median, over rounds,
of its step time divided by the same round's ``none`` step time, with the
range. The 1-minute load average is printed per round: others' jobs on a
shared machine are the noise floor of every ratio.

``breakdown`` should cost little (DeepSpeed's timers and comms logger run in
the timed steps); ``trace`` and ``flops`` profile extra steps after the timed
ones, so their step-time ratio should be 1 within noise.

    python bench/profile_overhead.py --rounds 5 [KEY=VALUE ...]

Prints a table and writes reports/profile_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from sampler_overhead import CASE, ROOT, median_step_s, ratio_report

MODES = ("none", "breakdown", "trace", "flops")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="extra KEY=VALUE overrides of the case")
    args = parser.parse_args()
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    loads = []
    for round_ in range(args.rounds):
        order = MODES[round_ % len(MODES) :] + MODES[: round_ % len(MODES)]
        for mode in order:
            case = [*CASE, "run.sampling=false", *args.overrides, f"run.profile={mode}"]
            times[mode].append(median_step_s(case))
        loads.append(os.getloadavg()[0])
        print(
            f"round {round_ + 1} (load {loads[-1]:.1f}): "
            + ", ".join(f"{m} {times[m][-1] * 1e3:.2f} ms" for m in MODES),
            flush=True,
        )
    report = ratio_report(times, "none")
    out = Path(ROOT) / "reports" / "profile_overhead.json"
    out.parent.mkdir(exist_ok=True)
    body = {"case": CASE + args.overrides, "rounds": args.rounds, "load_1min": loads}
    out.write_text(json.dumps(body | {"modes": report}, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
