"""Seeded initialisation: transformers' scheme per family, tied weights tied, a weight's values set by its name and the seed."""

from __future__ import annotations

import math

import pytest
import torch

from llmbench.define.models import hf_config, resolve_dims
from llmbench.measure.weights import build_seeded, module_seed

FAMILIES = [
    ("gpt2", "causal-lm"),
    ("llama", "causal-lm"),
    ("bert", "masked-lm"),
    ("distilbert", "masked-lm"),
]


def _build(family: str, task: str, seed: int = 0):
    return build_seeded(hf_config(family, resolve_dims(family, "tiny"), task), task, seed)


@pytest.mark.parametrize(("family", "task"), FAMILIES)
def test_each_family_gets_transformers_init_and_the_same_weights_for_the_same_seed(family, task):
    model = _build(family, task)
    again = dict(_build(family, task).named_parameters())
    other = dict(_build(family, task, seed=1).named_parameters())
    std = model.config.initializer_range
    for name, p in model.named_parameters():
        assert torch.equal(p, again[name]), name
        if p.dim() == 2 and "embed" not in name and "wpe" not in name and "wte" not in name:
            assert not torch.equal(p, other[name]), name  # drawn, not left at a constant
            expected = (
                std / math.sqrt(2 * model.config.n_layer) if name.endswith("c_proj.weight") else std
            )
            assert p.std().item() == pytest.approx(expected, rel=0.15), name
        elif p.dim() == 1 and ("norm" in name.lower() or "ln_" in name) and name.endswith("weight"):
            assert torch.all(p == 1), name
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
    head = model.get_output_embeddings()
    if model.config.tie_word_embeddings and head is not None:
        assert head.weight is model.get_input_embeddings().weight


def test_first_loss_is_near_uniform_over_the_vocabulary():
    model = _build("gpt2", "causal-lm")
    ids = torch.randint(0, 1024, (2, 32), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert abs(loss - math.log(1024)) < 0.1  # N(0, 0.02) weights: near-uniform logits


def test_module_seeds_depend_on_name_and_seed_only():
    assert module_seed(0, "model.layers.0.mlp") == module_seed(0, "model.layers.0.mlp")
    assert module_seed(0, "model.layers.0.mlp") != module_seed(0, "model.layers.1.mlp")
    assert module_seed(0, "lm_head") != module_seed(1, "lm_head")
    assert 0 <= module_seed(7, "") < 2**64


def _partitioned_rank(rank: int, world: int, port: int, strategy: str, out: str) -> None:
    """One rank: build tiny GPT-2 partitioned with ``strategy``; write which partitions differ from the whole build."""
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        DS_ACCELERATOR="cpu",
    )
    import deepspeed
    import torch.distributed as dist

    from llmbench.measure import weights

    deepspeed.init_distributed(dist_backend="gloo")
    config = hf_config("gpt2", resolve_dims("gpt2", "tiny"), "causal-lm")
    whole = dict(build_seeded(config, "causal-lm", 0).named_parameters())
    forced = {"local": weights._LocalPartitions, "gathered": weights._GatheredPartitions}[strategy]
    weights._held_for = lambda model: forced()
    ds = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3}}
    model = build_seeded(config, "causal-lm", 0, ds)
    differing = []
    for name, p in model.named_parameters():
        size = p.ds_tensor.ds_numel
        start = size * dist.get_rank(group=p.ds_process_group)
        count = max(0, min(size, p.ds_numel - start))
        expected = whole[name].detach().reshape(-1)[start : start + count]
        if not torch.equal(p.ds_tensor[:count], expected):
            differing.append(name)
    with open(f"{out}.{rank}", "w") as f:
        f.write("\n".join(differing) if differing else "")
    dist.barrier()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["local", "gathered"])
def test_zero3_partitions_hold_the_whole_builds_slices(strategy, tmp_path):
    """Each rank's ZeRO-3 partition is its slice of the whole build (GPT-2: tied head, scaled c_proj)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "differing")
    mp.spawn(_partitioned_rank, args=(2, port, strategy, out), nprocs=2)
    for rank in range(2):
        assert (tmp_path / f"differing.{rank}").read_text() == "", rank
