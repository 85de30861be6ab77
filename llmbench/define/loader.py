"""Scenario loading: YAML read from the node tree, so every error names file, line and key.

YAML is read with the safe loader; overrides (``key=value``) go through the
same validation as the file, and a user mistake is one ``UserError`` line.
A scenario is untrusted input that decides how much work runs: anchors and
aliases are refused (a 400-byte alias bomb expands to gigabytes), every YAML
error is one line, non-finite numbers are refused, and the number of cases is
capped before any is built (see :data:`llmbench.define.cases.DEFAULT_MAX_CASES`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmbench.define.cases import DEFAULT_MAX_CASES, Axis, Rule, Scenario
from llmbench.define.schema import (
    ADAPTERS,
    ALL_KEYS,
    CASE_KEYS,
    CHECKS,
    FREEFORM_KEYS,
    LIST_VALUED_KEYS,
    RANGE_KEYS,
    RUN_KEYS,
    TOP_LEVEL,
    RunSpec,
    literal_choices,
    nest,
)
from llmbench.errors import UserError, did_you_mean

MAX_NAME = 100
"""Longest scenario name: it becomes part of every run directory's name."""


def load_scenario(
    path: str | Path, overrides: Sequence[str] = (), max_cases: int = DEFAULT_MAX_CASES
) -> Scenario:
    """Load and validate a scenario file, applying ``key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            "no such scenario file" if not path.exists() else "not a file", where=str(path)
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read: {exc}", where=str(path)) from None
    return parse_scenario(
        text,
        source=str(path),
        overrides=overrides,
        default_name=path.stem,
        max_cases=max_cases,
    )


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader, refusing anchors and aliases where they appear."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.MarkedYAMLError(
                problem="anchors and aliases (&name, *name) are not supported; write the values out",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


def _yaml_error(exc: Exception, source: str, fallback: str | None = None) -> UserError:
    """Any failure of the YAML reader as one line (a RecursionError is a document nested too deep)."""
    if isinstance(exc, RecursionError):
        return UserError("invalid YAML: nested too deeply", where=source)
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark else (fallback or source)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return UserError(f"invalid YAML: {problem}", where=where)


def _compose(text: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_NoAliasLoader)
    except (yaml.YAMLError, RecursionError) as exc:
        raise _yaml_error(exc, source) from None


def parse_scenario(
    text: str,
    source: str = "<string>",
    overrides: Sequence[str] = (),
    default_name: str = "scenario",
    max_cases: int = DEFAULT_MAX_CASES,
) -> Scenario:
    root = _compose(text, source)
    if root is None or (isinstance(root, yaml.ScalarNode) and root.value == ""):
        raise UserError(
            "the scenario file is empty (a scenario names at least a model: section)",
            where=source,
        )
    reader = _Reader(source)
    reader.read_document(root)
    for item in overrides:
        reader.apply_override(item)
    return reader.build(default_name, max_cases)


class _Reader:
    """Walks the YAML node tree so every value keeps the line it came from."""

    def __init__(self, source: str):
        self.source = source
        self.values: dict[str, Any] = {}  # dotted key -> scalar or list (a sweep)
        self.lines: dict[str, str] = {}
        self.meta: dict[str, Any] = {}
        self.rules: dict[str, list[Rule]] = {"exclude": [], "include": []}
        self._constructor = yaml.constructor.SafeConstructor()

    def where(self, node: yaml.Node) -> str:
        return f"{self.source}:{node.start_mark.line + 1}"

    def construct(self, node: yaml.Node) -> Any:
        try:
            return self._constructor.construct_document(node)
        except (yaml.YAMLError, RecursionError) as exc:  # e.g. a !!python/object tag
            raise _yaml_error(exc, self.source, fallback=self.where(node)) from None

    def _mapping_items(
        self, node: yaml.Node, key: str | None
    ) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise UserError("expected a mapping", where=self.where(node), key=key)
        seen: set[str] = set()
        items = []
        for k_node, v_node in node.value:
            if not isinstance(k_node, yaml.ScalarNode):
                raise UserError("keys must be plain names", where=self.where(k_node), key=key)
            name = str(k_node.value)
            if name in seen:
                dotted = f"{key}.{name}" if key else name
                raise UserError("duplicate key", where=self.where(k_node), key=dotted)
            seen.add(name)
            items.append((name, k_node, v_node))
        return items

    def read_document(self, root: yaml.Node) -> None:
        for name, k_node, v_node in self._mapping_items(root, None):
            if name not in TOP_LEVEL:
                raise UserError(
                    f"unknown section{did_you_mean(name, TOP_LEVEL)}",
                    where=self.where(k_node),
                    key=name,
                )
            if name in ("name", "description", "check"):
                self.meta[name] = self._scalar(v_node, name)
                self.lines[name] = self.where(k_node)
            elif name in ("exclude", "include"):
                self.rules[name] = self._rules(v_node, name)
            else:
                self._section(v_node, name)

    def _section(self, node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
            return
        for name, k_node, v_node in self._mapping_items(node, prefix):
            dotted = f"{prefix}.{name}"
            if dotted == "run.slurm":
                self._section(v_node, dotted)
                continue
            self._check_key(dotted, self.where(k_node))
            self.lines[dotted] = self.where(k_node)
            self.values[dotted] = self._value(dotted, v_node)

    def _check_key(self, dotted: str, where: str) -> None:
        if dotted not in ALL_KEYS:
            raise UserError(f"unknown key{did_you_mean(dotted, ALL_KEYS)}", where=where, key=dotted)

    def _scalar(self, node: yaml.Node, key: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise UserError("expected a single value", where=self.where(node), key=key)
        return self.construct(node)

    def _value(self, dotted: str, node: yaml.Node) -> Any:
        """A validated value, or a list of them (a sweep axis)."""
        if dotted in RANGE_KEYS and isinstance(node, yaml.ScalarNode) and ".." in str(node.value):
            return self._size_range(dotted, str(node.value), self.where(node))
        if dotted in LIST_VALUED_KEYS:
            return self._validate(dotted, self.construct(node), self.where(node))
        if isinstance(node, yaml.SequenceNode):
            if dotted in RUN_KEYS:
                raise UserError(
                    "run settings cannot be swept; give a single value",
                    where=self.where(node),
                    key=dotted,
                )
            if not node.value:
                raise UserError("an empty list sweeps nothing", where=self.where(node), key=dotted)
            values = [
                self._validate(dotted, self.construct(item), self.where(item))
                for item in node.value
            ]
            return _unique(values, dotted, self.where(node))
        return self._validate(dotted, self.construct(node), self.where(node))

    def _size_range(self, dotted: str, text: str, where: str) -> list[int]:
        """``1KiB..64MiB``: every power of two from the first size to the second."""
        low, _, high = text.partition("..")
        first, last = (self._validate(dotted, part.strip(), where) for part in (low, high))
        if first <= 0 or first & (first - 1) or first > last:
            raise UserError(
                f"{text!r}: a range runs from a power of two up to a larger size",
                where=where,
                key=dotted,
            )
        sizes = []
        while first <= last:
            sizes.append(first)
            first *= 2
        return sizes

    def _validate(self, dotted: str, value: Any, where: str) -> Any:
        if not _finite(value):
            raise UserError(
                f"{value!r} is not valid: numbers must be finite", where=where, key=dotted
            )
        try:
            adapter = ADAPTERS[dotted]
            # back to plain JSON types (a ByteSize becomes an int) so resolved scenarios dump as YAML
            return adapter.dump_python(adapter.validate_python(value), mode="json")
        except ValidationError as exc:
            raise UserError(
                f"{value!r} is not valid: {_first_error(exc)}"
                + (did_you_mean(value, literal_choices(dotted)) if isinstance(value, str) else ""),
                where=where,
                key=dotted,
            ) from None

    def _rules(self, node: yaml.Node, kind: str) -> list[Rule]:
        if not isinstance(node, yaml.SequenceNode):
            raise UserError("expected a list of mappings", where=self.where(node), key=kind)
        rules = []
        for item in node.value:
            values: dict[str, tuple[Any, ...]] = {}
            for name, k_node, v_node in self._mapping_items(item, kind):
                where = self.where(k_node)
                if name not in CASE_KEYS:
                    raise UserError(
                        f"unknown key{did_you_mean(name, CASE_KEYS)}",
                        where=where,
                        key=f"{kind}: {name}",
                    )
                value = self._value(name, v_node)
                values[name] = (
                    tuple(value)
                    if isinstance(value, list) and name not in FREEFORM_KEYS
                    else (value,)
                )
            if not values:
                raise UserError("an empty rule", where=self.where(item), key=kind)
            rules.append(Rule(where=self.where(item), values=values))
        return rules

    def apply_override(self, item: str) -> None:
        where = "command line"
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"override {item!r} is not of the form key=value", where=where)
        try:
            node = _compose(raw, where) if raw.strip() else None
        except UserError:
            raise UserError(f"cannot parse the value {raw!r}", where=where, key=key) from None
        value = self.construct(node) if node is not None else None
        if key.startswith("deepspeed.config."):
            config = dict(self.values.get("deepspeed.config") or {})
            _set_path(config, key.split(".")[2:], value)
            value, key = config, "deepspeed.config"
        self._check_key(key, where)
        self.lines[key] = where
        if key in RANGE_KEYS and isinstance(value, str) and ".." in value:
            value = self._size_range(key, value, where)
        if isinstance(value, list) and key not in LIST_VALUED_KEYS:
            if key in RUN_KEYS:
                raise UserError(
                    "run settings cannot be swept; give a single value", where=where, key=key
                )
            if not value:
                raise UserError("an empty list sweeps nothing", where=where, key=key)
            self.values[key] = _unique([self._validate(key, v, where) for v in value], key, where)
        else:
            self.values[key] = self._validate(key, value, where)

    def build(self, default_name: str, max_cases: int = DEFAULT_MAX_CASES) -> Scenario:
        base: dict[str, Any] = {}
        axes: list[Axis] = []
        for key, value in self.values.items():
            if key in RUN_KEYS:
                continue
            if isinstance(value, list):
                axes.append(Axis(key, tuple(value)))
            else:
                base[key] = value
        run_values = {k.split(".", 1)[1]: v for k, v in self.values.items() if k in RUN_KEYS}
        run = RunSpec.model_validate(nest(run_values))
        check = self.meta.get("check")
        if check is not None and check not in CHECKS:
            raise UserError(
                f"unknown check {check!r}{did_you_mean(str(check), CHECKS)}",
                where=self.lines.get("check", self.source),
                key="check",
            )
        name = str(self.meta.get("name") or default_name)
        if len(name) > MAX_NAME:
            raise UserError(
                f"{len(name)} characters; a name has at most {MAX_NAME}",
                where=self.lines.get("name", self.source),
                key="name",
            )
        scenario = Scenario(
            source=self.source,
            name=name,
            description=str(self.meta.get("description") or ""),
            base=base,
            axes=axes,
            exclude=self.rules["exclude"],
            include=self.rules["include"],
            run=run,
            check=check,
            lines=self.lines,
            max_cases=max_cases,
        )
        if not scenario.expand():
            raise UserError("every case is excluded; nothing would run", where=self.source)
        return scenario


def _unique(values: list[Any], key: str, where: str) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v in out:
            raise UserError(f"{v!r} is listed twice", where=where, key=key)
        out.append(v)
    return out


def _finite(value: Any) -> bool:
    """False when a NaN or an infinity hides anywhere in ``value`` (``training.lr: .inf``)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    # a union (e.g. int | "auto") reports one error per branch; the first is the useful one
    return errors[0]["msg"] if errors else str(exc)


def _set_path(mapping: dict[str, Any], path: Iterable[str], value: Any) -> None:
    *parents, leaf = list(path)
    node = mapping
    for p in parents:
        child = node.get(p)
        node[p] = child = dict(child) if isinstance(child, dict) else {}
        node = child
    node[leaf] = value
