"""Every tuning axis on the real engine (CPU, 2 ranks): TP, PP, recompute, offload, auto micro-batch, collectives."""

from __future__ import annotations

import pytest

from tests.conftest import read_results, run_dirs, run_llmbench

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ds_ops")]

LAYOUTS = """\
name: layouts
model: {family: llama, size: tiny}
training: {seq_len: 32, micro_batch: 2, warmup_steps: 0, steps: 5, lr: 0.001}
deepspeed: {precision: fp32}
include:
  - {parallel.world_size: 2, parallel.tp: 2}
  - {parallel.world_size: 2, parallel.pp: 2}
  - {parallel.world_size: 2, parallel.pp: 2, deepspeed.activation_checkpointing: full}
  - {deepspeed.activation_checkpointing: full}
  - {deepspeed.activation_checkpointing: selective}
  - {model.family: gpt2, parallel.world_size: 2, parallel.pp: 2}
  - {model.family: gpt2, parallel.world_size: 2, parallel.tp: 2}
"""


def run(write_scenario, tmp_path, text, *extra):
    out = run_llmbench(
        ["run", str(write_scenario(text)), *extra, "--output-dir", str(tmp_path / "runs")]
    )
    (run_dir,) = run_dirs(tmp_path / "runs")
    return out, {r["label"]: r for r in read_results(run_dir)}


def test_tensor_and_pipeline_parallel_match_one_rank_in_fp32(write_scenario, tmp_path):
    out, results = run(write_scenario, tmp_path, LAYOUTS)
    assert out.returncode == 0, out.stdout + out.stderr
    reference = results["llama-tiny ws1 tp1 pp1 ckpt:none"][
        "losses"
    ]  # one rank, no parallelism, same data stream
    assert len(reference) == 5
    for label in (
        "llama-tiny ws2 tp2 pp1 ckpt:none",
        "llama-tiny ws2 tp1 pp2 ckpt:none",
        "llama-tiny ws2 tp1 pp2 ckpt:full",
        "llama-tiny ws1 tp1 pp1 ckpt:full",
        "llama-tiny ws1 tp1 pp1 ckpt:selective",
    ):
        assert results[label]["status"] == "ok", results[label]["reason"]
        assert results[label]["losses"] == pytest.approx(reference, abs=1e-3), label
    gpt2_pp = results["gpt2-tiny ws2 tp1 pp2 ckpt:none"]
    assert gpt2_pp["status"] == "ok" and len(gpt2_pp["step_times_s"]) == 5
    gpt2_tp = results["gpt2-tiny ws2 tp2 pp1 ckpt:none"]
    assert gpt2_tp["status"] == "unsupported"
    assert "AutoTP not supported for model" in gpt2_tp["reason"]
    assert (
        results["llama-tiny ws1 tp1 pp1 ckpt:full"]["metrics"]["hfu"] is None
    )  # no peak on a CPU, but
    full = results["llama-tiny ws1 tp1 pp1 ckpt:full"]["metrics"]
    assert (
        full["hardware_flops_per_token"] > full["flops_per_token"]
    )  # recompute counted for HFU only


def test_optimizer_and_parameter_offload_to_cpu(write_scenario, tmp_path):
    text = """\
name: offload
model: {family: llama, size: tiny}
training: {seq_len: 32, micro_batch: 2, warmup_steps: 1, steps: 3}
deepspeed: {precision: fp32}
parallel: {world_size: 2}
include:
  - {deepspeed.zero_stage: 2, deepspeed.offload_optimizer: cpu}
  - {deepspeed.zero_stage: 3, deepspeed.offload_optimizer: cpu, deepspeed.offload_param: cpu}
run: {timeout_s: 900}
"""
    out, results = run(write_scenario, tmp_path, text)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cpu_adam" in out.stdout  # the JIT op is built once, before the cases, and reported
    statuses = {label: r["status"] for label, r in results.items()}
    assert set(statuses.values()) == {"ok"}, statuses
    assert len(statuses) == 3


def test_auto_micro_batch_finds_the_memory_boundary(write_scenario, tmp_path):
    text = """\
name: auto
model: {family: gpt2, size: tiny}
training: {seq_len: 128, micro_batch: auto, micro_batch_max: 256, warmup_steps: 1, steps: 2, rank_memory_limit_bytes: 300MiB}
deepspeed: {precision: fp32}
"""
    out, results = run(write_scenario, tmp_path, text)
    assert out.returncode == 0, out.stdout + out.stderr
    (result,) = results.values()
    assert result["status"] == "ok"
    chosen, boundary = result["metrics"]["micro_batch"], result["metrics"]["micro_batch_oom"]
    probes = {p["micro_batch"]: p for p in result["probes"]}
    assert probes[chosen]["status"] == "ok" and probes[boundary]["status"] == "oom"
    assert boundary == chosen + 1  # bisected down to adjacent sizes
    assert all(p["status"] == "ok" for m, p in probes.items() if m <= chosen)
    assert all(p["status"] == "oom" for m, p in probes.items() if m > chosen)
    assert all(p["tokens_per_s"] > 0 for p in probes.values() if p["status"] == "ok")
    assert result["metrics"]["tokens_per_step"] == chosen * 128


def test_collectives_report_positive_bandwidth_for_every_op_and_size(write_scenario, tmp_path):
    text = """\
name: comm
comm: {op: [all_reduce, all_gather, reduce_scatter, broadcast], size_bytes: 64KiB..256KiB}
training: {warmup_steps: 2, steps: 5}
parallel: {world_size: 2}
"""
    out, results = run(write_scenario, tmp_path, text)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(results) == 4 * 3
    for label, r in results.items():
        m = r["metrics"]
        assert r["status"] == "ok", label
        assert m["algbw_gb_s"] > 0 and m["busbw_gb_s"] > 0, label
        assert m["algbw_gb_s"] == pytest.approx(m["message_bytes"] / m["step_time_s_median"] / 1e9)
        assert (
            m["tokens_per_s"] is None
            and r["null_reasons"]["tokens_per_s"] == "a communication case trains nothing"
        )
    ar = results["all_reduce 64KiB"]["metrics"]
    assert ar["busbw_gb_s"] == pytest.approx(ar["algbw_gb_s"] * 2 * (2 - 1) / 2)
