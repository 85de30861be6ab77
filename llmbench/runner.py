"""The sweep: for every case, launch its ranks, watch them, store the result.

The runner owns the order of events around one case — machine checks, task
file, free port, samplers, launch, timeout, classification, durable append —
and nothing about how ranks start (launch/) or what a figure means (metrics.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from llmbench.comm import bandwidths
from llmbench.dsconfig import deepspeed_config
from llmbench.hardware import Accelerator, gpu_spec
from llmbench.launch.base import CaseProcess, Launcher, free_port
from llmbench.launch.outcome import classify
from llmbench.metrics import (
    THROUGHPUT_METRICS,
    StepShape,
    flops_metrics,
    recompute_flops_per_token,
    slowest_rank_per_step,
    step_stats,
    throughput,
    training_flops_per_token,
)
from llmbench.result import CaseResult, now_iso
from llmbench.sampling import (
    SamplerSet,
    make_samplers,
    read_phase_events,
    save_timeline,
    summarize,
    tag_phases,
)
from llmbench.sampling.agent import ENV as NODE_SAMPLER_ENV
from llmbench.sampling.agent import merge_node_timelines
from llmbench.scenario import Case, CaseSpec, RunSpec
from llmbench.store import RunDir
from llmbench.worker import RankTask

POLL_S = 0.1


class SweepObserver(Protocol):
    """Progress callbacks (the CLI draws a live display from them)."""

    def case_started(self, index: int, total: int, case: Case, repeat: int) -> None: ...

    def case_phase(self, phase: str) -> None: ...

    def case_finished(self, result: CaseResult) -> None: ...


@dataclass(frozen=True)
class PendingCase:
    case: Case
    repeat: int


def pending_cases(
    cases: Iterable[Case], repeats: int, done: set[tuple[str, int]]
) -> list[PendingCase]:
    """Cases still to run, repeats interleaved last so a partial sweep covers every case."""
    return [PendingCase(c, r) for r in range(repeats) for c in cases if (c.id, r) not in done]


def skip_reason(
    case: Case, accel: Accelerator, launcher: str, ranks_here: bool = True
) -> str | None:
    """Why this machine cannot run the case at all (recorded as ``skipped``).

    Device counts are this machine's, so they decide only for ranks that run
    here; SLURM and remote hosts have their own and refuse for themselves.
    """
    par = case.spec.parallel
    if launcher == "local" and par.nodes > 1:
        return f"{par.nodes} nodes requested; the local launcher runs one node (use run.launcher: deepspeed or slurm)"
    if not ranks_here:
        return None
    per_node = par.world_size // par.nodes
    if accel.kind == "cuda" and per_node > accel.count:
        return f"needs {per_node} GPUs per node, this machine has {accel.count}"
    if accel.kind == "cpu" and per_node > accel.count:
        return f"needs {per_node} ranks per node, this machine has {accel.count} CPU cores"
    return None


class Runner:
    def __init__(
        self,
        run_dir: RunDir,
        run: RunSpec,
        accel: Accelerator,
        launcher: Launcher,
        scenario_name: str,
        observer: SweepObserver | None = None,
        data_dirs: dict[str, str] | None = None,
        annotate: Callable[[Case, CaseResult], None] | None = None,
    ):
        self.run_dir = run_dir
        self.run = run
        self.accel = accel
        self.launcher = launcher
        self.scenario_name = scenario_name
        self.observer = observer
        self.data_dirs = data_dirs or {}
        """Case id -> prepared corpus directory, for ``data: text`` cases."""
        self.annotate = annotate
        """Adds figures derived from earlier cases (loss parity) before a result is saved."""

    def run_all(self, pending: list[PendingCase]) -> list[CaseResult]:
        results = []
        for index, item in enumerate(pending):
            if self.observer:
                self.observer.case_started(index, len(pending), item.case, item.repeat)
            result = self.run_case(item.case, item.repeat)
            if self.annotate:
                self.annotate(item.case, result)
            self.run_dir.append(result)
            results.append(result)
            if self.observer:
                self.observer.case_finished(result)
        return results

    def _result(self, case: Case, repeat: int, status: str, reason: str | None) -> CaseResult:
        return CaseResult(
            case_id=case.id,
            label=case.label,
            params=case.params,
            status=status,
            reason=reason,
            repeat=repeat,
            run_id=self.run_dir.run_id,
            scenario=self.scenario_name,
        )

    def run_case(self, case: Case, repeat: int = 0) -> CaseResult:
        started = now_iso()
        reason = skip_reason(
            case, self.accel, self.run.launcher, not self.launcher.samples_on_nodes
        )
        if reason:
            result = self._result(case, repeat, "skipped", reason)
            result.started_at = result.ended_at = started
            return result
        case_dir = self.run_dir.case_dir(case.id, repeat)
        if case_dir.exists():  # left by an interrupted run that is being resumed
            shutil.rmtree(case_dir)
        if case.spec.training.micro_batch == "auto":
            return self._search_micro_batch(case, repeat, case_dir, started)
        return self._measure(case, repeat, case_dir, case.spec.training.micro_batch, started)

    def _search_micro_batch(
        self, case: Case, repeat: int, case_dir: Path, started: str
    ) -> CaseResult:
        """The largest micro-batch that runs: double until one fails for memory, then bisect.

        Every probe is a full, real measurement in its own process group
        (``cases/<id>/mb<N>/``); the case's result is the largest size that ran,
        with every probe's outcome and throughput kept for the throughput-vs-batch curve.
        """
        tried: dict[int, CaseResult] = {}

        def probe(size: int) -> CaseResult:
            if self.observer:
                self.observer.case_phase(f"probing micro_batch {size}")
            tried[size] = self._measure(case, repeat, case_dir / f"mb{size}", size, started)
            return tried[size]

        limit = case.spec.training.micro_batch_max
        good, bad = 0, None  # largest size that ran; smallest that ran out of memory
        size = 1
        while size <= limit and bad is None:
            outcome = probe(size).status
            if outcome == "ok":
                good, size = size, size * 2
            elif outcome == "oom":
                bad = size
            else:
                break  # an error is not a memory boundary: report it, search no further
        else:
            if bad is None and 0 < good < limit:  # doubling stepped over the cap: try the cap
                outcome = probe(limit).status
                if outcome == "ok":
                    good = limit
                elif outcome == "oom":
                    bad = limit
        while good and bad is not None and bad - good > 1:
            mid = (good + bad) // 2
            outcome = probe(mid).status
            if outcome == "ok":
                good = mid
            elif outcome == "oom":
                bad = mid
            else:
                break
        chosen = tried[good] if good else tried[1]
        boundary = min((m for m, r in tried.items() if r.status == "oom"), default=None)
        chosen.probes = [_probe_summary(m, r) for m, r in tried.items()]
        chosen.set_metric(
            "micro_batch_oom", boundary, f"nothing up to micro_batch_max {limit} ran out of memory"
        )
        if good:
            timeline = case_dir / f"mb{good}" / "timeline.csv"
            if timeline.exists():  # where reports look for a case's timeline
                shutil.copyfile(timeline, case_dir / "timeline.csv")
        return chosen

    def _measure(
        self, case: Case, repeat: int, case_dir: Path, micro_batch: int, started: str
    ) -> CaseResult:
        spec = case.spec
        world_size = spec.parallel.world_size
        threads = self.run.threads_per_rank or max(1, (os.cpu_count() or 1) // world_size)
        task = RankTask(
            spec=spec.model_dump(mode="json"),
            ds_config=deepspeed_config(spec, micro_batch),
            micro_batch=micro_batch,
            device=self.accel.kind,
            out_dir=str(case_dir),
            threads=threads,
            timeout_s=self.run.timeout_s,
            data_dir=self.data_dirs.get(case.id),
        )
        case_dir.mkdir(parents=True, exist_ok=True)
        task.save(case_dir / "task.json")
        env = rank_environment(self.accel, threads)
        samplers = self._samplers(spec)
        on_nodes = samplers is not None and self.launcher.samples_on_nodes
        if on_nodes:
            gpus = world_size // spec.parallel.nodes if self.accel.kind == "cuda" else None
            env[NODE_SAMPLER_ENV] = json.dumps(
                {"kind": self.accel.kind, "interval_s": self.run.sample_interval_s, "gpus": gpus}
            )
        t0 = time.monotonic()
        proc = self.launcher.start(case_dir, world_size, env)
        watching = samplers is not None and not on_nodes and proc.pid is not None
        if watching:
            samplers.start(proc.pid)
        try:
            timed_out, phase = self._wait(proc, case_dir, t0)
        except BaseException:  # Ctrl-C or SIGTERM: take the whole case down with us
            proc.kill()
            raise
        finally:
            proc.cleanup()
            timeline = samplers.stop() if watching else None
        wall_s = time.monotonic() - t0
        records = [_read_record(case_dir / f"rank{r}.json") for r in range(world_size)]
        status, reason = classify(case_dir, records, timed_out, self.run.timeout_s, phase)
        result = self._result(case, repeat, status, reason)
        result.started_at, result.ended_at = started, now_iso()
        shape = (
            None
            if spec.is_comm
            else StepShape(
                micro_batch,
                spec.training.grad_accum,
                spec.training.seq_len,
                spec.parallel.dp,
                world_size,
            )
        )
        fill_metrics(result, records, shape, wall_s, self.accel.kind)
        if spec.is_comm:
            fill_comm(result, spec)
        else:
            result.set_metric("micro_batch", micro_batch)
            fill_flops(result, spec, records)
        if on_nodes:
            timeline, unavailable = merge_node_timelines(case_dir)
            if timeline is None:
                unavailable = {
                    "host": "no node sampler left a timeline",
                    "nvml": "no node sampler left a timeline",
                }
        else:
            unavailable = (
                samplers.unavailable if samplers else {"host": SAMPLING_OFF, "nvml": SAMPLING_OFF}
            )
        sampled_metrics(result, case_dir, timeline, unavailable)
        return result

    def _samplers(self, spec: CaseSpec) -> SamplerSet | None:
        if not self.run.sampling:
            return None
        return make_samplers(
            self.accel.kind,
            self.run.sample_interval_s,
            gpus=spec.parallel.world_size // spec.parallel.nodes,
        )

    def _wait(self, proc: CaseProcess, case_dir: Path, t0: float) -> tuple[bool, str | None]:
        """Poll until the case ends or times out; report phase changes on the way."""
        deadline = t0 + self.run.timeout_s
        phase = None
        next_phase_check = 0.0
        while proc.poll() is None:
            now = time.monotonic()
            if now >= deadline:
                proc.kill()
                return True, current_phase(case_dir)
            if now >= next_phase_check:
                next_phase_check = now + 0.5
                new = current_phase(case_dir)
                if new != phase and new is not None:
                    phase = new
                    if self.observer:
                        self.observer.case_phase(phase)
            time.sleep(POLL_S)
        return False, current_phase(case_dir)


def fill_comm(result: CaseResult, spec: CaseSpec) -> None:
    """Bandwidths from the median call time; training rates do not apply to a collective."""
    c = spec.comm
    result.set_metric("message_bytes", c.size_bytes)
    values = bandwidths(
        c.op, c.size_bytes, spec.parallel.world_size, result.metrics.get("step_time_s_median")
    )
    for name, value in values.items():
        result.set_metric(name, value, f"case {result.status}")


def fill_flops(result: CaseResult, spec: CaseSpec, records: list[dict[str, Any] | None]) -> None:
    """FLOPs per token from the exact parameter count; TFLOP/s, MFU and HFU from the throughput."""
    n = result.metrics.get("params_flops_params")
    if n is None:
        return
    dims = spec.dims()
    seq = spec.training.seq_len
    model = training_flops_per_token(n, dims.num_layers, dims.hidden_size, seq)
    extra = recompute_flops_per_token(
        n,
        dims.num_layers,
        dims.hidden_size,
        seq,
        spec.deepspeed.activation_checkpointing,
    )
    device = (
        next((r.get("device_name") for r in records if r and r.get("device_name")), None)
        or "unknown device"
    )
    peak, why = peak_flops(device, spec.deepspeed.precision)
    values, reasons = flops_metrics(
        result.metrics.get("tokens_per_s"),
        spec.parallel.world_size,
        model,
        model + extra,
        peak,
        why,
    )
    for name, value in values.items():
        result.set_metric(name, value, reasons.get(name))


def peak_flops(device_name: str, precision: str) -> tuple[float | None, str | None]:
    """Dense peak FLOP/s of one device in the case's matmul precision, or why it is unknown."""
    if device_name == "cpu":
        return None, "no peak FLOP/s figure for CPUs"
    gpu = gpu_spec(device_name)
    if gpu is None:
        return None, f"{device_name!r} is not in llmbench's GPU table (llmbench/hardware.py)"
    peak = gpu.peak(precision)
    return (peak, None) if peak else (None, f"{gpu.name} has no {precision} peak")


SAMPLING_OFF = "sampling off (run.sampling: false)"


def sampled_metrics(
    result: CaseResult, case_dir: Path, timeline: pd.DataFrame | None, unavailable: dict[str, str]
) -> None:
    """Tag the samples with the workers' phases, save them, and add the measure-phase summary."""
    events = read_phase_events(case_dir)
    if timeline is not None:
        timeline = tag_phases(timeline, events)
        save_timeline(timeline, case_dir / "timeline.csv")
    else:
        timeline = pd.DataFrame(columns=["t", "source", "device"])
    values, reasons = summarize(
        timeline,
        events,
        steps=len(result.step_times_s) or None,
        tokens_per_step=result.metrics.get("tokens_per_step"),
        unavailable=unavailable,
        measure_s=result.metrics.get("measure_s"),
    )
    for name, value in values.items():
        result.set_metric(name, value, reasons.get(name))


def _probe_summary(micro_batch: int, result: CaseResult) -> dict[str, Any]:
    keys = (
        "tokens_per_s",
        "step_time_s_median",
        "peak_memory_bytes",
        "allocator_peak_bytes",
        "device_memory_used_peak_bytes",
    )
    return {
        "micro_batch": micro_batch,
        "status": result.status,
        "reason": result.reason,
        **{k: result.metrics.get(k) for k in keys},
    }


def rank_environment(accel: Accelerator, threads: int) -> dict[str, str]:
    """Variables every rank of a case gets, on top of the parent's environment."""
    return {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "DS_ACCELERATOR": accel.kind,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
    }


def current_phase(case_dir: Path) -> str | None:
    """The latest phase rank 0 published."""
    events = read_phase_events(case_dir)
    return events[-1].phase if events else None


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


NOT_TRAINING = "a communication case trains nothing"
TRAINING_ONLY = ("loss_first", "loss_last", "data_time_share", *THROUGHPUT_METRICS)


def fill_metrics(
    result: CaseResult,
    records: list[dict[str, Any] | None],
    shape: StepShape | None,
    wall_s: float,
    device: str,
) -> None:
    """Reduce rank records to the case's metrics (step time = slowest rank per step).

    ``shape`` is None for a communication case: it has step times but trains no tokens.
    """
    present = [r for r in records if r is not None]
    result.ranks = [_rank_summary(r) for r in present]
    ok = result.status == "ok"
    steps = slowest_rank_per_step([r["step_times_s"] for r in present]) if ok else []
    result.step_times_s = steps
    result.losses = _dp_mean_losses(present) if ok else []
    result.metrics.update(step_stats(steps))
    why = None if ok else f"case {result.status}"
    if shape is not None:
        for name, value in throughput(shape, result.metrics["step_time_s_median"]).items():
            result.set_metric(name, value, why)
    warmup = slowest_rank_per_step([r["warmup_times_s"] for r in present])
    measure_s = sum(steps) if steps else None
    warmup_s = sum(warmup) if ok else None
    result.set_metric("wall_s", wall_s)
    result.set_metric(
        "init_s",
        max((r["init_s"] for r in present if r.get("init_s") is not None), default=None),
        "no rank finished init",
    )
    result.set_metric("warmup_s", warmup_s, why)
    result.set_metric("measure_s", measure_s, why)
    result.set_metric("overhead_s", wall_s - warmup_s - measure_s if ok else None, why)
    data = [
        sum(r["data_times_s"]) / sum(r["step_times_s"])
        for r in present
        if r.get("data_times_s") and sum(r["step_times_s"])
    ]
    result.set_metric("data_time_share", max(data) if ok and data else None, why)
    result.set_metric("loss_first", result.losses[0] if result.losses else None, why)
    result.set_metric("loss_last", result.losses[-1] if result.losses else None, why)
    if shape is None:
        for name in TRAINING_ONLY:
            result.set_metric(name, None, NOT_TRAINING)
    _memory_metrics(result, present, device)
    params = next((r["parameters"] for r in present if r.get("parameters")), None)
    for key in ("total", "embedding", "non_embedding", "flops_params"):
        result.set_metric(
            f"params_{key}",
            params[key] if params else None,
            NOT_TRAINING if shape is None else "no rank built the model",
        )


def _memory_metrics(result: CaseResult, records: list[dict[str, Any]], device: str) -> None:
    """Per-rank peaks reduced by max (never summed: each rank owns its own device)."""

    def peak(key: str) -> int | None:
        values = [
            r["memory"].get(key)
            for r in records
            if r.get("memory") and r["memory"].get(key) is not None
        ]
        return max(values) if values else None

    host = peak("rss_peak_bytes")
    result.set_metric("host_rss_peak_bytes", host, "no rank reported memory")
    if device == "cuda":
        result.set_metric(
            "allocator_peak_bytes", peak("max_allocated_bytes"), "no rank reported memory"
        )
        result.set_metric(
            "allocator_reserved_peak_bytes", peak("max_reserved_bytes"), "no rank reported memory"
        )
        result.set_metric("alloc_retries", peak("num_alloc_retries"), "no rank reported memory")
        result.set_metric(
            "peak_memory_bytes", result.metrics["allocator_peak_bytes"], "no rank reported memory"
        )
    else:
        for key in ("allocator_peak_bytes", "allocator_reserved_peak_bytes", "alloc_retries"):
            result.set_metric(key, None, "no CUDA allocator on a CPU run")
        result.set_metric("peak_memory_bytes", host, "no rank reported memory")


def _dp_mean_losses(records: list[dict[str, Any]]) -> list[float]:
    """Loss of the global batch: the mean over data-parallel replicas.

    Tensor-parallel peers see the same batch and pipeline stages share one loss,
    so each replica is represented by its tp-rank-0 rank of the last stage.
    """
    topo = [r.get("topology") or {"tp_rank": 0, "pp_stage": 0} for r in records]
    last = max(t["pp_stage"] for t in topo)
    trajectories = [
        r["losses"]
        for r, t in zip(records, topo, strict=False)
        if t["tp_rank"] == 0 and t["pp_stage"] == last and r.get("losses")
    ]
    if not trajectories:
        return []
    n = min(len(t) for t in trajectories)
    return [sum(t[i] for t in trajectories) / len(trajectories) for i in range(n)]


def _rank_summary(r: dict[str, Any]) -> dict[str, Any]:
    steps = r.get("step_times_s") or []
    return {
        "rank": r["rank"],
        "pid": r.get("pid"),
        "status": r.get("status"),
        "device_name": r.get("device_name"),
        "torch_threads": r.get("torch_threads"),
        "init_s": r.get("init_s"),
        "step_time_s_median": step_stats(steps)["step_time_s_median"],
        "memory": r.get("memory") or {},
        "error": r.get("error"),
    }
