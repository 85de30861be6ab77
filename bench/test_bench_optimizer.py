"""One optimizer step over N parameters: torch AdamW vs DeepSpeed's Adam kernels.

ZeRO-Offload's speed hinges on DeepSpeed's CPU Adam; on GPUs FusedAdam replaces
a loop of small kernels. Sizes are flat parameter counts (a 1M/10M/50M slice of
a model) so the figures read as seconds per parameter-step.
"""

from __future__ import annotations

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SIZES = (1_000_000, 10_000_000, 50_000_000)


def _params(n: int) -> list[torch.nn.Parameter]:
    # a model-like mix: a few large matrices and many small vectors
    shapes = [(n // 4,)] * 3 + [(n // 4 // 64, 64)]
    params = [torch.nn.Parameter(torch.randn(*shape, device=DEVICE)) for shape in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def _optimizer(kind: str, params):
    if kind == "torch-adamw":
        return torch.optim.AdamW(params, lr=1e-4)
    if kind == "deepspeed-cpu-adam":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, lr=1e-4, adamw_mode=True)
    from deepspeed.ops.adam import FusedAdam

    return FusedAdam(params, lr=1e-4, adam_w_mode=True)


KINDS = (
    ["torch-adamw", "deepspeed-cpu-adam"]
    if DEVICE == "cpu"
    else ["torch-adamw", "deepspeed-fused-adam"]
)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_optimizer_step(benchmark, kind, size):
    params = _params(size)
    opt = _optimizer(kind, params)
    benchmark.extra_info.update(device=DEVICE, parameters=sum(p.numel() for p in params))

    def step():
        opt.step()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
