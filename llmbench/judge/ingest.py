"""pytest-benchmark results (``--benchmark-json``) → a run directory, indexed in the history.

Each benchmark becomes one ``ok`` case result of scenario ``bench``: its
per-iteration round times (pytest-benchmark's ``stats.data``) are the raw
``step_times_s`` and its statistics come from ``metrics.step_stats``, the
same code that summarises training steps; ``ops_per_s`` is pytest-benchmark's
own operations per second. So ``compare`` (thresholds and noise bands) and
``history`` treat micro-benchmarks exactly like training cases.

The run id is the benchmark session's UTC time, the file's name and a hash of
its content: ingesting the same file twice changes nothing (the store is
append-only), and two different files never share an id.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmbench.errors import UserError
from llmbench.judge.digest import write_digest
from llmbench.judge.fingerprint import fingerprint
from llmbench.judge.result import CaseResult
from llmbench.judge.runs import Run, read_run
from llmbench.judge.stats import step_stats
from llmbench.judge.store import RunDir

SCENARIO = "bench"
NO_RAW_DATA = "the benchmark file holds no raw rounds (stats.data); pytest-benchmark --benchmark-json saves them"


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror}", where=str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"not JSON: {exc}", where=str(path)) from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise UserError("not a pytest-benchmark JSON file (no 'benchmarks' list)", where=str(path))
    return data


def _session_time(data: dict[str, Any], path: Path) -> datetime:
    try:
        stamp = datetime.fromisoformat(str(data["datetime"]))
    except (KeyError, ValueError):
        raise UserError("no valid 'datetime' field", where=str(path)) from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def environment(data: dict[str, Any]) -> dict[str, Any]:
    """llmbench's env.json keys from pytest-benchmark's machine_info and commit_info.

    Library versions (torch, deepspeed, transformers) are known only when the
    benchmark session added them to machine_info; otherwise they are null on
    both sides of a comparison and the fingerprint rests on the CPU and host.
    """
    machine = data.get("machine_info") or {}
    cpu = machine.get("cpu") or {}
    commit = data.get("commit_info") or {}
    commit_id = commit.get("id")
    env: dict[str, Any] = {
        "hostname": machine.get("node"),
        "platform": "-".join(
            str(machine[k]) for k in ("system", "release", "machine") if machine.get(k)
        ),
        "python": machine.get("python_version"),
        "cpu_model": cpu.get("brand_raw") or machine.get("processor") or machine.get("machine"),
        "cpu_count": cpu.get("count"),
        "accelerator": "cpu",
        "accelerator_count": cpu.get("count"),
        "driver": None,
        "llmbench_commit": f"{commit_id}-dirty" if commit_id and commit.get("dirty") else commit_id,
        "pytest_benchmark": data.get("version"),
    }
    for name in ("torch", "deepspeed", "transformers"):
        env[name] = machine.get(name)
    env["fingerprint"] = fingerprint(env)
    return env


def case_result(bench: dict[str, Any], run_id: str, stamp: str) -> CaseResult:
    fullname = str(bench.get("fullname") or bench.get("name"))
    stats = bench.get("stats") or {}
    rounds = [float(t) for t in stats.get("data") or []]
    result = CaseResult(
        case_id=hashlib.sha256(fullname.encode()).hexdigest()[:12],
        label=str(bench.get("name") or fullname),
        params={
            "bench.fullname": fullname,
            "bench.group": bench.get("group"),
            "bench.param": bench.get("param"),
        },
        status="ok",
        run_id=run_id,
        scenario=SCENARIO,
        step_times_s=rounds,
        started_at=stamp,
        ended_at=stamp,
    )
    if rounds:
        result.metrics.update(step_stats(rounds))
    else:
        figures = {
            "median": stats.get("median"),
            "mean": stats.get("mean"),
            "min": stats.get("min"),
            "max": stats.get("max"),
            "std": stats.get("stddev"),
            "iqr": stats.get("iqr"),
            "p10": None,
            "p90": None,
        }
        for key, value in figures.items():
            result.set_metric(f"step_time_s_{key}", value, NO_RAW_DATA)
        result.set_metric("step_time_s_n", stats.get("rounds"))
    result.set_metric("ops_per_s", stats.get("ops"), "pytest-benchmark reported no ops")
    result.set_metric("iterations", stats.get("iterations"), "pytest-benchmark reported none")
    return result


def ingest(path: Path, output_dir: Path) -> tuple[Run, bool]:
    """Write the run directory for one benchmark file; (run, False) when it already exists.

    The directory is built under a temporary name and renamed into place
    whole, so a crash mid-ingest never leaves a partial run to be indexed
    (the history is append-only: a partial run would stay in it forever).
    """
    data = _load(path)
    stamp = _session_time(data, path)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-")[:80] or "bench"
    # same file → same id (ingesting twice is a no-op); another file of the same name and second → another id
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:6]
    run_id = f"{stamp.astimezone(timezone.utc):%Y%m%d-%H%M%S}-{SCENARIO}-{slug}-{digest}"
    run_path = output_dir / run_id
    if run_path.exists():
        return read_run(run_path), False
    output_dir.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=output_dir))
    try:
        run_dir = RunDir(building)
        run_dir.write_yaml(
            "scenario.yaml",
            {"name": SCENARIO, "description": f"pytest-benchmark results from {path.name}"},
        )
        run_dir.write_json("env.json", environment(data))
        iso = stamp.astimezone(timezone.utc).isoformat(timespec="milliseconds")
        for bench in data["benchmarks"]:
            run_dir.append(case_result(bench, run_id, iso))
        write_digest(run_dir)
        building.chmod(0o755)
        os.rename(building, run_path)
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        return read_run(run_path), False  # ingested by someone else meanwhile: theirs is whole
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return read_run(run_path), True
