"""HTA over GPU traces: real HTA on Kineto traces written here, with figures worked by hand.

No GPU here, so the traces are made the way torch.profiler writes a GPU run's
(kernels on CUDA streams, their launches on a CPU thread, the rank in
``distributedInfo``); every figure below follows from the kernel intervals.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from llmbench.judge.result import CaseResult
from llmbench.measure.trace_analysis import CPU_TRACE, METRICS, NOT_INSTALLED, analyse

pytest.importorskip("hta.trace_analysis", reason="the hta extra is part of the test extra")

COMPUTE, COMM = 7, 20
"""CUDA streams of the compute and the NCCL kernels."""
KERNELS = (  # (name, start µs, duration µs, stream)
    ("ampere_sgemm_128x64_tn", 0, 400, COMPUTE),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 300, 300, COMM),
    ("ampere_sgemm_128x64_nn", 650, 250, COMPUTE),
    ("vectorized_elementwise_kernel", 950, 50, COMPUTE),
)
"""One step: the GPU busy over [0, 600], [650, 900], [950, 1000] of a 1000 µs span: idle 100 µs;
compute 400 + 250 + 50 = 700 µs; communication 300 µs, of which [300, 400] under a compute kernel."""


def write_trace(path: Path, rank: int, world: int, kernels=KERNELS) -> Path:
    t0 = 1_000_000
    events = [
        {
            "ph": "X",
            "cat": "user_annotation",
            "name": "ProfilerStep#1",
            "pid": 100,
            "tid": 100,
            "ts": t0 - 10,
            "dur": 1100,
            "args": {"External id": 1},
        }
    ]
    for corr, (name, start, dur, stream) in enumerate(kernels, start=10):
        ids = {"correlation": corr, "External id": corr}
        events.append(
            {
                "ph": "X",
                "cat": "cuda_runtime",
                "name": "cudaLaunchKernel",
                "pid": 100,
                "tid": 100,
                "ts": t0 + start - 5,
                "dur": 3,
                "args": ids,
            }
        )
        events.append(
            {
                "ph": "X",
                "cat": "kernel",
                "name": name,
                "pid": 0,
                "tid": stream,
                "ts": t0 + start,
                "dur": dur,
                "args": {"device": 0, "stream": stream, **ids},
            }
        )
    doc = {
        "schemaVersion": 1,
        "distributedInfo": {"backend": "nccl", "rank": rank, "world_size": world},
        "deviceProperties": [{"id": 0, "name": "NVIDIA H200"}],
        "traceEvents": events,
    }
    with gzip.open(path, "wt") as fh:
        json.dump(doc, fh)
    return path


def result() -> CaseResult:
    return CaseResult(case_id="c", label="c", params={}, status="ok")


def traces(folder: Path, world: int = 2, kernels=KERNELS) -> dict[int, Path]:
    return {r: write_trace(folder / f"rank{r}.json.gz", r, world, kernels) for r in range(world)}


def test_breakdown_and_overlap_of_each_rank(tmp_path):
    case = result()
    analyse(case, traces(tmp_path), on_gpu=True)
    assert case.metrics == {
        "gpu_compute_pct": 70.0,
        "gpu_non_compute_pct": 20.0,
        "gpu_idle_pct": 10.0,
        "comm_comp_overlap_pct": pytest.approx(33.33),
    }
    assert [r["rank"] for r in case.profile["hta"]] == [0, 1]
    assert all(r["kernel_span_s"] == pytest.approx(1e-3) for r in case.profile["hta"])
    assert not case.null_reasons


def test_hta_says_nothing_on_llmbench_s_console(tmp_path, capfd):
    analyse(result(), traces(tmp_path), on_gpu=True)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_no_communication_kernels_leaves_the_overlap_null_with_a_reason(tmp_path):
    case = result()
    compute_only = [k for k in KERNELS if k[3] == COMPUTE]
    analyse(case, traces(tmp_path, world=1, kernels=compute_only), on_gpu=True)
    assert case.metrics["gpu_non_compute_pct"] == 0.0
    assert case.metrics["comm_comp_overlap_pct"] is None
    assert "no kernels" in case.null_reasons["comm_comp_overlap_pct"]


def test_a_cpu_trace_is_not_analysed_and_says_why(tmp_path):
    case = result()
    analyse(case, traces(tmp_path), on_gpu=False)
    assert case.profile["hta"] is None
    assert set(case.metrics) == set(METRICS) and not any(case.metrics.values())
    assert set(case.null_reasons.values()) == {CPU_TRACE}


def test_without_hta_installed_the_reason_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "hta.trace_analysis", None)  # import fails
    case = result()
    analyse(case, traces(tmp_path), on_gpu=True)
    assert set(case.null_reasons.values()) == {NOT_INSTALLED}


def test_an_unreadable_trace_keeps_the_case_and_names_the_error(tmp_path):
    bad = tmp_path / "rank0.json.gz"
    bad.write_bytes(b"not a trace")
    case = result()
    analyse(case, {0: bad}, on_gpu=True)
    assert case.status == "ok" and case.profile["hta"] is None
    assert all(r.startswith("HTA could not analyse") for r in case.null_reasons.values())
