"""``llmbench plan``: capacity planning (the logic lives in llmbench.plan)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from llmbench.cli.base import cli, console, split_list, user_errors
from llmbench.errors import UserError


def _integers(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in split_list(text)]
    except ValueError:
        raise UserError(f"{text!r} is not a comma list of integers", key=option) from None


def _dropout(text: str) -> float | str:
    if text == "config":
        return text
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{text!r} is not 'config' or a probability", key="dropout") from None


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
    help="A transformers config.json, a folder holding one, or a Hub id in the local "
    "Hugging Face cache (never downloaded), instead of --model.",
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
@click.option(
    "--cpu-checkpointing",
    is_flag=True,
    help="Also plan full recomputation with its checkpoints in host memory "
    "(DeepSpeed activation_checkpointing.cpu_checkpointing).",
)
@click.option(
    "--dropout",
    default="config",
    show_default=True,
    help="Dropout probability (model.dropout): 'config' keeps the architecture's own.",
)
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
    model_config: str | None,
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
    cpu_checkpointing: bool,
    dropout: str,
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
        model_config=model_config or None,
        dims=_key_values(dims, "dim"),
        gpu=gpu,
        gpus=gpus,
        gpus_per_node=gpus_per_node,
        seq_len=seq_len,
        global_batch=global_batch,
        grad_accum=grad_accum,
        micro_batches=_integers(micro_batches, "micro-batch") or None,
        precisions=split_list(precisions) or None,
        checkpointing=split_list(checkpointing),
        offload=not no_offload,
        cpu_checkpointing=cpu_checkpointing,
        dropout=_dropout(dropout),
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
