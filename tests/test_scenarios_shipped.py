"""Every scenario shipped in scenarios/ loads, validates and expands."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmbench.define.loader import load_scenario

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.yaml"))


def test_the_foundation_scenarios_are_shipped():
    names = {p.stem for p in SCENARIOS}
    assert {
        "zero_sweep",
        "parity",
        "comm_sweep",
        "parallel_sweep",
        "text8_quickstart",
        "gpu_smoke",
    } <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenario_is_valid(path):
    scenario = load_scenario(path)
    cases = scenario.expand()
    assert cases and len({c.id for c in cases}) == len(cases)
    assert scenario.name == path.stem


def test_zero_sweep_is_the_issue_matrix():
    cases = load_scenario(SCENARIOS[[p.stem for p in SCENARIOS].index("zero_sweep")]).expand()
    combos = {
        (
            c.params["deepspeed.zero_stage"],
            c.params["deepspeed.precision"],
            c.params["parallel.world_size"],
        )
        for c in cases
    }
    assert combos == {(z, p, w) for z in range(4) for p in ("bf16", "fp32", "fp16") for w in (1, 2)}
