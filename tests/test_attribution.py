"""A step-time change of a profiled case is attributed to the phases that moved.

Unit tests on hand-made verdicts, ``compare`` on a golden profiled run
(tests/data/runs/profile: tiny GPT-2, ZeRO 0/2/3 × 1-2 ranks and a 2-stage
pipeline case, ``run.profile=breakdown``, recorded on the shared 2-core
machine) with a slowdown written into a copy, and one end-to-end comparison of
two real runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from golden_runs import runs
from rich.console import Console

from llmbench.judge.attribution import (
    attribute,
    measured_in_all,
    phase_of,
    profile_metrics,
    scattered_phase,
)
from llmbench.judge.compare import Comparison, Verdict, compare_runs, measured_metrics
from llmbench.judge.report import verdicts
from llmbench.judge.runs import read_run
from llmbench.measure.slowdown import ENV as SLOWDOWN_ENV
from tests.conftest import run_dirs, run_llmbench

(PROFILED,) = runs("profile")
STEP = "step_time_s_median"


def _verdict(metric: str, base: float, cur: float, verdict: str = "unchanged") -> Verdict:
    return Verdict(
        "c1", "gpt2-tiny z2", metric, verdict, base, cur, cur - base, (cur - base) / base
    )


def test_an_injected_optimizer_slowdown_is_named_first():
    """20 ms injected into the optimizer step of a 100 ms step: optimizer_step leads."""
    comparison = Comparison("base", "cur", "s")
    comparison.verdicts = [
        _verdict(STEP, 0.100, 0.121, "regression"),
        _verdict("phase_forward_s_median", 0.030, 0.0305),
        _verdict("phase_backward_s_median", 0.050, 0.0505),
        _verdict("phase_optimizer_step_s_median", 0.018, 0.038, "regression"),
        _verdict("phase_other_s_median", 0.002, 0.002),
    ]
    (found,) = attribute(comparison)
    assert found.phases[0][0] == "optimizer_step"
    assert found.text().startswith("step_time +21 % — optimizer_step +111 %, ")


def test_no_attribution_without_a_step_change_or_phases():
    comparison = Comparison("base", "cur", "s")
    comparison.verdicts = [
        _verdict(STEP, 0.100, 0.101),
        _verdict("phase_forward_s_median", 0.030, 0.040, "regression"),
    ]
    assert attribute(comparison) == []
    comparison.verdicts = [_verdict(STEP, 0.100, 0.200, "regression")]
    assert attribute(comparison) == []


def test_names():
    assert phase_of("phase_optimizer_step_s_median") == "optimizer_step"
    assert phase_of("phase_share_forward") is None
    assert profile_metrics(["tokens_per_s", "phase_forward_s_median", "comm_bytes_per_step"]) == [
        "comm_bytes_per_step",
        "phase_forward_s_median",
    ]


def _slowed(tmp_path: Path, phase: str, fraction: float, drop_profile: bool = False) -> Path:
    """A copy of the golden run whose ``phase`` grew by ``fraction`` × each case's step
    (step time with it, throughput down); or, ``drop_profile``, the run unprofiled."""
    out = tmp_path / "slowed"
    out.mkdir()
    lines = []
    for line in (PROFILED / "results.jsonl").read_text().splitlines():
        result = json.loads(line)
        m = result["metrics"]
        if drop_profile:
            result["metrics"] = {
                k: v for k, v in m.items() if not k.startswith(("phase_", "comm_"))
            }
            result["phase_times_s"] = None
        elif m.get(f"phase_{phase}_s_median") is not None:
            added = fraction * m[STEP]
            m[f"phase_{phase}_s_median"] += added
            m[STEP] += added
            m["tokens_per_s"] /= 1 + fraction
        lines.append(json.dumps(result))
    (out / "results.jsonl").write_text("\n".join(lines) + "\n")
    for name in ("env.json", "scenario.yaml"):
        (out / name).write_text((PROFILED / name).read_text())
    return out


def test_compare_judges_phases_by_default_and_names_the_one_that_moved(tmp_path):
    """Backward grown by 30 % of each profiled case's step: every such case regresses, and its
    step-time verdict says backward moved — on the terminal, Markdown, JUnit and JSON."""
    base, cur = read_run(PROFILED), read_run(_slowed(tmp_path, "backward", 0.30))
    comparison = compare_runs(base, cur)
    judged = {v.metric for v in comparison.verdicts}
    assert {"phase_backward_s_median", "phase_forward_s_median", "comm_s_median"} <= judged
    steps = [v for v in comparison.verdicts if v.metric == STEP]
    assert len(steps) == 7
    for v in steps:
        if v.verdict == "unchanged":  # the pipeline case: no phases, nothing injected
            assert "2 pp2" in v.label and v.detail == ""
            continue
        assert v.verdict == "regression"
        assert v.detail.startswith("step_time +30 % — backward +"), v.detail
    assert comparison.exit_code == 1 and not comparison.missing
    line = next(v.detail for v in steps if v.verdict == "regression")
    console = Console(width=400, record=True)
    console.print(verdicts.terminal(comparison))
    assert line in console.export_text()
    assert line in verdicts.summary_markdown(comparison).replace("\\_", "_")
    cases = ET.fromstring(verdicts.junit_xml(comparison)).iter("testcase")
    failed = [c.find("failure") for c in cases if c.get("name") == STEP]
    assert any(f is not None and line in f.get("message", "") for f in failed)
    doc = json.loads(verdicts.to_json(comparison))
    assert len(doc["attributions"]) == 6
    assert {a["phases"][0]["phase"] for a in doc["attributions"]} == {"backward"}
    assert any(v["detail"] == line for v in doc["verdicts"] if v["metric"] == STEP)


def test_an_unprofiled_run_is_compared_without_its_phases(tmp_path):
    """Profiling is a run setting: dropping it is not missing data (no exit 2)."""
    base, cur = read_run(PROFILED), read_run(_slowed(tmp_path, "", 0, drop_profile=True))
    assert measured_in_all([measured_metrics(base), measured_metrics(cur)]) == []
    comparison = compare_runs(base, cur)
    assert not any(phase_of(v.metric) for v in comparison.verdicts)
    assert not comparison.missing


def test_a_disturbed_run_names_the_phase_that_scattered():
    steady = [{"status": "ok", "phase_times_s": {"forward": [0.01] * 6, "backward": [0.02] * 6}}]
    noisy = [
        {"status": "ok", "phase_times_s": {"forward": [0.01] * 6, "backward": [0.02, 0.06] * 3}}
    ]
    assert scattered_phase(steady, noisy) == (
        "most in backward (p90−p10 40.0 ms per step vs 0.0 ms)"
    )
    assert scattered_phase(noisy, steady) is None
    assert scattered_phase([{"status": "ok", "phase_times_s": None}], noisy) is None


SCENARIO = """\
name: attribution
model: {family: gpt2, size: tiny}
training: {seq_len: 32, micro_batch: 2, warmup_steps: 1, steps: 6}
deepspeed: {zero_stage: 1, precision: bf16}
run: {sampling: false, timeout_s: 300, profile: breakdown, threads_per_rank: 1}
"""


@pytest.mark.slow
@pytest.mark.usefixtures("ds_ops")
def test_compare_attributes_a_real_slowdown_to_its_phase(tmp_path):
    """Two real runs of one case, the second slowed by the test-only hook (every timed step
    sleeps 1 × itself: measure/slowdown.py), then ``llmbench compare``. The sleep follows
    DeepSpeed's engine.step, outside every DeepSpeed timer, so it lands in ``other``, and
    the step-time verdict must name it first: it equals the whole slowed step, more than
    any one phase of it can have moved.

    The runs go at the same time, one single-threaded rank each on the two cores, so they
    share the machine's load: one after the other, the load other jobs put on this shared
    machine swung a 30 ms step more than the injected 2× (2 of 5 tries judged it faster).
    """
    scenario = tmp_path / "attribution.yaml"
    scenario.write_text(SCENARIO)
    # a single thread that sleeps when it waits (bench/gate_quality.py's setting)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "200"}
    command = [sys.executable, "-m", "llmbench", "run", str(scenario), "--output-dir"]
    started = {
        name: subprocess.Popen(
            [*command, str(tmp_path / name / "runs")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, SLOWDOWN_ENV: "1.0"} if name == "slow" else env,
        )
        for name in ("base", "slow")
    }
    made = []
    for name, process in started.items():
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
        (run_dir,) = run_dirs(tmp_path / name / "runs")
        made.append(str(run_dir))
    report, summary = tmp_path / "verdicts.json", tmp_path / "summary.md"
    outputs = ["--json", str(report), "--markdown", str(summary)]
    history = ["--history", str(tmp_path / "history.sqlite")]
    done = run_llmbench(["compare", *made, *outputs, *history])
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(report.read_text())
    (step,) = [v for v in doc["verdicts"] if v["metric"] == STEP]
    assert step["verdict"] == "regression", step
    (found,) = doc["attributions"]
    assert found["phases"][0]["phase"] == "other", found
    assert step["detail"].startswith(found["text"])
    assert found["text"].startswith("step_time +") and " — other +" in found["text"]
    assert found["text"] in summary.read_text().replace("\\_", "_")


def test_history_keeps_phase_trends(tmp_path):
    """``llmbench history --metric phase_backward_s_median``: one point per profiled case;
    a mistyped phase metric gets the near names."""
    from llmbench.errors import UserError
    from llmbench.judge.history import History, trend

    history = History(tmp_path / "history.sqlite")
    history.index_run(read_run(PROFILED))
    found = trend(history, "phase_backward_s_median")
    assert len(found.frame) == 6  # the pipeline case has no phases
    assert (found.frame["value"] > 0).all()
    with pytest.raises(UserError, match="did you mean phase_backward_s_median"):
        trend(history, "phase_bakward_s_median")
