"""A plain DeepSpeed training loop: the yardstick llmbench's tokens/s is checked against.

Run under ``torchrun``; it uses nothing of llmbench. For each case in the
given JSON file (``[{"name", "ds_config", "dropout"}]``, the DeepSpeed configs
copied from an llmbench run's ``task.json``) it builds the issue-16 GPT-2 from
its transformers config (4 layers, hidden 256, 4 heads, MLP 1024, vocab 8192),
calls ``deepspeed.initialize`` and trains on random tokens: 5 warm-up steps,
then timed steps, each ended by an accelerator synchronise, the median of the
slowest rank per step. Rank 0 appends one JSON line per case to ``--out``.

    OMP_NUM_THREADS=2 torchrun --nproc-per-node 1 bench/plain_loop.py cases.json --out plain.jsonl

Threads: this loop sets torch's intra-op threads from ``OMP_NUM_THREADS``, which
is what llmbench gives each rank (cores ÷ ranks). Without it torch uses every
core in every rank (and torchrun sets 1 for several ranks), which is what
makes a hand-written loop slower or faster than llmbench's figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cases", help="JSON list of {name, ds_config, dropout}")
    parser.add_argument("--out", required=True)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()

    import deepspeed
    import torch
    import transformers
    from deepspeed.accelerator import get_accelerator

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    accel = get_accelerator()
    for case in json.loads(Path(args.cases).read_text()):
        dropout = case["dropout"]
        rates = (
            {}
            if dropout == "config"
            else dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), float(dropout))
        )
        config = transformers.GPT2Config(
            n_layer=4,
            n_embd=256,
            n_head=4,
            n_inner=1024,
            vocab_size=8192,
            n_positions=512,
            use_cache=False,
            **rates,
        )
        torch.manual_seed(1234)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
        ds_config = case["ds_config"]
        engine, *_ = deepspeed.initialize(
            model=model, model_parameters=model.parameters(), config=ds_config
        )
        micro = ds_config["train_micro_batch_size_per_gpu"]
        generator = torch.Generator().manual_seed(1234 + rank)
        tokens = torch.randint(0, 8192, (16, micro, args.seq_len), generator=generator)
        times = []
        for step in range(args.warmup + args.steps):
            batch = tokens[step % len(tokens)].to(engine.device)
            t0 = time.perf_counter()
            loss = engine(input_ids=batch, labels=batch).loss
            engine.backward(loss)
            engine.step()
            accel.synchronize()
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
        slowest = torch.tensor(times, dtype=torch.float64)
        torch.distributed.all_reduce(slowest, op=torch.distributed.ReduceOp.MAX)
        if rank == 0:
            median = statistics.median(slowest.tolist())
            tokens_per_step = micro * args.seq_len * world
            with open(args.out, "a") as fh:
                line = {
                    "name": case["name"],
                    "step_time_s_median": median,
                    "tokens_per_s": tokens_per_step / median,
                    "world_size": world,
                }
                fh.write(json.dumps(line) + "\n")
        del engine, model
    # Every figure is written; leave without the process group's teardown, which
    # sometimes aborts a rank of a gloo group ("terminate called without an
    # active exception") and would fail a launch whose measurement is complete.
    torch.distributed.barrier()
    os._exit(0)


if __name__ == "__main__":
    main()
