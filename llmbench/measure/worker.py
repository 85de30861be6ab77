"""Per-rank entry point: build the model, initialise DeepSpeed, run the timed loop.

A rank reads its task from a JSON file and its place in the job from the usual
torch.distributed variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT), so the same code runs under the local launcher, DeepSpeed's
launcher and SLURM. It writes two files and nothing else crosses the process
boundary: ``phases.rank<r>.jsonl`` (phase changes as they happen, for tagging
sampler timelines and for telling where a killed case was) and
``rank<r>.json`` (the record, written once at the end, also on failure).

Timing follows nanoGPT's bench.py: warm-up steps first, then every timed step
ends with an accelerator synchronise, and every step's time is kept raw;
statistics are computed later in one place (metrics.py).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from llmbench.measure import slowdown
from llmbench.measure.profile import StepProfiler, make_profiler
from llmbench.measure.record import RankRecord, RankTask

PHASES = ("init", "warmup", "measure", "profile", "teardown")
"""``profile``: extra steps after the timed ones that run.profile trace/flops records."""
# Synthetic batches are generated before timing and cycled; a bounded pool keeps
# start-up and memory independent of the step count.
SYNTHETIC_POOL = 256


class PhaseLog:
    """Appends ``{"phase", "t", "pid"}`` lines as phases change (never inside a timed step)."""

    def __init__(self, path: Path, record: RankRecord):
        self._file = path.open("a", buffering=1)
        self._record = record

    def __call__(self, phase: str) -> None:
        self._record.phase = phase
        self._file.write(json.dumps({"phase": phase, "t": time.time(), "pid": os.getpid()}) + "\n")

    def close(self) -> None:
        self._file.close()


def topology(rank: int, tp: int, pp: int, world_size: int) -> dict[str, int]:
    """This rank's coordinates in DeepSpeed's (pipe, data, model) grid.

    DeepSpeed orders ranks model-fastest, then data, then pipe, so the ranks of
    one tensor-parallel group are consecutive and share a data index.
    """
    dp = world_size // (tp * pp)
    return {
        "tp_rank": rank % tp,
        "dp_rank": (rank // tp) % dp,
        "pp_stage": rank // (tp * dp),
        "dp": dp,
    }


def run_rank(task: RankTask) -> RankRecord:
    """Run one rank to completion; exceptions end up in the record, not the caller."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    out = Path(task.out_dir)
    record = RankRecord(rank=rank, world_size=world_size)
    phase = PhaseLog(out / f"phases.rank{rank}.jsonl", record)
    phase("init")
    try:
        _train(task, record, phase)
        record.status = "ok"
    except BaseException as exc:  # a record must be written whatever happened
        record.error_type = type(exc).__name__
        record.error = str(exc).strip() or record.error_type
        record.traceback = traceback.format_exc()
        print(record.traceback, file=sys.stderr, flush=True)
        record.memory = record.memory or _memory(task.device)
    finally:
        phase("teardown")
        _write_json(out / f"rank{rank}.json", asdict(record))
        phase.close()
    return record


def _train(task: RankTask, record: RankRecord, phase: PhaseLog) -> None:
    t_init = time.perf_counter()
    import deepspeed
    import torch
    from deepspeed.accelerator import get_accelerator

    from llmbench.define.schema import CaseSpec
    from llmbench.measure.training import build_batches, build_training_model, train_step
    from llmbench.measure.weights import fixed_mmap_threshold, map_large_blocks

    spec = CaseSpec.model_validate(task.spec)
    if task.device == "cpu" and task.threads:
        torch.set_num_threads(task.threads)
    record.torch_threads = torch.get_num_threads()
    accel = get_accelerator()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if task.device == "cuda":
        accel.set_device(local_rank)
        record.device_name = torch.cuda.get_device_name(local_rank)
    else:
        record.device_name = "cpu"
    if spec.training.rank_memory_limit_bytes:
        if task.device == "cpu":
            map_large_blocks()
        _limit_memory(task.device, spec.training.rank_memory_limit_bytes, local_rank)
    backend = "nccl" if task.device == "cuda" else "gloo"
    deepspeed.init_distributed(dist_backend=backend, timeout=timedelta(seconds=task.timeout_s))

    if spec.is_comm:
        record.init_s = time.perf_counter() - t_init
        _communicate(spec, record, phase, accel, torch.device(accel.current_device_name()))
        return
    torch.manual_seed(spec.training.seed)  # the same dropout masks on every rank
    rss_before = _open_build_window(task.device)
    model, counts = build_training_model(spec, task.ds_config)
    _close_build_window(record, task.device, rss_before)
    record.malloc_mmap_threshold_bytes = fixed_mmap_threshold()
    record.parameters = counts.to_dict()
    topo = record.topology = topology(
        record.rank, spec.parallel.tp, spec.parallel.pp, record.world_size
    )
    n_batches = (spec.training.warmup_steps + spec.training.steps) * spec.training.grad_accum
    if spec.training.data == "synthetic":
        n_batches = min(n_batches, SYNTHETIC_POOL)
    batches = build_batches(
        spec, task.micro_batch, n_batches, topo["dp_rank"], topo["dp"], task.data_dir
    )

    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=task.ds_config,
    )
    record.init_s = time.perf_counter() - t_init
    optimizer = engine.basic_optimizer or engine.optimizer
    record.optimizer_impl = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    step = train_step(spec, engine, batches)

    def step_noting_skips():
        # fp16: the loss scaler skips the update of a step whose gradients overflowed.
        # DeepSpeed has already synchronised on that check, so reading its counter
        # adds nothing to the step; such steps are kept out of the timed statistics.
        before = engine.skipped_steps
        loss, data_s = step()
        return loss, data_s, engine.skipped_steps > before

    profiler = make_profiler(task.profile, engine, record, Path(task.out_dir), task.device, accel)
    outputs = _timed(step_noting_skips, spec.training, record, phase, accel, task.device, profiler)
    record.data_times_s = [data_s for _, data_s, _ in outputs]
    record.skipped_steps = [i for i, (_, _, skipped) in enumerate(outputs) if skipped]
    # losses become floats only now: an .item() per step would add a sync inside the timed loop
    record.losses = [float(loss) for loss, _, _ in outputs]


def _timed(
    fn,
    training,
    record: RankRecord,
    phase: PhaseLog,
    accel,
    device: str,
    profiler: StepProfiler | None = None,
) -> list:
    """Warm-up calls, then timed calls that each end with an accelerator synchronise.

    Every rank starts the clock after a barrier; peaks are reset there, so
    memory figures describe the measured steps. Returns each timed call's output.
    ``profiler`` hooks run outside the clock: between timed steps, and after
    them for the extra steps a trace or flops profile records.
    """
    import torch

    profiler = profiler or StepProfiler()

    phase("warmup")
    for _ in range(training.warmup_steps):
        t0 = time.perf_counter()
        fn()
        accel.synchronize()
        record.warmup_times_s.append(time.perf_counter() - t0)
    torch.distributed.barrier()
    _reset_peaks(device)
    phase("measure")
    profiler.begin()
    outputs = []
    injected = slowdown.fraction()  # test-only (bench/gate_quality.py); None in real runs
    for _ in range(training.steps):
        t0 = time.perf_counter()
        out = fn()
        accel.synchronize()
        slowdown.sleep_after(time.perf_counter() - t0, injected)
        record.step_times_s.append(time.perf_counter() - t0)
        outputs.append(out)
        profiler.after_step()
    record.memory = _memory(device)
    if profiler.extra_steps:
        phase("profile")
        profiler.after_measure(fn)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return outputs


def _communicate(spec, record: RankRecord, phase: PhaseLog, accel, device) -> None:
    """A communication case: one collective per step, on buffers allocated before timing."""
    from llmbench.measure.comm import collective

    c = spec.comm
    call = collective(c.op, c.size_bytes, c.dtype, record.world_size, device)
    _timed(call, spec.training, record, phase, accel, str(device.type))


def _limit_memory(device: str, limit_bytes: int, local_rank: int) -> None:
    """Cap what this rank may allocate from here on, to emulate a smaller device.

    CUDA: the caching allocator refuses past the cap (a real OutOfMemoryError).
    CPU: the data-segment limit (RLIMIT_DATA: heap and private writable
    mappings, Linux ≥ 4.7) is set to what the process holds now plus the cap,
    so allocations for weights, optimizer state and activations beyond it fail
    with ENOMEM. RLIMIT_AS would also count the address space malloc reserves
    per thread (64 MiB arenas), which is not memory in use.
    """
    if device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(local_rank).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit_bytes / total), local_rank)
        return
    held = _proc_status_bytes("VmData")
    if held is None:
        raise RuntimeError("cannot read VmData to cap this rank's memory")
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = held + limit_bytes
    unlimited = hard == resource.RLIM_INFINITY
    resource.setrlimit(resource.RLIMIT_DATA, (soft if unlimited else min(soft, hard), hard))


def _open_build_window(device: str) -> int | None:
    """Reset the peaks that measure model construction; the RSS it grows from (None: unmeasurable).

    Construction is where a rank can hold the whole model before ZeRO-3
    partitions it; DeepSpeed's gradients and optimizer states come later, in
    ``deepspeed.initialize``, and are not part of this window.
    """
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    return _proc_status_bytes("VmRSS") if _reset_host_peak() else None


def _close_build_window(record: RankRecord, device: str, rss_before: int | None) -> None:
    peak = _proc_status_bytes("VmHWM")
    if peak is not None and rss_before is not None:
        record.build_host_rss_growth_bytes = peak - rss_before
    if device == "cuda":
        import torch

        record.build_device_allocated_bytes = torch.cuda.max_memory_allocated()


def _reset_host_peak() -> bool:
    """Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM) to its current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _reset_peaks(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_host_peak()


def _memory(device: str) -> dict[str, int | None]:
    mem: dict[str, int | None] = {
        "rss_peak_bytes": _proc_status_bytes("VmHWM"),
        "rss_bytes": _proc_status_bytes("VmRSS"),
    }
    if mem["rss_peak_bytes"] is None:
        mem["rss_peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device == "cuda":
        import torch

        stats = torch.cuda.memory_stats()
        mem.update(
            max_allocated_bytes=torch.cuda.max_memory_allocated(),
            max_reserved_bytes=torch.cuda.max_memory_reserved(),
            num_alloc_retries=stats.get("num_alloc_retries"),
            num_ooms=stats.get("num_ooms"),
        )
    return mem


def _proc_status_bytes(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """``python -m llmbench.measure.worker TASK_JSON`` (launchers that start fresh interpreters)."""
    args = [
        a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--local_rank")
    ]
    if len(args) != 1:
        print("usage: python -m llmbench.measure.worker TASK_JSON", file=sys.stderr)
        return 2
    from llmbench.measure.process import die_with_parent

    die_with_parent()
    task = RankTask.load(args[0])
    record = run_rank(task)
    if record.status != "ok" and task.device == "cuda":
        # The record is written. Leave now: an orderly exit would tear NCCL down,
        # which can block forever on a communicator whose peers are still waiting
        # in a collective (the fork launcher ends its ranks with os._exit too).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    return 0 if record.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
