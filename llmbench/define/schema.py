"""Scenario schema: the typed sections of a case, their dotted keys, impossible combinations.

A scenario is YAML with the sections ``model``, ``training``, ``deepspeed``,
``parallel``, ``comm`` (what one case measures) and ``run`` (how the sweep
runs). Dotted keys (``deepspeed.zero_stage``) are the public names used by
overrides, results and reports; this module derives them from the pydantic
sections so there is one source of truth. Loading lives in ``loader``, sweep
expansion and ids in ``cases``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
    model_validator,
)

from llmbench.define.models import (
    FAMILIES,
    ModelConfigError,
    architecture_label,
    config_dims,
    config_family,
    resolve_dims,
)
from llmbench.define.sections import CASE_SECTIONS
from llmbench.errors import did_you_mean

Precision = Literal["fp32", "fp16", "bf16"]
OffloadDevice = Literal["none", "cpu", "nvme"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Section):
    """What is trained: a family and size preset, or a transformers config, and optional explicit dimensions."""

    family: Literal[
        "gpt2", "llama", "distilbert", "bert", "mistral", "qwen2", "mixtral", "qwen2_moe"
    ] = "gpt2"
    """The architecture, named as transformers' ``model_type``; taken from ``config`` when that is set."""
    size: str = "tiny"
    """Preset name of the family (``tiny``, ``125m``, ``7b``, ...); aliases such as ``small`` are accepted.
    ``config`` when the dimensions come from ``model.config``."""
    config: str | None = None
    """A transformers config.json, a folder holding one, or a Hub id (``Qwen/Qwen2.5-7B``) found
    in the local Hugging Face cache (never downloaded). The model is built from it with random
    weights; the dimension keys below still override it."""
    num_layers: PositiveInt | None = None
    hidden_size: PositiveInt | None = None
    num_heads: PositiveInt | None = None
    num_kv_heads: PositiveInt | None = None
    intermediate_size: PositiveInt | None = None
    vocab_size: PositiveInt | None = None
    max_positions: PositiveInt | None = None
    num_experts: PositiveInt | None = None
    """Routed experts per MoE layer (mixture-of-experts families only)."""
    experts_per_token: PositiveInt | None = None
    """Top-k: routed experts each token passes through (mixture-of-experts families only)."""
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    dropout: Literal["config"] | Annotated[float, Field(ge=0.0, lt=1.0)] = "config"
    """Dropout probability of every dropout layer. ``config`` (default): the
    architecture's own values, i.e. what a user training this config gets (GPT-2,
    BERT: 0.1; Llama: 0); a number sets every dropout of the model to it; ``0``
    turns dropout off (what llmbench always did before this key existed, and what
    loss-parity checks force, since dropout masks differ between layouts)."""

    @model_validator(mode="before")
    @classmethod
    def _canonical_size(cls, data: Any) -> Any:
        """Store ``gpt2``/``small`` as ``125m`` so both spellings share one case id.

        With ``config`` the family is the config's ``model_type`` and the size
        ``config`` (a config that cannot be read leaves them for validation to report).
        """
        if isinstance(data, dict) and data.get("config") is not None:
            family = data.get("family") or config_family(str(data["config"]))
            data = {**data, "size": data.get("size", "config")}
            return {**data, "family": family} if family else data
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
            "num_experts",
            "experts_per_token",
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
            name = "gpt2"
            if isinstance(model, dict):
                config = model.get("config")
                name = model.get("family") or (config and config_family(str(config))) or "gpt2"
            family = FAMILIES.get(name)
            if family and isinstance(training, dict) and training.get("task") is None:
                data = {**data, "training": {**training, "task": family.default_task}}
        return data

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CaseSpec:
        """The spec back from its flat dotted keys (a stored result's ``params``)."""
        return cls.model_validate(nest({k: v for k, v in params.items() if k in CASE_KEYS}))

    @property
    def is_comm(self) -> bool:
        return self.comm.op != "none"

    @property
    def task(self) -> str:
        return self.training.task

    @property
    def model_name(self) -> str:
        """The preset (``gpt2-tiny``), or the architecture (``gpt2-4x256``) when a config or
        overridden dimensions make it something no preset name describes."""
        if self.model.config is None and not self.model.dim_overrides():
            return f"{self.model.family}-{self.model.size}"
        return architecture_label(self.model.family, self.dims())

    def dims(self):
        m = self.model
        return resolve_dims(m.family, m.size, m.dim_overrides(), m.config)


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
    oversubscribe: bool = False
    """CPU: run more ranks than cores instead of skipping the case. For memory and
    loss checks at scale; step times then measure ranks sharing cores."""
    hostfile: str | None = None
    include: str | None = None
    """DeepSpeed launcher ``--include`` host/slot filter, e.g. ``localhost:0,1``."""
    master_addr: str | None = None
    deepspeed_backend: Literal["pdsh", "openmpi", "slurm"] = "pdsh"
    """Multi-node backend of ``launcher: deepspeed`` (DeepSpeed's ``--launcher``)."""
    launcher_args: list[str] = Field(default_factory=list)
    """Extra arguments for DeepSpeed's multi-node backend (its ``--launcher_args``)."""
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)
    profile: Literal["none", "breakdown", "trace", "flops"] = "none"
    """Where each step's time goes. ``none`` (default) leaves the timed steps untouched;
    ``breakdown`` turns on DeepSpeed's wall-clock timers and comms logger for the timed
    steps (phases and bytes per step); ``trace`` and ``flops`` profile extra steps after
    the timed ones (torch.profiler trace; DeepSpeed's flops profiler). A run setting, not
    a case parameter: a case keeps its id whatever the mode, so a profiled run compares
    case for case with an unprofiled baseline, and two modes are A/B'd as two runs."""


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

ADAPTERS = {key: TypeAdapter(annotation) for key, annotation in ALL_KEYS.items()}


def literal_choices(key: str) -> tuple[str, ...]:
    """The words a key accepts (its ``Literal`` strings), for did-you-mean on a mistyped value."""

    def walk(annotation: Any) -> list[str]:
        if get_origin(annotation) is Literal:
            return [a for a in get_args(annotation) if isinstance(a, str)]
        return [word for arg in get_args(annotation) for word in walk(arg)]

    return tuple(walk(ALL_KEYS.get(key)))


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in FREEFORM_KEYS:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


CASE_DEFAULTS: dict[str, Any] = flatten(CaseSpec().model_dump(mode="json"))
ID_NEUTRAL: dict[str, Any] = {**CASE_DEFAULTS, "model.dropout": 0.0}
"""The values a case id leaves out. Equal to the defaults except ``model.dropout``:
llmbench trained every case with dropout off before the key existed, so a case with
``dropout: 0`` keeps the id it always had, while the new default (``config``, a
different model) gets a new id instead of silently continuing the old history."""


def case_problems(spec: CaseSpec) -> list[tuple[str, str]]:
    """Combinations no machine can run, as (dotted key, message); empty when valid."""
    m, t, ds, par = spec.model, spec.training, spec.deepspeed, spec.parallel
    family = FAMILIES[m.family]
    if m.config is not None:
        if m.size != "config":
            return [
                (
                    "model.size",
                    "a size names a preset; with model.config the config's own "
                    "dimensions are used (override them with model.num_layers and the like)",
                )
            ]
        try:
            of = config_dims(m.config)[0]
        except ModelConfigError as exc:
            return [("model.config", str(exc))]
        if of != m.family:
            return [("model.family", f"model.config is a {of} model, not {m.family}")]
    elif family.canonical_size(m.size) is None:
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
    if family.moe_block is None and (m.num_experts or m.experts_per_token):
        key = "model.num_experts" if m.num_experts else "model.experts_per_token"
        problems.append((key, f"{m.family} is a dense model: it has no experts to set"))
    if dims.experts_per_token > dims.num_experts:
        problems.append(
            (
                "model.experts_per_token",
                f"{dims.experts_per_token} experts per token exceed the {dims.num_experts} experts",
            )
        )
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
