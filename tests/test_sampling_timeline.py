"""Timeline frame, its CSV round trip, phase events and phase tags."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from llmbench.judge.store import CorruptLineWarning
from llmbench.judge.timeline import timeline_frame
from llmbench.measure.sampling import (
    PhaseEvent,
    load_timeline,
    read_phase_events,
    save_timeline,
    tag_phases,
)
from llmbench.measure.sampling.host import HostSampler
from llmbench.measure.sampling.nvml import NvmlSampler

COLUMNS = [*HostSampler.columns, *NvmlSampler.columns]
T0 = 1_795_872_546.0


def samples() -> list[dict]:
    return [
        {"t": T0 + 0.2, "source": "nvml", "device": "gpu1", "nvml_index": 3, "power_w": 201.25,
         "energy_j": 123456.789, "memory_used_bytes": 85_899_345_920, "clock_event_mask": 0,
         "case_memory_bytes": None},
        {"t": T0 + 0.2, "source": "nvml", "device": "gpu0", "nvml_index": 2, "power_w": None,
         "energy_j": 98765.4321, "memory_used_bytes": 1, "clock_event_mask": 5},
        {"t": T0 + 0.1, "source": "host", "device": "host", "tree_rss_bytes": 3 * 2**30,
         "proc_rss_max_bytes": 2**30, "cpu_util_pct": None, "processes": 3},
        {"t": T0 + 0.3, "source": "host", "device": "host", "tree_rss_bytes": 3 * 2**30 + 4096,
         "proc_rss_max_bytes": 2**30, "cpu_util_pct": 187.5, "processes": 3},
    ]  # fmt: skip


def test_frame_is_sorted_with_relative_time_and_float_metrics():
    frame = timeline_frame(samples(), COLUMNS, t0=T0)
    assert list(frame.columns) == ["t", "t_rel_s", "source", "device", *COLUMNS]
    assert list(frame["device"]) == ["host", "gpu0", "gpu1", "host"]
    assert frame["t_rel_s"].round(6).tolist() == [0.1, 0.2, 0.2, 0.3]
    assert all(frame[c].dtype == "float64" for c in COLUMNS)
    assert math.isnan(frame.loc[1, "power_w"])  # missing is NaN, never 0
    assert math.isnan(frame.loc[0, "power_w"])  # host rows have no GPU columns


def test_empty_frame_keeps_its_columns():
    frame = timeline_frame([], COLUMNS)
    assert frame.empty and list(frame.columns) == ["t", "t_rel_s", "source", "device", *COLUMNS]


def test_csv_round_trip_is_exact(tmp_path):
    events = [PhaseEvent("init", T0), PhaseEvent("measure", T0 + 0.15)]
    frame = tag_phases(timeline_frame(samples(), COLUMNS, t0=T0), events)
    save_timeline(frame, tmp_path / "timeline.csv")
    loaded = load_timeline(tmp_path / "timeline.csv")
    pd.testing.assert_frame_equal(loaded, frame)
    assert loaded.loc[2, "memory_used_bytes"] == 85_899_345_920
    assert loaded.loc[1, "energy_j"] == 98765.4321


def test_read_phase_events(tmp_path):
    (tmp_path / "phases.rank0.jsonl").write_text(
        '{"phase": "init", "t": 10.5, "pid": 7}\n'
        '{"phase": "warmup", "t": 11.0}\n'
        '{"phase": "measure", "t": 12.25}\n'
        '{"phase": "teardo'  # cut short by a kill
    )
    with pytest.warns(CorruptLineWarning):
        events = read_phase_events(tmp_path)
    assert events == [
        PhaseEvent("init", 10.5),
        PhaseEvent("warmup", 11.0),
        PhaseEvent("measure", 12.25),
    ]
    assert read_phase_events(tmp_path / "never-started") == []


def test_tag_phases_uses_the_phase_in_force_at_each_sample():
    times = [9.0, 10.0, 10.5, 12.0, 12.1, 20.0]
    frame = timeline_frame(
        [{"t": t, "source": "host", "device": "host"} for t in times], HostSampler.columns
    )
    events = [PhaseEvent("init", 10.0), PhaseEvent("measure", 12.0), PhaseEvent("teardown", 13.0)]
    tagged = tag_phases(frame, events)
    assert list(tagged["phase"]) == ["launch", "init", "init", "measure", "measure", "teardown"]
    assert "phase" not in frame  # the input is left alone
    retagged = tag_phases(tagged, events[:1])
    assert list(retagged["phase"]) == ["launch", *["init"] * 5]
    assert list(tag_phases(frame, [])["phase"]) == ["launch"] * 6
