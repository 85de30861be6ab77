"""Where a step's time goes, collected inside a rank (``run.profile``).

Every mode builds on a tool of the field rather than on llmbench's own clocks:

- ``breakdown``: DeepSpeed's ``wall_clock_breakdown`` timers (``fwd``, ``bwd``
  with its ``bwd_inner`` / ``bwd_allreduce`` parts, ``step``) and its comms
  logger (every collective through ``deepspeed.comm`` with its size and
  latency) run during the timed steps; after each step, outside the clock, the
  engine's timer snapshot and the logger's records of that step are copied into
  the rank record.
- ``trace``: ``torch.profiler`` records a few *extra* steps after the timed
  ones, with ``record_function`` ranges for llmbench's phases, and exports one
  gzip Chrome/Perfetto JSON per rank.
- ``flops``: DeepSpeed's flops profiler counts one extra step's forward pass
  per module and writes its table.

``none`` installs nothing: timed figures are never perturbed by default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MODES = ("none", "breakdown", "trace", "flops")
TRACE_WARMUP_STEPS = 1
"""Extra steps the profiler runs before recording: its first step pays its own set-up."""
TRACE_STEPS = 2
"""Extra steps recorded in the trace (never timed steps)."""
TOP_OPS = 15
"""Rows of the op-level table kept with a trace."""
RANGES = {"forward": "llmbench.forward", "backward": "llmbench.backward", "step": "llmbench.step"}
"""Engine method → its record_function range in a trace; ``llmbench.train_step`` wraps them."""
STEP_RANGE = "llmbench.train_step"
TRACE_DIR = "trace"
"""Per-case folder of the traces (HTA reads a folder holding only traces)."""
FLOPS_TABLE = "flops_profile.txt"
# DeepSpeed's global timer names (deepspeed/utils/timer.py) → llmbench's phase names.
DS_TIMERS = {
    "fwd": "forward",
    "bwd": "backward",
    "bwd_inner": "backward_inner",
    "bwd_allreduce": "backward_reduce",
    "step": "optimizer_step",
}


PIPELINE_NO_TIMERS = (
    "DeepSpeed's pipeline engine cannot run with its wall-clock timers (0.19 starts "
    "bwd_microstep twice and asserts), so a pp > 1 case runs without them: no phases"
)


def ds_config(mode: str, pipeline: bool = False) -> dict[str, Any]:
    """What a mode adds to the case's DeepSpeed config (merged last); nothing for a
    pipeline case, whose engine fails with the timers on (PIPELINE_NO_TIMERS)."""
    if mode != "breakdown" or pipeline:
        return {}
    return {
        "wall_clock_breakdown": True,
        "comms_logger": {"enabled": True, "prof_all": True, "verbose": False, "debug": False},
    }


class StepProfiler:
    """Hooks the timed loop calls outside its clock; the base class collects nothing."""

    extra_steps = False
    """Whether :meth:`after_measure` runs steps of its own (the ``profile`` phase)."""

    def begin(self) -> None:
        """Right before the first timed step (after the barrier)."""

    def after_step(self) -> None:
        """After a timed step's clock stopped."""

    def after_measure(self, step: Callable[[], Any]) -> None:
        """After the timed steps, before the process group is torn down; may run extra steps."""


class Breakdown(StepProfiler):
    """Per timed step: DeepSpeed's phase timers and the collectives its comms logger saw."""

    def __init__(self, engine, record):
        from deepspeed.comm.comm import comms_logger
        from deepspeed.comm.comm import timers as comm_timers

        self.engine = engine
        self.record = record
        self.logger = comms_logger
        self.comm_timers = comm_timers
        record.phase_times_s = {name: [] for name in DS_TIMERS.values()}

    def begin(self) -> None:
        self._reset_comm()  # collectives of init and warm-up are no timed step's

    def after_step(self) -> None:
        timers = self.engine.get_wall_clock_timers()  # ms, snapshot taken inside engine.step()
        for ds_name, name in DS_TIMERS.items():
            value = timers.get(ds_name)
            if value is not None:
                self.record.phase_times_s[name].append(value / 1000.0)
        self.record.comm_steps.append(_comm_totals(self.logger.get_raw_data()))
        self._reset_comm()

    def _reset_comm(self) -> None:
        """Clear the logger's records and its per-op timers, so the next step starts from zero.

        DeepSpeed 0.19's ``timed_op`` logs ``timers(op).elapsed(reset=False)``:
        the op timer's running total since it was last reset, not the call's
        own latency (a ZeRO-2 step of 277 ms logged 655 ms of all_reduce after
        12 steps without this reset). Reset once per step, the latest value an
        op logged is that op's total time in the step.
        """
        self.logger.reset_data()
        for timer in self.comm_timers.get_timers().values():
            timer.reset()


def _comm_totals(raw: dict[str, dict[int, list]]) -> dict[str, dict[str, float]]:
    """The comms logger's ``{op: {msg_size: [count, [latency ms], …]}}`` as totals per op.

    Latencies are running totals since the step began (see
    :meth:`Breakdown._reset_comm`), so an op's time in the step is its largest.
    """
    totals: dict[str, dict[str, float]] = {}
    for op, sizes in raw.items():
        calls = sum(v[0] for v in sizes.values())
        nbytes = sum(size * v[0] for size, v in sizes.items())
        seconds = max(max(v[1]) for v in sizes.values()) / 1000.0
        totals[op] = {"calls": calls, "bytes": nbytes, "s": seconds}
    return totals


class Trace(StepProfiler):
    """A torch.profiler trace of extra steps after the timed ones, per rank."""

    extra_steps = True

    def __init__(self, engine, record, out_dir: Path, device: str, accel):
        self.engine = engine
        self.record = record
        self.out_dir = out_dir
        self.device = device
        self.accel = accel

    def after_measure(self, step: Callable[[], Any]) -> None:
        from torch.profiler import ProfilerActivity, profile, record_function, schedule

        activities = [ProfilerActivity.CPU]
        if self.device == "cuda":
            activities.append(ProfilerActivity.CUDA)
        plan = schedule(wait=0, warmup=TRACE_WARMUP_STEPS, active=TRACE_STEPS, repeat=1)
        with phase_ranges(self.engine), profile(activities=activities, schedule=plan) as prof:
            for _ in range(TRACE_WARMUP_STEPS + TRACE_STEPS):
                with record_function(STEP_RANGE):
                    step()
                    self.accel.synchronize()
                prof.step()
        folder = self.out_dir / TRACE_DIR
        folder.mkdir(exist_ok=True)
        path = folder / f"rank{self.record.rank}.json.gz"
        prof.export_chrome_trace(str(path))
        self.record.profile["trace"] = str(path)
        self.record.profile["trace_steps"] = TRACE_STEPS
        self.record.profile["top_ops"] = top_ops(prof.key_averages(), self.device)


@contextlib.contextmanager
def phase_ranges(engine) -> Iterator[None]:
    """Wrap the engine's forward, backward and step in record_function ranges, then restore.

    Instance attributes shadow the methods only for the traced extra steps, so
    the step function the timed loop runs is the same object, untouched.
    """
    from torch.profiler import record_function

    def ranged(name: str, method):
        def call(*args, **kwargs):
            with record_function(name):
                return method(*args, **kwargs)

        return call

    for attr, name in RANGES.items():
        setattr(engine, attr, ranged(name, getattr(engine, attr)))
    try:
        yield
    finally:
        for attr in RANGES:
            delattr(engine, attr)


def top_ops(averages, device: str) -> list[dict[str, Any]]:
    """The profiler's op table, most self time first: what a CPU trace can say.

    HTA's breakdowns need GPU kernels and streams; on a CPU trace this table of
    aten ops is the profiler's own summary of where the time went.
    """
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    ours = (*RANGES.values(), STEP_RANGE)
    ops = [e for e in averages if e.key not in ours and not e.key.startswith("ProfilerStep")]
    rows = sorted(ops, key=lambda e: getattr(e, key, 0), reverse=True)
    out = []
    for event in rows[:TOP_OPS]:
        row = {
            "name": event.key,
            "calls": event.count,
            "self_cpu_s": event.self_cpu_time_total / 1e6,
            "cpu_total_s": event.cpu_time_total / 1e6,
        }
        if device == "cuda":
            row["self_device_s"] = getattr(event, "self_device_time_total", 0) / 1e6
        out.append(row)
    return out


class Flops(StepProfiler):
    """DeepSpeed's flops profiler over one extra step: forward FLOPs per module, and its table."""

    extra_steps = True

    def __init__(self, engine, record, out_dir: Path, accel):
        self.engine = engine
        self.record = record
        self.out_dir = out_dir
        self.accel = accel

    def after_measure(self, step: Callable[[], Any]) -> None:
        from deepspeed.profiling.flops_profiler import FlopsProfiler

        prof = FlopsProfiler(self.engine.module, ds_engine=self.engine)
        prof.start_profile()
        try:
            step()
            self.accel.synchronize()
            self.record.profile["forward_flops"] = prof.get_total_flops()
            if self.record.rank == 0:
                table = self.out_dir / FLOPS_TABLE
                prof.print_model_profile(
                    profile_step=0, module_depth=-1, top_modules=3, output_file=str(table)
                )
                self.record.profile["flops_table"] = str(table)
        finally:
            prof.end_profile()


def make_profiler(mode: str, engine, record, out_dir: Path, device: str, accel) -> StepProfiler:
    """The hooks of ``run.profile`` for one rank."""
    if mode == "breakdown":
        return Breakdown(engine, record)
    if mode == "trace":
        return Trace(engine, record, out_dir, device, accel)
    if mode == "flops":
        return Flops(engine, record, out_dir, accel)
    return StepProfiler()
