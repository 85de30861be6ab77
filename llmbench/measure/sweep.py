"""``llmbench run``: set up a run directory, launch the sweep, render the comparison."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from llmbench.define.cases import DEFAULT_MAX_CASES, Case, Scenario
from llmbench.define.loader import load_scenario
from llmbench.define.schema import flatten
from llmbench.errors import ExitCode, UserError
from llmbench.hardware import Accelerator, detect
from llmbench.judge.digest import write_digest
from llmbench.judge.fingerprint import env_differences
from llmbench.judge.parity import ParityCheck, parity_table
from llmbench.judge.regression import CompareOptions, compare_finished_run, index_finished_run
from llmbench.judge.report.console import comparison_table
from llmbench.judge.runs import results_frame
from llmbench.judge.store import RunDir
from llmbench.measure.environment import collect, require_cuda
from llmbench.measure.launch.base import Launcher
from llmbench.measure.ops import ops_for, optimizer_fallback
from llmbench.measure.progress import LiveProgress
from llmbench.measure.runner import Runner, pending_cases


def dry_run_table(scenario: Scenario, cases: list[Case]) -> Table:
    """Cases in run order with their ids; the label names every swept setting."""
    title = f"{scenario.name}: {len(cases)} cases × {scenario.run.repeats} repeat(s)"
    table = Table(title=Text(title), header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("case id")
    table.add_column("label")
    for i, case in enumerate(cases, 1):
        table.add_row(str(i), case.id, Text(case.label))
    return table


def make_launcher(scenario: Scenario, accel: Accelerator) -> Launcher:
    run = scenario.run
    if run.launcher == "local":
        from llmbench.measure.launch.local import LocalLauncher

        method = run.start_method
        if method == "auto":
            # Forking after CUDA is initialised is unsafe; ranks on GPUs get
            # fresh interpreters unless the user opts into fork.
            method = "fork" if accel.kind == "cpu" else "spawn"
        return LocalLauncher(method)
    if run.launcher == "deepspeed":
        from llmbench.measure.launch.deepspeed import DeepSpeedLauncher

        return DeepSpeedLauncher.for_scenario(scenario, accel)
    from llmbench.measure.launch.slurm import SlurmLauncher

    return SlurmLauncher.for_scenario(scenario, accel)


def prepare_environment(accel: Accelerator) -> None:
    """Settings the pre-imported fork server must see before it imports deepspeed."""
    os.environ["DS_ACCELERATOR"] = accel.kind
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    # torch answers is_available() through NVML without initialising CUDA
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _op_text(name: str, info: dict) -> str:
    if info.get("error"):
        return f"{info.get('op', name)} unavailable ({info['error']})"
    return f"{info['op']} {info['seconds']:.1f} s"


def prepare_corpora(cases: list[Case], console: Console) -> dict[str, str]:
    """Tokenise each distinct real-text corpus once, in this process, before any rank starts.

    Ranks then only memory-map the cached token array; tokenising in every
    rank would race and charge the work to the first case.
    """
    prepared: dict[tuple[str, str, int], str] = {}
    by_case: dict[str, str] = {}
    for case in cases:
        tr = case.spec.training
        if tr.data != "text":
            continue
        key = (str(tr.data_path), case.spec.model.family, case.spec.dims().vocab_size)
        if key not in prepared:
            from llmbench.measure.data.corpus import prepare_corpus

            corpus = prepare_corpus(
                *key, log=lambda m: console.print(m, highlight=False, markup=False)
            )
            prepared[key] = str(corpus.path)
        by_case[case.id] = prepared[key]
    return by_case


def resume_scenario(
    run_path: Path,
    given: Path | None,
    overrides: Sequence[str] = (),
    max_cases: int = DEFAULT_MAX_CASES,
) -> Scenario:
    """The scenario a run directory was started with (overrides applied), as stored in it.

    A scenario file and overrides given with ``--resume`` must resolve to the
    same thing: resuming with other settings would mix two sweeps in one run.
    """
    run_dir = RunDir.open(run_path)
    own = load_scenario(run_dir.path / "scenario.yaml", max_cases=max_cases)
    if given is not None:
        asked = load_scenario(given, overrides, max_cases=max_cases)
        differences = _differences(own.resolved(), asked.resolved())
        if differences:
            raise UserError(
                f"differs from the run being resumed ({'; '.join(differences)}); "
                f"resume with the run's own settings: llmbench run --resume {shlex.quote(str(run_path))}",
                where=str(given),
            )
    elif overrides:
        raise UserError(
            "overrides apply to a scenario file; --resume alone reruns with the run's own settings",
            where="command line",
        )
    return own


def _differences(own: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    """``key: stored → asked`` for every dotted key whose value differs."""
    a, b = flatten(own), flatten(asked)
    return [
        f"{k}: {a.get(k)!r} → {b.get(k)!r}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]


def resume_command(scenario: Scenario, overrides: Sequence[str], run_dir: RunDir) -> str:
    """The command that continues this run, with the overrides it was started with."""
    words = ["llmbench", "run"]
    if Path(scenario.source) != run_dir.path / "scenario.yaml":
        words += [scenario.source, *overrides]
    return shlex.join([*words, "--resume", str(run_dir.path)])


def run_sweep(
    scenario: Scenario,
    cases: list[Case],
    console: Console,
    resume: Path | None = None,
    output_dir: Path | None = None,
    compare: CompareOptions | None = None,
    overrides: Sequence[str] = (),
) -> int:
    """Run the pending cases into a new (or, with ``resume``, the given) run directory, held locked."""
    accel = detect(scenario.run.device)
    if scenario.run.device == "cuda":
        require_cuda(accel, where=scenario.lines.get("run.device", scenario.source))
    if resume is not None:
        run_dir = RunDir.open(resume)
        with run_dir.locked():
            _check_environment(run_dir, collect(accel))
            return _sweep(scenario, cases, console, run_dir, accel, compare, overrides)
    run_dir = RunDir.create(output_dir or scenario.run.output_dir, scenario.name)
    with run_dir.locked():
        run_dir.write_yaml("scenario.yaml", scenario.resolved())
        run_dir.write_json("env.json", collect(accel))
        return _sweep(scenario, cases, console, run_dir, accel, compare, overrides)


def _check_environment(run_dir: RunDir, env: dict[str, Any]) -> None:
    """Refuse to resume on another machine or library stack: one run, one environment."""
    stored = run_dir.read_json("env.json") or {}
    differences = env_differences(stored, env)
    if differences:
        raise UserError(
            f"this environment differs from the run's ({'; '.join(differences)}); start a new run",
            where=str(run_dir.path),
        )


def _sweep(
    scenario: Scenario,
    cases: list[Case],
    console: Console,
    run_dir: RunDir,
    accel: Accelerator,
    compare: CompareOptions | None,
    overrides: Sequence[str],
) -> int:
    storage_error = None
    parity = ParityCheck(cases, scenario.source) if scenario.check == "loss_parity" else None
    if parity:
        cases = parity.cases
        parity.remember(run_dir.results())
    pending = pending_cases(cases, scenario.run.repeats, run_dir.done())
    total = len(cases) * scenario.run.repeats
    console.print(
        f"[bold]{escape(scenario.name)}[/]: {len(pending)} of {total} case runs to do on {accel.count}× {accel.names[0] if accel.names else accel.kind} → {escape(str(run_dir.path))}",
        highlight=False,
    )
    # before prepare_environment turns tokenizers' parallelism off
    data_dirs = prepare_corpora([p.case for p in pending], console)
    prepare_environment(accel)
    launcher = make_launcher(scenario, accel)
    interrupted = False
    fallback = None
    try:
        if pending:
            ops = launcher.build_ops(
                ops_for([p.case for p in pending], accel.kind),
                run_dir.path / "ops.json",
                scenario.run.timeout_s,
            )
            console.print(
                "DeepSpeed ops: " + ", ".join(_op_text(name, info) for name, info in ops.items()),
                highlight=False,
                markup=False,
            )
            fallback = optimizer_fallback(ops)
            if fallback:
                console.print(Text(fallback, style="yellow"), highlight=False)
        with LiveProgress(console, len(pending)) as progress:
            runner = Runner(
                run_dir,
                scenario.run,
                accel,
                launcher,
                scenario.name,
                observer=progress,
                data_dirs=data_dirs,
                annotate=parity.annotate if parity else None,
                torch_adam=fallback is not None,
            )
            runner.run_all(pending)
    except KeyboardInterrupt:
        interrupted = True
    except OSError as exc:  # results.jsonl cannot grow (disk full): stop, keep what is whole
        if exc.filename != str(run_dir.results_path):
            raise
        storage_error = f"{exc.filename}: {exc.strerror}"
    finally:
        launcher.close()
    results = run_dir.results()
    write_digest(run_dir)
    if results:
        console.print(
            comparison_table(results_frame(results), title=f"{scenario.name} — {run_dir.run_id}"),
        )
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    console.print(
        f"results: {run_dir.results_path} ({summary or 'none'})", highlight=False, markup=False
    )
    history = index_finished_run(run_dir, console)
    again = escape(resume_command(scenario, overrides, run_dir))
    if storage_error:
        console.print(
            f"[bold red]error:[/] cannot store a result ({escape(storage_error)}); finished cases are "
            f"kept; make room, then continue with  {again}",
            highlight=False,
        )
        return ExitCode.INVALID
    if interrupted:
        console.print(
            f"[yellow]interrupted[/]: finished cases are kept; continue with  {again}",
            highlight=False,
        )
        return ExitCode.INTERRUPTED
    code = (
        ExitCode.INVALID if any(r.status in ("error", "timeout") for r in results) else ExitCode.OK
    )
    if parity:
        table, passed = parity_table(results)
        console.print(table)
        if not passed and code == ExitCode.OK:
            code = ExitCode.FAILED_CHECK
    return compare_finished_run(run_dir, compare, history, console, code) if compare else code
