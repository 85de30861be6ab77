"""Loss parity: every configuration must train the same model to the same losses.

A broken optimisation can keep its speed and change the numbers; nightly speed
checks would never see it. With ``check: loss_parity`` each case's loss
trajectory is compared step by step with a *reference* case that trains the
same global batches the plainest way: ZeRO 0, fp32, one rank, no offload, no
recompute, with the micro-batch scaled by the data-parallel degree (synthetic
data slices one global batch across ranks, so the reference sees exactly what
the ranks see together). References run first and are added when the scenario
lacks them; each case's deviation is stored with its result, so ``compare`` and
``history`` track it like any metric.

Dropout draws different masks on every layout, so a parity check trains every
case with ``model.dropout: 0``, recorded in its params and its label
(``dropout=0``); its ids are those of dropout-0 cases, not of the user's config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from llmbench.define.cases import Case, case_id
from llmbench.define.schema import CaseSpec
from llmbench.errors import UserError
from llmbench.judge.result import CaseResult

# Step-wise tolerance |Δloss| ≤ atol + rtol·|reference loss| (numpy.isclose's rule).
# fp32 layouts differ only in summation order. Measured on scenarios/parity.yaml
# (8 steps, CPU): ZeRO 0-3, CPU offload and TP stay within 1.5e-6 of the
# reference, PP within 2.3e-4 (micro-batches summed in another order), so 2e-3
# is tight yet never noise. bf16 rounds every matmul to 8 mantissa bits (1.1e-3
# there; more on longer runs and other kernels); fp16 has 11 bits.
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (2e-3, 0.0),
    "bf16": (5e-2, 1e-2),
    "fp16": (3e-2, 5e-3),
}

_REFERENCE_DEEPSPEED = {"zero_stage": 0, "precision": "fp32"}
_REFERENCE_LABEL = (
    "training.micro_batch",
    "deepspeed.zero_stage",
    "deepspeed.precision",
    "parallel.world_size",
)


def reference_spec(spec: CaseSpec) -> CaseSpec:
    """The plainest case that trains the same global batches as ``spec``."""
    data = spec.model_dump(mode="json")
    data["deepspeed"] = dict(_REFERENCE_DEEPSPEED)
    data["parallel"] = {}
    data["training"]["micro_batch"] = spec.training.micro_batch * spec.parallel.dp
    return CaseSpec.model_validate(data)


@dataclass(frozen=True)
class Deviation:
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    ok: bool


def deviation(losses: list[float], reference: list[float], precision: str) -> Deviation:
    atol, rtol = TOLERANCES[precision]
    a, ref = np.asarray(losses, dtype=float), np.asarray(reference, dtype=float)
    diff = np.abs(a - ref)
    ok = bool(
        len(a) == len(ref) and np.all(np.isfinite(a)) and np.all(diff <= atol + rtol * np.abs(ref))
    )
    return Deviation(float(diff.max()), float((diff / np.abs(ref)).max()), atol, rtol, ok)


def without_dropout(case: Case) -> Case:
    """``case`` with every dropout off, its label saying ``dropout=0``."""
    if case.spec.is_comm or case.spec.model.dropout == 0:
        return case
    params = {**case.params, "model.dropout": 0.0}
    words = [w for w in case.label.split() if not w.startswith("dropout=")]
    return Case(
        id=case_id(params),
        label=" ".join([*words, "dropout=0"]),
        spec=CaseSpec.from_params(params),
        params=params,
    )


class ParityCheck:
    """Adds the reference cases to a sweep and scores every case against its reference."""

    def __init__(self, cases: list[Case], where: str):
        self.reference_of: dict[str, str] = {}
        references: dict[str, Case] = {}
        unique: dict[str, Case] = {}
        for case in map(without_dropout, cases):
            unique.setdefault(case.id, case)
        cases = list(unique.values())
        for case in cases:
            if case.spec.is_comm:
                continue
            tr = case.spec.training
            if tr.micro_batch == "auto":
                raise UserError(
                    "loss parity needs a fixed micro_batch, not auto",
                    where=where,
                    key="training.micro_batch",
                )
            if tr.data == "text" and case.spec.parallel.dp > 1:
                raise UserError(
                    "loss parity across data-parallel ranks needs synthetic data (text is sharded by rank)",
                    where=where,
                    key="training.data",
                )
            ref = Case.from_spec(reference_spec(case.spec), swept=_REFERENCE_LABEL)
            references.setdefault(ref.id, ref)
            self.reference_of[case.id] = ref.id
        given = {c.id for c in cases}
        self.cases = [r for r in references.values() if r.id not in given] + cases
        self.cases.sort(key=lambda c: c.id not in references)  # references first, order kept
        self.losses: dict[str, list[float]] = {}

    def remember(self, results: list[CaseResult]) -> None:
        """Reference losses from earlier results (a resumed run)."""
        for r in results:
            if r.status == "ok" and r.repeat == 0:
                self.losses.setdefault(r.case_id, r.losses)

    def annotate(self, case: Case, result: CaseResult) -> None:
        """Store this case's deviation from its reference in its metrics, before it is saved."""
        if result.status == "ok" and result.repeat == 0:
            self.losses.setdefault(case.id, result.losses)
        ref_id = self.reference_of.get(case.id)
        if ref_id is None:
            return
        result.set_metric("loss_parity_reference", ref_id)
        reference = self.losses.get(ref_id)
        names = ("loss_parity_max_abs_dev", "loss_parity_max_rel_dev", "loss_parity_ok")
        why = (
            f"case {result.status}"
            if result.status != "ok"
            else f"reference case {ref_id} has no losses"
        )
        if result.status != "ok" or reference is None:
            for name in names:
                result.set_metric(name, None, why)
            return
        dev = deviation(result.losses, reference, case.spec.deepspeed.precision)
        result.set_metric("loss_parity_max_abs_dev", dev.max_abs)
        result.set_metric("loss_parity_max_rel_dev", dev.max_rel)
        result.set_metric("loss_parity_ok", dev.ok)


def parity_table(results: list[CaseResult]) -> tuple[Table, bool]:
    """Every scored case with its deviation and verdict; False when any case diverged."""
    table = Table(
        title="loss parity (vs ZeRO 0 · fp32 · 1 rank on the same global batches; dropout forced to 0)",
        header_style="bold",
    )
    for column in ("case", "precision", "max |Δloss|", "max rel", "tolerance", "verdict"):
        table.add_column(column, justify="right" if column.startswith("max") else "left")
    passed = True
    for r in results:
        if "loss_parity_ok" not in r.metrics or r.case_id == r.metrics.get("loss_parity_reference"):
            continue
        m = r.metrics
        precision = str(r.params.get("deepspeed.precision"))
        atol, rtol = TOLERANCES[precision]
        if m["loss_parity_ok"] is None:
            why = escape(str(r.null_reasons.get("loss_parity_ok")))
            verdict, passed = f"[red]not scored[/] ({why})", False
        elif m["loss_parity_ok"]:
            verdict = "[green]ok[/]"
        else:
            verdict, passed = "[red]DIVERGED[/]", False
        dev_abs = (
            "–" if m["loss_parity_max_abs_dev"] is None else f"{m['loss_parity_max_abs_dev']:.2e}"
        )
        dev_rel = (
            "–" if m["loss_parity_max_rel_dev"] is None else f"{m['loss_parity_max_rel_dev']:.2e}"
        )
        table.add_row(
            Text(r.label), precision, dev_abs, dev_rel, f"{atol:g} + {rtol:g}·|ref|", verdict
        )
    return table, passed
