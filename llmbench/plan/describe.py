"""The model being planned: a preset, explicit dimensions, or a transformers config on disk.

Counts come from each family's anatomy (``anatomy.py``): the tensors
transformers builds, written down as data and checked against the model built
on the meta device for every preset (``tests/test_plan_anatomy.py``), so the
planner sees exactly what a run would train - tied weights counted once, the
real head, GQA-shaped attention - without importing torch or transformers. A
config file is read through transformers once (its defaults fill what the
file leaves out); its dimensions are then cached by the file's content hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmbench.define.models import (
    DIM_FIELDS,
    FAMILIES,
    Dims,
    ParamCounts,
    dims_from_config,
    parse_model_name,
    resolve_dims,
)
from llmbench.errors import UserError, did_you_mean
from llmbench.plan.anatomy import counted

# transformers ``model_type`` -> llmbench family, for configs read from disk
_MODEL_TYPES = {"gpt2": "gpt2", "llama": "llama", "distilbert": "distilbert", "bert": "bert"}


@dataclass(frozen=True)
class ModelDescription:
    """What the memory and throughput models need to know about one model."""

    name: str
    family: str
    task: str
    dims: Dims
    counts: ParamCounts
    largest_module_params: int
    """Parameters owned directly by the largest single module (DeepSpeed's "largest layer")."""
    tensor_numels: tuple[int, ...]
    """Element count of every distinct parameter tensor, largest first."""
    source: str

    @property
    def total_params(self) -> int:
        return self.counts.total

    @property
    def embedding_params(self) -> int:
        return self.counts.embedding

    @property
    def block_params(self) -> int:
        """All transformer blocks together."""
        return self.counts.per_layer * self.counts.num_layers

    @property
    def head_params(self) -> int:
        """Output head weights held apart from the embedding (0 when tied)."""
        return 0 if self.counts.head_tied else self.counts.head

    @property
    def other_params(self) -> int:
        """Final norms, pooler, biases outside the blocks: whatever is left."""
        return self.total_params - self.embedding_params - self.block_params - self.head_params

    def persistent_numel(self, threshold: int) -> int:
        """Elements in tensors ZeRO-3 keeps whole on every rank (``numel <= threshold``).

        DeepSpeed's ``stage3_param_persistence_threshold`` (default 1e5) spares
        small tensors the gather; on small models that is most of them.
        """
        return sum(n for n in self.tensor_numels if n <= threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "task": self.task,
            "source": self.source,
            "dims": {k: getattr(self.dims, k) for k in DIM_FIELDS},
            "params": self.counts.to_dict(),
            "largest_module_params": self.largest_module_params,
        }


@lru_cache(maxsize=64)
def _describe(family: str, dims: Dims, task: str, name: str, source: str) -> ModelDescription:
    c = counted(family, dims, task)
    return ModelDescription(
        name=name,
        family=family,
        task=task,
        dims=dims,
        counts=c.counts,
        largest_module_params=c.largest_module_params,
        tensor_numels=c.tensor_numels,
        source=source,
    )


def describe_model(
    name: str | None = None,
    config_path: str | Path | None = None,
    overrides: dict[str, int] | None = None,
    task: str | None = None,
) -> ModelDescription:
    """Describe a preset (``llama-7b``) or a transformers config file/directory, with overrides."""
    if (name is None) == (config_path is None):
        raise UserError("give either a model name (e.g. llama-7b) or a config path", key="model")
    if config_path is not None:
        family, dims, source = _from_config(Path(config_path))
        label = Path(config_path).stem if Path(config_path).is_file() else Path(config_path).name
    else:
        family, size = _parse_name(str(name))
        dims = resolve_dims(family, size)
        label, source = f"{family}-{size}", f"preset {family}-{size}"
    unknown = set(overrides or {}) - set(DIM_FIELDS)
    if unknown:
        key = sorted(unknown)[0]
        raise UserError(f"not a model dimension{did_you_mean(key, DIM_FIELDS)}", key=key)
    if overrides:
        dims = replace(dims, **overrides)
        label += "*"
        source += " with " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    if dims.hidden_size % dims.num_heads or dims.num_heads % dims.kv_heads:
        raise UserError(
            f"hidden_size {dims.hidden_size}, num_heads {dims.num_heads} and num_kv_heads "
            f"{dims.kv_heads} do not divide evenly",
            key="model",
        )
    fam = FAMILIES[family]
    task = task or fam.default_task
    if task not in fam.tasks:
        raise UserError(f"{family} does not support {task!r}; choose from {', '.join(fam.tasks)}")
    return _describe(family, dims, task, label, source)


def _parse_name(name: str) -> tuple[str, str]:
    try:
        return parse_model_name(name)
    except KeyError:
        names = [f"{f}-{s}" for f, fam in FAMILIES.items() for s in fam.presets]
        raise UserError(
            f"unknown model {name!r}{did_you_mean(name, names)}; presets: {', '.join(names)}",
            key="model",
        ) from None


def cache_dir() -> Path:
    """Where config dimensions are cached (``LLMBENCH_CACHE`` or ``~/.cache/llmbench``)."""
    root = os.environ.get("LLMBENCH_CACHE") or Path.home() / ".cache" / "llmbench"
    return Path(root) / "plan-configs"


def _from_config(path: Path) -> tuple[str, Dims, str]:
    """Family and dimensions from a transformers ``config.json`` (or a folder holding one)."""
    file = path / "config.json" if path.is_dir() else path
    try:
        data = file.read_bytes()
        raw = json.loads(data.decode("utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror or exc}", where=str(file)) from None
    except UnicodeDecodeError:
        raise UserError(
            "not a text file (a transformers config.json is JSON)", where=str(file)
        ) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"invalid JSON: {exc.msg}", where=f"{file}:{exc.lineno}") from None
    if not isinstance(raw, dict):
        raise UserError("a transformers config is a JSON object", where=str(file))
    model_type = raw.get("model_type")
    family = _MODEL_TYPES.get(str(model_type))
    if family is None:
        raise UserError(
            f"model_type {model_type!r} is not supported; llmbench plans {', '.join(_MODEL_TYPES)}",
            where=str(file),
            key="model_type",
        )
    source = f"transformers config {file}"
    cached = cache_dir() / f"{hashlib.sha256(data).hexdigest()}.json"
    try:
        return family, Dims(**json.loads(cached.read_text())), source
    except (OSError, ValueError, TypeError):
        pass  # not cached yet (or unreadable): read it through transformers
    import transformers

    try:
        dims = dims_from_config(family, transformers.AutoConfig.for_model(**raw))
        for name in DIM_FIELDS:
            value = getattr(dims, name)
            if isinstance(value, bool) or value is None:
                continue
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
    except Exception as exc:  # transformers' own validators raise their own types
        reason = str(exc).strip().splitlines()[-1].strip()
        raise UserError(f"not a usable {model_type} config: {reason}", where=str(file)) from None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(asdict(dims)))
    except OSError:
        pass  # a read-only home only costs the next run the transformers import
    return family, dims, source
