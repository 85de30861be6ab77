"""`llmbench run` end to end: real DeepSpeed steps on CPU, isolation, durability, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from llmbench.judge.digest import read_digest
from llmbench.judge.store import RunDir
from tests.conftest import ROOT, interruptible, read_results, run_dirs, run_llmbench

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ds_ops")]

TINY = """\
name: {name}
model: {{family: gpt2, size: tiny}}
training: {{seq_len: 32, micro_batch: 2, warmup_steps: 1, steps: {steps}}}
"""


def case_pids(run_dir: Path) -> set[int]:
    pids = set()
    for path in run_dir.glob("cases/*/phases.rank*.jsonl"):
        pids.update(
            json.loads(line)["pid"] for line in path.read_text().splitlines() if line.strip()
        )
    return pids


def assert_no_orphans(run_dir: Path) -> None:
    alive = []
    for pid in case_pids(run_dir):
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    assert not alive, f"rank processes left behind: {alive}"


def test_zero_stages_on_two_ranks_agree_in_fp32(write_scenario, tmp_path):
    path = write_scenario(
        TINY.format(name="parity", steps=8)
        + "deepspeed: {zero_stage: [0, 1, 2, 3], precision: fp32}\nparallel: {world_size: 2}\ntraining: {seq_len: 32, micro_batch: 2, warmup_steps: 1, steps: 8, lr: 0.001}\n".replace(
            "training: {seq_len: 32, micro_batch: 2, warmup_steps: 1, steps: 8, lr: 0.001}\n", ""
        )
    )
    out = run_llmbench(
        ["run", str(path), "training.lr=0.001", "--output-dir", str(tmp_path / "runs")]
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    results = read_results(run_dir)
    assert [r["status"] for r in results] == ["ok"] * 4
    for r in results:
        assert len(r["step_times_s"]) == 8 and all(t > 0 for t in r["step_times_s"])
        assert len(set(r["step_times_s"])) > 1  # real, distinct timings
        m = r["metrics"]
        assert m["tokens_per_s"] == pytest.approx(m["tokens_per_step"] / m["step_time_s_median"])
        assert m["tokens_per_step"] == 2 * 32 * 2
        assert m["peak_memory_bytes"] > 50 * 2**20
        assert len(r["ranks"]) == 2
        # measurement fields (host sampler, FLOPs, nulls with reasons on a CPU)
        assert m["params_total"] == 560_640 and m["flops_per_token"] > 6 * m["params_flops_params"]
        assert m["tflops_per_s_per_device"] > 0
        assert m["mfu"] is None and r["null_reasons"]["mfu"] == "no peak FLOP/s figure for CPUs"
        assert (
            m["energy_j"] is None and r["null_reasons"]["energy_j"] == "no GPU sampled on a cpu run"
        )
        rank_peaks = [rank["memory"]["rss_peak_bytes"] for rank in r["ranks"]]
        assert m["host_tree_rss_peak_bytes"] >= 0.9 * sum(rank_peaks)  # the whole tree, both ranks
        timeline = (run_dir / "cases" / r["case_id"] / "timeline.csv").read_text()
        assert ",measure," in timeline
    reference = results[0]["losses"]
    assert len(set(reference)) == len(
        reference
    )  # the weights change every step (learning is checked on real text)
    for r in results[1:]:
        assert r["losses"] == pytest.approx(reference, abs=1e-4), r["label"]
    assert (run_dir / "env.json").exists() and (run_dir / "scenario.yaml").exists()
    assert "parity" in out.stdout and "z3" in out.stdout


def test_a_hanging_case_is_killed_at_its_timeout_with_no_orphan(write_scenario, tmp_path):
    path = write_scenario(
        TINY.format(name="hang", steps=1_000_000)
        + "parallel: {world_size: 2}\nrun: {timeout_s: 12}\n"
    )
    t0 = time.monotonic()
    out = run_llmbench(["run", str(path), "--output-dir", str(tmp_path / "runs")])
    assert time.monotonic() - t0 < 90
    assert out.returncode == 2, out.stdout + out.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    (result,) = read_results(run_dir)
    assert result["status"] == "timeout"
    assert result["reason"] == "killed after 12 s during measure"
    assert len(case_pids(run_dir)) == 2
    assert_no_orphans(run_dir)


def test_a_failing_case_is_an_error_and_the_sweep_goes_on(write_scenario, tmp_path):
    path = write_scenario(
        TINY.format(name="fail", steps=2)
        + "parallel: {world_size: 2}\ndeepspeed:\n  config:\n    - {}\n    - {optimizer: {type: NoSuchOptimizer}}\n"
    )
    out = run_llmbench(["run", str(path), "--output-dir", str(tmp_path / "runs")])
    assert out.returncode == 2
    (run_dir,) = run_dirs(tmp_path / "runs")
    results = read_results(run_dir)
    assert [r["status"] for r in results] == ["ok", "error"]
    assert (
        "NoSuchOptimizer" in results[1]["reason"]
        or "nosuchoptimizer" in results[1]["reason"].lower()
    )
    assert results[1]["metrics"]["tokens_per_s"] is None
    assert results[1]["null_reasons"]["tokens_per_s"] == "case error"
    assert_no_orphans(run_dir)


def test_resume_runs_only_missing_cases(write_scenario, tmp_path):
    path = write_scenario(TINY.format(name="resume", steps=2) + "deepspeed: {zero_stage: [0, 1]}\n")
    out = run_llmbench(["run", str(path), "--output-dir", str(tmp_path / "runs")])
    assert out.returncode == 0, out.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert [r.case_id for r in read_digest(RunDir(run_dir))] == [  # written as the sweep ended
        r["case_id"] for r in read_results(run_dir)
    ]
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    (run_dir / "results.jsonl").write_text(lines[0] + "\n")  # as if the run stopped after one case
    assert read_digest(RunDir(run_dir)) is None  # the results file changed: the digest is stale
    out = run_llmbench(["run", str(path), "--resume", str(run_dir)])
    assert out.returncode == 0, out.stderr
    assert "1 of 2 case runs to do" in out.stdout
    results = read_results(run_dir)
    assert len(read_digest(RunDir(run_dir))) == 2  # the resumed sweep wrote it again
    assert [r["case_id"] for r in results[:1]] == [json.loads(lines[0])["case_id"]]
    assert sorted(r["case_id"] for r in results) == sorted(
        json.loads(line)["case_id"] for line in lines
    )
    out = run_llmbench(["run", str(path), "--resume", str(run_dir)])
    assert "0 of 2 case runs to do" in out.stdout


def test_interrupt_keeps_finished_cases_and_leaves_nothing_running(write_scenario, tmp_path):
    path = write_scenario(
        TINY.format(name="interrupt", steps=200)
        + "training: {seed: [1, 2, 3, 4]}\n".replace("training: ", "# ")
        + "deepspeed: {zero_stage: [0, 1, 2, 3]}\n"
    )
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmbench", "run", str(path), "--output-dir", str(runs)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C goes to the foreground process group
        preexec_fn=interruptible,
    )
    deadline = time.monotonic() + 300
    results = None
    while time.monotonic() < deadline:
        found = list(runs.glob("*/results.jsonl")) if runs.exists() else []
        if found and found[0].read_text().count("\n") >= 1:
            results = found[0]
            break
        time.sleep(0.5)
    assert results is not None, "no case finished in time"
    time.sleep(2)  # the next case is running now
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted" in output and "--resume" in output
    run_dir = results.parent
    kept = read_results(run_dir)
    assert 1 <= len(kept) < 4 and all(r["status"] == "ok" for r in kept)
    assert_no_orphans(run_dir)
    out = run_llmbench(["run", str(path), "--resume", str(run_dir), "training.steps=200"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(r["params"]["deepspeed.zero_stage"] for r in read_results(run_dir)) == [
        0,
        1,
        2,
        3,
    ]


def test_spawn_start_method_and_precision_outcomes(write_scenario, tmp_path):
    path = write_scenario(
        TINY.format(name="spawn", steps=2)
        + "deepspeed: {precision: [bf16, fp16]}\nrun: {start_method: spawn}\n"
    )
    out = run_llmbench(["run", str(path), "--output-dir", str(tmp_path / "runs")])
    assert out.returncode == 0, out.stdout + out.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    bf16, fp16 = read_results(run_dir)
    assert bf16["status"] == "ok"
    # DeepSpeed decides: CPUs without fp16 kernels refuse it, which is a result, not a crash
    assert fp16["status"] in ("ok", "unsupported")
    if fp16["status"] == "unsupported":
        assert "fp16" in fp16["reason"]


def test_unsupported_is_a_result_not_a_crash(write_scenario, tmp_path):
    # DeepSpeed's AutoTP refuses GPT-2: its reason becomes the case's, and the sweep goes on
    text = TINY.format(name="unsup", steps=2) + "parallel: {world_size: 2, tp: [1, 2]}\n"
    out = run_llmbench(["run", str(write_scenario(text)), "--output-dir", str(tmp_path / "runs")])
    assert out.returncode == 0, out.stdout + out.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    ok, refused = read_results(run_dir)
    assert (ok["status"], refused["status"]) == ("ok", "unsupported")
    assert "AutoTP not supported for model" in refused["reason"]
