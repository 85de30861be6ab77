"""Summary figures: measure phase only, max over devices, energy by counter interpolation."""

from __future__ import annotations

import math

import pytest

from llmbench.judge.timeline import timeline_frame
from llmbench.measure.sampling import PhaseEvent, measure_window, summarize
from llmbench.measure.sampling.host import HostSampler
from llmbench.measure.sampling.nvml import NvmlSampler
from llmbench.measure.sampling.summary import NO_MEASURE, NO_SAMPLES, NVML_NAMES

GiB = 2**30
COLUMNS = [*HostSampler.columns, *NvmlSampler.columns]
EVENTS = [
    PhaseEvent("init", 0.0),
    PhaseEvent("warmup", 0.2),
    PhaseEvent("measure", 0.5),
    PhaseEvent("teardown", 3.25),
]
CPU = {"nvml": "no GPU sampled on a cpu run"}


def host(t: float, rss_gib: float, cpu: float | None = 100.0) -> dict:
    return {"t": t, "source": "host", "device": "host", "tree_rss_bytes": int(rss_gib * GiB),
            "proc_rss_max_bytes": int(rss_gib * GiB), "cpu_util_pct": cpu, "processes": 2}  # fmt: skip


def gpu(device: str, t: float, energy_j: float, used_gib: float, **extra) -> dict:
    base = {"gpu_util_pct": 80, "memory_util_pct": 30, "power_w": 250.0, "temperature_c": 60,
            "sm_clock_mhz": 1800, "clock_event_mask": 0, "case_memory_bytes": used_gib * GiB / 2}  # fmt: skip
    return {"t": t, "source": "nvml", "device": device, "energy_j": energy_j,
            "memory_used_bytes": used_gib * GiB, **base, **extra}  # fmt: skip


def summary(rows, events=EVENTS, unavailable=None, **kwargs):
    kwargs = {"steps": 5, "tokens_per_step": 2048, "min_window_s": 0.0, **kwargs}
    return summarize(timeline_frame(rows, COLUMNS), events, unavailable=unavailable or {}, **kwargs)


def test_host_figures_come_from_the_measure_phase_only():
    rows = [
        host(0.1, 9.0, cpu=10),  # init spike: outside
        host(0.6, 2.0, cpu=None),
        host(1.0, 3.0, cpu=150),
        host(2.0, 2.5, cpu=170),
        host(3.3, 8.0, cpu=5),  # teardown: outside
    ]
    values, reasons = summary(rows, unavailable=CPU)
    assert values["host_tree_rss_peak_bytes"] == 3 * GiB
    assert isinstance(values["host_tree_rss_peak_bytes"], int)
    assert values["host_cpu_util_mean_pct"] == 160.0  # the None reading is not a zero
    assert all(values[name] is None and reasons[name] == CPU["nvml"] for name in NVML_NAMES)
    assert not any(k.startswith("gpu0_") for k in values)


def test_measure_s_ends_the_window_at_the_last_step():
    window = measure_window(EVENTS, measure_s=1.5)
    assert (window.start, window.end) == (0.5, 2.0)
    assert measure_window(EVENTS).end == 3.25
    assert measure_window(EVENTS[:3]).end == math.inf  # killed during measure
    # the slowest-rank sum outlasts rank 0's steps: rank 0's next phase still ends the window
    assert measure_window(EVENTS, measure_s=3.0).end == 3.25
    assert measure_window(EVENTS[:3], measure_s=3.0).end == 3.5
    values, _ = summary([host(1.0, 3.0), host(3.3, 8.0)], unavailable=CPU, measure_s=3.0)
    assert values["host_tree_rss_peak_bytes"] == 3 * GiB  # 3.3 s is tagged teardown
    values, _ = summary([host(1.0, 3.0), host(2.5, 4.0)], unavailable=CPU, measure_s=1.5)
    assert values["host_tree_rss_peak_bytes"] == 3 * GiB


def test_a_phase_shorter_than_the_interval_has_no_samples():
    values, reasons = summary([host(0.4, 1.0), host(3.4, 1.0)], unavailable=CPU)
    assert values["host_tree_rss_peak_bytes"] is None
    assert reasons["host_tree_rss_peak_bytes"] == NO_SAMPLES


def test_never_reaching_the_measure_phase():
    values, reasons = summary([host(0.1, 1.0)], events=EVENTS[:2], unavailable={})
    assert values["host_cpu_util_mean_pct"] is None
    assert reasons["host_cpu_util_mean_pct"] == NO_MEASURE
    assert reasons["energy_j"] == NO_MEASURE


def test_peaks_are_max_over_devices_and_energy_is_interpolated_and_summed():
    # gpu0's counter: 0, 100, 250, 450, 700 J at t = 0..4; the window is [0.5, 3.25].
    # E(0.5) = 50, E(3.25) = 450 + 0.25 * 250 = 512.5  ->  462.5 J.
    # gpu1 runs at a constant 120 W from 1000 J: 120 * 2.75 = 330 J.
    rows = [gpu("gpu0", t, e, used) for t, e, used in
            [(0, 0, 70), (1, 100, 20), (2, 250, 30), (3, 450, 25), (4, 700, 79)]]  # fmt: skip
    rows += [gpu("gpu1", t + 0.01, 1000 + 120 * (t + 0.01), used, power_w=120.0, temperature_c=t + 70)
             for t, used in [(0, 75), (1, 40), (2, 45), (3, 41), (4, 78)]]  # fmt: skip
    values, reasons = summary(rows)
    assert values["gpu0_energy_j"] == pytest.approx(462.5)
    assert values["gpu1_energy_j"] == pytest.approx(330.0)
    assert values["energy_j"] == pytest.approx(792.5)
    assert values["energy_j_per_step"] == pytest.approx(792.5 / 5)
    assert values["energy_j_per_token"] == pytest.approx(792.5 / (5 * 2048))
    assert values["gpu0_memory_used_peak_bytes"] == 30 * GiB
    assert values["gpu1_memory_used_peak_bytes"] == 45 * GiB
    assert values["device_memory_used_peak_bytes"] == 45 * GiB  # never 75 GiB (a sum)
    assert values["gpu1_case_memory_peak_bytes"] == int(22.5 * GiB)
    assert values["device_case_memory_peak_bytes"] == int(22.5 * GiB)
    assert values["power_w_mean"] == pytest.approx(185.0)
    assert values["power_w_mean_total"] == pytest.approx(370.0)
    assert values["temperature_c_max"] == 73
    assert values["gpu_util_mean_pct"] == 80 and values["sm_clock_mhz_mean"] == 1800
    assert not {k: r for k, r in reasons.items() if not k.startswith("host_")}


def test_energy_needs_readings_on_both_sides_of_the_window():
    rows = [gpu("gpu0", t, 100 * t, 1) for t in (0.6, 1.0, 2.0, 3.5)]
    values, reasons = summary(rows)
    assert values["gpu0_energy_j"] is None and values["energy_j"] is None
    assert "both sides" in reasons["gpu0_energy_j"]
    assert reasons["energy_j"] == "gpu0: " + reasons["gpu0_energy_j"]
    assert reasons["energy_j_per_token"] == reasons["energy_j"]
    assert values["gpu0_memory_used_peak_bytes"] == GiB  # other figures are unaffected


def test_steps_unknown_leaves_per_step_energy_null():
    rows = [gpu("gpu0", t, 100 * t, 1) for t in range(5)]
    values, reasons = summary(rows, steps=None)
    assert values["energy_j"] == pytest.approx(275.0)
    assert (
        values["energy_j_per_step"] is None and reasons["energy_j_per_step"] == "no measured steps"
    )
    assert reasons["energy_j_per_token"] == "no measured tokens"


def test_throttle_reasons_seen_on_any_device_in_the_window():
    rows = [
        gpu("gpu0", 0.0, 0, 1, clock_event_mask=0x40),  # before the window
        gpu("gpu0", 1.0, 0, 1, clock_event_mask=0x4),
        gpu("gpu1", 1.0, 0, 1, clock_event_mask=0x1),
        gpu("gpu1", 2.0, 0, 1, clock_event_mask=0x4 | 0x20),
    ]
    values, _ = summary(rows)
    assert values["throttle_reasons"] == ["GpuIdle", "SwPowerCap", "SwThermalSlowdown"]


def test_a_field_missing_on_one_device_nulls_the_figure_over_devices():
    rows = [gpu("gpu0", t, 10 * t, 1) for t in range(5)]
    rows += [gpu("gpu1", t, 10 * t, 1, temperature_c=None) for t in range(5)]
    values, reasons = summary(rows, unavailable={"gpu1.temperature_c": "NVMLError_Unknown: boom"})
    assert values["temperature_c_max"] is None
    assert reasons["temperature_c_max"] == "gpu1: NVMLError_Unknown: boom"
    assert values["gpu_util_mean_pct"] == 80


def test_a_failed_sampler_yields_no_figures_even_with_samples():
    rows = [host(t, 1.0) for t in (1.0, 2.0)]
    reason = "host sampler failed: OSError: boom"
    values, reasons = summary(rows, unavailable={**CPU, "host": reason})
    assert values["host_tree_rss_peak_bytes"] is None
    assert reasons["host_tree_rss_peak_bytes"] == reason
