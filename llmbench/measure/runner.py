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
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from llmbench.define.cases import Case
from llmbench.define.schema import CaseSpec, RunSpec
from llmbench.hardware import Accelerator
from llmbench.judge.result import CaseResult, now_iso
from llmbench.judge.store import RunDir
from llmbench.measure.autobatch import search_micro_batch
from llmbench.measure.dsconfig import deep_merge, deepspeed_config
from llmbench.measure.launch.base import CaseProcess, Launcher
from llmbench.measure.launch.outcome import classify
from llmbench.measure.metrics import StepShape
from llmbench.measure.process import free_port
from llmbench.measure.profile import ds_config as profile_config
from llmbench.measure.profile_summary import fill_profile
from llmbench.measure.record import RankRecord, RankTask
from llmbench.measure.reduce import fill_comm, fill_flops, fill_metrics
from llmbench.measure.sampling import (
    SamplerSet,
    make_samplers,
    read_phase_events,
    save_timeline,
    summarize,
    tag_phases,
)
from llmbench.measure.sampling.agent import ENV as NODE_SAMPLER_ENV
from llmbench.measure.sampling.agent import merge_node_timelines

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
    case: Case,
    accel: Accelerator,
    launcher: str,
    ranks_here: bool = True,
    oversubscribe: bool = False,
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
    if accel.kind == "cpu" and per_node > accel.count and not oversubscribe:
        return (
            f"needs {per_node} ranks per node, this machine has {accel.count} CPU cores"
            " (run.oversubscribe: true runs them anyway)"
        )
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
        torch_adam: bool = False,
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
        self.torch_adam = torch_adam
        """DeepSpeed's Adam ops could not be built: cases use torch's AdamW (ops.optimizer_fallback)."""

    def run_all(self, pending: list[PendingCase]) -> list[CaseResult]:
        results = []
        for index, item in enumerate(pending):
            if self.observer:
                self.observer.case_started(index, len(pending), item.case, item.repeat)
            try:
                result = self.run_case(item.case, item.repeat)
                if self.annotate:
                    self.annotate(item.case, result)
            except Exception as exc:  # a bug met by one case must not cost the sweep
                result = self._crashed(item, exc)
            self.run_dir.append(result)
            results.append(result)
            if self.observer:
                self.observer.case_finished(result)
        return results

    def _crashed(self, item: PendingCase, exc: Exception) -> CaseResult:
        """The case as ``error``, its traceback kept in the case directory."""
        case_dir = self.run_dir.case_dir(item.case.id, item.repeat)
        where = case_dir / "llmbench-error.txt"
        try:
            case_dir.mkdir(parents=True, exist_ok=True)
            where.write_text("".join(traceback.format_exception(exc)))
        except OSError:
            where = None
        kept = f"; traceback in {where}" if where else ""
        result = self._result(
            item.case, item.repeat, "error", f"llmbench {type(exc).__name__}: {exc}{kept}"
        )
        result.started_at = result.ended_at = now_iso()
        return result

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
            case,
            self.accel,
            self.run.launcher,
            not self.launcher.samples_on_nodes,
            self.run.oversubscribe,
        )
        if reason:
            result = self._result(case, repeat, "skipped", reason)
            result.started_at = result.ended_at = started
            return result
        case_dir = self.run_dir.case_dir(case.id, repeat)
        if case_dir.exists():  # left by an interrupted run that is being resumed
            shutil.rmtree(case_dir)
        if case.spec.training.micro_batch == "auto":
            return search_micro_batch(
                case,
                case_dir,
                lambda where, size: self._measure(case, repeat, where, size, started),
                self.observer.case_phase if self.observer else None,
            )
        return self._measure(case, repeat, case_dir, case.spec.training.micro_batch, started)

    def _measure(
        self, case: Case, repeat: int, case_dir: Path, micro_batch: int, started: str
    ) -> CaseResult:
        spec = case.spec
        world_size = spec.parallel.world_size
        threads = self.run.threads_per_rank or max(1, (os.cpu_count() or 1) // world_size)
        task = RankTask(
            spec=spec.model_dump(mode="json"),
            ds_config=deep_merge(
                deepspeed_config(spec, micro_batch, self.torch_adam),
                profile_config(self.run.profile, pipeline=spec.parallel.pp > 1),
            ),
            micro_batch=micro_batch,
            device=self.accel.kind,
            out_dir=str(case_dir),
            threads=threads,
            timeout_s=self.run.timeout_s,
            data_dir=self.data_dirs.get(case.id),
            profile=self.run.profile,
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
        records = [RankRecord.load(case_dir / f"rank{r}.json") for r in range(world_size)]
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
        fill_profile(result, records, shape, self.run.profile, self.run_dir.path)
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
        """Poll until the case ends or times out; report phase changes on the way.

        A rank that failed (e.g. OOM) leaves its peers blocked in a collective
        until NCCL's own timeout; once a failed record has been there for
        FAILED_RANK_GRACE_S the case is stopped, not left to its time limit.
        """
        deadline = t0 + self.run.timeout_s
        phase = None
        next_phase_check = 0.0
        failed_at = None
        while proc.poll() is None:
            now = time.monotonic()
            if now >= deadline:
                proc.kill()
                return True, current_phase(case_dir)
            if failed_at is not None and now - failed_at >= FAILED_RANK_GRACE_S:
                proc.kill()
                return False, current_phase(case_dir)
            if now >= next_phase_check:
                next_phase_check = now + 0.5
                if failed_at is None and a_rank_failed(case_dir):
                    failed_at = now
                new = current_phase(case_dir)
                if new != phase and new is not None:
                    phase = new
                    if self.observer:
                        self.observer.case_phase(phase)
            time.sleep(POLL_S)
        return False, current_phase(case_dir)


SAMPLING_OFF = "sampling off (run.sampling: false)"
FAILED_RANK_GRACE_S = 10.0
"""How long the other ranks may take to finish or fail after one rank wrote a failed record."""


def a_rank_failed(case_dir: Path) -> bool:
    """Whether some rank of the case has written a record that is not ``ok``."""
    return any(
        (record := RankRecord.load(path)) is not None and record.status != "ok"
        for path in case_dir.glob("rank[0-9]*.json")  # not rank_env.json (DeepSpeed, SLURM)
    )


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
