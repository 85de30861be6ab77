"""Model families, size presets, transformers configs and exact parameter counts.

Presets are plain data so that scenario validation and planning never import
torch; transformers is imported only when a config or model is built. Models are
always built from a config with random weights: llmbench never downloads.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmbench.flops import active_expert_params

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
    num_experts: int = 0  # routed experts per MoE layer; 0: a dense MLP
    experts_per_token: int = 0  # top-k: routed experts each token passes through
    expert_intermediate_size: int | None = None  # None: intermediate_size (Mixtral)
    shared_expert_intermediate_size: int = 0  # Qwen2-MoE's always-on expert; 0: none
    rope_theta: float | None = None  # RoPE base; None: the config class's default

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def expert_width(self) -> int:
        return self.expert_intermediate_size or self.intermediate_size

    @property
    def active_mlp_width(self) -> int:
        """MLP width one token passes through: its top-k experts (and a shared one) in a MoE."""
        if not self.num_experts:
            return self.intermediate_size
        return self.experts_per_token * self.expert_width + self.shared_expert_intermediate_size

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
    mlp_multiple: int | None = None
    """How transformers derives the MLP width from hidden_size when a config leaves it
    unset (GPT-2: ``n_inner=None`` → 4×); None: the class has a fixed default instead,
    so an overridden hidden size keeps the preset's MLP-to-hidden ratio."""
    moe_block: str | None = None
    """transformers' sparse MoE block class: what ZeRO-3 must fetch as one leaf module."""

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
# The current families copy the published config.json on the Hugging Face Hub:
#   llama 1b     meta-llama/Llama-3.2-1B   (GQA 32/8, vocab 128256, rope_theta 5e5, tied)
#   llama 8b     meta-llama/Meta-Llama-3-8B (GQA 32/8, vocab 128256, rope_theta 5e5)
#   mistral 7b   mistralai/Mistral-7B-v0.3 (GQA 32/8, MLP 14336, vocab 32768,
#                rope_theta 1e6, sliding_window null)
#   qwen2 0.5b   Qwen/Qwen2.5-0.5B  (24×896, 14/2 heads, MLP 4864, vocab 151936, tied)
#   qwen2 7b     Qwen/Qwen2.5-7B    (28×3584, 28/4 heads, MLP 18944, vocab 152064);
#                max_position_embeddings 32768 as in Qwen/Qwen2.5-7B-Instruct
#   mixtral 8x7b mistralai/Mixtral-8x7B-v0.1 (8 experts, top-2, MLP 14336, vocab 32000)
#   qwen2_moe a2.7b Qwen/Qwen1.5-MoE-A2.7B (60 experts, top-4, expert MLP 1408, shared
#                expert 5632, vocab 151936, max positions 8192)
# Mistral publishes no dense model smaller than 7B and Mixtral none smaller than
# 8x7B, so their small sizes are llmbench's CPU-sized "tiny" only.
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
        mlp_multiple=4,
    ),
    "llama": Family(
        name="llama",
        tasks=("causal-lm", "sequence-classification"),
        presets={
            "tiny": Dims(2, 128, 4, 352, 1024, 256, num_kv_heads=2, tie_embeddings=False),
            "mini": Dims(4, 256, 4, 704, 8192, 512, num_kv_heads=4, tie_embeddings=False),
            "1b": Dims(16, 2048, 32, 8192, 128256, 8192, num_kv_heads=8, rope_theta=500000.0),
            "7b": Dims(32, 4096, 32, 11008, 32000, 4096, tie_embeddings=False),
            "8b": Dims(
                32, 4096, 32, 14336, 128256, 8192, 8, tie_embeddings=False, rope_theta=500000.0
            ),
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
    "mistral": Family(
        name="mistral",
        tasks=("causal-lm", "sequence-classification"),
        presets={
            "tiny": Dims(2, 128, 4, 448, 1024, 256, 2, tie_embeddings=False, rope_theta=1e6),
            "7b": Dims(32, 4096, 32, 14336, 32768, 32768, 8, tie_embeddings=False, rope_theta=1e6),
        },
        aliases={},
        autotp=False,
        pipeline=True,
    ),
    "qwen2": Family(
        name="qwen2",
        tasks=("causal-lm", "sequence-classification"),
        presets={
            "tiny": Dims(2, 128, 4, 512, 1024, 256, 2, tie_embeddings=True, rope_theta=1e6),
            "0.5b": Dims(24, 896, 14, 4864, 151936, 32768, 2, tie_embeddings=True, rope_theta=1e6),
            "7b": Dims(28, 3584, 28, 18944, 152064, 32768, 4, tie_embeddings=False, rope_theta=1e6),
        },
        aliases={"2.5-0.5b": "0.5b", "2.5-7b": "7b"},
        autotp=False,
        pipeline=True,
    ),
    "mixtral": Family(
        name="mixtral",
        tasks=("causal-lm", "sequence-classification"),
        presets={
            "tiny": Dims(2, 128, 4, 256, 1024, 256, 2, False, 4, 2, rope_theta=1e6),
            "8x7b": Dims(32, 4096, 32, 14336, 32000, 32768, 8, False, 8, 2, rope_theta=1e6),
        },
        aliases={},
        autotp=False,
        pipeline=False,
        moe_block="MixtralSparseMoeBlock",
    ),
    "qwen2_moe": Family(
        name="qwen2_moe",
        tasks=("causal-lm", "sequence-classification"),
        presets={
            "tiny": Dims(2, 128, 4, 256, 1024, 256, 4, False, 4, 2, 64, 128, rope_theta=1e6),
            "a2.7b": Dims(24, 2048, 16, 5632, 151936, 8192, 16, False, 60, 4, 1408, 5632, 1e6),
        },
        aliases={"1.5-moe-a2.7b": "a2.7b"},
        autotp=False,
        pipeline=False,
        moe_block="Qwen2MoeSparseMoeBlock",
    ),
}

DIM_FIELDS = tuple(Dims.__dataclass_fields__)


def resolve_dims(
    family: str,
    size: str,
    overrides: dict[str, Any] | None = None,
    config: str | None = None,
) -> Dims:
    """Preset (or ``config``) dimensions with explicit overrides applied.

    An overridden ``hidden_size`` without an explicit ``intermediate_size`` gets
    the MLP width the architecture derives, not the preset's: GPT-2's
    transformers config leaves ``n_inner`` unset, so a 256-wide GPT-2 has a
    4×256 = 1024-wide MLP; classes with a fixed default (Llama's 11008) have no
    rule, so the preset's MLP-to-hidden ratio is kept (expert widths likewise).
    """
    base = config_dims(config)[1] if config else _preset(family, size)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "hidden_size" in given:
        given = {**_derived_widths(FAMILIES[family], base, given["hidden_size"]), **given}
    return replace(base, **given) if given else base


def _preset(family: str, size: str) -> Dims:
    canonical = FAMILIES[family].canonical_size(size)
    if canonical is None:
        raise KeyError(f"{family} has no size {size!r}")
    return FAMILIES[family].presets[canonical]


def _derived_widths(fam: Family, base: Dims, hidden: int) -> dict[str, int]:
    if fam.mlp_multiple is not None:
        return {"intermediate_size": fam.mlp_multiple * hidden}
    widths = ("intermediate_size", "expert_intermediate_size", "shared_expert_intermediate_size")
    return {
        name: max(1, round(getattr(base, name) * hidden / base.hidden_size))
        for name in widths
        if getattr(base, name)
    }


def architecture_label(family: str, dims: Dims) -> str:
    """``gpt2-4x256``: what a case trains when it is no longer a named preset."""
    return f"{family}-{dims.num_layers}x{dims.hidden_size}"


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
# not) and no KV cache (see hf_config). A family's name is its transformers
# ``model_type``, which is how a config file finds its family.
_DECODER = {
    "num_layers": "num_hidden_layers",
    "hidden_size": "hidden_size",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "intermediate_size": "intermediate_size",
    "max_positions": "max_position_embeddings",
    "rope_theta": "rope_theta",
}
_CONFIG_NAMES: dict[str, dict[str, str]] = {
    "gpt2": {
        "num_layers": "n_layer",
        "hidden_size": "n_embd",
        "num_heads": "n_head",
        "intermediate_size": "n_inner",
        "max_positions": "n_positions",
    },
    "llama": _DECODER,
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
    "mistral": _DECODER,
    "qwen2": _DECODER,
    "mixtral": {
        **_DECODER,
        "num_experts": "num_local_experts",
        "experts_per_token": "num_experts_per_tok",
    },
    "qwen2_moe": {
        **_DECODER,
        "num_experts": "num_experts",
        "experts_per_token": "num_experts_per_tok",
        "expert_intermediate_size": "moe_intermediate_size",
        "shared_expert_intermediate_size": "shared_expert_intermediate_size",
    },
}
# What each config class (transformers 5.24) fills in for a name a config.json
# leaves out: validation reads config files with json alone (no torch import), so
# it needs the class defaults as data; tests/test_models_config.py checks them
# against transformers. None: GPT-2 derives n_inner, Llama's KV heads follow heads.
_CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12, n_inner=None, n_positions=1024),
    "llama": dict(
        num_hidden_layers=32,
        hidden_size=4096,
        num_attention_heads=32,
        num_key_value_heads=None,
        intermediate_size=11008,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        vocab_size=32000,
        tie_word_embeddings=False,
    ),
    "distilbert": dict(n_layers=6, dim=768, n_heads=12, hidden_dim=3072),
    "bert": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12),
    "mistral": dict(
        num_hidden_layers=32,
        hidden_size=4096,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        max_position_embeddings=131072,
        rope_theta=10000.0,
        vocab_size=32000,
        tie_word_embeddings=False,
    ),
    "qwen2": dict(
        num_hidden_layers=32,
        hidden_size=4096,
        num_attention_heads=32,
        num_key_value_heads=32,
        intermediate_size=22016,
        max_position_embeddings=32768,
        rope_theta=10000.0,
        vocab_size=151936,
        tie_word_embeddings=False,
    ),
    "mixtral": dict(
        num_hidden_layers=32,
        hidden_size=4096,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        max_position_embeddings=131072,
        rope_theta=1e6,
        vocab_size=32000,
        tie_word_embeddings=False,
        num_local_experts=8,
        num_experts_per_tok=2,
    ),
    "qwen2_moe": dict(
        num_hidden_layers=24,
        hidden_size=2048,
        num_attention_heads=16,
        num_key_value_heads=16,
        intermediate_size=5632,
        max_position_embeddings=32768,
        rope_theta=10000.0,
        vocab_size=151936,
        tie_word_embeddings=False,
        num_experts=60,
        num_experts_per_tok=4,
        moe_intermediate_size=1408,
        shared_expert_intermediate_size=5632,
    ),
}
_CONFIG_DEFAULTS["gpt2"].update(vocab_size=50257, tie_word_embeddings=True)
_CONFIG_DEFAULTS["distilbert"].update(
    max_position_embeddings=512, vocab_size=30522, tie_word_embeddings=True
)
_CONFIG_DEFAULTS["bert"].update(
    intermediate_size=3072, max_position_embeddings=512, vocab_size=30522, tie_word_embeddings=True
)
DROPOUT_NAMES: dict[str, tuple[str, ...]] = {
    "gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"),
    "llama": ("attention_dropout",),
    "distilbert": ("dropout", "attention_dropout", "seq_classif_dropout"),
    "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "mistral": ("attention_dropout",),
    "qwen2": ("attention_dropout",),
    "mixtral": ("attention_dropout",),
    "qwen2_moe": ("attention_dropout",),
}
_SMALL_IDS = {"bos_token_id": 0, "eos_token_id": 0}
_CONFIG_FIXED: dict[str, dict[str, Any]] = {
    "gpt2": _SMALL_IDS,
    "llama": _SMALL_IDS,
    "distilbert": {},
    "bert": {},
    "mistral": {**_SMALL_IDS, "sliding_window": None},  # v0.3 attends to the whole sequence
    "qwen2": _SMALL_IDS,
    "mixtral": _SMALL_IDS,
    "qwen2_moe": _SMALL_IDS,
}
_CONFIG_CLASSES = {
    "gpt2": "GPT2Config",
    "llama": "LlamaConfig",
    "distilbert": "DistilBertConfig",
    "bert": "BertConfig",
    "mistral": "MistralConfig",
    "qwen2": "Qwen2Config",
    "mixtral": "MixtralConfig",
    "qwen2_moe": "Qwen2MoeConfig",
}


def hf_config(
    family: str,
    dims: Dims,
    task: str,
    num_labels: int = 2,
    attn_implementation: str = "sdpa",
    dropout: float | str = "config",
    source: str | None = None,
):
    """Build the transformers config for a family with the given dimensions.

    ``source`` (``model.config``: a file, a folder or a cached Hub id): that
    config, read from local files only, with ``dims`` written over it, so
    everything llmbench has no name for (activation, norm epsilon, RoPE
    scaling, router settings) stays the user's.
    ``dropout``: ``"config"`` keeps the config class's own probabilities (what a
    user training this architecture gets), a number sets every one of them.
    ``use_cache`` is off because llmbench only trains: a training forward never
    reads the KV cache (it serves generation), so on it would only build one for
    nothing; transformers itself turns it off under activation checkpointing.
    """
    import transformers

    names = _CONFIG_NAMES[family]
    values = {name: getattr(dims, field) for field, name in names.items()}
    if "num_kv_heads" in names:
        values[names["num_kv_heads"]] = dims.kv_heads
    values = {name: value for name, value in values.items() if value is not None}
    if dropout != "config":
        values.update(dict.fromkeys(DROPOUT_NAMES[family], float(dropout)))
    common = {
        "vocab_size": dims.vocab_size,
        "tie_word_embeddings": dims.tie_embeddings,
        "num_labels": num_labels,
        "use_cache": False,
    }
    if source is None:
        cfg = getattr(transformers, _CONFIG_CLASSES[family])(
            **values, **_CONFIG_FIXED[family], **common, pad_token_id=0
        )
    else:
        cfg = transformers.AutoConfig.from_pretrained(
            str(config_file(source)), local_files_only=True
        )
        values.pop("rope_theta", None)  # the file's own RoPE settings, scaling included
        for name, value in {**values, **common}.items():
            setattr(cfg, name, value)
        if getattr(cfg, "head_dim", None) is not None:
            cfg.head_dim = dims.head_dim  # follows overridden hidden size / heads
        if cfg.pad_token_id is None:
            cfg.pad_token_id = 0  # sequence classification finds the last token by it
        # weights in fp32 as for every preset (a Hub config says bf16): DeepSpeed casts
        cfg.dtype = None
    cfg._attn_implementation = attn_implementation
    return cfg


def dims_from_config(family: str, cfg) -> Dims:
    """llmbench's dimensions of a transformers config of ``family`` (the inverse of hf_config)."""
    return _dims_from_values(family, cfg.to_dict())


class ModelConfigError(ValueError):
    """A ``model.config`` that cannot be used; the message is one line for the user."""


def hub_cache() -> Path:
    """The local Hugging Face hub cache, as huggingface_hub finds it (read at call time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("HF_HOME") or xdg / "huggingface").expanduser() / "hub"


def config_file(ref: str) -> Path:
    """The config.json behind ``model.config``: a file, a folder holding one, or a cached Hub id.

    A Hub id is looked up in the local cache only: llmbench never downloads.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelConfigError(f"{ref}: the folder holds no config.json")
        return path / "config.json"
    if path.is_file():
        return path
    if ref.count("/") <= 1 and not ref.endswith(".json") and not ref.startswith((".", "/", "~")):
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(ref, "config.json", cache_dir=hub_cache())
        if isinstance(found, str):
            return Path(found)
        raise ModelConfigError(
            f"{ref!r} is no file or folder here and no Hub model in the local Hugging Face "
            f"cache {hub_cache()} (llmbench never downloads: fetch its config.json once, "
            f"e.g. `hf download {ref} config.json`)"
        )
    raise ModelConfigError(f"no such file or folder: {ref}")


def config_dims(ref: str) -> tuple[str, Dims]:
    """Family and dimensions of a ``model.config``, read with json alone (no torch, no transformers)."""
    file = config_file(ref)
    stat = file.stat()
    return _read_config(str(file), stat.st_mtime_ns, stat.st_size)


def config_family(ref: str) -> str | None:
    """The family of a usable ``model.config``; None when it is not (validation says why)."""
    try:
        return config_dims(ref)[0]
    except ModelConfigError:
        return None


@lru_cache(maxsize=64)
def _read_config(file: str, _mtime_ns: int, _size: int) -> tuple[str, Dims]:
    try:
        raw = json.loads(Path(file).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ModelConfigError(f"{file}: not a text file (a config.json is JSON)") from None
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{file}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{file}: a transformers config is a JSON object")
    model_type = raw.get("model_type")
    if model_type not in FAMILIES:
        raise ModelConfigError(
            f"{file}: model_type {model_type!r} is not one llmbench builds "
            f"(it builds {', '.join(FAMILIES)})"
        )
    try:
        return model_type, _dims_from_values(model_type, raw)
    except ValueError as exc:
        raise ModelConfigError(f"{file}: {exc}") from None


def _dims_from_values(family: str, raw: dict[str, Any]) -> Dims:
    """Dims from a config's values (a config.json or ``to_dict()``), class defaults filling gaps."""
    defaults = _CONFIG_DEFAULTS[family]
    names = {
        **_CONFIG_NAMES[family],
        "vocab_size": "vocab_size",
        "tie_embeddings": "tie_word_embeddings",
    }
    values = {field: raw.get(name, defaults.get(name)) for field, name in names.items()}
    if "rope_theta" in names and "rope_theta" not in raw:  # transformers 5 nests it
        rope = raw.get("rope_parameters")
        if isinstance(rope, dict) and "rope_theta" in rope:
            values["rope_theta"] = float(rope["rope_theta"])
    for field, name in names.items():
        value = values[field]
        if field in ("tie_embeddings", "rope_theta") or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if values["intermediate_size"] is None:
        values["intermediate_size"] = FAMILIES[family].mlp_multiple * values["hidden_size"]
    values["tie_embeddings"] = bool(values["tie_embeddings"])
    if values["hidden_size"] % values["num_heads"]:
        raise ValueError(
            f"hidden_size {values['hidden_size']} is not divisible by {names['num_heads']} "
            f"{values['num_heads']}"
        )
    head_dim = raw.get("head_dim")
    if head_dim is not None and head_dim != values["hidden_size"] // values["num_heads"]:
        raise ValueError(
            f"head_dim {head_dim} is not hidden_size / num_attention_heads; llmbench sizes "
            "attention from those two and has no separate head_dim yet"
        )
    if family == "qwen2_moe" and (
        raw.get("mlp_only_layers") or raw.get("decoder_sparse_step", 1) != 1
    ):
        raise ValueError(
            "dense layers among the MoE ones (mlp_only_layers, decoder_sparse_step) are not "
            "counted by llmbench yet"
        )
    return Dims(**values)


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
    (the same convention as nanoGPT's MFU estimate). In a mixture of experts a
    token passes through its top-k routed experts only, so N counts those
    (``expert_active``) instead of every expert: memory follows ``total``,
    compute follows the active parameters.
    """

    total: int
    embedding: int  # token and position embedding tables
    head: int  # output projection weights (LM head or classifier), tied or not
    head_tied: bool
    non_embedding: int  # total - embedding tables (tied head excluded with them)
    per_layer: int  # parameters of one transformer block
    num_layers: int
    expert: int = 0  # routed experts' weights, all of them (0: a dense model)
    expert_active: int = 0  # the routed experts' weights one token uses (top-k of them)

    @property
    def active(self) -> int:
        """Parameters one token's forward pass touches: ``total`` less the unrouted experts."""
        return self.total - self.expert + self.expert_active

    @property
    def flops_params(self) -> int:
        dense = self.non_embedding - self.expert + self.expert_active
        return dense + (self.head if self.head_tied else 0)

    def to_dict(self) -> dict[str, int | bool]:
        return {**asdict(self), "flops_params": self.flops_params, "active": self.active}


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
    expert = expert_active = 0
    top_k = getattr(model.config, "num_experts_per_tok", 0)
    for module in model.modules():
        if type(module).__name__.endswith("Experts") and hasattr(module, "num_experts"):
            own = sum(_numel(p) for p in module.parameters())
            expert += own
            expert_active += active_expert_params(own, module.num_experts, top_k)
    return ParamCounts(
        total=total,
        embedding=embedding,
        head=head,
        head_tied=head_tied,
        non_embedding=total - embedding,
        per_layer=per_layer,
        num_layers=len(layers),
        expert=expert,
        expert_active=expert_active,
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
