"""``llmbench plan`` options of the memory model: --cpu-checkpointing and --dropout."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from llmbench.cli import cli

SHOWCASE = ["plan", "--model", "gpt2-1.5b", "--gpu", "v100-sxm2-32gb", "--gpus", "1",
            "--seq-len", "1024", "--precision", "fp16", "--checkpointing", "full",
            "--micro-batch", "4", "--no-calibration", "--format", "json", "--top", "0"]  # fmt: skip


def test_cpu_checkpointing_rows_carry_their_host_memory_and_copies():
    out = CliRunner().invoke(cli, [*SHOWCASE, "--cpu-checkpointing"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)["configurations"]
    on = [r for r in rows if r["cpu_checkpointing"]]
    off = [r for r in rows if not r["cpu_checkpointing"]]
    assert on and off
    for r in on:
        assert r["host_checkpoint_bytes_per_gpu"] == 48 * 2 * 4 * 1024 * 1600
        assert r["checkpoint_transfer_s"] > 0
    assert all(r["host_checkpoint_bytes_per_gpu"] == 0 for r in off)


@pytest.mark.parametrize("value", ["1.5", "nan", "-0.1", "lots"])
def test_a_bad_dropout_is_one_line_and_exit_2(value):
    out = CliRunner().invoke(cli, ["plan", "--model", "gpt2-125m", "--dropout", value])
    assert out.exit_code == 2
    assert "dropout" in out.output and "Traceback" not in out.output
