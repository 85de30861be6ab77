"""Samplers that watch a running case from the parent process, and what they yield.

The runner's use, around one case::

    samplers = make_samplers(device_kind, interval_s, gpus=ranks_per_node)
    samplers.start(case_process.pid)    # the leader: its process group is the case
    ...                                 # wait for the case to end
    timeline = samplers.stop()
    events = read_phase_events(case_dir)
    timeline = tag_phases(timeline, events)
    save_timeline(timeline, case_dir / "timeline.csv")
    values, null_reasons = summarize(timeline, events, steps=..., tokens_per_step=...,
                                     unavailable=samplers.unavailable, measure_s=...)
"""

from __future__ import annotations

from llmbench.judge.timeline import (
    PhaseEvent,
    load_timeline,
    read_phase_events,
    save_timeline,
    tag_phases,
)
from llmbench.measure.sampling.base import DEFAULT_INTERVAL_S, Sampler, SamplerSet
from llmbench.measure.sampling.host import HostSampler
from llmbench.measure.sampling.nvml import NvmlSampler
from llmbench.measure.sampling.summary import measure_window, summarize

__all__ = [
    "DEFAULT_INTERVAL_S",
    "HostSampler",
    "NvmlSampler",
    "PhaseEvent",
    "Sampler",
    "SamplerSet",
    "load_timeline",
    "make_samplers",
    "measure_window",
    "read_phase_events",
    "save_timeline",
    "summarize",
    "tag_phases",
]


def make_samplers(
    device_kind: str, interval_s: float = DEFAULT_INTERVAL_S, gpus: int | None = None
) -> SamplerSet:
    """The host sampler always; NVML on the first ``gpus`` visible GPUs when the case runs on CUDA."""
    samplers: list[Sampler] = [HostSampler(interval_s)]
    not_run: dict[str, str] = {}
    if device_kind == "cuda":
        samplers.append(NvmlSampler(interval_s, gpus))
    else:
        not_run[NvmlSampler.source] = f"no GPU sampled on a {device_kind} run"
    return SamplerSet(samplers, not_run)
