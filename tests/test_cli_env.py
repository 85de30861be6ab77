"""``llmbench env`` through click's runner: on this GPU-less machine and against a fake NVML."""

from __future__ import annotations

import sys

import pytest
from fake_pynvml import FakeGpu, FakeNvml, NVMLError_LibraryNotFound

from llmbench import cli as cli_module
from llmbench.hardware import detect


@pytest.fixture
def run_env(cli_runner, monkeypatch):
    monkeypatch.setattr(cli_module.console, "width", 200)  # no wrapped values

    def run() -> str:
        result = cli_runner.invoke(cli_module.cli, ["env"])
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())  # column widths vary with the contents

    return run


def test_env_on_this_machine(run_env):
    accel = detect()
    output = run_env()
    nvml = "ok" if accel.nvml_error is None else f"unavailable: {accel.nvml_error}"
    assert f"NVML │ {nvml}" in output
    assert f"{accel.kind} × {accel.count}" in output
    assert "host │ every 0.1 s:" in output
    assert "deepspeed" in output and "transformers" in output


def test_env_says_why_nvml_is_unavailable(run_env, monkeypatch):
    fake = FakeNvml([FakeGpu()], init_error=NVMLError_LibraryNotFound())
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    output = run_env()
    assert "NVML │ unavailable: NVMLError_LibraryNotFound: NVML Shared Library Not Found" in output
    assert "nvml │ not run: no GPU sampled on a cpu run" in output
    assert "cpu ×" in output


def test_env_lists_each_gpu_and_whether_mfu_can_be_computed(run_env, monkeypatch):
    gpus = [FakeGpu(name="NVIDIA H100 80GB HBM3"), FakeGpu(name="NVIDIA GeForce RTX 4090")]
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(gpus))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    output = run_env()
    assert "cuda × 2" in output
    assert "NVIDIA H100 80GB HBM3 — peak-FLOPs table: h100-sxm-80gb" in output
    assert "NVIDIA GeForce RTX 4090 — MFU null: 'NVIDIA GeForce RTX 4090' is not in" in output
    assert "NVML capacity 80.00 GiB" in output
    assert "NVML │ ok" in output
    assert "550.54.15" in output and "12.4" in output
    assert "nvml │ every 0.1 s: memory" in output


def test_env_fails_loudly_when_cuda_is_asked_for_and_torch_has_none(cli_runner, monkeypatch):
    """This machine's torch is a CPU build: one line, exit 2, no silent CPU fallback."""
    import torch

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([FakeGpu(name="NVIDIA H200")]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.version, "cuda", None)
    result = cli_runner.invoke(cli_module.cli, ["env", "--device", "cuda"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "is a build without CUDA" in lines[0], result.output
    assert "Traceback" not in result.output


def test_env_fails_loudly_when_cuda_is_asked_for_and_no_gpu_is_visible(cli_runner, monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([], init_error=NVMLError_LibraryNotFound()))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    result = cli_runner.invoke(cli_module.cli, ["env", "--device", "cuda"])
    assert result.exit_code == 2 and "no GPU is visible" in result.output


@pytest.mark.parametrize(
    ("torch_cuda", "nvcc", "home", "builds", "says"),
    [
        ("13.0", "13.0", "/usr/local/cuda", True, "builds FusedAdam"),
        ("12.8", "12.4", "/usr/local/cuda", True, "minor versions differ"),
        ("13.0", "12.4", "/usr/local/cuda", False, "differ in major version"),
        ("12.8", None, None, False, "no nvcc"),
        ("12.8", "12.8", None, False, "no CUDA_HOME"),
        (None, None, None, False, "torch has no CUDA"),
    ],
)
def test_env_says_whether_deepspeed_ops_can_be_built(torch_cuda, nvcc, home, builds, says):
    from llmbench.measure.environment import op_build_outlook

    ok, message = op_build_outlook(torch_cuda, nvcc, home)
    assert ok is builds and says in message
    if not builds and torch_cuda:
        assert "torch's AdamW" in message


def test_env_on_a_gpu_lists_the_cuda_toolkit(run_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([FakeGpu(name="NVIDIA H200")]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    output = run_env()
    assert "torch CUDA build │ none (CPU build)" in output
    assert "FusedAdam │ torch has no CUDA" in output


def test_a_cuda_sweep_without_cuda_stops_before_any_case(cli_runner, write_scenario, tmp_path):
    path = write_scenario("model: {family: gpt2, size: tiny}\nrun: {device: cuda}\n")
    result = cli_runner.invoke(cli_module.cli, ["run", str(path), "--output-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "scenario.yaml:2" in result.output and "CUDA was asked for" in result.output
    assert not any(tmp_path.glob("*/results.jsonl"))  # no run directory was filled
