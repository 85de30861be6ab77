"""Helpers of the launcher tests: a real case directory, and whatever still runs for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psutil

from llmbench.define.loader import parse_scenario
from llmbench.hardware import detect
from llmbench.measure.dsconfig import deepspeed_config
from llmbench.measure.record import RankTask
from llmbench.measure.runner import rank_environment

TINY = """\
name: {name}
model: {{family: gpt2, size: tiny}}
training: {{seq_len: 32, micro_batch: 2, warmup_steps: 1, steps: {steps}}}
deepspeed: {{zero_stage: 1, precision: fp32}}
parallel: {{world_size: {world_size}}}
"""


def write_case(root: Path, world_size: int = 2, steps: int = 2) -> Path:
    """A case directory holding the task.json the runner would write for it."""
    scenario = parse_scenario(TINY.format(name="launch", steps=steps, world_size=world_size))
    (case,) = scenario.expand()
    case_dir = root / "cases" / case.id
    case_dir.mkdir(parents=True)
    micro_batch = case.spec.training.micro_batch
    RankTask(
        spec=case.spec.model_dump(mode="json"),
        ds_config=deepspeed_config(case.spec, micro_batch),
        micro_batch=micro_batch,
        device="cpu",
        out_dir=str(case_dir),
        threads=1,
        timeout_s=300,
    ).save(case_dir / "task.json")
    return case_dir


def case_env() -> dict[str, str]:
    """The variables the runner gives every rank (a fresh free port included)."""
    return rank_environment(detect("cpu"), threads=1)


def processes_of(case_dir: Path) -> list[str]:
    """Live (non-zombie) processes whose command line names something in the case directory."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if str(case_dir) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.pid}: {cmdline[:200]}")
        except psutil.Error:
            continue
    return found


def wait_for(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


def ranks_started(case_dir: Path, world_size: int) -> bool:
    """Every worker has published its first phase: the whole process tree exists."""
    return all((case_dir / f"phases.rank{r}.jsonl").exists() for r in range(world_size))
