"""The HTML report: one self-contained file (CSS inline, charts as data: URIs).

It can be mailed, attached to a CI job or opened from disk with no server and
no network. Every string from results passes through ``html.escape``; the page
has no scripts.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from llmbench.hardware import gpu_spec
from llmbench.judge.report import breakdown as profile
from llmbench.judge.report import plots
from llmbench.judge.report.pivot import Pivot, cell_lines, legend, short
from llmbench.judge.report.tables import TextTable, cases_table, environment_table, failures_table
from llmbench.judge.runs import Run
from llmbench.judge.store import RunDir

MAX_TIMELINES = 20
TIMELINE = "timeline.csv"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { background: #d9f2d9; font-weight: bold; }
.ok { color: #1a7f37; } .oom, .error, .timeout { color: #c62828; }
.unsupported { color: #9a6700; } .skipped { color: #777; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
p.note { color: #666; font-style: italic; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(source: TextTable) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in source.header)
    body = []
    for row in source.rows:
        cells = []
        for i, value in enumerate(row):
            classes = []
            if i in source.right:
                classes.append("num")
            if i == source.status_column:
                classes.append(value)
            attr = f' class="{_e(" ".join(classes))}"' if classes else ""
            cells.append(f"<td{attr}>{_e(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<h2>{_e(source.title)}</h2>\n<table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _pivot(pivot: Pivot) -> str:
    head = "".join(f"<th>{_e(short(k))}</th>" for k in pivot.row_keys)
    head += "".join(f"<th>{_e(pivot.col_title(c) or 'case')}</th>" for c in pivot.cols)
    body = []
    for row in pivot.rows:
        cells = "".join(f"<th>{_e(v)}</th>" for v in row)
        for col in pivot.cols:
            cell = pivot.cell(row, col)
            classes = ["num"]
            if cell is not None:
                classes.append("best" if cell.best else cell.status)
            title = f' title="{_e(cell.reason)}"' if cell is not None and cell.reason else ""
            text = "<br>".join(_e(line) for line in cell_lines(cell))
            cells += f'<td class="{_e(" ".join(classes))}"{title}>{text}</td>'
        body.append(f"<tr>{cells}</tr>")
    return (
        "<h2>Throughput and memory</h2>\n"
        f'<p class="note">{_e(legend(pivot))}</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _image(data: bytes | None, alt: str, missing: str) -> str:
    if data is None:
        return f'<p class="note">{_e(missing)}</p>'
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def capacity(runs: Sequence[Run]) -> tuple[float | None, str]:
    """Memory one device offers: the GPU model's (hardware table), or host RAM on CPU."""
    env = runs[-1].env
    if env.get("accelerator") not in (None, "cpu"):
        spec = gpu_spec(str(env["accelerator"]))
        if spec is not None:
            return float(spec.memory_bytes), f"{spec.name} capacity"
        return None, ""
    memory = env.get("memory_bytes")
    return (float(memory), "host RAM") if memory else (None, "")


def _timelines(runs: Sequence[Run]) -> list[str]:
    """Sampler timelines of each case (``cases/<case>[-r<n>]/timeline.csv``), in case order."""
    parts: list[str] = []
    for run in runs:
        if run.path is None:
            continue
        store = RunDir(run.path)
        for result in run.results:
            path = store.case_dir(result.case_id, result.repeat) / TIMELINE
            if not path.exists():
                continue
            if len(parts) == MAX_TIMELINES:
                return [*parts, f'<p class="note">Only the first {MAX_TIMELINES} timelines.</p>']
            title = result.label + (f" (repeat {result.repeat})" if result.repeat else "")
            if len(runs) > 1:
                title += f" — {run.run_id}"
            chart = _read_timeline_chart(path, title)
            parts.append(f"<h3>{_e(title)}</h3>" + _image(chart, title, f"{path}: nothing to plot"))
    return parts


def _read_timeline_chart(path: Path, title: str) -> bytes | None:
    from llmbench.judge.timeline import load_timeline

    try:
        timeline = load_timeline(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return plots.timeline_chart(timeline, title)


def report(runs: Sequence[Run], frame: pd.DataFrame, pivot: Pivot, verdicts: str = "") -> str:
    """The whole report as one HTML document (``verdicts``: a comparison's section, first)."""
    scenarios = sorted({r.scenario_name for r in runs if r.scenario_name})
    title = f"llmbench report: {', '.join(scenarios) or 'results'}"
    cap_bytes, cap_label = capacity(runs)
    parts = [
        f"<h1>{_e(title)}</h1>",
        "<p>Runs: " + ", ".join(_e(r.run_id) for r in runs) + "</p>",
        verdicts,
        _pivot(pivot),
        "<h2>Throughput by configuration</h2>",
        _image(plots.throughput_chart(frame), "throughput", "No case measured a throughput."),
        "<h2>Peak memory</h2>",
        _image(
            plots.memory_chart(frame, cap_bytes, cap_label),
            "peak memory",
            "No case measured its memory.",
        ),
        "<h2>Step-time distributions</h2>",
        _image(plots.step_time_chart(frame), "step times", "No case recorded step times."),
        _table(cases_table(frame)),
    ]
    phases = profile.breakdown_table(frame)
    if phases is not None:
        parts += [
            '<h2 id="breakdown">Where the step time goes</h2>',
            _image(profile.phase_chart(frame), "step time by phase", "No phases to draw."),
            _table(phases),
        ]
    files = profile.files_table(runs)
    if files is not None:
        parts.append(_table(files))
    failures = failures_table(frame)
    if failures is not None:
        parts.append(_table(failures))
    timelines = _timelines(runs)
    if timelines:
        parts += ["<h2>Sampler timelines</h2>", *timelines]
    parts.append(_table(environment_table(runs)))
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
