"""Models built with seeded weights that are the same in every layout, partitioned under ZeRO-3 or whole.

transformers draws a model's initial weights from the global RNG, module
after module, so the numbers a weight gets depend on every draw made before
it. A model built whole (ZeRO 0-2, tensor and pipeline parallel) and one
built partitioned under ``deepspeed.zero.Init`` would draw differently:
construction-time draws are skipped there and each rank holds only its
partition of a weight (building under ``zero.Init`` and initialising nothing
afterwards is what once gave a first loss of 84 instead of ln(1024) ≈ 6.9: the
modules kept torch's construction-time init, N(0, 1) embeddings).

So every layout builds the model without initialising it, then initialises
each module with the family's own ``_init_weights`` (transformers' scheme:
normal(0, initializer_range) for linear and embedding weights, zero biases and
padding rows, ones for norms, GPT-2's depth-scaled residual projections, RoPE
buffers) drawn on the CPU from a generator seeded by (seed, the module's
qualified name). A weight's values then depend on the model, its name and the
seed only: not on the ZeRO stage, the rank count or the device, which is what
keeps loss parity a real check. Modules are visited children first and
weights tied afterwards, as transformers does, so a tied LM head holds the
embedding's draw. Under ZeRO-3 every rank draws a module's weights whole and
keeps its own slice (``_LocalPartitions``).
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
    with _large_blocks_mapped():
        with (
            no_init_weights(),
            prevent_arange_dtype_change(),
            deepspeed.zero.Init(config_dict_or_path=zero3_config),
        ):
            model = build_model(config, task, device=None)
        initialise(model, seed)
    return model


BUILD_MMAP_THRESHOLD = 2**20
"""glibc's mmap threshold while a ZeRO-3 model is built: blocks of 1 MiB and up are mapped."""
AFTER_BUILD_MMAP_THRESHOLD = 32 * 2**20
"""The threshold left for training: the ceiling glibc's own sliding threshold rises to."""
_M_MMAP_THRESHOLD = -3  # malloc.h
_fixed_threshold: int | None = None


@contextlib.contextmanager
def _large_blocks_mapped() -> Iterator[None]:
    """Keep whole-size blocks freed while a ZeRO-3 model is built out of the malloc heap.

    Building partitioned allocates each parameter whole, then its partition,
    then frees the whole one (DeepSpeed's ``zero.Init``, then the seeded
    init). glibc serves blocks below its sliding mmap threshold (up to 32 MiB)
    from the heap, where freed whole blocks stay as holes between the
    partitions allocated meanwhile: a 1.1 GB Llama on 4 ranks kept 505 MB per
    rank after construction for a 286 MB share. Mapping every block of 1 MiB
    and up returns each freed block at once (349 MB on every rank).

    glibc cannot give the sliding rule back once a threshold is set, so
    training then runs with the rule's ceiling, fixed;
    :func:`fixed_mmap_threshold` says so and the worker records it. A process
    whose memory is capped (:func:`map_large_blocks`) keeps its 1 MiB.
    """
    global _fixed_threshold
    libc = None if _fixed_threshold == BUILD_MMAP_THRESHOLD else _glibc()
    if libc is None or not libc.mallopt(_M_MMAP_THRESHOLD, BUILD_MMAP_THRESHOLD):
        yield
        return
    _fixed_threshold = AFTER_BUILD_MMAP_THRESHOLD
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, AFTER_BUILD_MMAP_THRESHOLD)


def map_large_blocks() -> None:
    """Map every block of 1 MiB and up for the rest of this process (CPU ranks under a memory cap).

    A cap on a CPU rank stands in for a smaller device, whose allocator hands
    freed memory straight back to its pool. glibc instead keeps blocks below its
    sliding threshold (up to 32 MiB) as heap holes that still count against the
    cap: ZeRO-3's gathered parameters and gradient buckets are freed and
    allocated again every layer. scenarios/zero3_cap.yaml (12 ranks of a 1.1 GB
    Llama, 1 GiB each) is ``oom`` in its first step with glibc's 32 MiB and
    trains with 1 MiB. Step times of such a case pay page faults for large
    blocks; the worker records the threshold.
    """
    global _fixed_threshold
    libc = _glibc()
    if libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, BUILD_MMAP_THRESHOLD):
        _fixed_threshold = BUILD_MMAP_THRESHOLD


def fixed_mmap_threshold() -> int | None:
    """glibc's mmap threshold fixed in this process (partitioned build, memory cap); None: glibc's own rule."""
    return _fixed_threshold


def _glibc():
    import ctypes
    import platform

    return ctypes.CDLL(None) if platform.libc_ver()[0] == "glibc" else None


def initialise(model, seed: int) -> None:
    """Initialise every module from its own seeded draw, then tie the weights that are tied."""
    from transformers import PreTrainedModel

    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        held = _held_for(model)
        _visit(model, model._init_weights, "", seed, PreTrainedModel, held)
        held.release(list(model.parameters(recurse=False)))
    model.tie_weights()


def _visit(module, init_fn, name: str, seed: int, base: type, held: _Held) -> None:
    """Children first (transformers' order), each sub-model with its own ``_init_weights``.

    ``_init_weights`` may also write a direct child's weights (GPT-2 rescales
    ``c_proj`` at the attention and MLP level), so a module's own parameters
    stay held until its parent has run too; then they are released.
    """
    children = [c for c in module.children() if not isinstance(c, base)]
    for child_name, child in module.named_children():
        child_init = child._init_weights if isinstance(child, base) else init_fn
        full = f"{name}.{child_name}" if name else child_name
        _visit(child, child_init, full, seed, base, held)
    own = list(module.parameters(recurse=False))
    below = [p for child in children for p in child.parameters(recurse=False)]
    held.hold(own + below)
    torch.random.default_generator.manual_seed(module_seed(seed, name))
    init_fn(module)
    owned = {id(p) for p in own}
    held.release([p for p in below if id(p) not in owned])


def module_seed(seed: int, name: str) -> int:
    """A 64-bit seed from the case seed and a module's qualified name, stable across processes."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little")


class _Held:
    """Parameters a module's init rule may write, whole on the host while it runs.

    A model built whole needs nothing: its parameters are already whole CPU
    tensors (``_Held`` itself). The partitioned strategies below make a ZeRO-3
    parameter whole for as long as its module (and its parent) initialise it.
    """

    def hold(self, params: list[torch.nn.Parameter]) -> None:
        """Make ``params`` whole host tensors that ``_init_weights`` can write."""

    def release(self, params: list[torch.nn.Parameter]) -> None:
        """Keep the values written into ``params``; they need not stay whole any longer."""


class _LocalPartitions(_Held):
    """ZeRO-3 without communication: every rank draws the whole parameter and keeps its own slice.

    The draw is seeded by the module's name, so every rank computes the same
    whole tensor; each copies the slice DeepSpeed assigned it (the flattened
    parameter padded to world-size chunks of ``partition_numel()``, chunk
    ``rank in the parameter's partition group``, as ``Init._partition_param``
    cuts it) into ``ds_tensor`` and drops the rest. A rank never holds more
    than the parameters of one module and its direct children at once, and
    nothing crosses the network, where gathering each module and broadcasting
    rank 0's copy did (scenarios/zero3_scale.yaml, 4 CPU ranks: 461 MB of
    construction growth per rank instead of up to 967 MB; the figures and
    commands are in the README). What remains of init_s is DeepSpeed's own:
    ``zero.Init`` broadcasts every parameter from rank 0 as it is constructed.
    """

    def __init__(self) -> None:
        self._whole: dict[int, torch.Tensor] = {}
        self._done: set[int] = set()

    def hold(self, params: list[torch.nn.Parameter]) -> None:
        for p in params:
            if id(p) in self._whole:
                continue
            partition = p.data
            if id(p) in self._done:  # a tied weight another module already wrote
                p.data = _gathered_copy(p)
            else:  # zeros: the same start on every rank for a rule that leaves values alone
                p.data = torch.zeros(p.ds_shape, dtype=p.dtype)
            self._whole[id(p)] = partition

    def release(self, params: list[torch.nn.Parameter]) -> None:
        import torch.distributed as dist

        for p in params:
            if id(p) not in self._whole:
                continue
            partition = self._whole.pop(id(p))
            size = p.ds_tensor.ds_numel
            start = size * dist.get_rank(group=p.ds_process_group)
            count = min(size, p.ds_numel - start)
            if count > 0:
                p.ds_tensor.narrow(0, 0, count).copy_(p.data.view(-1).narrow(0, start, count))
            p.data = partition
            self._done.add(id(p))


class _GatheredPartitions(_Held):
    """ZeRO-3 with partitions on NVMe: DeepSpeed gathers each module and writes rank 0's values back.

    NVMe partitions are swapped out between uses, so they are only reachable
    through DeepSpeed's gather and re-partition. Every rank draws the same
    numbers on the CPU (the CPU and CUDA generators differ for one seed).
    """

    def __init__(self) -> None:
        self._gathers: dict[int, tuple[contextlib.ExitStack, set[int]]] = {}

    def hold(self, params: list[torch.nn.Parameter]) -> None:
        import deepspeed

        fresh = [p for p in {id(p): p for p in params}.values() if id(p) not in self._gathers]
        if not fresh:
            return
        stack = contextlib.ExitStack()
        stack.enter_context(deepspeed.zero.GatheredParameters(fresh, modifier_rank=0))
        stack.enter_context(_drawn_on_cpu(fresh))
        members = {id(p) for p in fresh}
        for p in fresh:
            self._gathers[id(p)] = (stack, members)

    def release(self, params: list[torch.nn.Parameter]) -> None:
        """Re-partition a gather once none of its parameters is held (every rank in the same order)."""
        for p in params:
            stack, members = self._gathers.pop(id(p), (None, set()))
            members.discard(id(p))
            if stack is not None and not members:
                stack.close()


def _held_for(model) -> _Held:
    params = list(model.parameters())
    if not any(hasattr(p, "ds_id") for p in params):
        return _Held()
    from deepspeed.runtime.zero.offload_config import OffloadDeviceEnum

    on_nvme = any(p.ds_tensor.final_location == OffloadDeviceEnum.nvme for p in params)
    return _GatheredPartitions() if on_nvme else _LocalPartitions()


def _gathered_copy(p: torch.nn.Parameter) -> torch.Tensor:
    """The whole current value of a partitioned parameter, on the host."""
    import deepspeed

    with deepspeed.zero.GatheredParameters([p]):
        return p.data.to("cpu", copy=True)


@contextlib.contextmanager
def _drawn_on_cpu(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Let the init draw into CPU tensors and copy them to where the weights live."""
    moved = [(p, p.data) for p in params if p.device.type != "cpu"]
    for p, data in moved:
        p.data = torch.empty_like(data, device="cpu")
    yield
    for p, data in moved:
        data.copy_(p.data)
        p.data = data
