"""The command line. Thin: parse, delegate, print, choose the exit code.

Exit codes: 0 success; 1 a regression (compare) or a failed check; 2 invalid
input or a case that errored; 130 interrupted.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from llmbench import __version__
from llmbench.errors import EXIT_USAGE, UserError

# Piped output (CI logs, files) gets a wide console instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

EXIT_INTERRUPTED = 130


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a UserError into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err_console.print(
                f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True
            )
            sys.exit(EXIT_USAGE)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llmbench")
def cli() -> None:
    """Benchmark, profile and plan DeepSpeed training of large language models."""


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@user_errors
def validate(scenario: Path, overrides: tuple[str, ...]) -> None:
    """Check a scenario file (and KEY=VALUE overrides) without running anything."""
    from llmbench.scenario import load_scenario

    loaded = load_scenario(scenario, overrides)
    cases = loaded.expand()
    axes = (
        ", ".join(f"{a.key}×{len(a.values)}" for a in loaded.axes if len(a.values) > 1)
        or "no sweep"
    )
    console.print(
        f"{scenario}: ok — {len(cases)} cases ({axes}), {loaded.run.repeats} repeat(s)",
        highlight=False,
    )


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--dry-run", is_flag=True, help="List the cases and their ids; run nothing.")
@click.option(
    "--resume",
    "resume",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run only the cases missing from this run directory.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Root for run directories (default: run.output_dir).",
)
@click.option(
    "--compare-to",
    metavar="latest|RUN_ID|DIR",
    help="Then compare with this baseline ('latest': newest good run, same scenario and"
    " environment); outputs in RUN_DIR/compare/, exit 1 on a regression.",
)
@click.option(
    "--threshold",
    "threshold_options",
    multiple=True,
    metavar="METRIC:SPEC",
    help="With --compare-to: override a threshold, e.g. tokens_per_s:-3%.",
)
@click.option(
    "--thresholds",
    "thresholds_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --compare-to: YAML thresholds per scenario name.",
)
@user_errors
def run(
    scenario: Path,
    overrides: tuple[str, ...],
    dry_run: bool,
    resume: Path | None,
    output_dir: Path | None,
    compare_to: str | None,
    threshold_options: tuple[str, ...],
    thresholds_file: Path | None,
) -> None:
    """Run every case of SCENARIO; KEY=VALUE overrides (lists sweep), e.g. model.size=[tiny,mini]."""
    from llmbench.scenario import load_scenario

    loaded = load_scenario(scenario, overrides)
    cases = loaded.expand()
    if dry_run:
        from llmbench.sweep import dry_run_table

        console.print(dry_run_table(loaded, cases))
        return
    from llmbench.regression import CompareOptions
    from llmbench.sweep import run_sweep

    compare = CompareOptions(compare_to, threshold_options, thresholds_file) if compare_to else None
    signal.signal(signal.SIGTERM, _raise_interrupt)
    code = run_sweep(loaded, cases, console, resume=resume, output_dir=output_dir, compare=compare)
    sys.exit(code)


@cli.command("env")
@user_errors
def env_command() -> None:
    """Show what llmbench will measure here: accelerators, NVML, samplers, libraries."""
    from rich.table import Table

    from llmbench.environment import measurement_report
    from llmbench.hardware import detect
    from llmbench.scenario import RunSpec

    table = Table(title="llmbench env", header_style="bold", show_header=False)
    table.add_column("section", style="bold")
    table.add_column("item")
    table.add_column("value", overflow="fold")
    section = None
    for name, item, value in measurement_report(detect(), RunSpec().sample_interval_s):
        if section is not None and name != section:
            table.add_section()
        table.add_row(name if name != section else "", item, value)
        section = name
    console.print(table)


def _history_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--history",
        "history_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="History database (default: reports/history.sqlite).",
    )(fn)


def _corrupt_lines_reported(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show each skipped corrupt results line as one 'warning:' line on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import warnings

        from llmbench.store import CorruptLineWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CorruptLineWarning)
            try:
                return fn(*args, **kwargs)
            finally:
                for w in caught:
                    if issubclass(w.category, CorruptLineWarning):
                        err_console.print(
                            f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True
                        )

    return wrapper


def _history(path: Path | None) -> Any:
    from llmbench.history import DEFAULT_PATH, History

    return History(path or DEFAULT_PATH)


def _split(keys: str) -> list[str]:
    return [k.strip() for k in keys.split(",") if k.strip()]


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["terminal", "markdown", "html", "csv", "json"]),
    default="terminal",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report to this file instead of stdout.",
)
@click.option("--rows", default="", help="Pivot rows, comma-separated settings (e.g. model.size).")
@click.option("--cols", default="", help="Pivot columns (e.g. deepspeed.zero_stage).")
@click.option(
    "--reference", help="Case id or label speed-ups are relative to (default: first ok case)."
)
@_history_option
@user_errors
@_corrupt_lines_reported
def report(
    runs: tuple[str, ...],
    fmt: str,
    output: Path | None,
    rows: str,
    cols: str,
    reference: str | None,
    history_path: Path | None,
) -> None:
    """Render RUNS (run directories or stored run ids): pivot, Markdown, HTML, CSV or JSON."""
    from llmbench.history import resolve_run
    from llmbench.report.render import render

    history = _history(history_path)
    loaded = [resolve_run(ref, history) for ref in runs]
    rendered = render(loaded, fmt, _split(rows), _split(cols), reference)
    if isinstance(rendered, str):
        if output is not None:
            output.write_text(rendered)
            console.print(f"report: {output}", highlight=False)
        else:
            click.echo(rendered, nl=False)
    elif output is not None:
        with output.open("w") as fh:
            Console(file=fh, width=160).print(rendered)
    else:
        console.print(rendered)


@cli.command()
@click.argument("baseline")
@click.argument("current")
@click.option(
    "--threshold",
    "threshold_options",
    multiple=True,
    metavar="METRIC:SPEC",
    help="Override a threshold, e.g. tokens_per_s:-3%, peak_memory_bytes:+1%,+128MiB, mfu:off.",
)
@click.option(
    "--thresholds",
    "thresholds_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML thresholds per scenario name ('*': every scenario).",
)
@click.option("--metric", "metrics", multiple=True, help="Judge these metrics, not the defaults.")
@click.option("--alpha", type=float, help="Significance level of the Mann-Whitney U test [0.01].")
@click.option(
    "--allow-env-mismatch", is_flag=True, help="Compare runs from different environments."
)
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@_history_option
@user_errors
@_corrupt_lines_reported
def compare(
    baseline: str,
    current: str,
    threshold_options: tuple[str, ...],
    thresholds_file: Path | None,
    metrics: tuple[str, ...],
    alpha: float | None,
    allow_env_mismatch: bool,
    markdown_path: Path | None,
    junit_path: Path | None,
    json_path: Path | None,
    history_path: Path | None,
) -> None:
    """Judge CURRENT against BASELINE (run dirs or stored ids; BASELINE may be 'latest').

    Exit 0: no regression; 1: a regression; 2: a case errored or invalid input.
    """
    from llmbench.history import resolve_run
    from llmbench.regression import CompareOptions, judge, write_outputs
    from llmbench.report.verdicts import terminal

    history = _history(history_path)
    options = CompareOptions(
        baseline, threshold_options, thresholds_file, metrics, alpha, allow_env_mismatch
    )
    comparison, _ = judge(options, resolve_run(current, history), history)
    write_outputs(comparison, markdown_path, junit_path, json_path)
    console.print(terminal(comparison))
    sys.exit(comparison.exit_code)


@cli.command("history")
@click.option(
    "--index",
    "index_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Index this run directory, or every run in this folder, first (repeatable).",
)
@click.option("--scenario", help="Only runs of this scenario.")
@click.option("--case", help="Only this case (id or label).")
@click.option("--metric", help="Metric to trace [tokens_per_s, else step_time_s_median].")
@click.option("--fingerprint", help="Only runs from this environment fingerprint.")
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Runs per case to show (change points are found within them).",
)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG here.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["terminal", "csv", "json"]),
    default="terminal",
    help="Trend as a table, or as CSV / JSON rows on stdout.",
)
@click.option("--runs", "list_runs", is_flag=True, help="List indexed runs and their verdicts.")
@click.option("--mark-good", metavar="RUN_ID", help="Accept a run as a baseline (re-baseline).")
@click.option("--mark-bad", metavar="RUN_ID", help="Never use this run as a baseline.")
@click.option("--note", default="", help="Why, stored with --mark-good/--mark-bad.")
@_history_option
@user_errors
@_corrupt_lines_reported
def history_command(
    index_paths: tuple[Path, ...],
    scenario: str | None,
    case: str | None,
    metric: str | None,
    fingerprint: str | None,
    last: int,
    plot: Path | None,
    fmt: str,
    list_runs: bool,
    mark_good: str | None,
    mark_bad: str | None,
    note: str,
    history_path: Path | None,
) -> None:
    """Trends of a metric per case over indexed runs, with change points; index and mark runs."""
    from llmbench.history import default_metric, trend
    from llmbench.report.console import runs_table, trend_table

    history = _history(history_path)
    for run_id, added in history.index_paths(index_paths):
        console.print(f"indexed {run_id}: {added} new result(s)", highlight=False)
    for run_id, mark in ((mark_good, "good"), (mark_bad, "bad")):
        if run_id:
            history.mark(run_id, mark, note)
            console.print(f"{run_id} marked {mark}", highlight=False)
    acted = bool(index_paths or mark_good or mark_bad)
    if list_runs:
        console.print(runs_table(history.runs(scenario, fingerprint)))
        return
    if acted and not (scenario or case or metric or plot):
        return
    found = trend(history, metric or default_metric(history), scenario, case, fingerprint, last)
    if fmt == "csv":
        click.echo(found.frame.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(found.frame.to_json(orient="records", date_format="iso", indent=1))
    else:
        console.print(trend_table(found))
    if plot is not None:
        from llmbench.report.plots import history_chart

        plot.write_bytes(history_chart(found.frame, found.metric, found.change_points))
        console.print(f"plot: {plot}", highlight=False)


@cli.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Root for run directories (default: reports/runs).",
)
@click.option(
    "--history",
    "history_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="History database (default: history.sqlite beside the output dir).",
)
@user_errors
def ingest(files: tuple[Path, ...], output_dir: Path | None, history_path: Path | None) -> None:
    """Store pytest-benchmark JSON files (--benchmark-json) as runs, indexed for compare/history."""
    from llmbench.history import History, history_next_to
    from llmbench.ingest import ingest as ingest_file
    from llmbench.scenario import RunSpec

    root = output_dir or Path(RunSpec().output_dir)
    history = History(history_path or history_next_to(root))
    for path in files:
        run, created = ingest_file(path, root)
        added = history.index_run(run, source="pytest-benchmark")
        state = "new run" if created else "already ingested"
        console.print(
            f"{path} → {run.path} ({len(run.results)} benchmarks, {state}; {added} newly indexed)",
            highlight=False,
        )


@cli.command("prepare-data")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_name",
    default="gpt2-tiny",
    show_default=True,
    help="Family-size whose vocabulary the tokenizer is trained for (gpt2-125m, bert-tiny, ...).",
)
@click.option(
    "--vocab-size", type=click.IntRange(min=1), help="Override the model's vocabulary size."
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the tokenizer and token array here (default: next to the corpus).",
)
@user_errors
def prepare_data(
    corpus: Path, model_name: str, vocab_size: int | None, cache_dir: Path | None
) -> None:
    """Tokenise CORPUS (text8, .zip, .tsv or a folder of .txt) as a `data: text` sweep does; cached."""
    from llmbench.data.corpus import prepare_corpus
    from llmbench.models import parse_model_name, resolve_dims
    from llmbench.report.fmt import seconds

    try:
        family, size = parse_model_name(model_name)
    except KeyError:
        raise UserError(
            f"unknown model {model_name!r} (e.g. gpt2-tiny, llama-7b)", key="--model"
        ) from None
    vocab = vocab_size or resolve_dims(family, size).vocab_size
    prepared = prepare_corpus(
        corpus, family, vocab, cache_dir, log=lambda line: err_console.print(line, highlight=False)
    )
    how = "found in the cache" if prepared.reused else f"prepared in {seconds(prepared.prepare_s)}"
    console.print(
        f"{corpus}: {prepared.num_tokens:,} tokens ({prepared.dtype}), "
        f"{prepared.tokenizer_kind} tokenizer with {prepared.tokenizer_vocab_size:,} of {vocab:,} ids, "
        f"{how} → {prepared.directory}",
        highlight=False,
        soft_wrap=True,
    )


def _integers(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in _split(text)]
    except ValueError:
        raise UserError(f"{text!r} is not a comma list of integers", key=option) from None


def _key_values(pairs: tuple[str, ...], option: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value.strip().isdigit():
            raise UserError(f"{pair!r} is not of the form name=integer", key=option)
        out[key.strip()] = int(value)
    return out


@cli.command("plan")
@click.option("--model", help="Preset such as llama-7b or gpt2-1.5b.")
@click.option(
    "--model-config",
    type=click.Path(exists=True, path_type=Path),
    help="A transformers config.json, or a folder holding one, instead of --model.",
)
@click.option("--dim", "dims", multiple=True, metavar="NAME=N", help="Override a dimension.")
@click.option("--gpu", default="h100-80gb", show_default=True, help="GPU type (see hardware.py).")
@click.option("--gpus", default=8, show_default=True, type=int, help="Number of GPUs.")
@click.option("--gpus-per-node", default=8, show_default=True, type=int)
@click.option("--seq-len", type=int, help="Sequence length (default: 2048 or the model's maximum).")
@click.option("--global-batch", type=int, help="Samples per optimizer step (fixes grad accum).")
@click.option("--grad-accum", default=1, show_default=True, type=int)
@click.option("--micro-batch", "micro_batches", default="", help="Comma list (default 1..128).")
@click.option("--precision", "precisions", default="", help="Comma list, e.g. bf16,fp32.")
@click.option(
    "--checkpointing", default="none,selective,full", show_default=True, help="Comma list."
)
@click.option("--no-offload", is_flag=True, help="Leave ZeRO-Offload configurations out.")
@click.option("--host-memory-gb", type=float, help="Host memory per node for offload (GB).")
@click.option(
    "--accounting",
    type=click.Choice(["llmbench", "deepspeed", "paper"]),
    default="llmbench",
    show_default=True,
    help="Model states as DeepSpeed allocates them, as its estimators say, or as the ZeRO paper.",
)
@click.option("--tokens", type=float, help="Training tokens (default: 20 per parameter).")
@click.option("--cost-per-gpu-hour", type=float, help="Price, to show the cost of the budget.")
@click.option(
    "--history",
    multiple=True,
    help="Run dirs, folders of them or history.sqlite to calibrate from "
    "(default: reports/runs and reports/history.sqlite).",
)
@click.option("--no-calibration", is_flag=True, help="Use the stated defaults only.")
@click.option("--efficiency", type=float, help="Assume this compute efficiency (0-1).")
@click.option("--link-efficiency", type=float, help="Achieved fraction of link bandwidth.")
@click.option("--min-gpus", is_flag=True, help="Find the fewest GPUs on which the model fits.")
@click.option("--largest-model", is_flag=True, help="Largest preset of the family that fits.")
@click.option("--validate", "validate_run", help="Predict every case of this run and compare.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "json", "html"]),
    default="table",
    show_default=True,
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--top", default=20, show_default=True, type=int, help="Rows shown (0: all).")
@user_errors
def plan_command(
    model: str | None,
    model_config: Path | None,
    dims: tuple[str, ...],
    gpu: str,
    gpus: int,
    gpus_per_node: int,
    seq_len: int | None,
    global_batch: int | None,
    grad_accum: int,
    micro_batches: str,
    precisions: str,
    checkpointing: str,
    no_offload: bool,
    host_memory_gb: float | None,
    accounting: str,
    tokens: float | None,
    cost_per_gpu_hour: float | None,
    history: tuple[str, ...],
    no_calibration: bool,
    efficiency: float | None,
    link_efficiency: float | None,
    min_gpus: bool,
    largest_model: bool,
    validate_run: str | None,
    fmt: str,
    output: Path | None,
    top: int,
) -> None:
    """What fits, on how many GPUs, how fast: analytical memory and throughput, calibrated by runs."""
    from llmbench.plan.app import Request, answer

    if not validate_run and not model and not model_config:
        raise UserError("give --model, --model-config or --validate RUN", key="plan")
    request = Request(
        model=model,
        model_config=str(model_config) if model_config else None,
        dims=_key_values(dims, "dim"),
        gpu=gpu,
        gpus=gpus,
        gpus_per_node=gpus_per_node,
        seq_len=seq_len,
        global_batch=global_batch,
        grad_accum=grad_accum,
        micro_batches=_integers(micro_batches, "micro-batch") or None,
        precisions=_split(precisions) or None,
        checkpointing=_split(checkpointing),
        offload=not no_offload,
        accounting=accounting,
        tokens=tokens,
        cost_per_gpu_hour=cost_per_gpu_hour,
        history=[] if no_calibration else (list(history) or None),
        question="validate"
        if validate_run
        else "min-gpus"
        if min_gpus
        else "largest-model"
        if largest_model
        else "rank",
        validate_run=validate_run,
        format=fmt,
        top=top or None,
        assumption_values={
            "compute_efficiency": efficiency,
            "link_efficiency": link_efficiency,
            "host_memory_bytes_per_node": host_memory_gb * 1e9 if host_memory_gb else None,
        },
    )
    result = answer(request)
    if result.text is not None:
        if output is not None:
            output.write_text(result.text)
            console.print(f"plan: {output}", highlight=False)
        else:
            click.echo(result.text, nl=False)
    elif output is not None:
        with output.open("w") as fh:
            Console(file=fh, width=200).print(result.rich)
    else:
        # the ranked table is wide: do not squeeze it into 80 columns when piped
        (console if console.is_terminal else Console(width=200)).print(result.rich)


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Root for run directories.",
)
@user_errors
def parity(scenario: Path, overrides: tuple[str, ...], output_dir: Path | None) -> None:
    """Run SCENARIO as a loss-parity check (as if it said check: loss_parity); exit 1 on divergence."""
    from llmbench.scenario import load_scenario
    from llmbench.sweep import run_sweep

    loaded = load_scenario(scenario, overrides)
    loaded.check = "loss_parity"
    signal.signal(signal.SIGTERM, _raise_interrupt)
    sys.exit(run_sweep(loaded, loaded.expand(), console, output_dir=output_dir))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    cli(prog_name="llmbench")
