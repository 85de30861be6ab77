"""Renderings of a comparison: Markdown summary size, JUnit XML, JSON, terminal."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace

from golden_runs import runs
from rich.console import Console

from llmbench.judge.compare import compare_runs, no_baseline
from llmbench.judge.report import verdicts
from llmbench.judge.runs import read_run

T2, T1 = runs("repeats/t2")[0], runs("repeats/t1")[0]


def _slowdown():
    return compare_runs(read_run(T2), read_run(T1))


def test_summary_fits_a_ci_step_summary_even_for_huge_comparisons():
    comparison = _slowdown()
    # 30,000 rows: the real verdicts repeated under distinct case labels
    comparison.verdicts = [
        replace(v, label=f"{v.label} #{i}") for i in range(10_000) for v in comparison.verdicts
    ]
    text = verdicts.summary_markdown(comparison)
    assert len(text.encode()) < 2**20
    assert "more rows left out to fit a CI summary" in text
    assert text.index("regression") < text.index("unchanged |")
    assert "|\n\n| case | metric | verdict |" in text  # counts and verdicts: two tables


def test_junit_one_testcase_per_case_and_metric():
    comparison = _slowdown()
    root = ET.fromstring(verdicts.junit_xml(comparison))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [(c.get("name"), c.find("failure") is not None) for c in cases] == [
        ("tokens_per_s", True),
        ("step_time_s_median", True),
        ("peak_memory_bytes", False),
    ]
    assert suite.get("failures") == "2" and suite.get("errors") == "0"
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["baseline"] == T2.name and props["current"] == T1.name


def test_json_round_trips():
    data = json.loads(verdicts.to_json(_slowdown()))
    assert data["exit_code"] == 1 and data["missing"] == 0
    first = data["verdicts"][0]
    assert first["verdict"] == "regression" and first["band_source"] == "repeats 4+4"
    assert first["band_low"] < first["baseline"] < first["band_high"]
    assert "noise band" in data["method"]


def test_every_rendering_shows_the_noise_band_next_to_the_change():
    comparison = _slowdown()
    tokens = next(v for v in comparison.verdicts if v.metric == "tokens_per_s")
    band = verdicts.band_text(tokens)  # as changes from the baseline, like the change column
    low, high = (
        (e - tokens.baseline) / tokens.baseline * 100 for e in (tokens.band_low, tokens.band_high)
    )
    assert band == f"{low:+.1f} … {high:+.1f} % (repeats 4+4)" and low < 0 < high
    assert tokens.change_rel * 100 < low  # the change clears the band: why it is a regression
    console = Console(width=220, record=True)
    console.print(verdicts.terminal(comparison))
    for text in (
        console.export_text(),
        verdicts.summary_markdown(comparison),
        verdicts.junit_xml(comparison),
        verdicts.html_section(comparison),
    ):
        assert "repeats 4+4" in text and f"{low:+.1f}" in text


def test_warnings_reach_every_rendering():
    comparison = _slowdown()
    comparison.warnings = ["current x: test-only slowdown hook active"]
    comparison.disturbed = ["gpt2-tiny: step scatter 80% vs the baseline's 10%"]
    console = Console(width=220, record=True)
    console.print(verdicts.terminal(comparison))
    for text in (
        console.export_text(),
        verdicts.summary_markdown(comparison),
        verdicts.junit_xml(comparison),
        verdicts.to_json(comparison).decode(),
        verdicts.html_section(comparison),
    ):
        assert "test-only slowdown hook" in text and "step scatter" in text


def test_missing_data_is_an_error_in_junit_unless_allowed():
    comparison = _slowdown()
    lost = replace(comparison.verdicts[0], metric="status", verdict="missing", detail="lost")
    comparison.verdicts.append(lost)
    suite = ET.fromstring(verdicts.junit_xml(comparison)).find("testsuite")
    assert suite.get("errors") == "1" and comparison.exit_code == 2
    assert "MISSING" in comparison.headline and "--allow-missing" in comparison.headline
    lost.allowed = True
    suite = ET.fromstring(verdicts.junit_xml(comparison)).find("testsuite")
    assert suite.get("errors") == "0" and suite.get("skipped") == "1"
    assert comparison.exit_code == 1  # the slowdown's regressions remain


def test_no_baseline_outputs():
    comparison = no_baseline(read_run(T1), "no earlier good run")
    assert comparison.exit_code == 0
    assert "no baseline" in verdicts.summary_markdown(comparison)
    suite = ET.fromstring(verdicts.junit_xml(comparison)).find("testsuite")
    assert suite.get("tests") == "1" and suite.find("testcase/skipped") is not None


def test_terminal_hides_unchanged_rows_of_large_comparisons():
    comparison = _slowdown()
    comparison.verdicts = [
        replace(v, label=f"c{i}") for i in range(40) for v in comparison.verdicts
    ]
    console = Console(width=200, record=True)
    console.print(verdicts.terminal(comparison))
    text = console.export_text()
    assert "40 unchanged rows not shown" in text and text.count("│ regression │") == 80
