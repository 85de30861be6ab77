"""Seeded random batches for every task.

Every step's *global* batch (micro-batch × data-parallel ranks samples) is drawn
from one seeded stream and each data-parallel rank takes its slice. So the data
of a step depends on the seed and the global batch size only: a 2-rank
data-parallel case trains on exactly what a 1-rank case with twice the
micro-batch trains on, which makes loss parity across layouts a real check.
Ranks of one tensor-parallel group share a data-parallel index and so see
identical batches, which AutoTP requires.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

MASK_FRACTION = 0.15  # BERT's masking rate


def synthetic_batches(
    task: str,
    vocab_size: int,
    seq_len: int,
    micro_batch: int,
    count: int,
    seed: int,
    dp_rank: int,
    dp_size: int = 1,
    num_labels: int = 2,
) -> list[dict[str, torch.Tensor]]:
    """``count`` batches for one data-parallel rank, generated up front on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    rows = slice(dp_rank * micro_batch, (dp_rank + 1) * micro_batch)
    batches = []
    for _ in range(count):
        # id 0 is the pad token: classification heads of decoder models look for the last non-pad token
        ids = torch.randint(1, vocab_size, (micro_batch * dp_size, seq_len), generator=gen)
        whole = make_batch(task, ids, vocab_size, gen, num_labels)
        batches.append({k: v[rows].clone() for k, v in whole.items()})
    return batches


def make_batch(
    task: str, ids: torch.Tensor, vocab_size: int, gen: torch.Generator, num_labels: int
) -> dict[str, torch.Tensor]:
    """Inputs and labels of ``task`` for a block of token ids."""
    if task == "causal-lm":
        return {"input_ids": ids, "labels": ids.clone()}
    if task == "masked-lm":
        masked = torch.rand(ids.shape, generator=gen) < MASK_FRACTION
        masked[:, 0] |= ~masked.any(dim=1)  # at least one target per row keeps the loss defined
        labels = torch.where(masked, ids, torch.full_like(ids, -100))
        inputs = torch.where(
            masked, torch.full_like(ids, vocab_size - 1), ids
        )  # last id plays [MASK]
        return {"input_ids": inputs, "labels": labels}
    if task == "sequence-classification":
        labels = torch.randint(0, num_labels, (ids.shape[0],), generator=gen)
        return {"input_ids": ids, "labels": labels}
    raise ValueError(f"unknown task {task!r}")


def cycle(batches: Sequence[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from batches
