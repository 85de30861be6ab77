"""Renderings of a comparison: terminal table, Markdown summary, JUnit XML, JSON.

The Markdown summary is sized for a CI step summary (GitHub caps one at
1 MiB): rows are added worst first until the budget is spent, then a line
says how many were left out. JUnit has one test case per case × metric so CI
dashboards show which figure of which case regressed.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from llmbench.judge.attribution import attribute
from llmbench.judge.compare import Comparison, Verdict
from llmbench.judge.report import markdown
from llmbench.judge.report.tables import format_metric

SUMMARY_BUDGET_BYTES = 1_000_000
"""Under GitHub's 1 MiB step-summary limit, with room for the last row and the note."""
TERMINAL_ROWS_UNCHANGED = 50
"""Unchanged rows are listed only in small comparisons; larger ones give a count."""
TERMINAL_MAX_ROWS = 200
STYLE = {
    "regression": "bold red",
    "failed": "bold red",
    "noisy": "yellow",
    "missing": "magenta",
    "new": "cyan",
    "improvement": "green",
    "unchanged": "dim",
}
HEADER = ["case", "metric", "verdict", "baseline", "current", "change", "threshold", "p", "detail"]
NUMERIC = {3, 4, 5, 7}


def _change(v: Verdict) -> str:
    if v.change_rel is not None:
        return f"{v.change_rel * 100:+.1f} %"
    if v.change is not None:
        return ("+" if v.change >= 0 else "") + format_metric(v.metric, v.change)
    return ""


def _cells(v: Verdict) -> list[str]:
    return [
        v.label,
        v.metric,
        v.verdict,
        format_metric(v.metric, v.baseline),
        format_metric(v.metric, v.current),
        _change(v),
        v.threshold or "",
        "" if v.p_value is None else f"{v.p_value:.2g}",
        v.detail,
    ]


def _shown(comparison: Comparison) -> tuple[list[Verdict], str]:
    """Rows for the terminal, worst first, and a note on what was left out."""
    rows = comparison.sorted_verdicts()
    if len(rows) <= TERMINAL_ROWS_UNCHANGED:
        return rows, ""
    changed = [v for v in rows if v.verdict != "unchanged"]
    shown = changed[:TERMINAL_MAX_ROWS]
    notes = [f"{len(rows) - len(changed)} unchanged rows"] if len(changed) < len(rows) else []
    if len(shown) < len(changed):
        notes.append(f"{len(changed) - len(shown)} more changed rows")
    return shown, " and ".join(notes) + " not shown (all in --json / --markdown)"


def method_text(comparison: Comparison) -> str:
    return (
        f"changed = beyond threshold and two-sided Mann-Whitney U p < {comparison.alpha:g} "
        "(per-repeat values, else per-step times)"
    )


def terminal(comparison: Comparison) -> Group:
    """Headline, environment warning, and the verdict table (worst first)."""
    parts: list = []
    style = "red" if comparison.exit_code else "green"
    parts.append(Text(comparison.headline, style=f"bold {style}"))
    if comparison.env_differences:
        parts.append(
            Panel(
                Text("\n".join(comparison.env_differences)),
                title="ENVIRONMENTS DIFFER: compared only because of --allow-env-mismatch",
                border_style="bold red",
            )
        )
    if comparison.baseline_id is None and not comparison.verdicts:
        return Group(*parts)
    table = Table(
        title=Text(f"{comparison.scenario}: {comparison.baseline_id} → {comparison.current_id}"),
        caption=Text(method_text(comparison)),
        header_style="bold",
    )
    for name in HEADER:
        table.add_column(
            name, justify="right" if HEADER.index(name) in NUMERIC else "left", overflow="fold"
        )
    rows, hidden = _shown(comparison)
    for v in rows:
        cells = [Text(c) for c in _cells(v)]
        cells[2].stylize(STYLE[v.verdict])
        table.add_row(*cells)
    parts.append(table)
    if hidden:
        parts.append(Text(hidden, style="dim"))
    for found in attribute(comparison):
        parts.append(Text(f"{found.label}: {found.text()}"))
    return Group(*parts)


def summary_markdown(comparison: Comparison) -> str:
    """A CI step summary: headline, counts, environment warning, worst rows first."""
    lines = [
        f"## llmbench compare: {markdown.escape(comparison.headline)}",
        "",
        f"Scenario {markdown.escape(comparison.scenario or '–')}: baseline "
        f"{markdown.escape(comparison.baseline_id or 'none')} → current "
        f"{markdown.escape(comparison.current_id)}."
        + (f" {markdown.escape(method_text(comparison))}." if comparison.baseline_id else ""),
        "",
    ]
    if comparison.env_differences:
        lines += [
            "> **Warning: the environments differ** (compared because of --allow-env-mismatch):",
            *[f"> - {markdown.escape(d)}" for d in comparison.env_differences],
            "",
        ]
    if comparison.baseline_id is None and not comparison.verdicts:
        return "\n".join(lines)
    counts = {k: n for k, n in comparison.counts().items() if n}
    lines += [markdown.table(list(counts), [[str(n) for n in counts.values()]]), ""]
    lines += [f"- {markdown.escape(f'{a.label}: {a.text()}')}" for a in attribute(comparison)]
    lines += [""] if lines[-1] != "" else []
    head = markdown.table(HEADER, [], right=NUMERIC)
    text = "\n".join(lines) + "\n" + head + "\n"
    used = len(text.encode())
    rows = comparison.sorted_verdicts()
    for index, v in enumerate(rows):
        line = "| " + " | ".join(markdown.escape(c) for c in _cells(v)) + " |\n"
        if used + len(line.encode()) > SUMMARY_BUDGET_BYTES - 200:
            text += f"\n_{len(rows) - index} more rows left out to fit a CI summary; see the JSON output._\n"
            break
        text += line
        used += len(line.encode())
    return text


def junit_xml(comparison: Comparison) -> str:
    """JUnit XML: a failure per regression, an error per failed case, skips for new/missing."""
    counts = comparison.counts()
    suite = ET.Element(
        "testsuite",
        name=f"llmbench compare {comparison.scenario}".strip(),
        tests=str(len(comparison.verdicts) + (comparison.baseline_id is None)),
        failures=str(counts["regression"]),
        errors=str(counts["failed"]),
        skipped=str(counts["new"] + counts["missing"] + (comparison.baseline_id is None)),
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("baseline", comparison.baseline_id or ""),
        ("current", comparison.current_id),
        ("alpha", f"{comparison.alpha:g}"),
        ("verdict", comparison.headline),
        *[("env_difference", d) for d in comparison.env_differences],
    ):
        ET.SubElement(properties, "property", name=name, value=value)
    if comparison.baseline_id is None:
        case = ET.SubElement(suite, "testcase", classname="llmbench.judge.compare", name="baseline")
        ET.SubElement(case, "skipped", message=comparison.headline)
    for v in comparison.verdicts:
        case = ET.SubElement(
            suite, "testcase", classname=f"{comparison.scenario}.{v.label}", name=v.metric, time="0"
        )
        message = " ".join(
            part
            for part in (
                v.verdict,
                _change(v),
                f"(threshold {v.threshold})" if v.threshold else "",
                f"p={v.p_value:.3g}" if v.p_value is not None else "",
                v.detail,
            )
            if part
        )
        if v.verdict == "regression":
            ET.SubElement(case, "failure", message=message, type="regression").text = message
        elif v.verdict == "failed":
            ET.SubElement(case, "error", message=message, type="failed").text = message
        elif v.verdict in ("new", "missing"):
            ET.SubElement(case, "skipped", message=message)
        else:
            ET.SubElement(case, "system-out").text = message
    root = ET.Element("testsuites", name="llmbench compare")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def to_json(comparison: Comparison) -> str:
    return (
        json.dumps(
            {
                "baseline": comparison.baseline_id,
                "current": comparison.current_id,
                "scenario": comparison.scenario,
                "alpha": comparison.alpha,
                "method": method_text(comparison),
                "headline": comparison.headline,
                "exit_code": comparison.exit_code,
                "counts": comparison.counts(),
                "env_differences": comparison.env_differences,
                "errored": comparison.errored,
                "note": comparison.note,
                # vars(): a flat record; asdict's deep copy costs seconds on 30,000 rows
                "verdicts": [vars(v) for v in comparison.sorted_verdicts()],
                "attributions": [
                    {"case_id": a.case_id, "label": a.label, "text": a.text()}
                    for a in attribute(comparison)
                ],
            },
            allow_nan=False,
        )
        + "\n"
    )
