"""The verdict of the one-GPU validation (bench/gpu_validate.sh, docs/gpu_validation.md).

The GPU machine only runs things: a preflight (bench/gpu_preflight.py), the
``gpu_validate`` scenario, and ``llmbench plan --validate``. Everything that
decides whether llmbench told the truth there happens here, on the CPU side,
from those files alone, so that it is unit-tested without a GPU and the same
files can be judged again after a fix.

Each check is ``pass``, ``fail``, or ``null`` with the reason it could not be
decided (only where a null is an honest answer: a sandboxed runtime that hides
processes from NVML). The verdict is ``fail`` when any check failed, else
``pass``.

    python -m llmbench.judge.gpu_validation RUN_DIR PREFLIGHT_JSON PLAN_JSON -o VERDICT_JSON
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmbench.define.models import DIM_FIELDS, resolve_dims
from llmbench.hardware import gpu_spec
from llmbench.judge.parity import TOLERANCES
from llmbench.judge.result import CaseResult
from llmbench.judge.runs import read_run
from llmbench.judge.timeline import load_timeline, read_phase_events

# The thresholds the issue states; each is a claim about a healthy H200 run.
MIN_MEASURE_S = 10.0
"""Every training case's timed phase: long enough for NVML's ~1 s power average to settle."""
MIN_ENERGY_WINDOW_S = 5.0
ENERGY_POWER_TOLERANCE = 0.15
"""|ΔE/Δt ÷ mean power − 1| may be this large: power is a trailing ~1 s average."""
FIRST_LOSS_TOLERANCE = 0.5
"""Random weights and uniformly random tokens start within this of ln(vocab)."""
MFU_PLAUSIBLE = (0.25, 0.60)
MFU_BUG = 0.80
"""Above this, the FLOP count, the clock or the peak is wrong: no real 1B run gets there."""
MFU_RECOMPUTE_RTOL = 1e-6
OOM_WITHIN_S = 90.0


@dataclass
class Check:
    name: str
    status: str  # pass | fail | null
    detail: str
    """What was measured against what was expected, or why it could not be decided."""
    value: Any = None


def _ok(name: str, good: bool, detail: str, value: Any = None) -> Check:
    return Check(name, "pass" if good else "fail", detail, value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


# ---------------------------------------------------------------- preflight
def preflight_checks(pre: dict[str, Any]) -> list[Check]:
    """Device name, NVML memory total (v1 and v2), power limit, ``llmbench env``."""
    devices = (pre.get("nvml") or {}).get("devices") or []
    if not devices:
        why = (pre.get("nvml") or {}).get("error", "no device in the preflight")
        return [Check("preflight.device", "fail", f"NVML listed no device: {why}")]
    dev, torch_view = devices[0], pre.get("torch") or {}
    name = dev.get("name")
    checks = []
    spec = gpu_spec(name) if isinstance(name, str) else None
    same = torch_view.get("device_name") == name
    checks.append(
        _ok(
            "preflight.device",
            spec is not None and spec.peak("bf16") is not None and same,
            f"NVML {name!r}, torch {torch_view.get('device_name')!r} → "
            + (f"table entry {spec.key}" if spec else "no peak-FLOPs entry"),
            {"name": name, "table_key": spec.key if spec else None},
        )
    )
    v1, v2 = dev.get("memory_v1") or {}, dev.get("memory_v2") or {}
    totals = (_number(v1.get("total")), _number(v2.get("total")))
    torch_total = _number(torch_view.get("total_memory_bytes"))
    good = (
        None not in totals
        and totals[0] == totals[1]
        and _number(v2.get("used")) is not None
        and _number(v1.get("used")) is not None
        and v2["used"] <= v1["used"]
        and (torch_total is None or torch_total <= totals[0])
    )
    checks.append(
        _ok(
            "preflight.memory_total",
            good,
            f"NVML total v1 {v1.get('total')}, v2 {v2.get('total')} (reserved {v2.get('reserved')}); "
            f"used v1 {v1.get('used')} ≥ v2 {v2.get('used')} expected; torch {torch_total}",
            {"v1": v1, "v2": v2, "torch_total_bytes": torch_total},
        )
    )
    limit = _number(dev.get("enforced_power_limit_w"))
    checks.append(
        _ok(
            "preflight.power_limit",
            limit is not None and 100 <= limit <= 2000,
            f"enforced power limit {dev.get('enforced_power_limit_w')} W (expected 100-2000 W)",
            limit,
        )
    )
    env = pre.get("llmbench_env") or {}
    rows = env.get("rows") if isinstance(env.get("rows"), list) else []
    named = [r[2] for r in rows if r[0] == "accelerator" and str(r[1]).startswith("gpu0")]
    matched = spec is not None and any(f"peak-FLOPs table: {spec.key}" in v for v in named)
    checks.append(
        _ok(
            "preflight.llmbench_env",
            env.get("exit_code") == 0 and matched,
            f"`llmbench env` exit {env.get('exit_code')}; gpu0 row {named[0] if named else None!r}"
            + (f"; expected table entry {spec.key}" if spec else ""),
        )
    )
    return checks


# ---------------------------------------------------------------- run
@dataclass
class ValidationCases:
    training: dict[int, CaseResult]  # zero stage -> uncapped case
    oom: CaseResult | None

    @classmethod
    def of(cls, results: list[CaseResult]) -> ValidationCases:
        capped = [r for r in results if r.params.get("training.rank_memory_limit_bytes")]
        training = {int(r.params["deepspeed.zero_stage"]): r for r in results if r not in capped}
        return cls(training, capped[0] if capped else None)


def _measure_window(case_dir: Path, result: CaseResult) -> tuple[float, float] | None:
    start = next((e.t for e in read_phase_events(case_dir) if e.phase == "measure"), None)
    measure_s = _number(result.metrics.get("measure_s"))
    return None if start is None or measure_s is None else (start, start + measure_s)


def energy_checks(case_dir: Path, result: CaseResult, tag: str) -> list[Check]:
    """Energy counter monotonic; ΔE/Δt over the measure window against the mean power reading."""
    path = case_dir / "timeline.csv"
    if not path.exists():
        return [Check(f"nvml.energy[{tag}]", "fail", f"no timeline at {path}")]
    frame = load_timeline(path)
    rows = frame[(frame["source"] == "nvml") & (frame["device"] == "gpu0")].sort_values("t")
    energy = rows[["t", "energy_j"]].dropna() if "energy_j" in rows else rows.iloc[0:0]
    if energy.empty:
        return [Check(f"nvml.energy[{tag}]", "fail", "no energy counter reading in the timeline")]
    steps = np.diff(energy["energy_j"].to_numpy())
    monotonic = Check(
        f"nvml.energy_monotonic[{tag}]",
        "pass" if (steps >= 0).all() else "fail",
        f"{len(energy)} readings, {int((steps < 0).sum())} decreases",
    )
    window = _measure_window(case_dir, result)
    if window is None:
        return [monotonic, Check(f"nvml.energy_vs_power[{tag}]", "fail", "no measure window")]
    start, end = window
    if end - start < MIN_ENERGY_WINDOW_S:
        detail = f"measure window {end - start:.2f} s < {MIN_ENERGY_WINDOW_S:g} s"
        return [monotonic, Check(f"nvml.energy_vs_power[{tag}]", "fail", detail)]
    t, joules = energy["t"].to_numpy(), energy["energy_j"].to_numpy()
    inside = rows[(rows["t"] >= start) & (rows["t"] <= end)]["power_w"].dropna()
    if t[0] > start or t[-1] < end or inside.empty:
        detail = "energy or power not sampled across the whole measure window"
        return [monotonic, Check(f"nvml.energy_vs_power[{tag}]", "fail", detail)]
    rate = float(np.interp(end, t, joules) - np.interp(start, t, joules)) / (end - start)
    power = float(inside.mean())
    ratio = rate / power if power > 0 else math.inf
    return [
        monotonic,
        _ok(
            f"nvml.energy_vs_power[{tag}]",
            abs(ratio - 1) <= ENERGY_POWER_TOLERANCE,
            f"ΔE/Δt {rate:.1f} W vs mean power {power:.1f} W over {end - start:.1f} s "
            f"(ratio {ratio:.3f}, tolerance ±{ENERGY_POWER_TOLERANCE:.0%})",
            {"energy_rate_w": rate, "power_mean_w": power, "window_s": end - start},
        ),
    ]


def case_memory_check(result: CaseResult, tag: str) -> Check:
    """NVML's memory of the case's process covers at least what the allocator reserved."""
    name = f"nvml.case_memory[{tag}]"
    case = result.metrics.get("device_case_memory_peak_bytes")
    reserved = result.metrics.get("allocator_reserved_peak_bytes")
    if case is None:
        why = result.null_reasons.get("device_case_memory_peak_bytes", "no reason recorded")
        # an honest null: the runtime (e.g. gVisor) may hide processes from NVML
        return Check(name, "null" if why != "no reason recorded" else "fail", why)
    if reserved is None:
        return Check(name, "fail", "allocator_reserved_peak_bytes missing")
    return _ok(
        name,
        case >= reserved,
        f"NVML case memory {case} B vs allocator reserved peak {reserved} B",
        {"case_bytes": case, "reserved_bytes": reserved},
    )


def _dims(result: CaseResult):
    p = result.params
    return resolve_dims(
        p["model.family"], p["model.size"], {f: p.get(f"model.{f}") for f in DIM_FIELDS}
    )


def training_checks(cases: ValidationCases, device_name: str | None) -> list[Check]:
    """Both layouts ran long enough, started at ln(vocab), agree, and report an honest MFU."""
    checks = []
    for stage in (0, 3):
        result = cases.training.get(stage)
        if result is None:
            checks.append(Check(f"training.ran[z{stage}]", "fail", f"no ZeRO-{stage} case"))
            continue
        measure_s = _number(result.metrics.get("measure_s"))
        checks.append(
            _ok(
                f"training.ran[z{stage}]",
                result.status == "ok" and measure_s is not None and measure_s >= MIN_MEASURE_S,
                f"status {result.status} ({result.reason}); measure phase {measure_s} s "
                f"(≥ {MIN_MEASURE_S:g} s expected)",
            )
        )
        if result.status != "ok":
            continue
        expected = math.log(_dims(result).vocab_size)
        first = _number(result.metrics.get("loss_first"))
        checks.append(
            _ok(
                f"training.first_loss[z{stage}]",
                first is not None and abs(first - expected) <= FIRST_LOSS_TOLERANCE,
                f"first timed loss {first} vs ln(vocab) {expected:.3f} ± {FIRST_LOSS_TOLERANCE}",
                first,
            )
        )
        checks.append(mfu_check(result, device_name, f"z{stage}"))
    checks.append(loss_agreement_check(cases))
    return checks


def loss_agreement_check(cases: ValidationCases) -> Check:
    ref, other = cases.training.get(0), cases.training.get(3)
    if not (ref and other and ref.losses and other.losses):
        return Check("training.loss_agreement", "fail", "ZeRO-0 or ZeRO-3 has no losses")
    precision = ref.params.get("deepspeed.precision", "bf16")
    atol, rtol = TOLERANCES[precision]
    n = min(len(ref.losses), len(other.losses))
    excess = [
        abs(a - b) - (atol + rtol * abs(a))
        for a, b in zip(ref.losses[:n], other.losses[:n], strict=True)
    ]
    worst = max(abs(a - b) for a, b in zip(ref.losses[:n], other.losses[:n], strict=True))
    return _ok(
        "training.loss_agreement",
        len(ref.losses) == len(other.losses) and max(excess) <= 0,
        f"{n} steps, max |Δloss| {worst:.4g} (tolerance {atol:g} + {rtol:g}·|loss|, {precision})",
        worst,
    )


def mfu_check(result: CaseResult, device_name: str | None, tag: str) -> Check:
    """MFU from first principles: tokens per median step × (6N + 12·L·H·T) ÷ the datasheet peak."""
    name = f"training.mfu[{tag}]"
    p, m = result.params, result.metrics
    spec = gpu_spec(device_name) if device_name else None
    n = m.get("params_flops_params")
    if spec is None or spec.peak(p["deepspeed.precision"]) is None or not result.step_times_s:
        return Check(name, "fail", f"no peak for {device_name!r} or no step times")
    if n is None:
        return Check(name, "fail", "params_flops_params missing")
    dims = _dims(result)
    tokens = p["training.micro_batch"] * p["training.grad_accum"] * p["training.seq_len"]
    tokens *= p["parallel.world_size"] // (p["parallel.tp"] * p["parallel.pp"])
    tokens_per_s = tokens / statistics.median(result.step_times_s)
    per_token = 6 * n + 12 * dims.num_layers * dims.hidden_size * p["training.seq_len"]
    mfu = tokens_per_s / p["parallel.world_size"] * per_token / spec.peak(p["deepspeed.precision"])
    reported = _number(m.get("mfu"))
    agrees = reported is not None and math.isclose(mfu, reported, rel_tol=MFU_RECOMPUTE_RTOL)
    low, high = MFU_PLAUSIBLE
    plausible = low <= mfu <= high
    verdict = (
        "a bug (above 0.8)"
        if mfu > MFU_BUG
        else "plausible"
        if plausible
        else f"outside {low}-{high}"
    )
    return _ok(
        name,
        agrees and plausible,
        f"by hand {mfu:.4f} ({tokens_per_s:.0f} tokens/s × {per_token:.4g} FLOP/token ÷ "
        f"{spec.peak(p['deepspeed.precision']):.4g}), reported {reported}: {verdict}",
        {"mfu_by_hand": mfu, "mfu_reported": reported, "tokens_per_s": tokens_per_s},
    )


def oom_check(cases: ValidationCases) -> Check:
    result = cases.oom
    if result is None:
        return Check("oom.capped_case", "fail", "no case with training.rank_memory_limit_bytes")
    wall = _number(result.metrics.get("wall_s"))
    return _ok(
        "oom.capped_case",
        result.status == "oom" and wall is not None and wall <= OOM_WITHIN_S,
        f"status {result.status} after {wall} s (oom within {OOM_WITHIN_S:g} s expected); "
        f"reason: {result.reason}",
        {"status": result.status, "wall_s": wall},
    )


def planner_check(plan: dict[str, Any] | None, cases: ValidationCases) -> Check:
    """``llmbench plan --validate``'s memory error on every GPU case that ran."""
    if not plan or not isinstance(plan.get("cases"), list):
        return Check("planner.memory_error", "fail", "no plan --validate output")
    ran = {r.case_id for r in cases.training.values() if r.status == "ok"}
    errors = {row.get("label"): row.get("peak_error") for row in plan["cases"]}
    missing = ran - {row.get("case_id") for row in plan["cases"]}
    reported = [v for v in errors.values() if _number(v) is not None]
    return _ok(
        "planner.memory_error",
        not missing and len(reported) == len(errors) and bool(reported),
        "predicted vs measured allocator peak: "
        + ", ".join(
            f"{k}: {v:+.1%}" if _number(v) is not None else f"{k}: {v}" for k, v in errors.items()
        )
        + (f"; cases missing: {sorted(missing)}" if missing else ""),
        errors,
    )


# ---------------------------------------------------------------- verdict
def judge(run_dir: Path, preflight: dict[str, Any], plan: dict[str, Any] | None) -> dict[str, Any]:
    """Every check over one validation run; the dict written as the verdict file."""
    run = read_run(run_dir)
    cases = ValidationCases.of(run.results)
    devices = (preflight.get("nvml") or {}).get("devices") or [{}]
    device = next(
        (k["device_name"] for r in run.results for k in r.ranks if k.get("device_name")),
        devices[0].get("name"),
    )
    checks = preflight_checks(preflight)
    for stage, result in sorted(cases.training.items()):
        if result.status == "ok":
            checks += energy_checks(run_dir / "cases" / result.case_id, result, f"z{stage}")
            checks.append(case_memory_check(result, f"z{stage}"))
    checks += training_checks(cases, device)
    checks.append(oom_check(cases))
    checks.append(planner_check(plan, cases))
    counts = {s: sum(c.status == s for c in checks) for s in ("pass", "fail", "null")}
    figures = {
        f"z{stage}": {
            k: r.metrics.get(k)
            for k in (
                "tokens_per_s",
                "mfu",
                "step_time_s_median",
                "measure_s",
                "allocator_peak_bytes",
                "allocator_reserved_peak_bytes",
                "device_case_memory_peak_bytes",
                "device_memory_used_peak_bytes",
                "power_w_mean",
                "energy_j_per_token",
                "optimizer_impl",
            )
        }
        for stage, r in sorted(cases.training.items())
    }
    return {
        "verdict": "fail" if counts["fail"] else "pass",
        "counts": counts,
        "run_dir": str(run_dir),
        "device": device,
        "checks": [asdict(c) for c in checks],
        "figures": figures,
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("preflight", type=Path)
    parser.add_argument("plan", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    verdict = judge(args.run_dir, _read_json(args.preflight) or {}, _read_json(args.plan))
    args.output.write_text(json.dumps(verdict, indent=1, default=str))
    for check in verdict["checks"]:
        print(f"{check['status']:>4}  {check['name']}: {check['detail']}")
    print(f"verdict: {verdict['verdict']} {verdict['counts']} → {args.output}")
    return 0 if verdict["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
