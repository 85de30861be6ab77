"""The model being planned: a preset, explicit dimensions, or a transformers config on disk.

Counts come from each family's anatomy (``anatomy.py``): the tensors
transformers builds, written down as data and checked against the model built
on the meta device for every preset (``tests/test_plan_anatomy.py``), so the
planner sees exactly what a run would train - tied weights counted once, the
real head, GQA-shaped attention - without importing torch or transformers. A
config (a file, a folder, or a Hub id in the local Hugging Face cache) is read
by the same json-only reader that validates ``model.config`` in a scenario, so
a plan and a sweep of one config see the same dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmbench.define.models import (
    DIM_FIELDS,
    FAMILIES,
    Dims,
    ModelConfigError,
    ParamCounts,
    config_dims,
    parse_model_name,
    resolve_dims,
)
from llmbench.errors import UserError, did_you_mean
from llmbench.plan.anatomy import counted


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
    """Describe a preset (``llama-7b``) or a transformers config (file, folder, cached Hub id), with overrides."""
    if (name is None) == (config_path is None):
        raise UserError("give either a model name (e.g. llama-7b) or a config path", key="model")
    if config_path is not None:
        try:
            family, dims = config_dims(str(config_path))
        except ModelConfigError as exc:
            raise UserError(str(exc), key="model-config") from None
        path = Path(config_path)
        label = path.stem if path.is_file() else path.name
        source = f"transformers config {config_path}"
    else:
        family, size = _parse_name(str(name))
        dims = resolve_dims(family, size)
        label, source = f"{family}-{size}", f"preset {family}-{size}"
    config = None if config_path is None else str(config_path)
    unknown = set(overrides or {}) - set(DIM_FIELDS)
    if unknown:
        key = sorted(unknown)[0]
        raise UserError(f"not a model dimension{did_you_mean(key, DIM_FIELDS)}", key=key)
    if overrides:
        # the scenario's rule: an overridden hidden size brings the MLP width its architecture derives
        dims = resolve_dims(family, "config" if config else size, overrides, config)
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
