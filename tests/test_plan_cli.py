"""``llmbench plan`` through click's runner: formats, questions, and mistakes (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmbench.cli import cli

GOLDEN = Path(__file__).parent / "data" / "runs" / "sweep"
BASE = ["plan", "--model", "llama-7b", "--gpu", "h100-80gb", "--gpus", "8", "--no-calibration"]


def invoke(cli_runner, args):
    return cli_runner.invoke(cli, args, catch_exceptions=False)


def test_the_ranked_table(cli_runner):
    out = invoke(cli_runner, BASE)
    assert out.exit_code == 0, out.output
    assert "llama-7b on 8 × NVIDIA H100 SXM5 80GB" in out.output
    for column in ("states", "activ", "buffers", "total", "max mb", "tokens/s", "MFU"):
        assert column in out.output
    assert "configurations fit" in out.output
    # the default efficiency says where it comes from; the answer says why and how sure
    assert "fitted on published runs" in out.output
    assert "recommended: ZeRO-1" in out.output and "held-out interval" in out.output
    assert "why ZeRO-1" in out.output and "over ZeRO-3" in out.output


def test_json_has_stable_keys_per_configuration(cli_runner):
    out = invoke(cli_runner, [*BASE, "--format", "json", "--top", "0"])
    assert out.exit_code == 0
    doc = json.loads(out.output)
    assert doc["model"]["params"]["total"] == 6_738_415_616
    assert doc["gpu"]["key"] == "h100-sxm-80gb"
    assert set(doc["assumptions"]) >= {
        "compute_efficiency",
        "fixed_overhead_bytes",
        "tokens_per_param",
    }
    first = doc["configurations"][0]
    for key in (
        "params_bytes",
        "grads_bytes",
        "optimizer_bytes",
        "buffers_bytes",
        "activations_bytes",
        "logits_bytes",
        "overhead_bytes",
        "total_bytes",
        "fits",
        "tokens_per_s",
        "max_micro_batch",
        "rate_source",
    ):
        assert key in first
    assert first["fits"] is True and first["tokens_per_s"] > 0
    assert len(doc["configurations"]) > 1000  # --top 0: all of them


def test_markdown_and_html(cli_runner, tmp_path):
    md = invoke(cli_runner, [*BASE, "--format", "markdown", "--top", "3"])
    assert md.exit_code == 0 and md.output.startswith("## llama-7b on 8")
    assert md.output.count("\n| ") >= 4
    page = tmp_path / "plan.html"
    html = invoke(
        cli_runner, [*BASE, "--format", "html", "-o", str(page), "--cost-per-gpu-hour", "3"]
    )
    assert html.exit_code == 0
    text = page.read_text()
    assert "<strong>Recommended:</strong>" in text and "GPU-hours, cost" in text


def test_the_capacity_report_includes_the_validation(cli_runner, tmp_path):
    page = tmp_path / "plan.html"
    out = invoke(
        cli_runner,
        [
            "plan",
            "--model",
            "gpt2-125m",
            "--gpu",
            "a100-40gb",
            "--gpus",
            "2",
            "--history",
            str(GOLDEN),
            "--format",
            "html",
            "-o",
            str(page),
        ],
    )
    assert out.exit_code == 0, out.output
    text = page.read_text()
    (run,) = sorted(p for p in GOLDEN.iterdir() if p.is_dir())
    assert f"Validation: {run.name}" in text and "host_rss_peak_bytes" in text


def test_fewest_gpus_and_largest_model(cli_runner):
    few = invoke(
        cli_runner,
        [
            "plan",
            "--model",
            "llama-13b",
            "--no-offload",
            "--no-calibration",
            "--min-gpus",
            "--format",
            "json",
            "--top",
            "1",
        ],
    )
    assert few.exit_code == 0
    assert json.loads(few.output)["min_gpus"] > 1
    big = invoke(
        cli_runner,
        [
            "plan",
            "--model",
            "gpt2-tiny",
            "--gpu",
            "l4",
            "--gpus",
            "1",
            "--no-offload",
            "--no-calibration",
            "--largest-model",
            "--format",
            "json",
        ],
    )
    assert big.exit_code == 0
    doc = json.loads(big.output)
    assert doc["largest"] in {m["model"] for m in doc["models"] if m["fits"]}


def test_validate_a_run(cli_runner):
    (run,) = sorted(p for p in GOLDEN.iterdir() if p.is_dir())
    out = invoke(cli_runner, ["plan", "--validate", str(run), "--history", str(GOLDEN)])
    assert out.exit_code == 0, out.output
    assert "mem err" in out.output and "tok/s err" in out.output


def test_deepspeed_accounting_leaves_stages_0_and_1_unknown(cli_runner):
    out = invoke(cli_runner, [*BASE, "--accounting", "deepspeed", "--format", "json", "--top", "0"])
    doc = json.loads(out.output)
    early = [c for c in doc["configurations"] if c["zero_stage"] <= 1]
    assert early and all(c["optimizer_bytes"] is None and c["fits"] is False for c in early)
    assert any("estimators for ZeRO-2 and ZeRO-3 only" in n for n in doc["notes"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "--model", "llama-7c"], "did you mean llama-7b"),
        (["plan", "--model", "llama-7b", "--gpu", "h1000"], "unknown GPU"),
        (["plan"], "give --model, --model-config or --validate RUN"),
        (["plan", "--validate", "no-such-run"], "neither a run directory"),
        (["plan", "--model", "llama-7b", "--dim", "num_layers=two"], "name=integer"),
        (["plan", "--model", "llama-7b", "--seq-len", "9000"], "exceeds llama-7b's max_positions"),
        (
            ["plan", "--model", "llama-7b", "--gpu", "v100", "--precision", "bf16"],
            "has no bf16 support",
        ),
        (["plan", "--model", "llama-7b", "--history", "no/such/dir"], "no such run directory"),
        (["plan", "--model", "llama-7b", "--checkpointing", "ful"], "did you mean full"),
        (["plan", "--model", "llama-7b", "--micro-batch", "1,x"], "not a comma list of integers"),
    ],
)
def test_mistakes_exit_2_with_one_line(cli_runner, args, message):
    out = cli_runner.invoke(cli, args)
    assert out.exit_code == 2, out.output
    assert message in out.output
    assert "Traceback" not in out.output


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--seq-len", "-5"], "seq-len"),
        (["--grad-accum", "0"], "grad-accum"),
        (["--efficiency", "1.5"], "efficiency"),
        (["--efficiency", "0"], "efficiency"),
        (["--efficiency", "nan"], "efficiency"),
    ],
)
def test_bad_numbers_are_one_line_and_exit_2(cli_runner, args, key):
    out = cli_runner.invoke(cli, ["plan", "--model", "llama-7b", *args])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in out.output


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (bytes(range(256)), "not a text file"),
        (b"[1, 2]", "JSON object"),
        (b'{"model_type": "llama", "hidden_size": -4}', "hidden_size must be a positive"),
        (b'{"model_type": "phi3"}', "model_type 'phi3' is not one llmbench builds"),
        (b'{"model_type": "llama",', "invalid JSON"),
    ],
)
def test_bad_model_configs_are_one_line_and_exit_2(
    cli_runner, tmp_path, monkeypatch, content, says
):
    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "config.json"
    path.write_bytes(content)
    out = cli_runner.invoke(cli, ["plan", "--model-config", str(path)])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in out.output
