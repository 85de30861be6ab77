"""The regression check from references: what ``llmbench compare`` and ``run --compare-to`` do.

Resolves BASELINE / CURRENT (run directories, stored run ids, or ``latest``:
the newest good run of the same scenario and environment fingerprint),
compares them (compare.py), writes the outputs and, after a run, records the
verdict in the history so that a run with an unaccepted regression never
becomes the next baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from llmbench.errors import ExitCode, UserError
from llmbench.judge.compare import Comparison, compare_runs, no_baseline
from llmbench.judge.history import History, history_next_to, resolve_run
from llmbench.judge.noise import HISTORY_RUNS
from llmbench.judge.runs import Run, read_run
from llmbench.judge.store import RunDir
from llmbench.judge.thresholds import Thresholds

LATEST = "latest"
OUTPUT_DIR = "compare"
"""Folder inside the current run directory where ``run --compare-to`` writes its outputs."""


@dataclass(frozen=True)
class CompareOptions:
    """How to judge (the same options on ``compare`` and on ``run --compare-to``)."""

    baseline: str
    """``latest``, a run directory, its results.jsonl, or a stored run id."""
    threshold_options: tuple[str, ...] = ()
    thresholds_file: Path | None = None
    metrics: tuple[str, ...] = ()
    allow_env_mismatch: bool = False
    allow_missing: bool = False
    """Accept cases or metrics of the baseline that the current run lacks (otherwise exit 2)."""


def resolve_baseline(
    ref: str, current: Run, history: History | None, judged_only: bool = False
) -> Run | str:
    """The baseline run, or why there is none (only ``latest`` may have none);
    ``judged_only``: see :func:`~llmbench.judge.runs.read_run`."""
    if ref != LATEST:
        return resolve_run(ref, history, judged_only)
    if history is None:  # the history could not be written: a silent "no baseline" would hide it
        raise UserError("the history is unavailable, so there is no latest good run", key=LATEST)
    if not history.path.exists():
        return "no history yet to take the latest good run from"
    row = history.last_good(
        current.scenario_name,
        current.fingerprint,
        exclude=current.run_id,
        before=current.started_at,
    )
    if row is None:
        return (
            f"no earlier good run of scenario {current.scenario_name!r} with environment "
            f"fingerprint {current.fingerprint} in {history.path}"
        )
    return history.load(row.run_id, judged_only) or f"{row.run_id} vanished from {history.path}"


def noise_history(current: Run, baseline: Run, history: History | None) -> list[Run]:
    """The good runs before ``current`` of its scenario and fingerprint, oldest first: the
    metric histories whose spread is the noise band (compare.py), each loaded only for what
    a comparison reads (its digest). Empty without a history."""
    if history is None or not history.path.exists():
        return []
    rows = history.good_runs(
        current.scenario_name or baseline.scenario_name,
        current.fingerprint,
        exclude=current.run_id,
        before=current.started_at,
        limit=HISTORY_RUNS,
    )
    loaded = [
        baseline if row.run_id == baseline.run_id else history.load(row.run_id, judged_only=True)
        for row in rows
    ]
    return [run for run in reversed(loaded) if run is not None]


def judge(
    options: CompareOptions, current: Run, history: History | None, judged_only: bool = False
) -> tuple[Comparison, Run | None]:
    """The comparison, and the baseline it used (None: there was none; ``judged_only``:
    a baseline read from its digest, enough for the comparison but not for a report)."""
    baseline = resolve_baseline(options.baseline, current, history, judged_only)
    if isinstance(baseline, str):
        return no_baseline(current, baseline), None
    thresholds = Thresholds.build(
        current.scenario_name or baseline.scenario_name,
        options.thresholds_file,
        options.threshold_options,
        allow_missing=options.allow_missing,
    )
    comparison = compare_runs(
        baseline,
        current,
        thresholds,
        options.metrics,
        allow_env_mismatch=options.allow_env_mismatch,
        history=noise_history(current, baseline, history),
    )
    return comparison, baseline


def write_outputs(
    comparison: Comparison,
    markdown_path: Path | None = None,
    junit_path: Path | None = None,
    json_path: Path | None = None,
) -> None:
    from llmbench.judge.report import verdicts

    for path, render in (
        (markdown_path, verdicts.summary_markdown),
        (junit_path, verdicts.junit_xml),
        (json_path, verdicts.to_json),
    ):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            text = render(comparison)
            path.write_bytes(text if isinstance(text, bytes) else text.encode())


def index_finished_run(run_dir: RunDir, console: Console) -> History | None:
    """Index a run that just ended into the history beside its runs folder.

    A history that cannot be written (locked past the timeout, damaged) must
    not cost the run: its results are already safe in results.jsonl. Say so
    and go on.
    """
    history = History(history_next_to(run_dir.path.parent))
    try:
        added = history.index_run(read_run(run_dir.path))
    except UserError as exc:
        console.print(f"[yellow]warning:[/] run not indexed: {escape(str(exc))}", highlight=False)
        return None
    console.print(
        f"history: {added} result(s) indexed in {history.path}", highlight=False, markup=False
    )
    return history


def compare_finished_run(
    run_dir: RunDir,
    options: CompareOptions,
    history: History | None,
    console: Console,
    run_code: int,
) -> int:
    """The second half of ``run --compare-to``: compare, write outputs, record the verdict.

    The exit code is the worse of the run's and the comparison's (2 errored >
    1 regression > 0).
    """
    from llmbench.judge.report import html, verdicts
    from llmbench.judge.report.pivot import build_pivot
    from llmbench.judge.runs import runs_frame

    current = read_run(run_dir.path)
    try:
        comparison, baseline = judge(options, current, history)
    except UserError as exc:
        console.print(f"[bold red]error:[/] compare: {escape(str(exc))}", highlight=False)
        return max(run_code, ExitCode.INVALID)
    out = run_dir.path / OUTPUT_DIR
    out.mkdir(exist_ok=True)
    write_outputs(comparison, out / "summary.md", out / "junit.xml", out / "verdicts.json")
    shown = [current] if baseline is None else [baseline, current]
    frame = runs_frame(shown)
    if not frame.empty:  # a run that stored nothing has no report, only its verdict
        (out / "report.html").write_text(
            html.report(shown, frame, build_pivot(frame), verdicts.html_section(comparison))
        )
    console.print(verdicts.terminal(comparison))
    console.print(f"compare outputs: {out}", highlight=False, markup=False)
    if history is not None:
        try:
            history.record_verdict(
                current.run_id, comparison.baseline_id, comparison.exit_code, comparison.headline
            )
        except UserError as exc:
            console.print(
                f"[yellow]warning:[/] verdict not recorded: {escape(str(exc))}", highlight=False
            )
    return max(run_code, comparison.exit_code)
