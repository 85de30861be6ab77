"""``llmbench plan``: one request in, one rendered answer out.

The CLI parses options into a :class:`Request`; :func:`answer` picks the
question (rank configurations, minimum GPUs, largest model, validate a run),
calibrates from the history and renders in the asked format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Group, RenderableType
from rich.text import Text

from llmbench import units
from llmbench.errors import UserError, did_you_mean
from llmbench.plan import render
from llmbench.plan.assumptions import Assumptions
from llmbench.plan.calibrate import Calibration
from llmbench.plan.configs import CHECKPOINTING, PRECISIONS
from llmbench.plan.describe import describe_model
from llmbench.plan.history import load_measurements, read_sources
from llmbench.plan.memory import ACCOUNTINGS
from llmbench.plan.search import Query, describe_row, largest_model, min_gpus, plan, reasons
from llmbench.plan.target import gpu_target

FORMATS = ("table", "markdown", "json", "html")
DEFAULT_SOURCES = ("reports/runs", "reports/history.sqlite")


@dataclass
class Request:
    model: str | None = None
    model_config: str | None = None
    dims: dict[str, int] = field(default_factory=dict)
    gpu: str = "h100-80gb"
    gpus: int = 8
    gpus_per_node: int = 8
    seq_len: int | None = None
    global_batch: int | None = None
    grad_accum: int = 1
    micro_batches: Sequence[int] | None = None
    precisions: Sequence[str] | None = None
    checkpointing: Sequence[str] = ("none", "selective", "full")
    offload: bool = True
    cpu_checkpointing: bool = False
    dropout: float | str = "config"
    """``model.dropout``: ``config`` (the architecture's own) or a probability in [0, 1)"""
    accounting: str = "llmbench"
    tokens: float | None = None
    cost_per_gpu_hour: float | None = None
    history: Sequence[str] | None = None
    """None: ``reports/runs`` and ``reports/history.sqlite``, those that exist"""
    question: str = "rank"
    """rank | min-gpus | largest-model | validate"""
    validate_run: str | None = None
    format: str = "table"
    top: int | None = 20
    assumption_values: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Answer:
    rich: RenderableType | None = None
    text: str | None = None


def _history(request: Request) -> list[str]:
    if request.history is not None:
        missing = [h for h in request.history if not Path(h).exists()]
        if missing:
            raise UserError(
                "no such run directory or history file", where=missing[0], key="history"
            )
        return list(request.history)
    return [s for s in DEFAULT_SOURCES if Path(s).exists()]


def _check_choices(request: Request) -> None:
    for key, given, allowed in (
        ("precision", request.precisions or (), PRECISIONS),
        ("checkpointing", request.checkpointing, CHECKPOINTING),
    ):
        unknown = [v for v in given if v not in allowed]
        if unknown:
            raise UserError(
                f"unknown {key} {unknown[0]!r}{did_you_mean(unknown[0], allowed)}; "
                f"choose from {', '.join(allowed)}",
                key=key,
            )
    if request.dropout != "config" and not (
        isinstance(request.dropout, float) and 0 <= request.dropout < 1
    ):
        raise UserError(
            f"is 'config' or a probability in [0, 1), not {request.dropout!r}", key="dropout"
        )
    if any(mb < 1 for mb in request.micro_batches or ()):
        raise UserError("micro-batches must be positive", key="micro-batch")
    for key, value in (
        ("seq-len", request.seq_len),
        ("global-batch", request.global_batch),
        ("grad-accum", request.grad_accum),
        ("gpus-per-node", request.gpus_per_node),
    ):
        if value is not None and value < 1:
            raise UserError(f"must be a positive integer, not {value}", key=key)
    for key, value in (
        ("tokens", request.tokens),
        ("cost-per-gpu-hour", request.cost_per_gpu_hour),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"must be a positive number, not {value}", key=key)
    for name, value in request.assumption_values.items():
        key = {"compute_efficiency": "efficiency"}.get(name, name.replace("_", "-"))
        if value is None:
            continue
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"must be a positive number, not {value}", key=key)
        if name in ("compute_efficiency", "link_efficiency") and value > 1:
            raise UserError(f"is a fraction in (0, 1], not {value}", key=key)


def answer(request: Request) -> Answer:
    _check_choices(request)
    if request.format not in FORMATS:
        raise UserError(
            f"unknown format {request.format!r}; choose from {', '.join(FORMATS)}", key="format"
        )
    if request.accounting not in ACCOUNTINGS:
        raise UserError(
            f"unknown accounting {request.accounting!r}; choose from {', '.join(ACCOUNTINGS)}",
            key="accounting",
        )
    assumptions = Assumptions().with_values(**request.assumption_values)
    history = _history(request)
    if request.question == "validate":
        return _validate(request, history, assumptions)
    if request.gpus < 1:
        raise UserError("needs at least one GPU", key="gpus")
    model = describe_model(request.model, request.model_config, request.dims or None)
    target = gpu_target(request.gpu, assumptions, request.gpus_per_node)
    measured = load_measurements(history) if history else []  # no store code without runs
    calibration = Calibration.from_measurements(measured, assumptions)
    precisions = request.precisions or (
        ("bf16", "fp32") if target.peak("bf16") else ("fp16", "fp32")
    )
    unsupported = [p for p in precisions if target.peak(p) is None]
    if unsupported:
        raise UserError(f"{target.name} has no {', '.join(unsupported)} support", key="precision")
    query = Query(
        seq_len=request.seq_len or min(2048, model.dims.max_positions),
        precisions=tuple(precisions),
        checkpointing=tuple(request.checkpointing),
        **({"micro_batches": tuple(request.micro_batches)} if request.micro_batches else {}),
        global_batch=request.global_batch,
        grad_accum=request.grad_accum,
        offload=request.offload,
        cpu_checkpointing=request.cpu_checkpointing,
        dropout=request.dropout,
        accounting=request.accounting,
        tokens=request.tokens,
        cost_per_gpu_hour=request.cost_per_gpu_hour,
    )
    if request.question == "largest-model":
        rows = largest_model(model.family, target, request.gpus, query, assumptions, calibration)
        return _largest(request, rows, target.name)
    gpus = request.gpus
    extra: dict[str, Any] = {}
    if request.question == "min-gpus":
        found, result = min_gpus(model, target, query, assumptions, calibration)
        if result is None:
            msg = f"{model.name} does not fit on up to 4096 × {target.name} in any configuration"
            if request.format == "json":
                return Answer(text=json.dumps({"min_gpus": None, "reason": msg}))
            return Answer(rich=Text(msg)) if request.format == "table" else Answer(text=msg + "\n")
        gpus = found
        extra["min_gpus"] = found
    else:
        result = plan(model, target, gpus, query, assumptions, calibration)
    title = f"{model.name} on {gpus} × {target.name}" + (
        f" (fewest GPUs that fit: {gpus})" if "min_gpus" in extra else ""
    )
    lines = render.header_lines(result, gpus, assumptions, query)
    best = result.frame.iloc[0]
    if bool(best["fits"]):
        lines.insert(
            0,
            f"recommended: {describe_row(best)} - {units.rate(best['tokens_per_s'])} tokens/s "
            f"(held-out interval {units.rate(best['tokens_per_s_low'])} … "
            f"{units.rate(best['tokens_per_s_high'])})",
        )
        lines[1:1] = reasons(result.frame)
    fits = int(result.frame["fits"].astype(bool).sum())
    lines.insert(
        0,
        f"{fits} of {len(result.frame)} configurations fit; memory per GPU in GiB; ranked by predicted tokens/s",
    )
    if request.format == "json":
        return Answer(text=render.to_json(result, gpus, assumptions, query, request.top, extra))
    frame = render.configurations_frame(result, request.top)
    if request.format == "table":
        return Answer(rich=render.to_rich(title, frame, lines))
    if request.format == "markdown":
        return Answer(text=render.to_markdown(title, frame, lines))
    from llmbench.plan.validate import summary, validate  # reads stored runs: html only

    validations = [
        (run.run_id, frame, summary(frame))
        for run in read_sources(history)
        if any(r.status == "ok" for r in run.results)
        for frame in [validate(run, history, assumptions)]
    ]
    return Answer(text=render.to_html(result, gpus, assumptions, query, request.top, validations))


def _validate(request: Request, history: Sequence[str], assumptions: Assumptions) -> Answer:
    from llmbench.judge.history import DEFAULT_PATH, History, resolve_run
    from llmbench.plan.validate import summary, validate

    run = resolve_run(str(request.validate_run), History(DEFAULT_PATH))
    frame = validate(run, history, assumptions)
    summ = summary(frame)
    title = f"predicted vs measured: {request.validate_run}"
    table = render.validation_frame(frame)
    lines = render.validation_lines(frame, summ)
    if request.format == "table":
        return Answer(rich=render.to_rich(title, table, lines))
    if request.format == "markdown":
        return Answer(text=render.to_markdown(title, table, lines))
    if request.format == "json":
        rows = [{k: render.plain(v) for k, v in r.items()} for r in frame.to_dict("records")]
        return Answer(text=json.dumps({"summary": summ, "cases": rows}, indent=1, allow_nan=False))
    return Answer(text=render.html_page(title, [render.html_table(table), render.html_list(lines)]))


def _largest(request: Request, rows: list[dict[str, Any]], gpu_name: str) -> Answer:
    title = f"largest model that fits {request.gpus} × {gpu_name}"
    fitting = [r for r in rows if r["fits"]]
    verdict = f"largest that fits: {fitting[-1]['model']}" if fitting else "no preset fits"
    if request.format == "json":
        doc = {"largest": fitting[-1]["model"] if fitting else None, "models": rows}
        return Answer(text=json.dumps(doc, indent=1, default=str))
    frame = pd.DataFrame(
        [
            {
                "model": r["model"],
                "params": f"{r['total_params']:,}",
                "seq": str(r["seq_len"]),
                "fits": "yes" if r["fits"] else "no",
                "best configuration": r["best_configuration"] or "–",
                "tokens/s": units.rate(r["best_tokens_per_s"]),
                "smallest total/GPU": units.bytes_(r["smallest_total_bytes"]),
            }
            for r in rows
        ]
    )
    if request.format == "table":
        return Answer(rich=Group(render.to_rich(title, frame, [verdict])))
    return Answer(text=render.to_markdown(title, frame, [verdict]))
