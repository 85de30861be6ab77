"""Is the process-to-process spread of step times the code's, or the machine's? (issue 12)

Runs plain torch training steps of GPT-2 mini (4 layers × 256, MLP 1024, vocab
8192, 8 × 128 tokens, AdamW; no llmbench, no DeepSpeed) in fresh processes,
alternating two kinds — fp32 and bf16 autocast — one after the other. Each
process prints the median of its timed steps. If the spread came from each
process's own luck (memory layout, thread placement), consecutive processes of
the two kinds would move independently; if the machine's speed drifts, they
move together: the script prints each kind's spread (CV over processes) and
the correlation of consecutive fp32/bf16 pairs.

``--variants`` starts the processes in several ways, interleaved pair by
pair, to see whether the spread follows how a process is laid out in memory:
``random`` (as any process starts), ``fixed`` (address-space randomisation
off: ``setarch -R``, the ADDR_NO_RANDOMIZE personality, so every process gets
the same virtual layout) and ``thp`` (torch's ``THP_MEM_ALLOC_ENABLE=1``: its
CPU allocations of 2 MB and up aligned and advised onto transparent huge pages).

    python bench/process_drift.py --pairs 8
    python bench/process_drift.py --pairs 24 --variants random,fixed,thp
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

STEPS, WARMUP = 20, 3
VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "random": ([], {}),
    "fixed": (["setarch", "-R"], {}),
    "thp": ([], {"THP_MEM_ALLOC_ENABLE": "1"}),
}
"""How a child process is started: a command prefix and extra environment."""


def one_process(bf16: bool) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=4, n_embd=256, n_head=4, n_inner=1024, vocab_size=8192, n_positions=128
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, 8192, (8, 128))
    times = []
    for _ in range(WARMUP + STEPS):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t0)
    print(statistics.median(times[WARMUP:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--variants", default="random", help="of random, fixed, thp")
    parser.add_argument("--child", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        one_process(args.child == "bf16")
        return
    variants = args.variants.split(",")
    medians: dict[tuple[str, str], list[float]] = {}
    for pair in range(args.pairs):
        variant = variants[pair % len(variants)]
        prefix, extra = VARIANTS[variant]
        env = os.environ | {"TRANSFORMERS_VERBOSITY": "error"} | extra
        for kind in ("fp32", "bf16"):
            done = subprocess.run(
                [*prefix, sys.executable, __file__, "--child", kind],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            medians.setdefault((kind, variant), []).append(float(done.stdout.split()[-1]))
        print(
            f"pair {pair + 1} ({variant}): fp32 {medians['fp32', variant][-1]:.4f} s, "
            f"bf16 {medians['bf16', variant][-1]:.4f} s (load {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    for (kind, variant), values in sorted(medians.items()):
        centre = statistics.median(values)
        cv = statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0
        robust = 1.4826 * statistics.median(abs(v - centre) for v in values) / centre
        print(
            f"{kind}, {variant}: median step {centre:.4f} s, over {len(values)} processes "
            f"CV {cv:.1%}, robust CV {robust:.1%} (1.4826 × MAD / median: one stalled "
            f"process does not decide it)"
        )
    for variant in variants:
        if len(medians["fp32", variant]) > 2:
            r = statistics.correlation(medians["fp32", variant], medians["bf16", variant])
            print(f"correlation of consecutive fp32/bf16 processes, {variant}: {r:.2f}")


if __name__ == "__main__":
    main()
