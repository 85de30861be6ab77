"""Scenario schema, YAML loading with line-numbered errors, sweep expansion, case ids.

A scenario is YAML with the sections ``model``, ``training``, ``deepspeed``,
``parallel`` (what one case trains) and ``run`` (how the sweep runs). Any case
field may be given a list: the sweep is the cartesian product of all lists,
pruned by ``exclude`` rules and extended by ``include`` entries. Dotted keys
(``deepspeed.zero_stage``) are the public names used by overrides, results and
reports.

Nothing here imports torch: ``llmbench validate`` and ``--dry-run`` must be
instant and work on a laptop.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from llmbench.errors import UserError, did_you_mean
from llmbench.models import FAMILIES, resolve_dims

Precision = Literal["fp32", "fp16", "bf16"]
OffloadDevice = Literal["none", "cpu", "nvme"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Section):
    """What is trained: a family, a size preset and optional explicit dimensions."""

    family: Literal["gpt2", "llama", "distilbert", "bert"] = "gpt2"
    size: str = "tiny"
    """Preset name of the family (``tiny``, ``125m``, ``7b``, ...); aliases such as ``small`` are accepted."""
    num_layers: PositiveInt | None = None
    hidden_size: PositiveInt | None = None
    num_heads: PositiveInt | None = None
    num_kv_heads: PositiveInt | None = None
    intermediate_size: PositiveInt | None = None
    vocab_size: PositiveInt | None = None
    max_positions: PositiveInt | None = None
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"

    @model_validator(mode="before")
    @classmethod
    def _canonical_size(cls, data: Any) -> Any:
        """Store ``gpt2``/``small`` as ``125m`` so both spellings share one case id."""
        if isinstance(data, dict) and "size" in data:
            family = FAMILIES.get(data.get("family", "gpt2"))
            canonical = family.canonical_size(data["size"]) if family else None
            if canonical:
                data = {**data, "size": canonical}
        return data

    def dim_overrides(self) -> dict[str, int]:
        names = (
            "num_layers",
            "hidden_size",
            "num_heads",
            "num_kv_heads",
            "intermediate_size",
            "vocab_size",
            "max_positions",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class TrainingSpec(_Section):
    """The training loop of one case."""

    task: Literal["causal-lm", "masked-lm", "sequence-classification"] | None = None
    """Unset: the family's natural task (causal-lm for gpt2/llama, ...), filled in on validation."""
    seq_len: PositiveInt = 128
    micro_batch: PositiveInt | Literal["auto"] = 4
    """Samples per rank per forward pass; ``auto`` searches the largest that fits."""
    micro_batch_max: PositiveInt = 1024
    """Where ``micro_batch: auto`` stops doubling when nothing runs out of memory."""
    rank_memory_limit_bytes: ByteSize | None = None
    """Emulate a smaller device: each rank may allocate at most this much (e.g. ``2GiB``).
    CUDA: the caching allocator's cap. CPU: address space a rank may add after it started."""
    grad_accum: PositiveInt = 1
    warmup_steps: NonNegativeInt = 3
    """Optimizer steps run before timing starts (excluded from every statistic)."""
    steps: PositiveInt = 10
    """Timed optimizer steps."""
    seed: int = 1234
    lr: PositiveFloat = 1e-4
    data: Literal["synthetic", "text"] = "synthetic"
    data_path: str | None = None
    """Corpus for ``data: text``: a .txt file, a .zip holding one, or a folder of .txt files."""
    num_labels: int = Field(default=2, ge=2)


class DeepSpeedSpec(_Section):
    """The DeepSpeed engine configuration of one case."""

    zero_stage: Literal[0, 1, 2, 3] = 0
    precision: Precision = "bf16"
    activation_checkpointing: Literal["none", "full", "selective"] = "none"
    offload_optimizer: OffloadDevice = "none"
    offload_param: OffloadDevice = "none"
    nvme_path: str | None = None
    overlap_comm: bool | None = None
    contiguous_gradients: bool | None = None
    reduce_bucket_size: PositiveInt | None = None
    allgather_bucket_size: PositiveInt | None = None
    stage3_prefetch_bucket_size: NonNegativeInt | None = None
    stage3_max_live_parameters: NonNegativeInt | None = None
    stage3_param_persistence_threshold: NonNegativeInt | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    """Raw DeepSpeed config merged last, for anything DeepSpeed accepts."""


class ParallelSpec(_Section):
    """How many ranks, and how they split the model."""

    world_size: PositiveInt = 1
    nodes: PositiveInt = 1
    tp: PositiveInt = 1
    """Tensor-parallel degree (DeepSpeed AutoTP)."""
    pp: PositiveInt = 1
    """Pipeline-parallel stages (DeepSpeed PipelineModule)."""

    @property
    def dp(self) -> int:
        return self.world_size // (self.tp * self.pp)


COMM_OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")


class CommSpec(_Section):
    """A collective-communication case instead of a training case (``op`` set).

    Its warm-up and timed iterations are ``training.warmup_steps`` and
    ``training.steps``: one collective call per step.
    """

    op: Literal["none", "all_reduce", "all_gather", "reduce_scatter", "broadcast"] = "none"
    size_bytes: ByteSize = ByteSize(2**20)
    """Message size as nccl-tests counts it: the whole buffer (all_gather: the gathered output)."""
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"


class CaseSpec(_Section):
    """Everything that defines what one case measures; its hash is the case id."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec)
    parallel: ParallelSpec = Field(default_factory=ParallelSpec)
    comm: CommSpec = Field(default_factory=CommSpec)

    @model_validator(mode="before")
    @classmethod
    def _resolve_task(cls, data: Any) -> Any:
        """Store the family's natural task explicitly, so both spellings share one case id."""
        if isinstance(data, dict):
            model, training = data.get("model") or {}, data.get("training") or {}
            family = FAMILIES.get(
                model.get("family", "gpt2") if isinstance(model, dict) else "gpt2"
            )
            if family and isinstance(training, dict) and training.get("task") is None:
                data = {**data, "training": {**training, "task": family.default_task}}
        return data

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CaseSpec:
        """The spec back from its flat dotted keys (a stored result's ``params``)."""
        return cls.model_validate(_nest({k: v for k, v in params.items() if k in CASE_KEYS}))

    @property
    def is_comm(self) -> bool:
        return self.comm.op != "none"

    @property
    def task(self) -> str:
        return self.training.task

    @property
    def model_name(self) -> str:
        return f"{self.model.family}-{self.model.size}"

    def dims(self):
        return resolve_dims(self.model.family, self.model.size, self.model.dim_overrides())


class SlurmSpec(_Section):
    """Where ``launcher: slurm`` submits each case."""

    partition: str | None = None
    account: str | None = None
    time_limit: str = "00:30:00"
    gpus_per_node: NonNegativeInt | None = None
    extra_args: list[str] = Field(default_factory=list)
    """Further ``#SBATCH`` options, each like ``--qos=high``."""


class RunSpec(_Section):
    """How the sweep is run; not part of any case's identity and not sweepable."""

    timeout_s: PositiveFloat = 600.0
    """Wall-clock limit of one case, process start included; the whole process group is killed at it."""
    output_dir: str = "reports/runs"
    repeats: PositiveInt = 1
    launcher: Literal["local", "deepspeed", "slurm"] = "local"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    start_method: Literal["auto", "fork", "spawn"] = "auto"
    """fork: ranks are forked from a pre-imported server (fast); spawn: a fresh interpreter per rank."""
    sampling: bool = True
    """Sample host (and, on GPUs, NVML) figures while cases run; off only to measure the samplers' own cost."""
    sample_interval_s: PositiveFloat = 0.1
    threads_per_rank: PositiveInt | None = None
    """CPU threads per rank; None: the machine's cores divided among the ranks."""
    hostfile: str | None = None
    include: str | None = None
    """DeepSpeed launcher ``--include`` host/slot filter, e.g. ``localhost:0,1``."""
    master_addr: str | None = None
    deepspeed_backend: Literal["pdsh", "openmpi", "slurm"] = "pdsh"
    """Multi-node backend of ``launcher: deepspeed`` (DeepSpeed's ``--launcher``)."""
    launcher_args: list[str] = Field(default_factory=list)
    """Extra arguments for DeepSpeed's multi-node backend (its ``--launcher_args``)."""
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)


CASE_SECTIONS = ("model", "training", "deepspeed", "parallel", "comm")
TOP_LEVEL = ("name", "description", *CASE_SECTIONS, "run", "exclude", "include", "check")
CHECKS = ("loss_parity",)


def _fields(section: type[BaseModel]) -> dict[str, Any]:
    """Field types with their constraints (pydantic keeps ``gt=0`` and the like in metadata)."""
    return {
        name: Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        for name, f in section.model_fields.items()
    }


CASE_KEYS: dict[str, Any] = {
    f"{section}.{name}": annotation
    for section in CASE_SECTIONS
    for name, annotation in _fields(CaseSpec.model_fields[section].annotation).items()
}
RUN_KEYS: dict[str, Any] = {
    f"run.{name}": ann for name, ann in _fields(RunSpec).items() if name != "slurm"
}
RUN_KEYS.update({f"run.slurm.{name}": ann for name, ann in _fields(SlurmSpec).items()})
ALL_KEYS = {**CASE_KEYS, **RUN_KEYS}
FREEFORM_KEYS = ("deepspeed.config",)  # mapping values; a list of mappings is a sweep
RANGE_KEYS = ("comm.size_bytes",)  # "1KiB..64MiB" sweeps the powers of two in between
LIST_VALUED_KEYS = ("run.slurm.extra_args", "run.launcher_args")

_ADAPTERS = {key: TypeAdapter(annotation) for key, annotation in ALL_KEYS.items()}


def _flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in FREEFORM_KEYS:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


CASE_DEFAULTS: dict[str, Any] = _flatten(CaseSpec().model_dump(mode="json"))


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
        params = _flatten(spec.model_dump(mode="json"))
        return cls(id=case_id(params), label=case_label(params, swept), spec=spec, params=params)


def case_id(params: dict[str, Any]) -> str:
    """Hash of the settings that differ from the defaults.

    Leaving defaults out keeps ids stable when a later llmbench version adds a
    field, so nightly history keeps matching cases across upgrades.
    """
    significant = {k: v for k, v in params.items() if CASE_DEFAULTS.get(k, object()) != v}
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
}


def _size_label(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


def case_label(params: dict[str, Any], swept: Sequence[str]) -> str:
    """``gpt2-tiny z2 bf16 ws2``: the model, then the swept settings in sweep order.

    A communication case is named by its collective instead: ``all_reduce 1.0MiB ws2``.
    """
    comm = params.get("comm.op", "none") != "none"
    parts = [params["comm.op"] if comm else f"{params['model.family']}-{params['model.size']}"]
    for key in swept:
        if key in ("model.family", "model.size", "comm.op") or (
            comm and not key.startswith(("comm.", "parallel."))
        ):
            continue
        value = params[key]
        if key == "comm.size_bytes":
            value = _size_label(value)
        if isinstance(value, dict):
            value = json.dumps(value, sort_keys=True, separators=(",", ":"))
        fmt = _LABEL_FORMATS.get(key, key.rsplit(".", 1)[-1] + "={}")
        parts.append(fmt.format(value))
    return " ".join(parts)


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

    def _expand(self) -> list[Case]:
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
        doc.update(_nest(flat))
        doc["run"] = self.run.model_dump(mode="json")
        if self.exclude:
            doc["exclude"] = [{k: list(v) for k, v in r.values.items()} for r in self.exclude]
        if self.include:
            doc["include"] = [{k: list(v) for k, v in r.values.items()} for r in self.include]
        if self.check:
            doc["check"] = self.check
        return doc


def case_problems(spec: CaseSpec) -> list[tuple[str, str]]:
    """Combinations no machine can run, as (dotted key, message); empty when valid."""
    m, t, ds, par = spec.model, spec.training, spec.deepspeed, spec.parallel
    family = FAMILIES[m.family]
    if family.canonical_size(m.size) is None:
        sizes = list(family.presets) + list(family.aliases)
        return [
            (
                "model.size",
                f"{m.size!r} is not a {m.family} size{did_you_mean(m.size, sizes)}; choose from {', '.join(family.presets)}",
            )
        ]
    problems: list[tuple[str, str]] = []
    if t.task is not None and t.task not in family.tasks:
        problems.append(
            (
                "training.task",
                f"{m.family} does not support {t.task!r}; choose from {', '.join(family.tasks)}",
            )
        )
    dims = spec.dims()
    if dims.hidden_size % dims.num_heads:
        problems.append(
            (
                "model.num_heads",
                f"hidden_size {dims.hidden_size} is not divisible by num_heads {dims.num_heads}",
            )
        )
    if dims.num_heads % dims.kv_heads:
        problems.append(
            (
                "model.num_kv_heads",
                f"num_heads {dims.num_heads} is not divisible by num_kv_heads {dims.kv_heads}",
            )
        )
    if t.seq_len > dims.max_positions:
        problems.append(
            (
                "training.seq_len",
                f"{t.seq_len} exceeds the model's max_positions {dims.max_positions}",
            )
        )
    if par.world_size % (par.tp * par.pp):
        problems.append(
            (
                "parallel.world_size",
                f"{par.world_size} is not divisible by tp×pp = {par.tp}×{par.pp}",
            )
        )
    if par.world_size % par.nodes:
        problems.append(
            ("parallel.nodes", f"world_size {par.world_size} is not divisible by nodes {par.nodes}")
        )
    if ds.offload_param != "none" and ds.zero_stage != 3:
        problems.append(
            (
                "deepspeed.offload_param",
                f"parameter offload needs zero_stage 3, not {ds.zero_stage}",
            )
        )
    if ds.offload_optimizer != "none" and ds.zero_stage == 0:
        problems.append(
            ("deepspeed.offload_optimizer", "optimizer offload needs zero_stage 1, 2 or 3")
        )
    if "nvme" in (ds.offload_param, ds.offload_optimizer) and not ds.nvme_path:
        problems.append(("deepspeed.nvme_path", "offload to nvme needs deepspeed.nvme_path"))
    if par.pp > 1 and ds.zero_stage > 1:
        problems.append(
            (
                "deepspeed.zero_stage",
                f"pipeline parallelism works with ZeRO stage 0 or 1 only, not {ds.zero_stage}",
            )
        )
    if spec.is_comm:
        elements = spec.comm.size_bytes // {"fp32": 4, "bf16": 2, "fp16": 2}[spec.comm.dtype]
        if elements % par.world_size or elements == 0:
            problems.append(
                (
                    "comm.size_bytes",
                    f"{spec.comm.size_bytes} bytes of {spec.comm.dtype} do not split evenly over {par.world_size} ranks",
                )
            )
    if t.data == "text" and not t.data_path:
        problems.append(("training.data_path", "data: text needs training.data_path"))
    return problems


# --------------------------------------------------------------------------- loading


def load_scenario(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
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
    return parse_scenario(text, source=str(path), overrides=overrides, default_name=path.stem)


def parse_scenario(
    text: str,
    source: str = "<string>",
    overrides: Sequence[str] = (),
    default_name: str = "scenario",
) -> Scenario:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"invalid YAML: {problem}", where=where) from None
    reader = _Reader(source)
    if root is not None:
        reader.read_document(root)
    for item in overrides:
        reader.apply_override(item)
    return reader.build(default_name)


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
        return self._constructor.construct_document(node)

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
        try:
            adapter = _ADAPTERS[dotted]
            # back to plain JSON types (a ByteSize becomes an int) so resolved scenarios dump as YAML
            return adapter.dump_python(adapter.validate_python(value), mode="json")
        except ValidationError as exc:
            raise UserError(
                f"{value!r} is not valid: {_first_error(exc)}", where=where, key=dotted
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
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UserError(f"cannot parse the value {raw!r}", where=where, key=key) from None
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

    def build(self, default_name: str) -> Scenario:
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
        run = RunSpec.model_validate(_nest(run_values))
        check = self.meta.get("check")
        if check is not None and check not in CHECKS:
            raise UserError(
                f"unknown check {check!r}{did_you_mean(str(check), CHECKS)}",
                where=self.lines.get("check", self.source),
                key="check",
            )
        scenario = Scenario(
            source=self.source,
            name=str(self.meta.get("name") or default_name),
            description=str(self.meta.get("description") or ""),
            base=base,
            axes=axes,
            exclude=self.rules["exclude"],
            include=self.rules["include"],
            run=run,
            check=check,
            lines=self.lines,
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
