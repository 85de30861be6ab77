"""A rank's host memory at each phase of a ZeRO-3 case: built, initialised, each step.

Run under ``torchrun``: it builds the first case of a scenario with
llmbench's own construction (``build_training_model``; partitioned under
ZeRO-3, or whole with ``--whole``), calls ``deepspeed.initialize`` with the
case's DeepSpeed config and trains on random tokens, printing per rank the
data segment (VmData, what ``training.rank_memory_limit_bytes`` caps on a
CPU), RSS and peak RSS (VmHWM, reset before construction) after each phase.
It is how the README's "ZeRO-3 at scale" shows which phase a memory cap meets.

    DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 torchrun --nproc-per-node 8 \\
        bench/zero3_memory.py scenarios/zero3_scale.yaml --steps 2
    ... bench/zero3_memory.py scenarios/zero3_cap.yaml --steps 2 --map-large-blocks
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

FIELDS = ("VmData", "VmRSS", "VmHWM")


def status_mb() -> dict[str, int]:
    """This process's memory figures from /proc/self/status, in MB (10^6 bytes)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in FIELDS:
            out[key] = int(value.split()[0]) * 1024 // 10**6
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--whole", action="store_true", help="build the whole model on every rank")
    parser.add_argument(
        "--map-large-blocks",
        action="store_true",
        help="map malloc blocks of 1 MiB and up for the whole run, as a memory-capped rank does",
    )
    args = parser.parse_args()

    import deepspeed
    import torch

    from llmbench.define.loader import parse_scenario
    from llmbench.measure.dsconfig import deepspeed_config
    from llmbench.measure.training import build_training_model
    from llmbench.measure.weights import map_large_blocks

    deepspeed.init_distributed(dist_backend="gloo")
    rank = int(os.environ["RANK"])
    spec = parse_scenario(args.scenario.read_text()).expand()[0].spec
    ds = deepspeed_config(spec, spec.training.micro_batch)

    def show(phase: str) -> None:
        print(f"rank {rank} {phase:>12}: {status_mb()}", flush=True)

    torch.manual_seed(spec.training.seed)
    if args.map_large_blocks:
        map_large_blocks()
    Path("/proc/self/clear_refs").write_text("5")
    show("start")
    model, _ = build_training_model(spec, None if args.whole else ds)
    show("built")
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
    show("initialized")
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (spec.training.micro_batch, spec.training.seq_len))
    for step in range(args.steps):
        loss = engine(input_ids=ids, labels=ids).loss
        show(f"{step} forward")
        engine.backward(loss)
        show(f"{step} backward")
        engine.step()
        show(f"{step} step")


if __name__ == "__main__":
    main()
