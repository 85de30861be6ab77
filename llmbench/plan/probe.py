"""Measure what DeepSpeed really allocates for model states, per rank, on this machine.

Host RSS cannot answer "how many bytes of model states does ZeRO-N keep": it is
dominated by ~400 MB of imported libraries. This probe builds the same engine
a case would (``training.build_training_model`` + ``dsconfig.deepspeed_config``),
trains two steps, and at the moment model states peak - right after the inner
optimizer's second ``step`` returns, when low-precision parameters, gradients,
fp32 master weights, their gradients and Adam's moments all exist - sums the
bytes of every distinct tensor storage alive in the process, by role:

* ``params``: storages behind the module's parameters (``p.data``; ``p.ds_tensor``
  for ZeRO-3 partitions)
* ``grads``: ``p.grad`` of those, and of the optimizer's own (master) parameters
* ``master``: the optimizer's parameters that are not the module's (fp32 copies)
* ``optimizer_state``: tensors in the inner optimizer's ``state`` (Adam m and v)
* ``reduce_bucket``: storages of exactly ``reduce_bucket_size`` elements, the
  gradient bucket ZeRO allocates (DeepSpeed's buffer, not a model state)
* ``buffers``: every other live tensor (flat partitions, ZeRO-3 bookkeeping),
  excluding the module's registered buffers and the input batches

Activations are measured separately (:func:`measure_activations`): the bytes of
the distinct storages autograd saves for backward during one forward pass.

``python -m llmbench.plan.probe model.size=mini deepspeed.zero_stage=2 parallel.world_size=2``
prints the per-rank JSON. Ranks are separate processes joined by gloo.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmbench.define.loader import parse_scenario
from llmbench.define.schema import CaseSpec
from llmbench.errors import UserError

ROLES = ("params", "grads", "master", "optimizer_state", "reduce_bucket", "buffers")
STATE_ROLES = ("params", "grads", "master", "optimizer_state", "buffers")
"""Everything but the reduce bucket: what the model-state prediction covers."""


@dataclass
class RankStates:
    """Bytes of distinct storages per role on one rank, at the model-state peak."""

    rank: int
    world_size: int
    bytes_by_role: dict[str, dict[str, int]]
    """Per snapshot (``after_backward``, ``in_step``, and with gradient accumulation
    ``mid_accumulation``: after the first micro-batch's backward): bytes per role."""
    allocated_peak_bytes: int
    """Peak live tensor bytes during the second step (model states, activations, transients)."""
    largest_buffers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def states_bytes(self, moment: str) -> int:
        """Model states (reduce bucket excluded) at one snapshot."""
        return sum(self.bytes_by_role[moment][r] for r in STATE_ROLES)

    @property
    def peak_states_bytes(self) -> int:
        """Model states (reduce bucket excluded) at whichever snapshot holds more."""
        return max(self.states_bytes(m) for m in self.bytes_by_role)


def spec_from_overrides(overrides: Sequence[str]) -> CaseSpec:
    """One case from ``key=value`` overrides, validated like a scenario."""
    # an empty model section: the overrides name the model (the loader refuses an empty file)
    cases = parse_scenario("model: {}\n", source="probe", overrides=overrides).expand()
    if len(cases) != 1:
        raise UserError(f"the probe measures one case, the overrides give {len(cases)}")
    return cases[0].spec


def _storage_key(t) -> tuple[int, int] | None:
    storage = t.untyped_storage()
    nbytes = storage.nbytes()
    if nbytes == 0 or t.device.type == "meta":
        return None
    return storage.data_ptr(), nbytes


class _Ledger:
    """Distinct storages, each attributed to the first role that claimed it."""

    def __init__(self) -> None:
        self.role_of: dict[int, str] = {}
        self.bytes_of: dict[int, int] = {}
        self.shape_of: dict[
            int, tuple[str, list[int]]
        ] = {}  # metadata only: never keep a tensor alive

    def claim(self, role: str, tensors: Iterable[Any]) -> None:
        for t in tensors:
            if t is None:
                continue
            key = _storage_key(t)
            if key is None or key[0] in self.role_of:
                continue
            self.role_of[key[0]] = role
            self.bytes_of[key[0]] = key[1]
            self.shape_of[key[0]] = (str(t.dtype).removeprefix("torch."), list(t.shape))

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(ROLES, 0)
        for ptr, role in self.role_of.items():
            if role in out:
                out[role] += self.bytes_of[ptr]
        return out

    def largest(self, role: str, n: int = 8) -> list[dict[str, Any]]:
        ptrs = sorted(
            (p for p, r in self.role_of.items() if r == role),
            key=lambda p: self.bytes_of[p],
            reverse=True,
        )[:n]
        return [
            {"bytes": self.bytes_of[p], "dtype": self.shape_of[p][0], "shape": self.shape_of[p][1]}
            for p in ptrs
        ]


def inner_optimizer(engine_optimizer):
    """The torch optimizer that holds Adam's state, under DeepSpeed's wrappers."""
    import torch

    opt = engine_optimizer
    while not isinstance(opt, torch.optim.Optimizer) or hasattr(opt, "optimizer"):
        nxt = getattr(opt, "optimizer", None)
        if nxt is None or nxt is opt:
            break
        opt = nxt
    return opt


def snapshot(module, optimizer, excluded: Iterable[Any], bucket_numel: int) -> _Ledger:
    """Attribute every live tensor storage to a role (see the module docstring).

    Cyclic garbage is collected first: a temporary caught in a reference cycle
    is not state, and when it is freed depends on the collector's timing.
    """
    import torch

    gc.collect()
    live = [o for o in gc.get_objects() if torch.is_tensor(o)]
    ledger = _Ledger()
    ledger.claim("excluded", excluded)
    ledger.claim("excluded", module.buffers())
    params = list(module.parameters())
    ledger.claim("params", (p.data for p in params))
    ledger.claim("params", (getattr(p, "ds_tensor", None) for p in params))
    own = [p for group in optimizer.param_groups for p in group["params"]]
    ledger.claim("grads", (p.grad for p in params))
    ledger.claim(
        "grads", (getattr(p.ds_tensor, "grad", None) for p in params if hasattr(p, "ds_tensor"))
    )
    ledger.claim("grads", (p.grad for p in own))
    ledger.claim("master", own)
    ledger.claim(
        "optimizer_state",
        (v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)),
    )
    ledger.claim(
        "reduce_bucket",
        (t for t in live if t.untyped_storage().nbytes() == bucket_numel * t.element_size()),
    )
    ledger.claim("buffers", live)
    return ledger


def _rank_main(task_path: str) -> None:
    """One rank: build the engine, train two steps, snapshot inside the second."""
    import deepspeed
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from llmbench.measure.dsconfig import deepspeed_config
    from llmbench.measure.process import die_with_parent
    from llmbench.measure.training import build_batches, build_training_model, train_step

    die_with_parent()
    task = json.loads(Path(task_path).read_text())
    spec = CaseSpec.model_validate(task["spec"])
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(spec.training.seed)
    ds_config = deepspeed_config(spec, task["micro_batch"])
    batches = build_batches(
        spec,
        task["micro_batch"],
        2 * spec.training.grad_accum,
        dp_rank=rank,
        dp_size=spec.parallel.world_size,
    )
    inputs = [t for b in batches for t in b.values()]
    # Every allocation from the model build on is recorded, so the running sum
    # of allocator events is the live tensor bytes of the process (the CPU
    # analogue of torch.cuda.memory_allocated).
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model, _ = build_training_model(spec)
        engine, *_ = deepspeed.initialize(
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=ds_config,
        )
        optimizer = inner_optimizer(engine.optimizer)
        bucket = int(engine.zero_reduce_bucket_size())
        ledgers: dict[str, _Ledger] = {}
        steps = [0]

        def after_step(opt, args, kwargs) -> None:
            steps[0] += 1
            if steps[0] == 2:  # Adam's moments are created lazily in the first step
                ledgers["in_step"] = snapshot(engine.module, opt, inputs, bucket)

        backward = engine.backward
        backwards_in_step = [0]

        def backward_then_snapshot(*args, **kwargs):
            out = backward(*args, **kwargs)
            if steps[0] == 1:
                backwards_in_step[0] += 1
                # between micro-batches of an accumulating step, before the boundary's
                # reduction: what does each ZeRO stage keep of the gradients there?
                if backwards_in_step[0] == 1 and spec.training.grad_accum > 1:
                    ledgers["mid_accumulation"] = snapshot(engine.module, optimizer, inputs, bucket)
                else:
                    ledgers["after_backward"] = snapshot(engine.module, optimizer, inputs, bucket)
            return out

        engine.backward = backward_then_snapshot
        optimizer.register_step_post_hook(after_step)
        step = train_step(spec, engine, batches)
        step()
        with record_function(_MEASURED):
            step()
    expected = {"in_step", "after_backward"} | (
        {"mid_accumulation"} if spec.training.grad_accum > 1 else set()
    )
    if set(ledgers) != expected:
        raise RuntimeError(f"the optimizer {type(optimizer).__name__} never stepped twice")
    record = RankStates(
        rank=rank,
        world_size=int(os.environ["WORLD_SIZE"]),
        bytes_by_role={k: v.totals() for k, v in ledgers.items()},
        allocated_peak_bytes=_allocated_peak(prof),
        largest_buffers={k: v.largest("buffers") for k, v in ledgers.items()},
    )
    Path(task["out_dir"], f"rank{rank}.json").write_text(json.dumps(asdict(record)))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


_MEASURED = "llmbench.measured_step"


def _allocated_peak(prof) -> int:
    """Peak of live allocator bytes during the measured step, from profiler memory events."""
    events = sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns())
    window = next(e for e in events if e.name() == _MEASURED)
    live = peak = 0
    for e in events:
        if e.name() != "[memory]":
            continue
        if e.start_ns() > window.end_ns():
            break
        live += e.nbytes()
        if e.start_ns() >= window.start_ns():
            peak = max(peak, live)
    return peak


def measure_model_states(
    spec: CaseSpec, micro_batch: int = 1, timeout_s: float = 300.0
) -> list[RankStates]:
    """Start every rank of ``spec`` on this machine's CPU; per-rank model-state bytes."""
    from llmbench.measure.process import free_port, kill_group

    if spec.parallel.tp > 1 or spec.parallel.pp > 1:
        raise UserError("the probe measures data-parallel ZeRO cases only (tp = pp = 1)")
    world_size = spec.parallel.world_size
    with tempfile.TemporaryDirectory(prefix="llmbench-probe-") as out:
        task = Path(out, "task.json")
        task.write_text(
            json.dumps(
                {"spec": spec.model_dump(mode="json"), "micro_batch": micro_batch, "out_dir": out}
            )
        )
        base_env = {
            **os.environ,
            "DS_ACCELERATOR": "cpu",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
            "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size),
            "OMP_NUM_THREADS": "1",
        }
        procs = []
        for rank in range(world_size):
            env = {**base_env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "llmbench.plan.probe", "--rank", str(task)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=open(Path(out, f"rank{rank}.log"), "w"),  # noqa: SIM115 - closed with the process
                    start_new_session=True,
                )
            )
        try:
            codes = [p.wait(timeout=timeout_s) for p in procs]
        except subprocess.TimeoutExpired:
            for p in procs:
                kill_group(p.pid)
                p.wait()
            raise RuntimeError(f"probe ranks did not finish within {timeout_s:.0f} s") from None
        if any(codes):
            logs = "\n".join(
                Path(out, f"rank{r}.log").read_text()[-3000:] for r in range(world_size)
            )
            raise RuntimeError(f"probe ranks exited with {codes}:\n{logs}")
        return [
            RankStates(**json.loads(Path(out, f"rank{r}.json").read_text()))
            for r in range(world_size)
        ]


def measure_activations(spec: CaseSpec, micro_batch: int) -> dict[str, int]:
    """Bytes autograd saves for backward in one forward pass (weights excluded).

    Runs in this process, without DeepSpeed: activations do not depend on ZeRO.
    The model is cast to the case's precision, as DeepSpeed does for bf16/fp16.
    """
    import torch

    from llmbench.define.models import build_model, hf_config
    from llmbench.measure.training import build_batches, enable_full_recompute

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        spec.deepspeed.precision
    ]
    config = hf_config(
        spec.model.family,
        spec.dims(),
        spec.task,
        spec.training.num_labels,
        spec.model.attn_implementation,
        spec.model.dropout,  # as the case trains: masks are kept only with dropout on
    )
    torch.manual_seed(spec.training.seed)
    model = build_model(config, spec.task).to(dtype)
    if spec.deepspeed.activation_checkpointing == "full":
        enable_full_recompute(model)
    model.train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    batch = build_batches(spec, micro_batch, 1, dp_rank=0, dp_size=1)[0]
    saved: dict[int, int] = {}

    def pack(t):
        key = _storage_key(t)
        if key is not None and key[0] not in weights:
            saved[key[0]] = key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    del loss
    return {"saved_bytes": sum(saved.values()), "saved_storages": len(saved)}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--rank"]:
        _rank_main(args[1])
        return 0
    micro_batch = 1
    if args[:1] == ["--micro-batch"]:
        micro_batch, args = int(args[1]), args[2:]
    spec = spec_from_overrides(args)
    ranks = measure_model_states(spec, micro_batch)
    print(
        json.dumps(
            [asdict(r) | {"peak_states_bytes": r.peak_states_bytes} for r in ranks], indent=1
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
