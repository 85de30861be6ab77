"""Commands that define and measure: validate, run, profile, env, parity, prepare-data."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from llmbench.cli.base import cli, console, err_console, user_errors
from llmbench.define.cases import DEFAULT_MAX_CASES
from llmbench.errors import UserError

MAX_CASES = click.option(
    "--max-cases",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_CASES,
    show_default=True,
    help="Refuse a sweep with more combinations than this (a guard against a typo'd matrix).",
)


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@MAX_CASES
@user_errors
def validate(scenario: Path, overrides: tuple[str, ...], max_cases: int) -> None:
    """Check a scenario file (and KEY=VALUE overrides) without running anything."""
    from llmbench.define.loader import load_scenario

    loaded = load_scenario(scenario, overrides, max_cases)
    cases = loaded.expand()
    axes = (
        ", ".join(f"{a.key}×{len(a.values)}" for a in loaded.axes if len(a.values) > 1)
        or "no sweep"
    )
    console.print(
        f"{scenario}: ok — {len(cases)} cases ({axes}), {loaded.run.repeats} repeat(s)",
        highlight=False,
        markup=False,
    )


@cli.command()
@click.argument("scenario", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--dry-run", is_flag=True, help="List the cases and their ids; run nothing.")
@click.option(
    "--resume",
    "resume",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run only the cases missing from this run directory, with the settings it was started"
    " with (SCENARIO may be left out; if given, it must resolve to the same settings).",
)
@MAX_CASES
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
@click.option(
    "--allow-missing",
    is_flag=True,
    help="With --compare-to: accept baseline cases or metrics this run lacks (otherwise exit 2).",
)
@user_errors
def run(
    scenario: Path | None,
    overrides: tuple[str, ...],
    dry_run: bool,
    resume: Path | None,
    max_cases: int,
    output_dir: Path | None,
    compare_to: str | None,
    threshold_options: tuple[str, ...],
    thresholds_file: Path | None,
    allow_missing: bool,
) -> None:
    """Run every case of SCENARIO; KEY=VALUE overrides (lists sweep), e.g. model.size=[tiny,mini]."""
    from llmbench.define.loader import load_scenario

    if (
        resume is not None
        and scenario is not None
        and "=" in str(scenario)
        and not scenario.exists()
    ):
        overrides, scenario = (str(scenario), *overrides), None  # `--resume DIR key=value`
    if resume is not None:
        from llmbench.measure.sweep import resume_scenario

        loaded = resume_scenario(resume, scenario, overrides, max_cases)
    elif scenario is None:
        raise UserError("name a scenario file (or --resume RUN_DIR)", where="command line")
    else:
        loaded = load_scenario(scenario, overrides, max_cases)
    cases = loaded.expand()
    if dry_run:
        from llmbench.measure.sweep import dry_run_table

        console.print(dry_run_table(loaded, cases))
        return
    from llmbench.judge.regression import CompareOptions
    from llmbench.measure.sweep import run_sweep

    compare = (
        CompareOptions(compare_to, threshold_options, thresholds_file, allow_missing=allow_missing)
        if compare_to
        else None
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    code = run_sweep(
        loaded,
        cases,
        console,
        resume=resume,
        output_dir=output_dir,
        compare=compare,
        overrides=overrides,
    )
    sys.exit(code)


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@MAX_CASES
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Root for run directories (default: run.output_dir).",
)
@click.pass_context
def profile(
    ctx: click.Context,
    scenario: Path,
    overrides: tuple[str, ...],
    max_cases: int,
    output_dir: Path | None,
) -> None:
    """Run SCENARIO with run.profile=trace: a torch.profiler trace per rank of extra steps.

    Same as ``llmbench run SCENARIO run.profile=trace [overrides]``; an override
    ``run.profile=breakdown`` or ``=flops`` picks another mode.
    """
    ctx.invoke(
        run,
        scenario=scenario,
        overrides=("run.profile=trace", *overrides),
        max_cases=max_cases,
        output_dir=output_dir,
    )


@cli.command("env")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="As run.device: with cuda, exit 2 unless torch has CUDA and a GPU is visible.",
)
@user_errors
def env_command(device: str) -> None:
    """Show what llmbench will measure here: accelerators, NVML, samplers, libraries."""
    from rich.table import Table

    from llmbench.define.schema import RunSpec
    from llmbench.hardware import detect
    from llmbench.measure.environment import measurement_report, require_cuda

    accel = detect(device)
    if device == "cuda":
        require_cuda(accel, where="llmbench env --device cuda")

    table = Table(title="llmbench env", header_style="bold", show_header=False)
    table.add_column("section", style="bold")
    table.add_column("item")
    table.add_column("value", overflow="fold")
    section = None
    for name, item, value in measurement_report(accel, RunSpec().sample_interval_s):
        if section is not None and name != section:
            table.add_section()
        table.add_row(name if name != section else "", item, value)
        section = name
    console.print(table)


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
    from llmbench.define.models import parse_model_name, resolve_dims
    from llmbench.measure.data.corpus import prepare_corpus
    from llmbench.units import seconds

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
    from llmbench.define.loader import load_scenario
    from llmbench.measure.sweep import run_sweep

    loaded = load_scenario(scenario, overrides)
    loaded.check = "loss_parity"
    signal.signal(signal.SIGTERM, _raise_interrupt)
    sys.exit(run_sweep(loaded, loaded.expand(), console, output_dir=output_dir))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
