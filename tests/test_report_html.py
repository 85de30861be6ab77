"""The self-contained HTML report: structure, escaping, and a real render in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser

import pytest
from golden_runs import copy_run, runs

from llmbench.judge.report import html
from llmbench.judge.report.pivot import build_pivot
from llmbench.judge.runs import read_run, runs_frame
from llmbench.measure.profile import PIPELINE_NO_TIMERS

SWEEP = runs("sweep")[0]
(PROFILED,) = runs("profile")
"""run.profile=breakdown: ZeRO 0/2/3 × 1-2 ranks and a pipeline case without phases."""
PNG = b"\x89PNG\r\n\x1a\n"


def _report(paths) -> str:
    loaded = [read_run(p) for p in paths]
    frame = runs_frame(loaded)
    return html.report(loaded, frame, build_pivot(frame))


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.images: list[dict[str, str]] = []
        self.scripts = 0
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            self.images.append(dict(attrs))
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


def _parse(text: str) -> _Collect:
    parser = _Collect()
    parser.feed(text)
    return parser


def test_sections_tables_and_embedded_images():
    page = _parse(_report([SWEEP]))
    assert page.h2 == [
        "Throughput and memory",
        "Throughput by configuration",
        "Peak memory",
        "Step-time distributions",
        "Cases",
        "Failed, unsupported and skipped cases",
        "Sampler timelines",
        "Environment",
    ]
    assert page.tags["table"] == 4 and "script" not in page.tags
    timelines = len(list(SWEEP.glob("cases/*/timeline.csv")))
    assert len(page.images) == 3 + timelines
    for image in page.images:
        assert image["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(image["src"].split(",", 1)[1])[:8] == PNG


def test_nothing_is_fetched_from_elsewhere():
    text = _report([SWEEP])
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)


def test_failure_reasons_are_shown_and_escaped(tmp_path):
    run = copy_run(SWEEP, tmp_path)
    path = run / "results.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    evil = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    for line in lines:
        if line["status"] == "unsupported":
            line["reason"] = evil
            line["label"] = "<b>label</b>"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    text = _report([run])
    assert evil not in text and "<b>label</b>" not in text
    assert html._e(evil) in text and "&lt;b&gt;label&lt;/b&gt;" in text
    page = _parse(text)
    assert "script" not in page.tags and all("onerror" not in i for i in page.images)


def test_report_of_two_runs():
    page = _parse(_report(runs("nightly")[3:5]))
    assert page.tags["table"] == 3  # no failures table: every case ok
    assert len(page.images) == 3


def _browser() -> str | None:
    return next(
        (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )


CHECK = """
<script>
// the phase section as laid out: its stacked-bar chart decoded and drawn at a size,
// and its table's rows and header
function breakdown() {
  const head = document.getElementById("breakdown");
  if (!head) return null;
  const chart = head.nextElementSibling;
  let table = chart.nextElementSibling; // past the table's own title
  while (table && table.tagName !== "TABLE") table = table.nextElementSibling;
  return {
    chart: chart.tagName === "IMG" && chart.complete ? chart.naturalWidth : 0,
    shown: chart.getBoundingClientRect().height,
    rows: table.querySelectorAll("tbody tr").length,
    header: Array.from(table.querySelectorAll("th")).map((th) => th.textContent),
    reasons: Array.from(table.querySelectorAll("tbody tr td:last-child")).map((td) => td.textContent),
  };
}
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const out = document.createElement("pre");
  out.id = "llmbench-check";
  out.textContent = JSON.stringify({
    tables: document.querySelectorAll("table").length,
    rows: document.querySelectorAll("tbody tr").length,
    images: images.length,
    decoded: images.filter((i) => i.complete && i.naturalWidth > 100).length,
    widths: images.map((i) => i.naturalWidth),
    breakdown: breakdown(),
  });
  document.body.appendChild(out);
});
</script>
"""


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason="no Chromium installed (.ci/run installs it)")
@pytest.mark.parametrize("run", [SWEEP, PROFILED], ids=["sweep", "breakdown"])
def test_renders_in_headless_chromium(tmp_path, run):
    """The page as a browser sees it: tables laid out, every image decoded; a profiled run's
    stacked phase bars drawn, its phase table with one row per case and the reason a
    pipeline case has no phases."""
    text = _report([run])
    expected = _parse(text)
    page = tmp_path / "report.html"
    # the check script goes into a copy; the report itself has no scripts
    page.write_text(text.replace("</body>", CHECK + "</body>"))
    out = subprocess.run(
        [
            _browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="llmbench-check">(.*?)</pre>', out.stdout)
    assert found, out.stderr[-2000:]
    result = json.loads(unescape(found.group(1)))
    assert result["tables"] == expected.tags["table"]
    assert result["rows"] == expected.tags["tr"] - expected.tags["thead"]
    assert result["images"] == len(expected.images) and result["decoded"] == result["images"]
    phases = result["breakdown"]
    if run is SWEEP:
        assert phases is None
        return
    assert phases["chart"] > 100 and phases["shown"] > 100
    assert phases["rows"] == 7
    assert phases["header"][4:9] == ["data", "forward", "backward", "optimizer_step", "other"]
    assert phases["reasons"].count(PIPELINE_NO_TIMERS) == 1


def test_attributes_cannot_be_broken_out_of(tmp_path):
    run = copy_run(SWEEP, tmp_path)
    path = run / "results.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    lines[-1]["status"] = 'oom" onclick="alert(1)'
    lines[-1]["reason"] = '" onmouseover="alert(2)'
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    text = _report([run])
    assert 'onclick="' not in text and 'onmouseover="' not in text
    assert "oom&quot; onclick=&quot;alert(1)" in text
