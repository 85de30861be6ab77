"""The model, data and single optimizer step of a case, as the worker runs them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from llmbench.define.models import FAMILIES, ParamCounts, count_parameters, hf_config
from llmbench.define.schema import CaseSpec
from llmbench.errors import Unsupported
from llmbench.measure.data.synthetic import cycle, synthetic_batches
from llmbench.measure.weights import build_seeded

StepFn = Callable[[], tuple[torch.Tensor, float]]
SELECTIVE = "llmbench_selective_sdpa"


def _selective_sdpa(module, query, key, value, attention_mask, **kwargs):
    """SDPA attention whose core is recomputed in the backward pass.

    Selective recomputation (Korthikanti et al. 2022) stores the block's
    linear-layer activations but not the attention core's; this checkpoints
    exactly the call the model makes through transformers' attention interface.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def core(q, k, v, mask):
        return sdpa_attention_forward(module, q, k, v, mask, **kwargs)[0]

    return checkpoint(core, query, key, value, attention_mask, use_reentrant=False), None


def build_training_model(
    spec: CaseSpec, ds_config: dict | None = None
) -> tuple[torch.nn.Module, ParamCounts]:
    """The module DeepSpeed trains (the model, or this rank's pipeline stages) and the whole model's counts.

    Weights are seeded per module (weights.py), so they are identical for every
    ZeRO stage, rank count, parallel layout and device, which is what makes
    loss-parity checks meaningful. Given the case's DeepSpeed config, a ZeRO-3
    case without tensor or pipeline parallelism is built partitioned: no rank
    ever holds the whole model, so a model that fits only when sharded is not
    recorded as ``oom``. Every other layout is built whole on the host (AutoTP
    and the pipeline split start from the whole model) and DeepSpeed then
    moves, shards or partitions it.
    """
    par, ckpt = spec.parallel, spec.deepspeed.activation_checkpointing
    family = FAMILIES[spec.model.family]
    if par.tp > 1 and par.pp > 1:
        raise Unsupported("AutoTP and pipeline parallelism together are not supported")
    if par.pp > 1 and not family.pipeline:
        raise Unsupported(f"llmbench has no pipeline split for {family.name}")
    if par.tp > 1 and family.moe_block:
        # dense families go to DeepSpeed, whose AutoTP decides (it refuses GPT-2 and BERT in
        # its own words); fused 3-D expert tensors were never tried under AutoTP here
        raise Unsupported(f"llmbench does not run DeepSpeed AutoTP on {family.name} (MoE) models")
    config = hf_config(
        spec.model.family,
        spec.dims(),
        spec.task,
        spec.training.num_labels,
        spec.model.attn_implementation,
        spec.model.dropout,
        source=spec.model.config,
    )
    partitioned = ds_config is not None and spec.deepspeed.zero_stage == 3 and par.tp == par.pp == 1
    model = build_seeded(config, spec.task, spec.training.seed, ds_config if partitioned else None)
    counts = count_parameters(model)
    if spec.deepspeed.zero_stage == 3 and family.moe_block:
        fetch_moe_blocks_whole(model, family.moe_block)
    if ckpt == "selective":
        if spec.model.attn_implementation != "sdpa":
            raise Unsupported(
                "selective recomputation wraps SDPA attention; use model.attn_implementation: sdpa"
            )
        from transformers import AttentionInterface

        AttentionInterface.register(SELECTIVE, _selective_sdpa)
        model.config._attn_implementation = SELECTIVE
    if par.pp > 1:
        from llmbench.measure.pipeline import pipeline_module

        every = 1 if ckpt == "full" else 0
        return pipeline_module(
            model, par.pp, spec.task, spec.model.attn_implementation, every
        ), counts
    if ckpt == "full":
        enable_full_recompute(model)
    return model, counts


def fetch_moe_blocks_whole(model, block_class: str) -> None:
    """Make ZeRO-3 gather each sparse MoE block as one leaf module.

    ZeRO-3 fetches a module's parameters when its forward starts and
    prefetches by the module order it traced on the first step. A router picks
    a different set of experts on every step and rank, so that trace goes stale
    and ranks can wait on different gathers; DeepSpeed's answer is to treat the
    whole block (router and experts) as one leaf whose parameters are gathered
    together before it runs.
    """
    from deepspeed.utils import set_z3_leaf_modules

    classes = {type(m) for m in model.modules() if type(m).__name__ == block_class}
    if classes:
        set_z3_leaf_modules(model, list(classes))


def enable_full_recompute(model) -> None:
    """Checkpoint every block (non-reentrant), under the name this transformers version uses."""
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.24
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def build_batches(
    spec: CaseSpec,
    micro_batch: int,
    count: int,
    dp_rank: int,
    dp_size: int,
    data_dir: str | None = None,
) -> Sequence[dict[str, torch.Tensor]]:
    """This rank's batches: synthetic ones generated now, or real text read lazily per step."""
    if spec.training.data == "text":
        from llmbench.measure.data.corpus import PreparedCorpus
        from llmbench.measure.data.text import text_batches

        if data_dir is None:
            raise ValueError("a data: text case needs the prepared corpus directory")
        prepared = PreparedCorpus.load(data_dir)
        tr = spec.training
        return text_batches(
            prepared,
            spec.task,
            tr.seq_len,
            micro_batch,
            count,
            tr.seed,
            dp_rank,
            dp_size,
            tr.num_labels,
        )
    return synthetic_batches(
        spec.task,
        spec.dims().vocab_size,
        spec.training.seq_len,
        micro_batch,
        count,
        seed=spec.training.seed,
        dp_rank=dp_rank,
        dp_size=dp_size,
        num_labels=spec.training.num_labels,
    )


class _TimedSource:
    """Yields batches and adds the time spent producing each one to ``seconds``."""

    def __init__(
        self, source: Iterator[dict[str, torch.Tensor]], device: torch.device, as_pair: bool
    ):
        self.source = source
        self.device = device
        self.as_pair = as_pair
        self.seconds = 0.0

    def __iter__(self) -> _TimedSource:
        return self

    def __next__(self):
        t0 = time.perf_counter()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in next(self.source).items()}
        item = (batch["input_ids"], batch["labels"]) if self.as_pair else batch
        self.seconds += time.perf_counter() - t0
        return item


def train_step(spec: CaseSpec, engine, batches: Sequence[dict[str, torch.Tensor]]) -> StepFn:
    """One optimizer step (``grad_accum`` micro-batches); returns (loss, data seconds)."""
    pipelined = spec.parallel.pp > 1
    source = _TimedSource(cycle(batches), engine.device, as_pair=pipelined)
    accum = spec.training.grad_accum

    def pipeline_step() -> tuple[torch.Tensor, float]:
        before = source.seconds
        loss = engine.train_batch(data_iter=source)  # runs all grad_accum micro-batches
        return loss.detach(), source.seconds - before

    def step() -> tuple[torch.Tensor, float]:
        before = source.seconds
        losses = []
        for _ in range(accum):
            loss = engine(**next(source)).loss
            engine.backward(loss)
            engine.step()
            losses.append(loss.detach())
        return (losses[0] if accum == 1 else torch.stack(losses).mean()), source.seconds - before

    return pipeline_step if pipelined else step
