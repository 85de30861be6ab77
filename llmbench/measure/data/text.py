"""Batches of real text for one rank: the ``data: text`` counterpart of :mod:`llmbench.measure.data.synthetic`.

The parent prepared the corpus (:mod:`llmbench.measure.data.corpus`); a rank
memory-maps its token array and builds batch *i* only when the training loop
asks for it, so reading the corpus is part of the data time the worker
measures per step. Keys and dtypes are those of the synthetic batches.

* Rows are ``seq_len`` consecutive tokens of the packed stream (documents
  joined by a separator, GPT-style packing). Encoder families (WordPiece)
  frame each row as ``[CLS] … [SEP]``, so a row holds ``seq_len - 2`` corpus tokens.
* **Sharding**: data-parallel rank *r* of *d* reads only tokens
  ``[r·N/d, (r+1)·N/d)`` of the N-token stream; ranks that share a dp rank
  (tensor-parallel peers) get identical batches.
* **Order**: the windows of a shard are visited as ``w = (a·k + b) mod n``
  for sample k, a seeded stride ``a`` coprime with the window count ``n``: a
  full pass over the shard before any window repeats, with no stored
  permutation.
* ``masked-lm``: 15 % of the non-special tokens (at least one per row) are
  replaced by ``[MASK]``; labels are -100 everywhere else.
* ``sequence-classification``: on a labelled (``label<TAB>text``) corpus each
  row is one line's text (truncated, padded with id 0, with an
  ``attention_mask``) and its label; lines are sharded like tokens. On free
  text the label of a row is **the id of its first corpus token modulo
  num_labels** — a rule the model can learn, so the loss falls as it would on
  a real task.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from llmbench.errors import UserError
from llmbench.measure.data.corpus import PreparedCorpus
from llmbench.measure.data.documents import KEY

if TYPE_CHECKING:
    import torch


def text_batches(
    prepared: PreparedCorpus,
    task: str,
    seq_len: int,
    micro_batch: int,
    count: int,
    seed: int,
    dp_rank: int,
    dp_size: int,
    num_labels: int = 2,
) -> TextBatches:
    """``count`` batches for data-parallel rank ``dp_rank`` of ``dp_size``, read lazily.

    The result is a sequence: ``batches[i]`` reads batch *i* from the memory-mapped
    token array when it is indexed, and is the same every time.
    """
    return TextBatches(
        prepared, task, seq_len, micro_batch, count, seed, dp_rank, dp_size, num_labels
    )


class TextBatches(Sequence[dict[str, "torch.Tensor"]]):
    """One rank's batches over a prepared corpus; see the module docstring for the layout."""

    def __init__(
        self,
        prepared: PreparedCorpus,
        task: str,
        seq_len: int,
        micro_batch: int,
        count: int,
        seed: int,
        dp_rank: int,
        dp_size: int,
        num_labels: int,
    ):
        if task not in ("causal-lm", "masked-lm", "sequence-classification"):
            raise ValueError(f"unknown task {task!r}")
        if task == "masked-lm" and prepared.mask_id is None:
            raise ValueError(f"a {prepared.tokenizer_kind} tokenizer has no [MASK] token")
        from llmbench.measure.data.synthetic import MASK_FRACTION  # imports torch: ranks only

        self._mask_fraction = MASK_FRACTION
        self._task = task
        self._specials = prepared.specials
        self._seq_len, self._micro_batch, self._count = seq_len, micro_batch, count
        self._seed, self._dp_rank, self._num_labels = seed, dp_rank, num_labels
        self._framed = prepared.cls_id is not None  # [CLS] … [SEP] around every row
        self._content = seq_len - (2 if self._framed else 0)
        self._tokens = prepared.tokens()
        self._by_line = task == "sequence-classification" and prepared.labelled
        if self._by_line:
            if prepared.num_classes and prepared.num_classes > num_labels:
                raise UserError(
                    f"the corpus has {prepared.num_classes} labels but training.num_labels is {num_labels}",
                    where=prepared.source,
                    key=KEY,
                )
            self._documents, self._labels = prepared.documents(), prepared.labels()
            total, unit = prepared.num_documents, 1
        else:
            total, unit = prepared.num_tokens, self._content
        if self._content < 1 or total // dp_size < unit:
            raise UserError(
                f"the corpus ({prepared.num_tokens} tokens, {prepared.num_documents} documents) is "
                f"too small for {dp_size} data-parallel ranks at seq_len {seq_len}",
                where=prepared.source,
                key=KEY,
            )
        # rank r owns items [r·total/d, (r+1)·total/d): disjoint across data-parallel ranks
        self._first = dp_rank * total // dp_size
        self._items = ((dp_rank + 1) * total // dp_size - self._first) // unit
        self._unit = unit
        self._stride, self._offset = coprime_walk(self._items, seed)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:  # type: ignore[override]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(index)
        n = self._items
        samples = range(index * self._micro_batch, (index + 1) * self._micro_batch)
        items = np.array([(self._stride * (k % n) + self._offset) % n for k in samples])
        if self._by_line:
            return self._line_batch(items)
        ids = self._window_rows(items)
        if self._task == "causal-lm":
            return _tensors(input_ids=ids, labels=ids.copy())
        if self._task == "masked-lm":
            return self._masked(ids, index)
        first = ids[:, 1 if self._framed else 0]
        return _tensors(input_ids=ids, labels=first % self._num_labels)

    def _window_rows(self, items: np.ndarray) -> np.ndarray:
        starts = self._first + items * self._unit
        rows = self._tokens[starts[:, None] + np.arange(self._content)].astype(np.int64)
        if not self._framed:
            return rows
        ids = np.empty((len(items), self._seq_len), dtype=np.int64)
        ids[:, 0], ids[:, 1:-1], ids[:, -1] = self._specials.cls, rows, self._specials.separator
        return ids

    def _line_batch(self, items: np.ndarray) -> dict[str, torch.Tensor]:
        lines = self._first + items
        ids = np.full((len(lines), self._seq_len), self._specials.pad, dtype=np.int64)
        lead = 1 if self._framed else 0
        lengths = np.empty(len(lines), dtype=np.int64)
        for row, (start, end) in enumerate(self._documents[lines]):
            n = min(int(end - start), self._content)
            ids[row, lead : lead + n] = self._tokens[start : start + n]
            if self._framed:
                ids[row, 0], ids[row, n + 1] = self._specials.cls, self._specials.separator
            lengths[row] = n + 2 * lead
        attention = (np.arange(self._seq_len) < lengths[:, None]).astype(np.int64)
        labels = np.asarray(self._labels[lines], dtype=np.int64)
        return _tensors(input_ids=ids, attention_mask=attention, labels=labels)

    def _masked(self, ids: np.ndarray, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self._seed % 2**63, self._dp_rank, index])
        eligible = ~np.isin(ids, self._specials.all)
        masked = (rng.random(ids.shape) < self._mask_fraction) & eligible
        # at least one target per row keeps the loss defined
        empty = ~masked.any(axis=1) & eligible.any(axis=1)
        masked[empty, eligible[empty].argmax(axis=1)] = True
        labels = np.where(masked, ids, -100)
        return _tensors(input_ids=np.where(masked, self._specials.mask, ids), labels=labels)


def coprime_walk(n: int, seed: int) -> tuple[int, int]:
    """Stride and offset of a seeded walk ``k ↦ (stride·k + offset) mod n`` that visits all of range(n).

    The map is a bijection of ℤ/n exactly when gcd(stride, n) = 1.
    """
    rng = random.Random(seed * 1_000_003 + n)
    stride = 1
    if n > 1:
        stride = rng.randrange(1, n)
        while math.gcd(stride, n) != 1:
            stride = rng.randrange(1, n)
    return stride, rng.randrange(n)


def _tensors(**arrays: np.ndarray) -> dict[str, torch.Tensor]:
    import torch

    return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
