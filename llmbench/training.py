"""The model, data and single optimizer step of a case, as the worker runs them."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from llmbench.data.synthetic import cycle, synthetic_batches
from llmbench.models import build_model, hf_config
from llmbench.scenario import CaseSpec

StepFn = Callable[[], tuple[torch.Tensor, float]]


class Unsupported(Exception):
    """The case asks for something this model or machine cannot do; not a crash."""


def build_training_model(spec: CaseSpec):
    """The task model with random weights, always built on the CPU from the seeded CPU RNG.

    Building on the host makes the initial weights identical for every ZeRO
    stage, rank count and device, which is what makes loss-parity checks
    meaningful; DeepSpeed then moves (or, for ZeRO-3, partitions) the weights
    onto the accelerator. Building under ``deepspeed.zero.Init`` instead skips
    transformers' weight initialisation (losses start near 80 instead of
    ln(vocab) with transformers 5 / deepspeed 0.19), so it is not used.
    """
    config = hf_config(
        spec.model.family,
        spec.dims(),
        spec.task,
        spec.training.num_labels,
        spec.model.attn_implementation,
    )
    model = build_model(config, spec.task, "cpu")
    ckpt = spec.deepspeed.activation_checkpointing
    if ckpt == "full":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif ckpt == "selective":
        raise Unsupported(
            f"selective activation checkpointing is not implemented for {spec.model.family}"
        )
    return model


def build_batches(
    spec: CaseSpec, micro_batch: int, count: int, dp_rank: int
) -> list[dict[str, torch.Tensor]]:
    dims = spec.dims()
    return synthetic_batches(
        spec.task,
        dims.vocab_size,
        spec.training.seq_len,
        micro_batch,
        count,
        seed=spec.training.seed,
        dp_rank=dp_rank,
        num_labels=spec.training.num_labels,
    )


def train_step(spec: CaseSpec, engine, batches: list[dict[str, torch.Tensor]]) -> StepFn:
    """One optimizer step (``grad_accum`` micro-batches); returns (loss, data seconds)."""
    source = cycle(batches)
    device = engine.device
    accum = spec.training.grad_accum

    def step() -> tuple[torch.Tensor, float]:
        data_s = 0.0
        losses = []
        for _ in range(accum):
            t0 = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) for k, v in next(source).items()}
            data_s += time.perf_counter() - t0
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            losses.append(loss.detach())
        return (losses[0] if accum == 1 else torch.stack(losses).mean()), data_s

    return step
