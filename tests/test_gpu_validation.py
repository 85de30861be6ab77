"""The GPU validation verdict on a synthetic run directory: every check, passing and failing.

The run directory is written the way a sweep writes one (results.jsonl, per
case phases.rank0.jsonl and timeline.csv); the figures are those of a healthy
1B Llama on an H200, and each failing variant breaks one of them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmbench.define.loader import load_scenario
from llmbench.hardware import gpu_spec
from llmbench.judge.gpu_validation import judge, main
from llmbench.judge.result import CaseResult
from llmbench.judge.store import RunDir
from llmbench.judge.timeline import save_timeline, timeline_frame

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_800_000_000.0
N_FLOPS = 1_235_814_400  # Llama 3.2 1B without the tied embedding counted twice
SEQ, MB, STEPS = 2048, 8, 50
PER_TOKEN = 6 * N_FLOPS + 12 * 16 * 2048 * SEQ
PEAK = gpu_spec("NVIDIA H200").peak("bf16")
STEP_S = MB * SEQ * PER_TOKEN / (0.40 * PEAK)  # a step at MFU 0.40
LN_VOCAB = math.log(128256)


def preflight(**device) -> dict:
    gib = 2**30
    dev = {
        "index": 0,
        "name": "NVIDIA H200",
        "memory_v1": {"total": 150 * gib, "used": 1 * gib, "free": 149 * gib},
        "memory_v2": {
            "total": 150 * gib,
            "reserved": gib // 2,
            "used": gib // 2,
            "free": 149 * gib,
        },
        "enforced_power_limit_w": 700.0,
        **device,
    }
    row = ["accelerator", "gpu0 (NVML 0)", "NVIDIA H200 — peak-FLOPs table: h200-141gb"]
    return {
        "nvml": {"driver": "580.159.04", "devices": [dev]},
        "torch": {"device_name": "NVIDIA H200", "total_memory_bytes": 149 * gib},
        "llmbench_env": {"exit_code": 0, "rows": [row]},
    }


def _result(case, status="ok", **metrics) -> CaseResult:
    result = CaseResult(case.id, case.label, case.params, status, run_id="r", scenario="gpu")
    if status != "ok":
        result.reason = "rank 0: OutOfMemoryError: CUDA out of memory"
        result.metrics.update(wall_s=metrics.pop("wall_s", 40.0))
        return result
    tokens_per_s = MB * SEQ / STEP_S
    result.step_times_s = [STEP_S] * STEPS
    result.losses = [LN_VOCAB + 0.2 - 0.001 * i for i in range(STEPS)]
    result.metrics.update(
        measure_s=STEP_S * STEPS,
        wall_s=60.0,
        loss_first=result.losses[0],
        tokens_per_s=tokens_per_s,
        params_flops_params=N_FLOPS,
        mfu=tokens_per_s * PER_TOKEN / PEAK,
        allocator_reserved_peak_bytes=60 * 2**30,
        device_case_memory_peak_bytes=61 * 2**30,
    )
    result.ranks = [{"rank": 0, "device_name": "NVIDIA H200"}]
    result.metrics.update(metrics)
    return result


def _timeline(case_dir: Path, power_w: float = 500.0, rate_w: float = 500.0) -> None:
    """NVML samples every 0.1 s for 40 s; the measure phase starts at T0 + 5."""
    samples = [
        {
            "t": T0 + i / 10,
            "source": "nvml",
            "device": "gpu0",
            "energy_j": 1000.0 + rate_w * i / 10,
            "power_w": power_w,
        }
        for i in range(400)
    ]
    save_timeline(timeline_frame(samples, ("energy_j", "power_w")), case_dir / "timeline.csv")
    lines = [{"phase": p, "t": T0 + dt, "pid": 1} for p, dt in (("warmup", 3.0), ("measure", 5.0))]
    (case_dir / "phases.rank0.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture
def build(tmp_path):
    """A validation run directory; keyword arguments change one case or the plan output."""
    cases = load_scenario(ROOT / "scenarios" / "gpu_validate.yaml").expand()
    z0, z3, capped = cases

    def build(z0_metrics=None, z3_metrics=None, oom=None, timeline=None, losses3=None):
        run = RunDir(tmp_path / "run")
        run.path.mkdir(exist_ok=True)
        results = [
            _result(z0, **(z0_metrics or {})),
            _result(z3, **(z3_metrics or {})),
            _result(capped, "oom", **(oom or {})) if oom != "ok" else _result(capped),
        ]
        if losses3 is not None:
            results[1].losses = losses3
        run.results_path.unlink(missing_ok=True)
        for result in results:
            run.append(result)
            case_dir = run.case_dir(result.case_id)
            case_dir.mkdir(parents=True, exist_ok=True)
            if result.status == "ok":
                _timeline(case_dir, **(timeline or {}))
        plan = {
            "cases": [
                {"case_id": r.case_id, "label": r.label, "peak_error": 0.08}
                for r in results
                if r.status == "ok"
            ]
        }
        return run.path, plan

    return build


def rewrite(run_dir: Path, change) -> None:
    """Change the stored results in place, as if the sweep had recorded them so."""
    run = RunDir(run_dir)
    results = run.results()
    for result in results:
        change(result)
    run.results_path.unlink()
    for result in results:
        run.append(result)


def check(verdict: dict, name: str) -> dict:
    return next(c for c in verdict["checks"] if c["name"] == name)


def statuses(verdict: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in verdict["checks"]}


def test_a_healthy_run_passes_every_check(build, tmp_path):
    run_dir, plan = build()
    verdict = judge(run_dir, preflight(), plan)
    assert verdict["verdict"] == "pass", [c for c in verdict["checks"] if c["status"] != "pass"]
    names = set(statuses(verdict))
    assert {
        "preflight.device",
        "preflight.memory_total",
        "preflight.power_limit",
        "preflight.llmbench_env",
        "nvml.energy_monotonic[z0]",
        "nvml.energy_vs_power[z3]",
        "nvml.case_memory[z0]",
        "training.ran[z3]",
        "training.first_loss[z0]",
        "training.mfu[z3]",
        "training.loss_agreement",
        "oom.capped_case",
        "planner.memory_error",
    } <= names
    assert check(verdict, "training.mfu[z0]")["value"]["mfu_by_hand"] == pytest.approx(0.40)


@pytest.mark.parametrize(
    ("pre", "failing"),
    [
        ({"name": "NVIDIA H200 NVL"}, "preflight.device"),  # torch says H200: not the same device
        ({"name": "NVIDIA B300"}, "preflight.device"),  # no peak-FLOPs entry
        ({"memory_v2": {"error": "FunctionNotFound"}}, "preflight.memory_total"),
        ({"memory_v2": {"total": 1, "used": 0}}, "preflight.memory_total"),  # totals differ
        ({"enforced_power_limit_w": {"error": "NotSupported"}}, "preflight.power_limit"),
    ],
)
def test_preflight_checks_fail(build, pre, failing):
    run_dir, plan = build()
    verdict = judge(run_dir, preflight(**pre), plan)
    assert statuses(verdict)[failing] == "fail" and verdict["verdict"] == "fail"


def test_llmbench_env_must_succeed_and_name_the_table_entry(build):
    run_dir, plan = build()
    pre = preflight()
    pre["llmbench_env"]["rows"][0][2] = "NVIDIA H200 — not in the peak-FLOPs table: MFU null"
    assert statuses(judge(run_dir, pre, plan))["preflight.llmbench_env"] == "fail"
    pre = preflight()
    pre["llmbench_env"]["exit_code"] = 2
    assert statuses(judge(run_dir, pre, plan))["preflight.llmbench_env"] == "fail"


def test_power_that_disagrees_with_the_energy_counter_fails(build):
    run_dir, plan = build(timeline={"power_w": 400.0, "rate_w": 500.0})  # 25 % apart
    found = statuses(judge(run_dir, preflight(), plan))
    assert found["nvml.energy_vs_power[z0]"] == "fail"
    assert found["nvml.energy_monotonic[z0]"] == "pass"


def test_an_energy_counter_that_goes_backwards_fails(build):
    run_dir, plan = build(timeline={"rate_w": -5.0, "power_w": -5.0})
    assert statuses(judge(run_dir, preflight(), plan))["nvml.energy_monotonic[z0]"] == "fail"


def test_a_short_measure_window_cannot_check_energy(build):
    run_dir, plan = build(z0_metrics={"measure_s": 3.0})
    found = statuses(judge(run_dir, preflight(), plan))
    assert found["nvml.energy_vs_power[z0]"] == "fail"
    assert found["training.ran[z0]"] == "fail"  # and the measure phase is under 10 s


def test_case_memory_below_the_allocator_fails_and_a_hidden_process_is_null(build):
    run_dir, plan = build(
        z0_metrics={"device_case_memory_peak_bytes": 2**30},
        z3_metrics={"device_case_memory_peak_bytes": None},
    )
    result = judge(run_dir, preflight(), plan)
    assert statuses(result)["nvml.case_memory[z0]"] == "fail"
    assert statuses(result)["nvml.case_memory[z3]"] == "fail"  # null without a reason
    run_dir, plan = build(z3_metrics={"device_case_memory_peak_bytes": None})
    # the reason travels in null_reasons, as the runner records it
    results = RunDir(run_dir).results()
    results[1].null_reasons["device_case_memory_peak_bytes"] = "no case process in NVML's list"
    RunDir(run_dir).results_path.unlink()
    for r in results:
        RunDir(run_dir).append(r)
    check = next(
        c
        for c in judge(run_dir, preflight(), plan)["checks"]
        if c["name"] == "nvml.case_memory[z3]"
    )
    assert check["status"] == "null" and "NVML" in check["detail"]


def test_first_loss_far_from_ln_vocab_fails(build):
    run_dir, plan = build(z3_metrics={"loss_first": 84.0})
    assert statuses(judge(run_dir, preflight(), plan))["training.first_loss[z3]"] == "fail"


def test_losses_that_diverge_fail(build):
    run_dir, plan = build(losses3=[LN_VOCAB + 0.2 + 0.01 * i for i in range(STEPS)])
    assert statuses(judge(run_dir, preflight(), plan))["training.loss_agreement"] == "fail"


@pytest.mark.parametrize(
    ("metrics", "why"),
    [
        ({"mfu": 0.42}, "reported"),  # does not match the recomputation
        ({"params_flops_params": None}, "params_flops_params missing"),
    ],
)
def test_mfu_must_match_the_recomputation(build, metrics, why):
    run_dir, plan = build(z0_metrics=metrics)
    found = check(judge(run_dir, preflight(), plan), "training.mfu[z0]")
    assert found["status"] == "fail" and why in found["detail"]


@pytest.mark.parametrize(("mfu", "word"), [(0.9, "a bug"), (0.1, "outside")])
def test_implausible_mfu_fails(build, mfu, word):
    run_dir, plan = build()

    def faster(result: CaseResult) -> None:  # steps whose time makes the MFU implausible
        if result.status == "ok":
            result.step_times_s = [STEP_S * 0.40 / mfu] * STEPS
            result.metrics["mfu"] = mfu

    rewrite(run_dir, faster)
    found = check(judge(run_dir, preflight(), plan), "training.mfu[z0]")
    assert found["status"] == "fail" and word in found["detail"]
    assert found["value"]["mfu_by_hand"] == pytest.approx(mfu)


@pytest.mark.parametrize("oom", [{"wall_s": 200.0}, "ok"])
def test_the_capped_case_must_be_oom_within_90_s(build, oom):
    run_dir, plan = build(oom=oom)
    assert statuses(judge(run_dir, preflight(), plan))["oom.capped_case"] == "fail"


def test_a_timeout_is_not_an_oom(build):
    run_dir, plan = build()

    def timed_out(result: CaseResult) -> None:
        if result.status == "oom":
            result.status, result.reason = "timeout", "killed after 240 s during init"

    rewrite(run_dir, timed_out)
    assert statuses(judge(run_dir, preflight(), plan))["oom.capped_case"] == "fail"


def test_planner_output_missing_or_without_errors_fails(build):
    run_dir, plan = build()
    assert statuses(judge(run_dir, preflight(), None))["planner.memory_error"] == "fail"
    plan["cases"][0]["peak_error"] = None
    assert statuses(judge(run_dir, preflight(), plan))["planner.memory_error"] == "fail"


def test_main_writes_the_verdict_file_and_exits_by_it(build, tmp_path, capsys):
    run_dir, plan = build()
    pre, plan_path, out = tmp_path / "pre.json", tmp_path / "plan.json", tmp_path / "v.json"
    pre.write_text(json.dumps(preflight()))
    plan_path.write_text(json.dumps(plan))
    assert main([str(run_dir), str(pre), str(plan_path), "-o", str(out)]) == 0
    assert json.loads(out.read_text())["verdict"] == "pass"
    assert "verdict: pass" in capsys.readouterr().out
    pre.write_text(json.dumps(preflight(enforced_power_limit_w=None)))
    assert main([str(run_dir), str(pre), str(plan_path), "-o", str(out)]) == 1
