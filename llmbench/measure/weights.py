"""Models built with seeded weights that are the same in every layout, partitioned under ZeRO-3 or whole.

transformers draws a model's initial weights from the global RNG, module
after module, so the numbers a weight gets depend on every draw made before
it. A model built whole (ZeRO 0-2, tensor and pipeline parallel) and one
built partitioned under ``deepspeed.zero.Init`` would draw differently:
construction-time draws are skipped there and weights are only reachable
module by module, gathered (building under ``zero.Init`` without gathering is
what once gave a first loss of 84 instead of ln(1024) ≈ 6.9: the modules kept
torch's construction-time init, N(0, 1) embeddings).

So every layout builds the model without initialising it, then initialises
each module with the family's own ``_init_weights`` (transformers' scheme:
normal(0, initializer_range) for linear and embedding weights, zero biases and
padding rows, ones for norms, GPT-2's depth-scaled residual projections, RoPE
buffers) drawn on the CPU from a generator seeded by (seed, the module's
qualified name). A weight's values then depend on the model, its name and the
seed only: not on the ZeRO stage, the rank count or the device, which is what
keeps loss parity a real check. Modules are visited children first and
weights tied afterwards, as transformers does, so a tied LM head holds the
embedding's draw.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import torch

from llmbench.define.models import build_model


def build_seeded(config, task: str, seed: int, zero3_config: dict[str, Any] | None = None):
    """The task model with seeded weights; partitioned while it is built when ``zero3_config`` is given.

    With a ZeRO-3 DeepSpeed config each parameter is partitioned across the
    ranks as soon as its module is constructed (``deepspeed.zero.Init``, in the
    config's dtype, on its offload device if it has one), so no rank ever holds
    more than its share plus the module being initialised.
    """
    from transformers.initialization import no_init_weights

    if zero3_config is None:
        with no_init_weights():
            model = build_model(config, task, "cpu")
        initialise(model, seed)
        return model
    import deepspeed
    from transformers.integrations.deepspeed import prevent_arange_dtype_change

    # prevent_arange_dtype_change keeps RoPE's integer arange out of zero.Init's dtype cast
    with (
        no_init_weights(),
        prevent_arange_dtype_change(),
        deepspeed.zero.Init(config_dict_or_path=zero3_config),
    ):
        model = build_model(config, task, device=None)
    initialise(model, seed)
    return model


def initialise(model, seed: int) -> None:
    """Initialise every module from its own seeded draw, then tie the weights that are tied."""
    from transformers import PreTrainedModel

    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        _visit(model, model._init_weights, "", seed, PreTrainedModel)
    model.tie_weights()


def _visit(module, init_fn, name: str, seed: int, base: type) -> None:
    """Children first (transformers' order), each sub-model with its own ``_init_weights``."""
    for child_name, child in module.named_children():
        child_init = child._init_weights if isinstance(child, base) else init_fn
        _visit(child, child_init, f"{name}.{child_name}" if name else child_name, seed, base)
    # _init_weights may also write a direct child's weights (GPT-2 rescales c_proj)
    owned = list(module.parameters(recurse=False))
    for child in module.children():
        if not isinstance(child, base):
            owned.extend(child.parameters(recurse=False))
    params = list({id(p): p for p in owned}.values())
    with _gathered(params), _drawn_on_cpu(params):
        torch.random.default_generator.manual_seed(module_seed(seed, name))
        init_fn(module)


def module_seed(seed: int, name: str) -> int:
    """A 64-bit seed from the case seed and a module's qualified name, stable across processes."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little")


def _gathered(params: list[torch.nn.Parameter]):
    """ZeRO-3: the whole parameters on every rank; rank 0's values are kept when they are re-partitioned.

    Every rank draws the same numbers (and initialises its own copy of the
    module's buffers, which ZeRO-3 does not partition); rank 0's are broadcast.
    """
    if not any(hasattr(p, "ds_id") for p in params):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0)


@contextlib.contextmanager
def _drawn_on_cpu(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Let the init draw into CPU tensors and copy them to where the weights live.

    The CPU and CUDA generators give different numbers for one seed; drawing on
    the CPU keeps a model built on a GPU (ZeRO-3) equal to one built on the host.
    """
    moved = [(p, p.data) for p in params if p.device.type != "cpu"]
    for p, data in moved:
        p.data = torch.empty_like(data, device="cpu")
    yield
    for p, data in moved:
        data.copy_(p.data)
        p.data = data
