"""NVML sampler against a fake pynvml: units, device mapping, failing fields, failing init."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from fake_pynvml import FakeGpu, FakeNvml, GiB, NVMLError_LibraryNotFound

from llmbench.judge.timeline import timeline_frame
from llmbench.measure.sampling import (
    NvmlSampler,
    make_samplers,
    read_phase_events,
    summarize,
    tag_phases,
)
from llmbench.measure.sampling.nvml import clock_event_names

LIBRARY_NOT_FOUND = "nvml unavailable: NVMLError_LibraryNotFound: NVML Shared Library Not Found"


@pytest.fixture
def install(monkeypatch):
    def install(fake: FakeNvml) -> FakeNvml:
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return install


def gpus(n: int, **kwargs) -> list[FakeGpu]:
    return [
        FakeGpu(uuid=f"GPU-{i:x}{i:x}{i:x}{i:x}-0000", memory_used_bytes=(i + 1) * GiB, **kwargs)
        for i in range(n)
    ]


def one_tick(sampler: NvmlSampler, root_pid: int | None = None) -> list[dict]:
    """Start and stop at once: the first reading plus the one taken at stop."""
    sampler.start(root_pid or os.getpid())
    return sampler.stop()


def test_values_and_units(install):
    gpu = FakeGpu(
        power_w=312.5,
        energy_start_mj=7_250_000,
        memory_used_bytes=12 * GiB,
        temperature_c=71,
        sm_clock_mhz=1755,
        clock_event_mask=0x4 | 0x1,
    )
    fake = install(FakeNvml([gpu], clock=lambda: 0.0))  # a frozen counter: exact energy
    row = one_tick(NvmlSampler(interval_s=10))[0]
    assert row["source"] == "nvml" and row["device"] == "gpu0" and row["nvml_index"] == 0
    assert row["power_w"] == 312.5  # from 312500 mW
    assert row["energy_j"] == 7250.0  # from 7250000 mJ
    assert row["memory_used_bytes"] == 12 * GiB
    assert row["memory_total_bytes"] == 80 * GiB
    assert (row["gpu_util_pct"], row["memory_util_pct"]) == (90, 40)
    assert (row["temperature_c"], row["sm_clock_mhz"]) == (71, 1755)
    assert clock_event_names(int(row["clock_event_mask"])) == ["GpuIdle", "SwPowerCap"]
    assert abs(row["t"] - time.time()) < 5
    assert fake.initialised == 0  # nvmlInit in start, nvmlShutdown in stop


def test_initialised_once_and_shut_down_in_stop(install):
    fake = install(FakeNvml(gpus(2)))
    sampler = NvmlSampler(interval_s=0.01)
    sampler.start(os.getpid())
    time.sleep(0.1)
    assert fake.initialised == 1
    rows = sampler.stop()
    assert fake.initialised == 0
    assert len(rows) >= 4 and {r["device"] for r in rows} == {"gpu0", "gpu1"}


def test_clock_event_names_keep_unknown_bits():
    assert clock_event_names(0) == []
    assert clock_event_names(0x8 | 0x40 | 0x1000) == ["HwSlowdown", "HwThermalSlowdown", "0x1000"]


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("2,0", [2, 0]),
        ("GPU-3333,GPU-1111", [3, 1]),
        ("1,7,2", [1]),  # CUDA stops at the first invalid entry
    ],
)
def test_devices_follow_cuda_visible_devices(install, monkeypatch, visible, expected):
    install(FakeNvml(gpus(4)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    rows = one_tick(NvmlSampler(interval_s=10))[: len(expected)]
    assert [r["device"] for r in rows] == [f"gpu{i}" for i in range(len(expected))]
    assert [r["nvml_index"] for r in rows] == expected
    assert [r["memory_used_bytes"] for r in rows] == [(i + 1) * GiB for i in expected]


def test_gpus_limits_sampling_to_the_devices_the_case_uses(install):
    install(FakeNvml(gpus(4)))
    rows = one_tick(NvmlSampler(interval_s=10, gpus=2))
    assert {r["nvml_index"] for r in rows} == {0, 1}


def test_a_not_supported_field_is_missing_on_that_device_only(install):
    devices = gpus(2)
    devices[1].unsupported = {"nvmlDeviceGetPowerUsage"}
    fake = install(FakeNvml(devices))
    sampler = NvmlSampler(interval_s=0.01)
    sampler.start(os.getpid())
    time.sleep(0.1)
    rows = sampler.stop()
    gpu1 = [r for r in rows if r["device"] == "gpu1"]
    assert len(gpu1) >= 3
    assert all(r["power_w"] is None for r in gpu1)
    assert all(r["energy_j"] is not None and r["memory_used_bytes"] == 2 * GiB for r in gpu1)
    assert all(r["power_w"] == 300.0 for r in rows if r["device"] == "gpu0")
    assert sampler.unavailable_reason is None
    errors = {k: v for k, v in sampler.field_errors.items() if "case_memory" not in k}
    assert errors == {"gpu1.power_w": "NVMLError_NotSupported: Not Supported"}
    assert fake.calls["nvmlDeviceGetPowerUsage"] == len(rows) - len(gpu1) + 1  # not asked again

    timeline = timeline_frame(rows, NvmlSampler.columns)
    events = phase_events(timeline["t"].iloc[2], timeline["t"].iloc[-3])  # inside every device's
    values, reasons = summarize(
        timeline,
        events,
        steps=4,
        tokens_per_step=256,
        unavailable=sampler.field_errors,
        min_window_s=0.0,  # a fraction of a second here: the arithmetic, not NVML's windows
    )
    assert values["gpu0_power_w_mean"] == 300.0
    assert values["gpu1_power_w_mean"] is None
    assert reasons["gpu1_power_w_mean"] == "NVMLError_NotSupported: Not Supported"
    assert values["power_w_mean"] is None
    assert reasons["power_w_mean"] == "gpu1: NVMLError_NotSupported: Not Supported"
    assert values["gpu1_memory_used_peak_bytes"] == 2 * GiB
    assert values["energy_j"] is not None and values["temperature_c_max"] == 60


@pytest.mark.parametrize(
    ("module", "reason"),
    [
        (FakeNvml(gpus(1), init_error=NVMLError_LibraryNotFound()), LIBRARY_NOT_FOUND),
        (
            None,
            "nvml unavailable: ModuleNotFoundError: import of pynvml halted; None in sys.modules",
        ),
    ],
)
def test_no_nvml_means_no_samples_and_a_reason(monkeypatch, module, reason):
    monkeypatch.setitem(sys.modules, "pynvml", module)
    samplers = make_samplers("cuda", interval_s=0.01)
    samplers.start(os.getpid())
    time.sleep(0.05)
    timeline = samplers.stop()
    assert set(timeline["source"]) == {"host"}
    assert samplers.unavailable == {"nvml": reason}
    events = phase_events(timeline["t"].min() - 1, timeline["t"].max() + 1)
    values, reasons = summarize(
        timeline, events, steps=4, tokens_per_step=256, unavailable=samplers.unavailable
    )
    assert values["energy_j"] is None and reasons["energy_j"] == reason
    assert values["device_memory_used_peak_bytes"] is None
    assert values["host_tree_rss_peak_bytes"] > 0


def test_cpu_runs_do_not_sample_gpus():
    samplers = make_samplers("cpu")
    assert [s.source for s in samplers.samplers] == ["host"]
    assert samplers.unavailable == {"nvml": "no GPU sampled on a cpu run"}


def test_case_memory_counts_only_the_case_processes(install):
    devices = gpus(2)
    devices[0].processes = {os.getpid(): 3 * GiB, 1: 40 * GiB}  # pid 1: alive, not the case's
    devices[1].processes = {1: 20 * GiB}
    install(FakeNvml(devices))
    sampler = NvmlSampler(interval_s=10)
    rows = one_tick(sampler)
    # gpu1 lists only another process: the case's memory there is unknown, not 0
    assert [r["case_memory_bytes"] for r in rows[:2]] == [3 * GiB, None]
    assert "no process of the case" in sampler.field_errors["gpu1.case_memory_bytes"]


def test_case_memory_is_unknown_when_nvml_lists_no_process(install):
    """Sandboxed runtimes (gVisor) and some containers list no process at all: not a 0."""
    install(FakeNvml([FakeGpu(processes={})]))
    sampler = NvmlSampler(interval_s=10)
    assert one_tick(sampler)[0]["case_memory_bytes"] is None
    assert "NVML's process list" in sampler.field_errors["gpu0.case_memory_bytes"]


def test_memory_used_is_v2_without_driver_reserved_memory(install):
    install(FakeNvml([FakeGpu(memory_used_bytes=12 * GiB, memory_reserved_bytes=GiB // 2)]))
    sampler = NvmlSampler(interval_s=10)
    row = one_tick(sampler)[0]
    assert row["memory_used_bytes"] == 12 * GiB  # v1 would say 12.5 GiB
    assert row["memory_total_bytes"] == 80 * GiB
    assert "gpu0.memory_used_bytes" not in sampler.field_errors


def test_a_driver_without_memory_v2_falls_back_to_v1_and_says_so(install):
    fake = install(
        FakeNvml(
            [FakeGpu(memory_used_bytes=12 * GiB, memory_reserved_bytes=GiB, no_memory_v2=True)]
        )
    )
    sampler = NvmlSampler(interval_s=0.01)
    sampler.start(os.getpid())
    time.sleep(0.05)
    rows = sampler.stop()
    assert all(r["memory_used_bytes"] == 13 * GiB for r in rows)
    assert "driver-reserved" in sampler.field_errors["gpu0.memory_used_bytes"]
    # v2 is asked once, then v1 only (the fake counts both under one name)
    assert fake.calls["nvmlDeviceGetMemoryInfo"] == len(rows) + 1


def test_a_non_nvml_exception_disables_only_its_field(install):
    """An old binding without a driver's _v3 function raises AttributeError, not NVMLError."""
    missing = AttributeError("function nvmlDeviceGetComputeRunningProcesses_v3 not found")
    fake = install(FakeNvml([FakeGpu(broken={"nvmlDeviceGetComputeRunningProcesses": missing})]))
    sampler = NvmlSampler(interval_s=0.01)
    sampler.start(os.getpid())
    time.sleep(0.1)
    rows = sampler.stop()
    assert len(rows) >= 3 and sampler.unavailable_reason is None
    assert all(r["case_memory_bytes"] is None for r in rows)
    assert all(r["power_w"] == 300.0 and r["energy_j"] is not None for r in rows)
    assert "AttributeError" in sampler.field_errors["gpu0.case_memory_bytes"]
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses"] == 1  # not asked again


def test_case_memory_is_unknown_when_nvml_pids_are_from_another_namespace(install):
    gpu = FakeGpu(processes={2**22 + 12345: 5 * GiB})  # above pid_max: no such process here
    install(FakeNvml([gpu]))
    sampler = NvmlSampler(interval_s=10)
    row = one_tick(sampler)[0]
    assert row["case_memory_bytes"] is None
    assert "pid namespace" in sampler.field_errors["gpu0.case_memory_bytes"]


def test_case_memory_is_unknown_when_nvml_cannot_attribute_it(install):
    install(FakeNvml([FakeGpu(processes={os.getpid(): None})]))
    sampler = NvmlSampler(interval_s=10)
    assert one_tick(sampler)[0]["case_memory_bytes"] is None
    assert "gpu0.case_memory_bytes" in sampler.field_errors


def phase_events(start: float, end: float):
    from llmbench.measure.sampling import PhaseEvent

    return [PhaseEvent("measure", start), PhaseEvent("teardown", end)]


def test_end_to_end_measure_phase_peaks_energy_and_tags(install, tmp_path):
    """Memory is high outside the measure phase; only the measure phase counts."""
    mine = {os.getpid(): GiB}
    devices = [
        FakeGpu(uuid="GPU-a", power_w=300.0, processes=mine),
        FakeGpu(uuid="GPU-b", power_w=200.0, processes=mine),
    ]
    install(FakeNvml(devices))
    log = (tmp_path / "phases.rank0.jsonl").open("a", buffering=1)

    def phase(name: str) -> None:
        log.write(json.dumps({"phase": name, "t": time.time(), "pid": os.getpid()}) + "\n")

    def memory(gpu0_gib: int, gpu1_gib: int) -> None:
        devices[0].memory_used_bytes, devices[1].memory_used_bytes = gpu0_gib * GiB, gpu1_gib * GiB

    samplers = make_samplers("cuda", interval_s=0.02)
    memory(70, 70)
    samplers.start(os.getpid())
    phase("init")
    time.sleep(0.15)
    memory(30, 50)  # set before the phase starts, so every measure sample sees it
    phase("measure")
    time.sleep(0.5)
    phase("teardown")
    memory(75, 75)
    time.sleep(0.15)
    timeline = samplers.stop()
    log.close()

    events = read_phase_events(tmp_path)
    timeline = tag_phases(timeline, events)
    assert {"init", "measure", "teardown"} <= set(timeline["phase"])
    assert set(timeline["source"]) == {"host", "nvml"}
    values, reasons = summarize(
        timeline,
        events,
        steps=10,
        tokens_per_step=1000,
        unavailable=samplers.unavailable,
        min_window_s=0.0,
    )
    assert values["gpu0_memory_used_peak_bytes"] == 30 * GiB
    assert values["gpu1_memory_used_peak_bytes"] == 50 * GiB
    assert values["device_memory_used_peak_bytes"] == 50 * GiB  # max over devices, not 80
    window_s = events[2].t - events[1].t
    # The fake's counter advances at exactly power_w, so interpolation recovers it.
    assert values["gpu0_energy_j"] == pytest.approx(300 * window_s, rel=1e-3)
    assert values["energy_j"] == pytest.approx(500 * window_s, rel=1e-3)
    assert values["energy_j_per_step"] == pytest.approx(values["energy_j"] / 10)
    assert values["energy_j_per_token"] == pytest.approx(values["energy_j"] / 10_000)
    assert values["power_w_mean"] == 250.0 and values["power_w_mean_total"] == 500.0
    assert values["throttle_reasons"] == []
    assert values["host_tree_rss_peak_bytes"] > 0
    assert not reasons


def test_power_energy_and_utilisation_need_a_measure_phase_of_5_s(install):
    """NVML averages power over ~1 s and utilisation over up to 1 s: 0.5 s says nothing."""
    install(FakeNvml([FakeGpu(processes={os.getpid(): GiB})]))
    sampler = NvmlSampler(interval_s=0.02)
    sampler.start(os.getpid())
    time.sleep(0.3)
    timeline = timeline_frame(sampler.stop(), NvmlSampler.columns)
    events = phase_events(timeline["t"].iloc[1], timeline["t"].iloc[-2])
    values, reasons = summarize(
        timeline, events, steps=4, tokens_per_step=256, unavailable=sampler.field_errors
    )
    for name in ("power_w_mean", "energy_j", "energy_j_per_step", "gpu_util_mean_pct"):
        assert values[name] is None and "shorter than the 5 s" in reasons[name], name
    # instantaneous readings stay
    assert values["device_memory_used_peak_bytes"] == 10 * GiB
    assert values["temperature_c_max"] == 60
