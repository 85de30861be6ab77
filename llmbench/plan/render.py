"""The plan for people and programs: rich table, Markdown, JSON, and an HTML capacity report.

One display frame per question, rendered several ways (never one formatter
per output): ``configurations_frame`` and ``validation_frame`` build it, the
``to_*`` functions render it.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text

from llmbench import units
from llmbench.plan.assumptions import Assumptions
from llmbench.plan.predict import Prediction
from llmbench.plan.search import describe_row

GiB = 2**30
MEMORY_COLUMNS = (
    "params_bytes",
    "grads_bytes",
    "optimizer_bytes",
    "buffers_bytes",
    "activations_bytes",
    "logits_bytes",
    "overhead_bytes",
    "total_bytes",
)
CONFIG_COLUMNS = (
    "zero_stage",
    "precision",
    "offload_optimizer",
    "offload_param",
    "activation_checkpointing",
    "cpu_checkpointing",
    "tp",
    "pp",
    "dp",
    "gpus",
    "micro_batch",
    "grad_accum",
    "seq_len",
)
JSON_COLUMNS = (
    *CONFIG_COLUMNS,
    *MEMORY_COLUMNS,
    "model_states_bytes",
    "host_offload_bytes_per_gpu",
    "host_checkpoint_bytes_per_gpu",
    "host_offload_bytes_per_node",
    "fullest_stage",
    "capacity_bytes",
    "fits",
    "max_micro_batch",
    "step_s",
    "compute_s",
    "bubble_s",
    "dp_comm_s",
    "tp_comm_s",
    "pp_comm_s",
    "offload_s",
    "checkpoint_transfer_s",
    "optimizer_s",
    "tokens_per_s",
    "tokens_per_s_low",
    "tokens_per_s_high",
    "mfu",
    "efficiency",
    "train_tokens",
    "train_time_s",
    "gpu_hours",
    "cost",
)


def _gib(value: Any) -> str:
    return units.number(float(value) / GiB, 3) if value is not None and not _nan(value) else "–"


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _hours(value: Any) -> str:
    return units.rate(value) if float(value) >= 10 else units.number(value, 3)


def _days(seconds: Any) -> str:
    return "–" if _nan(float(seconds)) else units.number(float(seconds) / 86400, 3)


def configurations_frame(
    prediction: Prediction, top: int | None, fitting_only: bool = True
) -> pd.DataFrame:
    """The ranked configurations as text, one row each (memory in GiB per GPU)."""
    frame = prediction.frame
    if fitting_only and prediction.target.memory_bytes is not None:
        frame = frame[frame["fits"].astype(bool)]
    if top:
        frame = frame.head(top)
    rows = []
    for rank, (_, r) in enumerate(frame.iterrows(), start=1):
        offload = "+".join(
            name
            for name, col in (("opt", "offload_optimizer"), ("param", "offload_param"))
            if r[col] != "none"
        )
        rows.append(
            {
                "#": str(rank),
                "ZeRO": str(int(r["zero_stage"])),
                "offload": offload or "–",
                "prec": str(r["precision"]),
                "ckpt": str(r["activation_checkpointing"])
                + ("+cpu" if r["cpu_checkpointing"] else ""),
                "tp·pp·dp": f"{int(r['tp'])}·{int(r['pp'])}·{int(r['dp'])}",
                "mb×ga": f"{int(r['micro_batch'])}×{int(r['grad_accum'])}",
                "states": _gib(r["model_states_bytes"]),
                "params": _gib(r["params_bytes"]),
                "grads": _gib(r["grads_bytes"]),
                "optim": _gib(r["optimizer_bytes"]),
                "buffers": _gib(r["buffers_bytes"]),
                "activ": _gib(r["activations_bytes"]),
                "logits": _gib(r["logits_bytes"]),
                "overhead": _gib(r["overhead_bytes"]),
                "total": _gib(r["total_bytes"]),
                "max mb": "–"
                if _nan(float(r["max_micro_batch"]))
                else str(int(r["max_micro_batch"])),
                "tokens/s": units.rate(r["tokens_per_s"]),
                "MFU": units.percent(r["mfu"]),
                "days": _days(r["train_time_s"]),
                "GPU-h": _hours(r["gpu_hours"]),
                "cost": "–" if _nan(float(r["cost"])) else f"{float(r['cost']):,.0f}",
            }
        )
    return pd.DataFrame(rows)


def header_lines(
    prediction: Prediction, gpus: int, assumptions: Assumptions, query: Any
) -> list[str]:
    """What the table rests on: model, GPU, budget, and every figure's source."""
    m, t = prediction.model, prediction.target
    c = m.counts
    lines = [
        f"model: {m.name} ({m.source}) - {c.total:,} parameters: {c.embedding:,} embedding, "
        f"{c.per_layer:,} per layer × {c.num_layers}, largest module {m.largest_module_params:,}",
        f"GPU: {gpus} × {t.name}, {units.bytes_(t.memory_bytes)} usable each ({t.memory_source}); peak {units.number(t.peak('bf16') or float('nan'))} FLOP/s bf16 dense ({t.source})",
        f"sequence {query.seq_len}; accounting of model states: {prediction.accounting}",
        f"token budget: {units.number(float(prediction.frame['train_tokens'].iloc[0]))} tokens"
        + (
            ""
            if query.tokens
            else f" ({assumptions.tokens_per_param.value:g} per parameter: {assumptions.tokens_per_param.source})"
        ),
        f"fixed overhead {units.bytes_(prediction.fixed_overhead.value)}: {prediction.fixed_overhead.source}",
        f"allocator margin {units.percent(prediction.allocator_margin.value)}: {prediction.allocator_margin.source}",
    ]
    runs = prediction.calibration_runs
    lines.append(
        f"calibrated from measured runs on {t.device}: {', '.join(runs)}"
        if runs
        else f"no measured run on {t.device} in the history: every efficiency and overhead below is a stated default"
    )
    used = sorted(set(prediction.frame["rate_source"].head(50)))
    lines += [f"compute efficiency: {prediction.rate_sources[i]}" for i in used]
    lines += [
        f"links: {assumptions.link_efficiency.value:g} × per-direction NVLink/PCIe peer bandwidth ({assumptions.link_efficiency.source}); "
        f"between nodes {units.number(assumptions.inter_node_bytes_s.value)} B/s ({assumptions.inter_node_bytes_s.source})"
    ]
    host = assumptions.host_memory_bytes_per_node
    lines.append(
        f"offload may use {units.bytes_(host.value)} of host memory per node ({host.source})"
    )
    if query.cost_per_gpu_hour is None:
        lines.append("cost: not shown - give --cost-per-gpu-hour (llmbench never assumes a price)")
    lines += [f"note: {n}" for n in prediction.notes]
    return lines


DETAIL_COLUMNS = ("params", "grads", "optim", "logits")
"""Left out of the terminal table (their sum is ``states``); Markdown, HTML and JSON keep them."""


def to_rich(title: str, frame: pd.DataFrame, lines: Sequence[str] = ()) -> Group:
    frame = frame.drop(columns=[c for c in DETAIL_COLUMNS if c in frame.columns])
    table = Table(title=title, header_style="bold")
    for column in frame.columns:
        table.add_column(
            column,
            justify="left" if column in ("offload", "prec", "ckpt", "label", "device") else "right",
        )
    for _, row in frame.iterrows():
        table.add_row(*[str(v) for v in row])
    return Group(table, *[Text(line, style="dim") for line in lines])


def to_markdown(title: str, frame: pd.DataFrame, lines: Sequence[str] = ()) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    out = [f"## {title}", ""]
    if frame.empty:
        out.append("_nothing to show_")
    else:
        out.append("| " + " | ".join(cell(c) for c in frame.columns) + " |")
        out.append("|" + "|".join("---" for _ in frame.columns) + "|")
        out += [
            "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
        ]
    out.append("")
    out += [f"- {line}" for line in lines]
    return "\n".join(out) + "\n"


def plain(value: Any) -> Any:
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    return value


def _records(frame: pd.DataFrame, rate_sources: Sequence[str]) -> list[dict[str, Any]]:
    """Rows as plain dicts, column by column (thousands of rows: no per-cell conversion)."""
    columns = {}
    for k in JSON_COLUMNS:
        values = frame[k].to_numpy()
        if values.dtype.kind == "f":
            columns[k] = [None if math.isnan(v) else v for v in values.tolist()]
        else:
            columns[k] = values.tolist()
    columns["rate_source"] = [rate_sources[i] for i in frame["rate_source"].to_numpy().tolist()]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def to_json(
    prediction: Prediction,
    gpus: int,
    assumptions: Assumptions,
    query: Any,
    top: int | None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Stable keys: per configuration every memory term in bytes, ``fits``, ``tokens_per_s``."""
    frame = prediction.frame.head(top) if top else prediction.frame
    t = prediction.target
    doc = {
        "model": prediction.model.to_dict(),
        "gpu": {
            "key": t.device,
            "name": t.name,
            "memory_bytes": t.memory_bytes,
            "memory_source": t.memory_source,
            "peak_flops": t.peak_flops,
            "source": t.source,
        },
        "gpus": gpus,
        "seq_len": query.seq_len,
        "global_batch": query.global_batch,
        "accounting": prediction.accounting,
        "assumptions": assumptions.to_dict(),
        "calibration": {
            "fixed_overhead_bytes": {
                "value": prediction.fixed_overhead.value,
                "source": prediction.fixed_overhead.source,
            },
            "allocator_margin": {
                "value": prediction.allocator_margin.value,
                "source": prediction.allocator_margin.source,
            },
        },
        "notes": prediction.notes,
        "configurations": _records(frame, prediction.rate_sources),
    }
    if extra:
        doc.update(extra)
    # no indent: json's C encoder only runs on compact output (thousands of rows)
    return json.dumps(doc, default=str, allow_nan=False)


def validation_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Predicted vs measured, per case, with errors in %; compute and communication
    seconds per step when some case has a measured breakdown."""

    def err(v: Any) -> str:
        return "–" if v is None or _nan(v) else f"{float(v) * 100:+.1f} %"

    split = "measured_compute_s" in frame and frame["measured_compute_s"].notna().any()
    return pd.DataFrame(
        [
            {
                "label": r["label"],
                "device": r["device"],
                "states": units.bytes_(r["model_states_bytes"]),
                "buffers": units.bytes_(r["buffers_bytes"]),
                "activ": units.bytes_(r["activations_bytes"]),
                "overhead": units.bytes_(r["overhead_bytes"]),
                "pred peak": units.bytes_(r["predicted_peak_bytes"]),
                "meas peak": units.bytes_(r["measured_peak_bytes"]),
                "mem err": err(r["peak_error"]),
                "pred tok/s": units.rate(r["predicted_tokens_per_s"]),
                "meas tok/s": units.rate(r["measured_tokens_per_s"]),
                "tok/s err": err(r["tokens_per_s_error"]),
                **(
                    {
                        "pred compute": units.seconds(r["predicted_compute_s"]),
                        "meas compute": units.seconds(r["measured_compute_s"]),
                        "pred comm": units.seconds(r["predicted_comm_s"]),
                        "meas comm": units.seconds(r["measured_comm_s"]),
                    }
                    if split
                    else {}
                ),
            }
            for _, r in frame.iterrows()
        ]
    )


def validation_lines(frame: pd.DataFrame, summary: dict[str, Any]) -> list[str]:
    metric = ", ".join(sorted(set(frame["measured_peak_metric"])))
    lines = [
        f"measured peak: {metric}; each case predicted with a calibration that leaves it out",
        f"memory error: median {units.percent(summary['peak_error_median_abs'])}, worst {units.percent(summary['peak_error_max_abs'])} over {summary['cases']} case(s)",
        f"throughput error: median {units.percent(summary['tokens_per_s_error_median_abs'])}, worst {units.percent(summary['tokens_per_s_error_max_abs'])}",
    ]
    lines += _split_lines(frame, summary)
    lines += [f"overhead: {s}" for s in sorted(set(frame["overhead_source"]))]
    lines += [f"rate: {s}" for s in sorted(set(frame["rate_source"]))]
    return lines


def _split_lines(frame: pd.DataFrame, summary: dict[str, Any]) -> list[str]:
    """How compute and communication were measured, their errors, and cases without them."""
    if "measured_compute_s" not in frame or frame["measured_compute_s"].isna().all():
        notes = sorted({n for n in frame.get("breakdown_note", []) if n})
        return [f"compute vs communication: {n}" for n in notes]
    lines = [
        "compute: planner's compute term vs measured forward + backward (autograd) phases; "
        "communication: exposed dp/tp/pp terms vs the collectives' seconds (DeepSpeed comms "
        "logger), per step",
        f"compute error: median {units.percent(summary.get('compute_error_median_abs'))}, "
        f"worst {units.percent(summary.get('compute_error_max_abs'))}; communication error: "
        f"median {units.percent(summary.get('comm_error_median_abs'))}, "
        f"worst {units.percent(summary.get('comm_error_max_abs'))}",
    ]
    lines += [f"communication: {n}" for n in sorted(set(frame["predicted_comm_note"])) if n]
    missing = frame[frame["measured_compute_s"].isna()]
    lines += [f"{r['label']}: no breakdown: {r['breakdown_note']}" for _, r in missing.iterrows()]
    return lines


def html_table(frame: pd.DataFrame) -> str:
    return (
        frame.to_html(index=False, escape=True, border=0, classes="t")
        if not frame.empty
        else "<p><em>nothing to show</em></p>"
    )


def html_list(lines: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def to_html(
    prediction: Prediction,
    gpus: int,
    assumptions: Assumptions,
    query: Any,
    top: int | None,
    validations: Sequence[tuple[str, pd.DataFrame, dict[str, Any]]] = (),
) -> str:
    """A capacity report for whoever buys GPUs: recommendation, what fits, and what it rests on."""
    fitting = prediction.frame[prediction.frame["fits"].astype(bool)]
    m, t = prediction.model, prediction.target
    if fitting.empty:
        verdict = f"<p><strong>{html.escape(m.name)} does not fit on {gpus} × {html.escape(t.name)} in any configuration.</strong></p>"
    else:
        best = fitting.iloc[0]
        cost = "" if _nan(float(best["cost"])) else f", cost {float(best['cost']):,.0f}"
        verdict = (
            f"<p><strong>Recommended:</strong> {html.escape(describe_row(best))} - "
            f"{units.rate(best['tokens_per_s'])} tokens/s, MFU {units.percent(best['mfu'])}, "
            f"{units.bytes_(best['total_bytes'])} of {units.bytes_(t.memory_bytes)} per GPU; "
            f"{units.number(float(best['train_tokens']))} tokens in {_days(best['train_time_s'])} days, "
            f"{units.rate(best['gpu_hours'])} GPU-hours{cost}.</p>"
        )
    parts = [
        verdict,
        f"<p>{len(fitting)} of {len(prediction.frame)} configurations fit. Memory per GPU in GiB.</p>",
        html_table(configurations_frame(prediction, top)),
        "<h2>What the plan rests on</h2>",
        html_list(header_lines(prediction, gpus, assumptions, query)),
        "<h2>Assumptions (replaced by measurements where calibrated)</h2>",
        html_list(
            [f"{k}: {v['value']:g} - {v['source']}" for k, v in assumptions.to_dict().items()]
        ),
    ]
    for title, frame, summ in validations:
        parts += [
            f"<h2>Validation: {html.escape(title)}</h2>",
            html_table(validation_frame(frame)),
            html_list(validation_lines(frame, summ)),
        ]
    if not validations:
        parts.append("<p>No measured runs were found to validate against (see --history).</p>")
    return html_page(f"Capacity plan: {m.name} on {gpus} × {t.name}", parts)


def html_page(title: str, parts: Sequence[str]) -> str:
    """A standalone page: no scripts, no external files."""
    head = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>llmbench - {html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:110em}"
        "table.t{border-collapse:collapse;font-size:90%}"
        "table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
        "li{margin:2px 0}</style></head><body>"
    )
    return "\n".join([head, f"<h1>{html.escape(title)}</h1>", *parts, "</body></html>"])
