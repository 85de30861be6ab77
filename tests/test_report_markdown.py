"""The Markdown report and the shared Markdown table helper."""

from __future__ import annotations

import json

from golden_runs import copy_run, runs

from llmbench.judge.report import markdown
from llmbench.judge.report.pivot import build_pivot
from llmbench.judge.runs import read_run, runs_frame

SWEEP = runs("sweep")[0]


def _report(path) -> str:
    run = read_run(path)
    frame = runs_frame([run])
    return markdown.report([run], frame, build_pivot(frame))


def _tables(text: str) -> list[list[str]]:
    """Each pipe table as its lines; checks every row has the header's column count."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    for table in tables:
        widths = {len(row.replace("\\|", "").split("|")) for row in table}
        assert len(widths) == 1, table
    return tables


def test_sections_and_tables():
    text = _report(SWEEP)
    assert text.startswith("# llmbench report: sweep\n")
    for heading in ("## Throughput and memory", "### Cases", "### Environment"):
        assert heading in text
    assert "### Failed, unsupported and skipped cases" in text
    tables = _tables(text)
    assert len(tables) == 4
    assert len(tables[1]) == 2 + 6  # header, alignment, one row per case


def test_best_cell_is_bold_and_reasons_listed():
    text = _report(SWEEP)
    assert text.count("**") == 2
    assert "needs 4 ranks per node, this machine has 2 CPU cores" in text


def test_strings_from_results_are_escaped(tmp_path):
    run = copy_run(SWEEP, tmp_path)
    path = run / "results.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for line in lines:
        if line["status"] == "skipped":
            line["reason"] = "a | b\n<script>x</script> *bold* [link](http://x)"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    text = _report(run)
    assert "<script>" not in text and "[link](" not in text
    assert "a \\| b<br>&lt;script&gt;x&lt;/script&gt; \\*bold\\* \\[link\\](http://x)" in text
    _tables(text)
