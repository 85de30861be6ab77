"""Is the process-to-process spread of step times the code's, or the machine's? (issue 12)

Runs plain torch training steps of GPT-2 mini (4 layers × 256, MLP 1024, vocab
8192, 8 × 128 tokens, AdamW; no llmbench, no DeepSpeed) in fresh processes,
alternating two kinds — fp32 and bf16 autocast — one after the other. Each
process prints the median of its timed steps. If the spread came from each
process's own luck (memory layout, thread placement), consecutive processes of
the two kinds would move independently; if the machine's speed drifts, they
move together: the script prints each kind's spread (CV over processes) and
the correlation of consecutive fp32/bf16 pairs.

``--layout fixed`` starts every process with address-space randomisation off
(``setarch -R``, the ADDR_NO_RANDOMIZE personality), so each process gets the
same virtual layout; ``--layout both`` alternates random and fixed layouts
(each kind's processes alternate the two) to see whether the spread follows
the layout.

    python bench/process_drift.py --pairs 8
    python bench/process_drift.py --pairs 8 --layout both
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

STEPS, WARMUP = 20, 3


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
    parser.add_argument("--layout", choices=["random", "fixed", "both"], default="random")
    parser.add_argument("--child", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        one_process(args.child == "bf16")
        return
    layouts = ["random", "fixed"] if args.layout == "both" else [args.layout]
    medians: dict[tuple[str, str], list[float]] = {}
    env = os.environ | {"TRANSFORMERS_VERBOSITY": "error"}
    for pair in range(args.pairs):
        layout = layouts[pair % len(layouts)]
        prefix = ["setarch", "-R"] if layout == "fixed" else []
        for kind in ("fp32", "bf16"):
            done = subprocess.run(
                [*prefix, sys.executable, __file__, "--child", kind],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            medians.setdefault((kind, layout), []).append(float(done.stdout.split()[-1]))
        print(
            f"pair {pair + 1} ({layout} layout): fp32 {medians['fp32', layout][-1]:.4f} s, "
            f"bf16 {medians['bf16', layout][-1]:.4f} s (load {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    for (kind, layout), values in medians.items():
        cv = statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0
        print(
            f"{kind}, {layout} layout: median step {statistics.median(values):.4f} s, "
            f"CV over {len(values)} processes {cv:.1%}"
        )
    for layout in layouts:
        if len(medians["fp32", layout]) > 2:
            r = statistics.correlation(medians["fp32", layout], medians["bf16", layout])
            print(f"correlation of consecutive fp32/bf16 processes, {layout} layout: {r:.2f}")


if __name__ == "__main__":
    main()
