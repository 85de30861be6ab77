"""Renderings of a comparison: terminal table, Markdown summary, JUnit XML, JSON, HTML.

Every rendering shows each metric's noise band next to its change, so a
reader sees why a change is, or is not, a regression; a step-time verdict of
a profiled case names the phases that moved in its detail (attribution.py).

The Markdown summary is sized for a CI step summary (GitHub caps one at
1 MiB): rows are added worst first until the budget is spent, then a line
says how many were left out. JUnit has one test case per case × metric so CI
dashboards show which figure of which case regressed.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET

import orjson
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from llmbench import units
from llmbench.judge.compare import Comparison, Verdict
from llmbench.judge.noise import HISTORY_RUNS, MIN_HISTORY, NOISE_Z
from llmbench.judge.report import md

SUMMARY_BUDGET_BYTES = 1_000_000
"""Under GitHub's 1 MiB step-summary limit, with room for the last row and the note."""
TERMINAL_ROWS_UNCHANGED = 50
"""Unchanged rows are listed only in small comparisons; larger ones give a count."""
TERMINAL_MAX_ROWS = 200
STYLE = {
    "regression": "bold red",
    "failed": "bold red",
    "missing": "bold magenta",
    "noisy": "yellow",
    "new": "cyan",
    "improvement": "green",
    "unchanged": "dim",
}
HEADER = [
    "case",
    "metric",
    "verdict",
    "baseline",
    "current",
    "change",
    "threshold",
    "noise band",
    "detail",
]
NUMERIC = {3, 4, 5, 7}


def _change(v: Verdict) -> str:
    if v.change_rel is not None:
        return f"{v.change_rel * 100:+.1f} %"
    if v.change is not None:
        return ("+" if v.change >= 0 else "") + units.figure(v.metric, v.change)
    return ""


def band_text(v: Verdict) -> str:
    """The noise band as changes from the baseline (comparable with the change column)."""
    band = v.band
    if band is None:
        return ""
    base = v.baseline if isinstance(v.baseline, (int, float)) else None
    if base:
        low, high = ((edge - base) / abs(base) * 100 for edge in (band.low, band.high))
        text = f"{low:+.1f} … {high:+.1f} %"
    else:
        text = f"{units.figure(v.metric, band.low)} … {units.figure(v.metric, band.high)}"
    return f"{text} ({band.source})"


def _allowed(v: Verdict) -> str:
    return "allowed" if v.verdict == "missing" and v.allowed else ""


def _cells(v: Verdict) -> list[str]:
    return [
        v.label,
        v.metric,
        v.verdict + (" (allowed)" if _allowed(v) else ""),
        units.figure(v.metric, v.baseline),
        units.figure(v.metric, v.current),
        _change(v),
        v.threshold or "",
        band_text(v),
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
        "a run's figure is its best process; changed = beyond the threshold and outside the "
        f"noise band (the history's: ±{NOISE_Z:g} robust SD of the last ≤ {HISTORY_RUNS} good "
        f"runs, once there are {MIN_HISTORY}; until then the repeats': ±{NOISE_Z:g} SD of the "
        "per-process values)"
    )


def notes(comparison: Comparison) -> list[str]:
    """Warnings and quality flags every rendering carries."""
    return [*comparison.warnings, *(f"disturbed run: {d}" for d in comparison.disturbed)]


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
    parts += [Text(f"warning: {n}", style="yellow") for n in notes(comparison)]
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
    return Group(*parts)


def summary_markdown(comparison: Comparison) -> str:
    """A CI step summary: headline, counts, environment warning, worst rows first."""
    lines = [
        f"## llmbench compare: {md.escape(comparison.headline)}",
        "",
        f"Scenario {md.escape(comparison.scenario or '–')}: baseline "
        f"{md.escape(comparison.baseline_id or 'none')} → current "
        f"{md.escape(comparison.current_id)}."
        + (f" {md.escape(method_text(comparison))}." if comparison.baseline_id else ""),
        "",
    ]
    if comparison.env_differences:
        lines += [
            "> **Warning: the environments differ** (compared because of --allow-env-mismatch):",
            *[f"> - {md.escape(d)}" for d in comparison.env_differences],
            "",
        ]
    lines += [f"> **Warning:** {md.escape(n)}" for n in notes(comparison)]
    lines += [""] if notes(comparison) else []
    if comparison.baseline_id is None and not comparison.verdicts:
        return "\n".join(lines)
    counts = {k: n for k, n in comparison.counts().items() if n}
    lines += [md.table(list(counts), [[str(n) for n in counts.values()]]), ""]
    head = md.table(HEADER, [], right=NUMERIC)
    text = "\n".join(lines) + "\n" + head + "\n"
    used = len(text.encode())
    rows = comparison.sorted_verdicts()
    for index, v in enumerate(rows):
        line = "| " + " | ".join(md.escape(c) for c in _cells(v)) + " |\n"
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
        errors=str(counts["failed"] + len(comparison.missing)),
        skipped=str(
            counts["new"]
            + counts["missing"]
            - len(comparison.missing)
            + (comparison.baseline_id is None)
        ),
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("baseline", comparison.baseline_id or ""),
        ("current", comparison.current_id),
        ("method", method_text(comparison)),
        ("verdict", comparison.headline),
        *[("env_difference", d) for d in comparison.env_differences],
        *[("warning", n) for n in notes(comparison)],
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
                f"noise band {band_text(v)}" if v.band is not None else "",
                _allowed(v),
                v.detail,
            )
            if part
        )
        if v.verdict == "regression":
            ET.SubElement(case, "failure", message=message, type="regression").text = message
        elif v.verdict == "failed" or (v.verdict == "missing" and not v.allowed):
            ET.SubElement(case, "error", message=message, type=v.verdict).text = message
        elif v.verdict in ("new", "missing"):
            ET.SubElement(case, "skipped", message=message)
        else:
            ET.SubElement(case, "system-out").text = message
    root = ET.Element("testsuites", name="llmbench compare")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def to_json(comparison: Comparison) -> bytes:
    """The whole comparison, as UTF-8; orjson writes the 30,000 verdicts of a 10k-case run
    as they are (dataclasses), where the stdlib encoder took a third of ``compare``'s time,
    and its bytes go to the file as they are (a 12 MB round trip through ``str`` took ~35 ms)."""
    document = {
        "baseline": comparison.baseline_id,
        "current": comparison.current_id,
        "scenario": comparison.scenario,
        "method": method_text(comparison),
        "headline": comparison.headline,
        "exit_code": comparison.exit_code,
        "counts": comparison.counts(),
        "env_differences": comparison.env_differences,
        "errored": comparison.errored,
        "missing": len(comparison.missing),
        "warnings": comparison.warnings,
        "disturbed": comparison.disturbed,
        "note": comparison.note,
        "verdicts": comparison.sorted_verdicts(),
        # also each step-time verdict's detail; here with the phases' figures
        "attributions": [a.to_dict() for a in comparison.attributions],
    }
    return orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE)


def html_section(comparison: Comparison) -> str:
    """The comparison for the HTML report: headline, notes, and every non-unchanged row."""
    rows = [v for v in comparison.sorted_verdicts() if v.verdict != "unchanged"]
    unchanged = len(comparison.verdicts) - len(rows)
    parts = [
        f"<h2>Comparison: {html.escape(comparison.headline)}</h2>",
        f"<p>Baseline {html.escape(comparison.baseline_id or 'none')} → current "
        f"{html.escape(comparison.current_id)}. {html.escape(method_text(comparison))}.</p>",
        *[f"<p><strong>Warning:</strong> {html.escape(n)}</p>" for n in notes(comparison)],
    ]
    if rows:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(v)) + "</tr>"
            for v in rows
        )
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    if unchanged:
        parts.append(f"<p>{unchanged} unchanged metric(s) not listed (see verdicts.json).</p>")
    return "\n".join(parts)
