"""Golden run directories (tests/data/runs), copied from real llmbench runs on a 2-core CPU.

Only results.jsonl, env.json and scenario.yaml are kept (plus the sweep's
timeline.csv files); each scenario.yaml records the settings the run used.

* ``sweep/``: model.size [tiny, mini] × zero_stage [0, 2], plus a case needing
  4 ranks (skipped) and a tp=2 case DeepSpeed refused for GPT-2
  (unsupported), with the host-sampler timeline.csv of each case that ran.
* ``nightly/``: 8 runs of the nightly scenario (z0, z2), runs 1-5 with
  ``run.threads_per_rank=1``, runs 6-8 with 2, while other jobs loaded the
  machine (throughput swings several-fold between runs).
* ``repeats/t2``, ``repeats/t1``: one case, 4 repeats × 10 steps, 2 threads
  then 1 thread on a quiet machine: a real slowdown of about a quarter.
* ``history/``: 10 nightly runs (6 with 2 threads, then 4 with 1) while
  other jobs swung throughput up to 30-fold; the last run's cases errored
  (the training code was being edited under it).
* ``levels/``: the repeats of ``repeats/t1`` then ``repeats/t2``, each repeat
  (its own process, run one after the other) as a run directory of its own:
  a history of 8 runs with a real level shift at the fifth (1 → 2 threads).
* ``gate/``: back-to-back runs of ``bench/gate.yaml`` (tiny GPT-2 ZeRO-2, 1
  rank, 3 repeats × 12 steps) by ``bench/gate_quality.py collect`` on the
  shared 2-core machine (1-minute load 15-23 from other engineers' tests),
  ``OMP_WAIT_POLICY=PASSIVE``: the first 23 of the 28 runs behind README's
  gate figures — unchanged code, with three runs on one core instead of two
  (``run.threads_per_rank=1``) and three slowed 10 % by the test-only hook
  (``LLMBENCH_TEST_SLOWDOWN=0.1``, recorded in their env.json), interleaved.
* ``gate8/``: README's set Q3, all 28 runs: ``bench/gate.yaml`` (GPT-2 mini,
  ZeRO-2 bf16, 1 rank, 8 repeats × 15 steps of ~0.27 s) by
  ``bench/gate_quality.py collect`` on the quiet 2-core machine (1-minute load
  1.0-1.8), ``OMP_WAIT_POLICY=PASSIVE``: 22 unchanged runs, three on one core
  and three slowed 10 % by the test-only hook, interleaved as in ``gate/``.
* ``profile/``: ``run.profile=breakdown`` over tiny GPT-2 (seq 32, micro-batch
  2, 6 steps, bf16), ZeRO 0/2/3 × 1-2 ranks plus a 2-stage pipeline case
  (ok, phases null with DeepSpeed's reason), under a 1-minute load of ~13.
"""

from __future__ import annotations

import shutil
from pathlib import Path

DATA = Path(__file__).parent / "data" / "runs"


def runs(name: str) -> list[Path]:
    """The run directories of one golden set, oldest first."""
    return sorted(p for p in (DATA / name).iterdir() if p.is_dir())


def copy_run(path: Path, root: Path) -> Path:
    """A writable copy of a golden run under ``root`` (same run id)."""
    root.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(path, root / path.name))
