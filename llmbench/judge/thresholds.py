"""Regression thresholds: direction-aware limits parsed from strings.

A rule such as ``tokens_per_s:-3%`` or ``*_bytes:+2%,+256MiB`` says how far a
metric may move in its worse direction before it counts as changed. Shared by
``compare`` (one run against another) and ``history`` (change points), so the
policy lives here rather than in either.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmbench.errors import UserError
from llmbench.units import size_label

# First match wins. The sign says which way is worse: "-" a drop, "+" a rise.
DEFAULT_SPECS = (
    ("mfu", "-5%"),
    ("hfu", "-5%"),
    ("*_per_s", "-5%"),
    ("*_per_s_per_device", "-5%"),
    ("*bw_gb_s", "-5%"),  # collective bandwidths
    ("*_bytes", "+2%,+256MiB"),
    ("*_j_per_*", "+5%"),
    ("*_j", "+5%"),
    ("step_time_s_*", "+5%"),
    # phases and collectives of run.profile: breakdown; a millisecond floor keeps
    # sub-millisecond phases (data, other) from alarming on scheduler jitter
    ("phase_*_s_*", "+10%,+1ms"),
    ("comm_*s_median", "+10%,+1ms"),  # comm_s_median and comm_<op>_s_median
    ("comm_*bytes_per_step", "+1%"),
    ("*_s", "+5%"),
)
UNITS = {
    "": 1,
    "B": 1,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "s": 1,
    "ms": 1e-3,
    "us": 1e-6,
}
_PART = re.compile(r"^([+-])?\s*(\d+(?:\.\d*)?|\.\d+)\s*(%|[A-Za-z]*)$")


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Threshold:
    """How far a metric may move before it counts as changed, and which way is worse."""

    metric: str
    worse: int
    """+1: a rise is worse (time, memory); -1: a drop is worse (throughput)."""
    rel: float | None = None
    """Fraction of the baseline, e.g. 0.05."""
    abs: float | None = None
    """In the metric's own unit (bytes, seconds, …)."""
    origin: str = "default"

    def limit(self, baseline: float) -> float:
        """The tolerated absolute change: the larger of the relative and absolute parts."""
        parts = []
        if self.rel is not None:
            parts.append(self.rel * abs(baseline))
        if self.abs is not None:
            parts.append(self.abs)
        return max(parts)

    def text(self) -> str:
        sign = "+" if self.worse > 0 else "-"
        parts = []
        if self.rel is not None:
            parts.append(f"{sign}{self.rel * 100:g}%")
        if self.abs is not None:
            parts.append(f"{sign}{_abs_text(self.metric, self.abs)}")
        return ",".join(parts)


def _abs_text(metric: str, value: float) -> str:
    return size_label(value) if metric.endswith("_bytes") else f"{value:g}"


def _inferred_direction(metric: str) -> int | None:
    for pattern, spec in DEFAULT_SPECS:
        if fnmatch.fnmatchcase(metric, pattern):
            return -1 if spec.startswith("-") else 1
    return None


def parse_spec(metric: str, spec: str, origin: str) -> Threshold | None:
    """``-5%``, ``+2%,+256MiB``, ``+0.01`` (metric units) or ``off`` (None: not judged)."""
    spec = str(spec).strip()
    if spec.lower() == "off":
        return None
    rel = absolute = None
    signs = set()
    for part in (p.strip() for p in spec.split(",")):
        match = _PART.match(part)
        if not match or match.group(3) not in ("%", *UNITS):
            raise UserError(
                f"threshold {spec!r} is not like -5%, +2%,+256MiB, +0.01 or off",
                where=origin,
                key=metric,
            )
        sign, number, unit = match.groups()
        if sign:
            signs.add(sign)
        if unit == "%":
            rel = float(number) / 100
        else:
            absolute = float(number) * UNITS[unit]
    if len(signs) > 1:
        raise UserError(f"threshold {spec!r} mixes + and -", where=origin, key=metric)
    worse = (1 if signs.pop() == "+" else -1) if signs else _inferred_direction(metric)
    if worse is None:
        raise UserError(
            f"say which way is worse: +{spec} (a rise) or -{spec} (a drop)",
            where=origin,
            key=metric,
        )
    return Threshold(metric, worse, rel, absolute, origin)


@functools.cache
def default_threshold(metric: str) -> Threshold | None:
    for pattern, spec in DEFAULT_SPECS:
        if fnmatch.fnmatchcase(metric, pattern):
            return parse_spec(metric, spec, "default")
    return None


def parse_option(text: str) -> tuple[str, Threshold | None]:
    """``METRIC:SPEC`` from the command line."""
    metric, sep, spec = text.partition(":")
    if not sep or not metric.strip():
        raise UserError(
            f"{text!r} is not METRIC:THRESHOLD (e.g. tokens_per_s:-3%)", where="--threshold"
        )
    return metric.strip(), parse_spec(metric.strip(), spec, "--threshold")


ALLOW_MISSING = "allow_missing"
"""Thresholds-file key: patterns of what may be missing from the current run without failing."""


@dataclass
class Thresholds:
    """Built-in defaults, overridden per scenario by a file, then per metric on the command line."""

    overrides: dict[str, Threshold | None] = field(default_factory=dict)
    allow_missing: tuple[str, ...] = ()
    """Glob patterns over metric names, case ids and labels (``status``: a whole case); ``*``: all."""

    def for_metric(self, metric: str) -> Threshold | None:
        if metric in self.overrides:
            return self.overrides[metric]
        return default_threshold(metric)

    def missing_allowed(self, case_id: str, label: str, metric: str) -> bool:
        """Whether the user accepted this case's ``metric`` (or ``status``) being missing."""
        if not self.allow_missing:  # the usual case, asked 30,000 times on 10k cases
            return False
        return any(
            fnmatch.fnmatchcase(name, pattern)
            for pattern in self.allow_missing
            for name in (case_id, label, metric)
        )

    @classmethod
    def build(
        cls,
        scenario: str,
        file: Path | None = None,
        options: Sequence[str] = (),
        allow_missing: bool = False,
    ) -> Thresholds:
        overrides: dict[str, Threshold | None] = {}
        patterns: list[str] = ["*"] if allow_missing else []
        if file is not None:
            found, allowed = read_thresholds_file(file, scenario)
            overrides.update(found)
            patterns += allowed
        overrides.update(parse_option(o) for o in options)
        return cls(overrides, tuple(patterns))


def read_thresholds_file(
    path: Path, scenario: str
) -> tuple[dict[str, Threshold | None], list[str]]:
    """Thresholds for one scenario from YAML (``"*"`` for every scenario, then by name),
    and the patterns of what may be missing (``allow_missing``: a list, or one pattern).

    .. code-block:: yaml

        "*": {tokens_per_s: -5%}
        nightly:
          tokens_per_s: -3%
          peak_memory_bytes: "+1%,+128MiB"
          allow_missing: [energy_j_per_step, "gpt2-tiny z3*"]
    """
    try:
        root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror}", where=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"invalid YAML: {getattr(exc, 'problem', exc)}", where=where) from None
    if root is None:
        return {}, []

    def where(node: yaml.Node) -> str:
        return f"{path}:{node.start_mark.line + 1}"

    if not isinstance(root, yaml.MappingNode):
        raise UserError("expected a mapping of scenario names", where=where(root))
    sections: dict[str, yaml.MappingNode] = {}
    for key, value in root.value:
        if not isinstance(value, yaml.MappingNode):
            raise UserError(
                "expected a mapping of metric: threshold", where=where(value), key=key.value
            )
        sections[str(key.value)] = value
    found: dict[str, Threshold | None] = {}
    allowed: list[str] = []
    for name in ("*", scenario):
        for key, value in sections[name].value if name in sections else []:
            if key.value == ALLOW_MISSING:
                allowed += _patterns(value, where(value))
            elif not isinstance(value, yaml.ScalarNode):
                raise UserError("expected a threshold like -5%", where=where(value), key=key.value)
            else:
                found[str(key.value)] = parse_spec(str(key.value), value.value, where(value))
    return found, allowed


def _patterns(node: yaml.Node, where: str) -> list[str]:
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    if not all(isinstance(i, yaml.ScalarNode) and str(i.value).strip() for i in items):
        raise UserError(
            "expected a pattern or a list of patterns (metric, case id or label)",
            where=where,
            key=ALLOW_MISSING,
        )
    return [str(i.value).strip() for i in items]
