"""Model families, size presets, transformers configs and exact parameter counts.

Presets are plain data so that scenario validation and planning never import
torch; transformers is imported only when a config or model is built. Models are
always built from a config with random weights: llmbench never downloads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TASKS = ("causal-lm", "masked-lm", "sequence-classification")


@dataclass(frozen=True)
class Dims:
    """Architecture dimensions, named the same way for every family."""

    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    num_kv_heads: int | None = None  # None: same as num_heads (no GQA)
    tie_embeddings: bool = True

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class Family:
    """A transformers architecture llmbench knows how to build and parallelise."""

    name: str
    tasks: tuple[str, ...]
    presets: dict[str, Dims]
    aliases: dict[str, str]
    autotp: bool  # DeepSpeed AutoTP training supports this architecture
    pipeline: bool  # llmbench can split it into a DeepSpeed PipelineModule

    @property
    def default_task(self) -> str:
        return self.tasks[0]

    def canonical_size(self, size: str) -> str | None:
        size = str(size).lower()
        if size in self.presets:
            return size
        return self.aliases.get(size)


# Sources: GPT-2 sizes from the GPT-2 paper (Radford et al. 2019) and the
# GPT-3 paper's table 2.1 for 2.7b/6.7b/13b; Llama from the Llama 2 paper and
# the Llama 3 / 3.2 model cards; BERT and DistilBERT from their papers. "tiny"
# and "mini" are llmbench's own CPU-sized shapes for tests and smoke runs.
FAMILIES: dict[str, Family] = {
    "gpt2": Family(
        name="gpt2",
        tasks=("causal-lm", "sequence-classification"),
        presets={
            "tiny": Dims(2, 128, 4, 512, 1024, 256),
            "mini": Dims(4, 256, 4, 1024, 8192, 512),
            "125m": Dims(12, 768, 12, 3072, 50257, 1024),
            "350m": Dims(24, 1024, 16, 4096, 50257, 1024),
            "774m": Dims(36, 1280, 20, 5120, 50257, 1024),
            "1.5b": Dims(48, 1600, 25, 6400, 50257, 1024),
            "2.7b": Dims(32, 2560, 32, 10240, 50257, 2048),
            "6.7b": Dims(32, 4096, 32, 16384, 50257, 2048),
            "13b": Dims(40, 5120, 40, 20480, 50257, 2048),
        },
        aliases={"small": "125m", "medium": "350m", "large": "774m", "xl": "1.5b"},
        autotp=False,
        pipeline=True,
    ),
    "llama": Family(
        name="llama",
        tasks=("causal-lm", "sequence-classification"),
        presets={
            "tiny": Dims(2, 128, 4, 352, 1024, 256, num_kv_heads=2, tie_embeddings=False),
            "mini": Dims(4, 256, 4, 704, 8192, 512, num_kv_heads=4, tie_embeddings=False),
            "1b": Dims(16, 2048, 32, 8192, 128256, 8192, num_kv_heads=8, tie_embeddings=True),
            "7b": Dims(32, 4096, 32, 11008, 32000, 4096, tie_embeddings=False),
            "8b": Dims(32, 4096, 32, 14336, 128256, 8192, num_kv_heads=8, tie_embeddings=False),
            "13b": Dims(40, 5120, 40, 13824, 32000, 4096, tie_embeddings=False),
            "70b": Dims(80, 8192, 64, 28672, 32000, 4096, num_kv_heads=8, tie_embeddings=False),
        },
        aliases={},
        autotp=True,
        pipeline=True,
    ),
    "distilbert": Family(
        name="distilbert",
        tasks=("sequence-classification", "masked-lm"),
        presets={
            "tiny": Dims(2, 128, 4, 512, 1024, 256),
            "66m": Dims(6, 768, 12, 3072, 30522, 512),
        },
        aliases={"base": "66m"},
        autotp=False,
        pipeline=False,
    ),
    "bert": Family(
        name="bert",
        tasks=("masked-lm", "sequence-classification"),
        presets={
            "tiny": Dims(2, 128, 4, 512, 1024, 256),
            "110m": Dims(12, 768, 12, 3072, 30522, 512),
            "340m": Dims(24, 1024, 16, 4096, 30522, 512),
        },
        aliases={"base": "110m", "large": "340m"},
        autotp=False,
        pipeline=False,
    ),
}

DIM_FIELDS = tuple(Dims.__dataclass_fields__)


def resolve_dims(family: str, size: str, overrides: dict[str, Any] | None = None) -> Dims:
    """Preset dimensions of ``family``/``size`` with explicit overrides applied."""
    fam = FAMILIES[family]
    canonical = fam.canonical_size(size)
    if canonical is None:
        raise KeyError(f"{family} has no size {size!r}")
    dims = fam.presets[canonical]
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    return replace(dims, **given) if given else dims


def parse_model_name(name: str) -> tuple[str, str]:
    """Split ``llama-7b`` / ``gpt2-125m`` into (family, canonical size)."""
    for family in sorted(FAMILIES, key=len, reverse=True):
        prefix = family + "-"
        if name.lower().startswith(prefix):
            size = FAMILIES[family].canonical_size(name[len(prefix) :])
            if size is not None:
                return family, size
    raise KeyError(name)


# How each family's transformers config names llmbench's dimensions, its dropout
# probabilities (kept at the config's own values unless model.dropout sets them),
# and the settings llmbench always uses, none of which changes what a training
# step computes: token ids that fit small vocabularies (GPT-2's stock 50256 does
# not) and no KV cache (see hf_config).
_CONFIG_NAMES: dict[str, dict[str, str]] = {
    "gpt2": {
        "num_layers": "n_layer",
        "hidden_size": "n_embd",
        "num_heads": "n_head",
        "intermediate_size": "n_inner",
        "max_positions": "n_positions",
    },
    "llama": {
        "num_layers": "num_hidden_layers",
        "hidden_size": "hidden_size",
        "num_heads": "num_attention_heads",
        "num_kv_heads": "num_key_value_heads",
        "intermediate_size": "intermediate_size",
        "max_positions": "max_position_embeddings",
    },
    "distilbert": {
        "num_layers": "n_layers",
        "hidden_size": "dim",
        "num_heads": "n_heads",
        "intermediate_size": "hidden_dim",
        "max_positions": "max_position_embeddings",
    },
    "bert": {
        "num_layers": "num_hidden_layers",
        "hidden_size": "hidden_size",
        "num_heads": "num_attention_heads",
        "intermediate_size": "intermediate_size",
        "max_positions": "max_position_embeddings",
    },
}
DROPOUT_NAMES: dict[str, tuple[str, ...]] = {
    "gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"),
    "llama": ("attention_dropout",),
    "distilbert": ("dropout", "attention_dropout", "seq_classif_dropout"),
    "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
}
_CONFIG_FIXED: dict[str, dict[str, Any]] = {
    "gpt2": {"bos_token_id": 0, "eos_token_id": 0},
    "llama": {"bos_token_id": 0, "eos_token_id": 0},
    "distilbert": {},
    "bert": {},
}
_CONFIG_CLASSES = {
    "gpt2": "GPT2Config",
    "llama": "LlamaConfig",
    "distilbert": "DistilBertConfig",
    "bert": "BertConfig",
}


def hf_config(
    family: str,
    dims: Dims,
    task: str,
    num_labels: int = 2,
    attn_implementation: str = "sdpa",
    dropout: float | str = "config",
):
    """Build the transformers config for a family with the given dimensions.

    ``dropout``: ``"config"`` keeps the config class's own probabilities (what a
    user training this architecture gets), a number sets every one of them.
    ``use_cache`` is off because llmbench only trains: a training forward never
    reads the KV cache (it serves generation), so on it would only build one for
    nothing; transformers itself turns it off under activation checkpointing.
    """
    import transformers

    values = {name: getattr(dims, field) for field, name in _CONFIG_NAMES[family].items()}
    if "num_kv_heads" in _CONFIG_NAMES[family]:
        values[_CONFIG_NAMES[family]["num_kv_heads"]] = dims.kv_heads
    if dropout != "config":
        values.update(dict.fromkeys(DROPOUT_NAMES[family], float(dropout)))
    cfg = getattr(transformers, _CONFIG_CLASSES[family])(
        **values,
        **_CONFIG_FIXED[family],
        vocab_size=dims.vocab_size,
        tie_word_embeddings=dims.tie_embeddings,
        num_labels=num_labels,
        use_cache=False,
        pad_token_id=0,
    )
    cfg._attn_implementation = attn_implementation
    return cfg


def dims_from_config(family: str, cfg) -> Dims:
    """llmbench's dimensions of a transformers config of ``family`` (the inverse of hf_config)."""
    names = _CONFIG_NAMES[family]
    values = {field: getattr(cfg, name) for field, name in names.items()}
    if family == "gpt2" and values["intermediate_size"] is None:
        values["intermediate_size"] = 4 * values["hidden_size"]  # GPT-2's n_inner default
    return Dims(**values, vocab_size=cfg.vocab_size, tie_embeddings=bool(cfg.tie_word_embeddings))


def model_class(task: str):
    import transformers

    return {
        "causal-lm": transformers.AutoModelForCausalLM,
        "masked-lm": transformers.AutoModelForMaskedLM,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
    }[task]


def build_model(config, task: str, device: torch.device | str | None = "cpu"):
    """Instantiate the task model from a config with random weights on ``device``.

    ``device=None`` leaves placement to an enclosing context (``deepspeed.zero.Init``).
    """
    import contextlib

    import torch

    with torch.device(device) if device is not None else contextlib.nullcontext():
        return model_class(task).from_config(
            config, attn_implementation=config._attn_implementation
        )


@dataclass(frozen=True)
class ParamCounts:
    """Exact parameter counts of a built model (tied weights counted once).

    ``flops_params`` is N in the 6·N FLOPs-per-token rule: every weight that
    takes part in a matmul. Embedding lookups cost no FLOPs, but an output
    projection does, so a head tied to the input embedding still counts once
    (the same convention as nanoGPT's MFU estimate).
    """

    total: int
    embedding: int  # token and position embedding tables
    head: int  # output projection weights (LM head or classifier), tied or not
    head_tied: bool
    non_embedding: int  # total - embedding tables (tied head excluded with them)
    per_layer: int  # parameters of one transformer block
    num_layers: int

    @property
    def flops_params(self) -> int:
        return self.non_embedding + (self.head if self.head_tied else 0)

    def to_dict(self) -> dict[str, int | bool]:
        return {**asdict(self), "flops_params": self.flops_params}


def count_parameters(model) -> ParamCounts:
    """Count parameters of a (possibly meta-device) model by role."""
    import torch

    embedding_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            embedding_ids.update(id(p) for p in module.parameters())
    out = model.get_output_embeddings()
    head_params = list(out.parameters()) if out is not None else _classifier_params(model)
    head_tied = any(id(p) in embedding_ids for p in head_params)
    head = sum(_numel(p) for p in head_params if len(_shape(p)) > 1)
    seen: set[int] = set()
    total = embedding = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += _numel(p)
        if id(p) in embedding_ids:
            embedding += _numel(p)
    layers = _blocks(model)
    per_layer = sum(_numel(p) for p in layers[0].parameters()) if layers else 0
    return ParamCounts(
        total=total,
        embedding=embedding,
        head=head,
        head_tied=head_tied,
        non_embedding=total - embedding,
        per_layer=per_layer,
        num_layers=len(layers),
    )


def _numel(p) -> int:
    """Elements of the whole parameter, also when ZeRO-3 holds only this rank's partition."""
    return getattr(p, "ds_numel", None) or p.numel()


def _shape(p) -> tuple[int, ...]:
    return tuple(getattr(p, "ds_shape", None) or p.shape)


def _classifier_params(model) -> list:
    for name in ("score", "classifier"):
        head = getattr(model, name, None)
        if head is not None:
            return list(head.parameters())
    return []


def _blocks(model) -> list:
    """The repeated transformer blocks, found by the family's attribute path."""
    import torch

    for module in model.modules():
        for attr in ("h", "layers", "layer"):
            blocks = getattr(module, attr, None)
            if isinstance(blocks, torch.nn.ModuleList) and len(blocks) > 0:
                return list(blocks)
    return []


@lru_cache(maxsize=256)
def _meta_counts(family: str, dims: Dims, task: str, num_labels: int) -> ParamCounts:
    cfg = hf_config(family, dims, task, num_labels=num_labels)
    return count_parameters(build_model(cfg, task, device="meta"))


def meta_parameter_counts(family: str, dims: Dims, task: str, num_labels: int = 2) -> ParamCounts:
    """Exact counts from the model built on the meta device (no memory allocated)."""
    return _meta_counts(family, dims, task, num_labels)
