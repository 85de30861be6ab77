"""Every task of every family trains for real on CPU; real text trains too."""

from __future__ import annotations

import math

import pytest

from tests.conftest import read_results, run_dirs, run_llmbench

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ds_ops")]

TASKS = """\
name: tasks
training: {seq_len: 32, micro_batch: 4, warmup_steps: 0, steps: 2}
deepspeed: {precision: fp32}
include:
  - {model.family: gpt2, training.task: causal-lm}
  - {model.family: gpt2, training.task: sequence-classification}
  - {model.family: llama, training.task: causal-lm}
  - {model.family: llama, training.task: sequence-classification}
  - {model.family: distilbert, training.task: sequence-classification}
  - {model.family: distilbert, training.task: masked-lm}
  - {model.family: bert, training.task: masked-lm}
  - {model.family: bert, training.task: sequence-classification}
"""


def test_each_task_of_each_family_trains_with_a_loss_of_the_right_scale(write_scenario, tmp_path):
    out = run_llmbench(["run", str(write_scenario(TASKS)), "--output-dir", str(tmp_path / "runs")])
    assert out.returncode == 0, out.stdout + out.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    results = read_results(run_dir)
    assert len(results) == 8
    for r in results:
        assert r["status"] == "ok", (r["label"], r["reason"])
        first = r["losses"][0]
        assert math.isfinite(first)
        if r["params"]["training.task"] == "sequence-classification":
            assert abs(first - math.log(2)) < 0.5, (r["label"], first)  # two classes at init
        else:
            assert abs(first - math.log(1024)) < 0.7, (
                r["label"],
                first,
            )  # uniform over the tiny vocab


def test_real_text_quickstart_loss_falls(tmp_path):
    out = run_llmbench(
        [
            "run",
            "scenarios/text8_quickstart.yaml",
            "training.steps=16",
            "--output-dir",
            str(tmp_path / "runs"),
        ]
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    (result,) = read_results(run_dir)
    losses = result["losses"]
    assert result["status"] == "ok" and len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3  # learning real text, not noise
    assert 0 <= result["metrics"]["data_time_share"] < 0.5
