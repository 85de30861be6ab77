"""Does llmbench's tokens/s match a plain DeepSpeed loop, and fork match spawn? (issue 16)

Each round runs every selected system on the same cases, block by block (one
world size and one dropout setting, four cases): every system runs a block, in
an order that rotates with round and block, before the next block starts, so
the two figures of a ratio are measured a few minutes apart rather than up to
a whole round (15 minutes) apart, when the machine's load may have changed.
The systems:

* ``fork`` / ``spawn``: ``llmbench run`` with ``run.start_method`` fork / spawn;
* ``plain``: bench/plain_loop.py under ``torchrun``, one launch per case (as
  llmbench runs each case in a process of its own: several cases in one
  process measure each case after a different history of allocations and
  caches), with the DeepSpeed config llmbench generates for each case
  (llmbench.measure.dsconfig) and the threads llmbench gives a rank
  (``OMP_NUM_THREADS`` = cores ÷ ranks).

Cases (issue 16): GPT-2 4 layers, hidden 256, 4 heads, MLP 1024, vocab 8192
(llmbench's ``gpt2-mini``), seq 128, micro-batch 8, 5 warm-up + 30 timed steps;
ZeRO 0/2 × fp32/bf16 × 1/2 ranks × dropout config/0. Narrow them with
``--set KEY=VALUE`` (llmbench overrides, e.g. ``--set model.dropout=0``).
A bare ``torchrun`` of one case is timed too (start-up included), against
llmbench's per-case wall time.

    python bench/fidelity.py --rounds 3                                  # fork vs plain, 16 cases
    python bench/fidelity.py --rounds 3 --systems fork,spawn --set deepspeed.zero_stage=0 --set model.dropout=config

Prints a table per case (medians over rounds with min–max) and a summary, with
the load (``uptime``) before and after; everything measured is also written to
``--out`` as JSON. On 2 busy cores the spread is large: compare medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = """\
name: fidelity
model: {family: gpt2, size: mini, dropout: [config, 0]}
training: {seq_len: 128, micro_batch: 8, warmup_steps: 5, steps: 30}
deepspeed: {zero_stage: [0, 2], precision: [fp32, bf16]}
parallel: {world_size: [1, 2]}
run: {timeout_s: 900}
"""


def key(params: dict) -> str:
    dropout = params["model.dropout"]
    dropout = dropout if dropout == "config" else f"{float(dropout):g}"
    return (
        f"z{params['deepspeed.zero_stage']} {params['deepspeed.precision']} "
        f"ws{params['parallel.world_size']} dropout={dropout}"
    )


def llmbench_command() -> list[str]:
    script = Path(sys.executable).with_name("llmbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "llmbench"]


def uptime() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_llmbench(scenario: Path, sets: list[str], method: str, out: Path) -> dict:
    """One whole ``llmbench run``: per-case figures and the sweep's wall time."""
    argv = [*llmbench_command(), "run", str(scenario), *sets]
    argv += [f"run.start_method={method}", f"run.output_dir={out}"]
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=os.environ | {"NO_COLOR": "1"})
    wall = time.perf_counter() - t0
    results = list(out.glob("*/results.jsonl"))
    if done.returncode != 0 or not results:
        sys.exit(
            f"llmbench run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    cases = {}
    for line in results[0].read_text().splitlines():
        r = json.loads(line)
        m = r["metrics"]
        cases[key(r["params"])] = {
            n: m.get(n) for n in ("tokens_per_s", "overhead_s", "init_s", "wall_s")
        }
    return {"sweep_wall_s": wall, "cases": cases}


def plain_cases(scenario: Path, sets: list[str]) -> list[dict]:
    """The cases, each with the DeepSpeed config llmbench generates for it."""
    sys.path.insert(0, str(ROOT))
    from llmbench.define.loader import load_scenario
    from llmbench.measure.dsconfig import deepspeed_config

    cases = []
    for case in load_scenario(scenario, overrides=sets).expand():
        spec = case.spec
        cases.append(
            {
                "name": key(case.params),
                "ds_config": deepspeed_config(spec, spec.training.micro_batch),
                "dropout": spec.model.dropout,
                "world_size": spec.parallel.world_size,
            }
        )
    return cases


def blocks(cases: list[dict]) -> list[tuple[list[str], list[dict]]]:
    """The cases in blocks of one world size and one dropout, each with the llmbench
    overrides that select it (see the module docstring for why blocks)."""
    groups: dict[tuple, list[dict]] = {}
    for case in cases:
        groups.setdefault((case["world_size"], str(case["dropout"])), []).append(case)
    return [
        ([f"parallel.world_size={ws}", f"model.dropout={dropout}"], members)
        for (ws, dropout), members in sorted(groups.items())
    ]


def torchrun(cases: list[dict], world_size: int, work: Path, out: Path) -> float:
    """Run bench/plain_loop.py on ``cases`` under torchrun; its wall time, start-up included."""
    spec = work / f"cases-ws{world_size}.json"
    spec.write_text(json.dumps(cases))
    threads = max(1, (os.cpu_count() or 1) // world_size)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "DS_ACCELERATOR": "cpu"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    argv += [f"--nproc-per-node={world_size}", str(ROOT / "bench" / "plain_loop.py"), str(spec)]
    argv += ["--out", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"plain loop failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def run_plain(cases: list[dict], work: Path) -> dict:
    """A block's cases, each in a torchrun of its own, in turn; their tokens/s."""
    out = work / "plain.jsonl"
    out.unlink(missing_ok=True)
    for case in cases:
        torchrun([case], case["world_size"], work, out)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    return {"cases": {x["name"]: {"tokens_per_s": x["tokens_per_s"]} for x in lines}}


def save(
    args: argparse.Namespace, rounds: list[dict], load_before: str, load_after: str = ""
) -> None:
    """Everything measured so far, to ``--out``: written after every round, so a
    launch that fails in round 3 leaves rounds 1 and 2 on disk."""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "load_before": load_before,
                "load_after": load_after,
                "rounds": rounds,
                "sets": args.sets,
            },
            indent=1,
        )
    )


def spread(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):.3f} [{min(values):.3f}–{max(values):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--systems", default="fork,plain", help="of fork, spawn, plain")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare torchrun of one case")
    parser.add_argument("--out", default="reports/fidelity.json")
    args = parser.parse_args()
    systems = args.systems.split(",")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    work = Path(tempfile.mkdtemp(prefix="fidelity-"))
    scenario = work / "fidelity.yaml"
    scenario.write_text(SCENARIO)
    cases = plain_cases(scenario, args.sets)
    first = min(cases, key=lambda c: c["world_size"])
    load_before = uptime()
    rounds: list[dict] = []
    for r in range(args.rounds):
        measured: dict = {s: {"cases": {}, "sweep_wall_s": 0.0} for s in systems}
        for b, (selection, members) in enumerate(blocks(cases)):
            shift = (r + b) % len(systems)
            for system in systems[shift:] + systems[:shift]:
                print(
                    f"round {r + 1}/{args.rounds}, {' '.join(selection)}: {system} "
                    f"(load {uptime()})",
                    flush=True,
                )
                if system == "plain":
                    got = run_plain(members, work)
                else:
                    target = work / f"{system}-{r}-{b}"
                    got = run_llmbench(scenario, [*args.sets, *selection], system, target)
                    shutil.rmtree(target, ignore_errors=True)
                    measured[system]["sweep_wall_s"] += got["sweep_wall_s"]
                measured[system]["cases"].update(got["cases"])
        if not args.no_bare:
            measured["bare_torchrun_s"] = torchrun(
                [first], first["world_size"], work, work / "bare.jsonl"
            )
        rounds.append(measured)
        save(args, rounds, load_before)
    load_after = uptime()

    names = sorted({n for m in rounds for s in systems for n in m[s]["cases"]})
    rows, ratios = [], {"plain": {}, "spawn": {}}
    for name in names:
        row = {"case": name}
        for system in systems:
            tps = [m[system]["cases"][name]["tokens_per_s"] for m in rounds]
            row[system] = statistics.median(tps)
        for other in ("plain", "spawn"):
            if "fork" in systems and other in systems:
                per_round = [
                    m["fork"]["cases"][name]["tokens_per_s"]
                    / m[other]["cases"][name]["tokens_per_s"]
                    for m in rounds
                ]
                ratios[other][name] = per_round
                row[f"fork/{other}"] = spread(per_round)
        rows.append(row)
    columns = ["case", *systems, *[c for c in ("fork/plain", "fork/spawn") if c in rows[0]]]
    print(
        f"\nload (1, 5, 15 min) before: {load_before}; after: {load_after}; cores: {os.cpu_count()}"
    )
    print(" | ".join(columns))
    for row in rows:
        print(
            " | ".join(
                f"{row[c]:,.0f}" if isinstance(row[c], float) else str(row[c]) for c in columns
            )
        )
    print("\nsummary (median over cases of each case's median ratio; tokens/s, higher = faster):")
    for other, per_case in ratios.items():
        for dropout in ("config", "0"):
            medians = [
                statistics.median(v) for n, v in per_case.items() if n.endswith(f"={dropout}")
            ]
            if medians:
                print(
                    f"  fork/{other} dropout={dropout}: {statistics.median(medians):.3f} "
                    f"(cases {min(medians):.3f}–{max(medians):.3f}, n={len(medians)})"
                )
    for system in ("fork", "spawn"):
        if system in systems:
            overhead = [c["overhead_s"] for m in rounds for c in m[system]["cases"].values()]
            init = [c["init_s"] for m in rounds for c in m[system]["cases"].values()]
            walls = [c["wall_s"] for m in rounds for c in m[system]["cases"].values()]
            print(
                f"  {system}: overhead_s {spread(overhead)}, init_s {spread(init)}, "
                f"case wall_s {spread(walls)}"
            )
    if not args.no_bare:
        bare = [m["bare_torchrun_s"] for m in rounds]
        print(f"  bare torchrun of one case ({first['name']}), start to exit: {spread(bare)} s")
        if "fork" in systems:
            llm = [m["fork"]["cases"][first["name"]]["wall_s"] for m in rounds]
            print(
                f"  llmbench (fork) wall of the same case: {spread(llm)} s; "
                f"bare torchrun / llmbench = {statistics.median(bare) / statistics.median(llm):.1f}×"
            )
    save(args, rounds, load_before, load_after)
    print(f"\nraw figures: {args.out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
