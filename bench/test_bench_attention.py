"""Attention forward + backward, eager vs SDPA, on whatever device is present.

The kernel choice (``model.attn_implementation``) is a setting users sweep;
this shows its cost in isolation, without DeepSpeed around it. Shapes are a
GPT-2-small layer (12 heads of 64) at a few sequence lengths, scaled down on a
CPU so the suite stays minutes long.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
SEQ_LENS = (512, 1024, 2048) if DEVICE == "cuda" else (128, 256, 512)
BATCH, HEADS, HEAD_DIM = (8, 12, 64) if DEVICE == "cuda" else (2, 12, 64)


def _eager(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(mask, float("-inf")).softmax(-1) @ v


def _sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("seq_len", SEQ_LENS)
@pytest.mark.parametrize("kind", ["eager", "sdpa"])
def test_attention_forward_backward(benchmark, kind, seq_len):
    fn = _eager if kind == "eager" else _sdpa
    q, k, v = (
        torch.randn(BATCH, HEADS, seq_len, HEAD_DIM, device=DEVICE, dtype=DTYPE, requires_grad=True)
        for _ in range(3)
    )
    grad = torch.randn(BATCH, HEADS, seq_len, HEAD_DIM, device=DEVICE, dtype=DTYPE)
    benchmark.extra_info.update(
        device=DEVICE,
        dtype=str(DTYPE),
        batch=BATCH,
        heads=HEADS,
        head_dim=HEAD_DIM,
        seq_len=seq_len,
    )

    def step():
        out = fn(q, k, v)
        out.backward(grad)
        _sync()

    benchmark.pedantic(step, rounds=10, warmup_rounds=2)
    torch.testing.assert_close(_eager(q, k, v), _sdpa(q, k, v), atol=2e-2, rtol=2e-2)
