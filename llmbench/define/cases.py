"""Sweep expansion: a scenario's axes and rules become cases with stable ids and labels.

Expansion is pure and deterministic (a dry run lists cases without importing
torch), and a case id is a hash of its settings, so the same case keeps its id
across runs, machines and llmbench versions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmbench.define.schema import (
    CASE_DEFAULTS,
    ID_NEUTRAL,
    CaseSpec,
    RunSpec,
    case_problems,
    flatten,
    nest,
)
from llmbench.errors import UserError
from llmbench.units import size_label

DEFAULT_MAX_CASES = 10_000
"""Largest sweep expanded without ``--max-cases``: a typo such as ten 10-value axes would
otherwise enumerate 10**10 cases before anything runs."""


@dataclass(frozen=True)
class Case:
    """One point of the sweep: a validated spec, its stable id and a readable label."""

    id: str
    label: str
    spec: CaseSpec
    params: dict[str, Any]
    """Flat dotted keys of the resolved spec (every field, defaults included)."""

    @classmethod
    def from_spec(cls, spec: CaseSpec, swept: Sequence[str] = ()) -> Case:
        params = flatten(spec.model_dump(mode="json"))
        label = case_label(params, swept, None if spec.is_comm else spec.model_name)
        return cls(id=case_id(params), label=label, spec=spec, params=params)


def case_id(params: dict[str, Any]) -> str:
    """Hash of the settings that differ from the defaults.

    Leaving defaults out keeps ids stable when a later llmbench version adds a
    field, so nightly history keeps matching cases across upgrades. A field whose
    default changed what is trained is left out at its old value instead
    (``ID_NEUTRAL``), so only cases that train a different model get new ids.
    """
    significant = {k: v for k, v in params.items() if ID_NEUTRAL.get(k, object()) != v}
    blob = json.dumps(significant, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


_LABEL_FORMATS = {
    "deepspeed.zero_stage": "z{}",
    "parallel.world_size": "ws{}",
    "parallel.tp": "tp{}",
    "parallel.pp": "pp{}",
    "parallel.nodes": "n{}",
    "training.micro_batch": "mb{}",
    "training.seq_len": "seq{}",
    "training.grad_accum": "ga{}",
    "deepspeed.precision": "{}",
    "deepspeed.offload_optimizer": "opt-off:{}",
    "deepspeed.offload_param": "param-off:{}",
    "deepspeed.activation_checkpointing": "ckpt:{}",
    "comm.size_bytes": "{}",
    "comm.dtype": "{}",
    "model.dropout": "dropout={}",
}


_IN_NAME = ("model.config", "model.num_layers", "model.hidden_size")
"""Swept keys the model's name already shows (``gpt2-4x256``)."""


def case_label(params: dict[str, Any], swept: Sequence[str], model: str | None = None) -> str:
    """``gpt2-tiny z2 bf16 ws2``: the model, then the swept settings in sweep order.

    ``model`` is ``CaseSpec.model_name`` (``gpt2-4x256`` once dimensions are
    overridden); a communication case is named by its collective instead:
    ``all_reduce 1.0MiB ws2``.
    """
    comm = params.get("comm.op", "none") != "none"
    preset = f"{params['model.family']}-{params['model.size']}"
    parts = [params["comm.op"] if comm else model or preset]
    for key in swept:
        if key in ("model.family", "model.size", "comm.op", *_IN_NAME) or (
            comm and not key.startswith(("comm.", "parallel."))
        ):
            continue
        value = params[key]
        if key == "comm.size_bytes":
            value = size_label(value)
        if isinstance(value, dict):
            value = json.dumps(value, sort_keys=True, separators=(",", ":"))
        fmt = _LABEL_FORMATS.get(key, key.rsplit(".", 1)[-1] + "={}")
        parts.append(fmt.format(_dropout_text(value) if key == "model.dropout" else value))
    dropout = params.get("model.dropout", "config")
    if not comm and dropout != "config" and "model.dropout" not in swept:
        # a model that differs from the user's config says so even when nothing sweeps it
        parts.append(_LABEL_FORMATS["model.dropout"].format(_dropout_text(dropout)))
    return " ".join(parts)


def _dropout_text(value: Any) -> str:
    """``dropout=0``, ``dropout=0.1``, ``dropout=config``."""
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Rule:
    """An ``exclude`` or ``include`` entry: dotted key -> allowed values."""

    where: str
    values: dict[str, tuple[Any, ...]]

    def matches(self, params: dict[str, Any]) -> bool:
        return all(params.get(k) in vals for k, vals in self.values.items())


@dataclass
class Scenario:
    """A loaded, validated scenario: sweep axes, fixed settings and run options."""

    source: str
    name: str
    description: str
    base: dict[str, Any]
    axes: list[Axis]
    exclude: list[Rule] = field(default_factory=list)
    include: list[Rule] = field(default_factory=list)
    run: RunSpec = field(default_factory=RunSpec)
    check: str | None = None
    lines: dict[str, str] = field(default_factory=dict)
    max_cases: int = DEFAULT_MAX_CASES
    """Refuse to expand more combinations than this (``--max-cases`` raises it)."""
    _cases: list[Case] | None = field(default=None, repr=False)

    @property
    def swept(self) -> list[str]:
        """Keys that vary between cases: the sweep axes, then keys set by include entries."""
        keys = [a.key for a in self.axes if len(a.values) > 1]
        for rule in self.include:
            keys += [k for k in rule.values if k not in keys]
        return keys

    def expand(self) -> list[Case]:
        """All cases in sweep order (first axis slowest), excluded ones removed, ids unique.

        Expanded once (validation already needs every case) and then reused.
        """
        if self._cases is None:
            self._cases = self._expand()
        return list(self._cases)

    def combinations(self) -> int:
        """How many combinations expansion would build, counted without building any."""
        total = math.prod(len(a.values) for a in self.axes)
        return total + sum(math.prod(len(v) for v in r.values.values()) for r in self.include)

    def _expand(self) -> list[Case]:
        count = self.combinations()
        if count > self.max_cases:
            raise UserError(
                f"the sweep has {count:,} combinations, more than the cap of {self.max_cases:,}; "
                f"narrow it, or raise the cap with --max-cases {count}",
                where=self.source,
            )
        cases: dict[str, Case] = {}
        swept = self.swept
        for combo in itertools.product(*(a.values for a in self.axes)):
            flat = {**self.base, **{a.key: v for a, v in zip(self.axes, combo, strict=True)}}
            # excluded before validation: exclude rules are how users prune impossible combinations
            if any(rule.matches({**CASE_DEFAULTS, **flat}) for rule in self.exclude):
                continue
            case = self._build(flat, swept)
            cases.setdefault(case.id, case)
        for rule in self.include:
            keys = list(rule.values)
            for combo in itertools.product(*(rule.values[k] for k in keys)):
                flat = {
                    **self.base,
                    **{a.key: a.values[0] for a in self.axes},
                    **dict(zip(keys, combo, strict=False)),
                }
                case = self._build(flat, swept, where=rule.where)
                cases.setdefault(case.id, case)
        return list(cases.values())

    def _build(self, flat: dict[str, Any], swept: list[str], where: str | None = None) -> Case:
        spec = CaseSpec.from_params(flat)
        problems = case_problems(spec)
        if problems:
            key, message = problems[0]
            combo = ", ".join(f"{k}={flat[k]}" for k in swept if k in flat)
            hint = (
                f" [in the combination {combo}; prune it with an exclude rule]"
                if combo and not where
                else ""
            )
            raise UserError(
                message + hint, where=where or self.lines.get(key, self.source), key=key
            )
        return Case.from_spec(spec, swept)

    def resolved(self) -> dict[str, Any]:
        """The scenario as YAML-ready data, overrides applied (saved in each run directory)."""
        flat = dict(self.base)
        flat.update(
            {a.key: list(a.values) if len(a.values) > 1 else a.values[0] for a in self.axes}
        )
        doc: dict[str, Any] = {"name": self.name, "description": self.description}
        doc.update(nest(flat))
        doc["run"] = self.run.model_dump(mode="json")
        if self.exclude:
            doc["exclude"] = [{k: list(v) for k, v in r.values.items()} for r in self.exclude]
        if self.include:
            doc["include"] = [{k: list(v) for k, v in r.values.items()} for r in self.include]
        if self.check:
            doc["check"] = self.check
        return doc
