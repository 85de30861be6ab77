"""The house shows its wings: imports run one way, and only the rank side loads torch.

define → measure → judge, plan beside them reading judge for calibration
(``../shared/DESIGN.md``). The graph is read from the source (every import,
also those inside functions), so a lazy import that runs back up is caught too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import llmbench

ROOT = Path(llmbench.__file__).parent
HEAVY = ("torch", "deepspeed", "transformers", "pynvml", "tokenizers")
# The rank side and what it runs: these build models, call DeepSpeed or NVML.
RANK_SIDE = {
    "llmbench.measure.worker",
    "llmbench.measure.training",
    "llmbench.measure.pipeline",
    "llmbench.measure.comm",
    "llmbench.measure.ops",
    "llmbench.measure.launch.rank",
    "llmbench.measure.data.synthetic",
    "llmbench.measure.weights",
    "llmbench.plan.probe",
}
# Modules of plan that may read stored runs: calibration and validation against them.
PLAN_READS_JUDGE = {"llmbench.plan.history", "llmbench.plan.validate", "llmbench.plan.app"}


def modules() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def imports_of(module: str) -> set[str]:
    """Every llmbench module this one imports, at module level or inside a function."""
    path = ROOT.parent / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found: set[str] = set()
    known = set(modules())
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in names if n in known} or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("llmbench")}


def wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (ROOT / parts[1]).is_dir() else "shared"


def test_every_package_is_a_wing_or_a_shared_foundation():
    top = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert top == {"define", "measure", "judge", "plan", "cli"}
    shared = sorted(m for m in modules() if wing(m) == "shared")
    assert shared == [
        "llmbench",
        "llmbench.__main__",
        "llmbench.errors",
        "llmbench.flops",
        "llmbench.hardware",
        "llmbench.units",
    ]


def test_imports_run_one_way():
    allowed = {
        "shared": {"shared"},
        "define": {"shared", "define"},
        "measure": {"shared", "define", "measure", "judge"},
        "judge": {"shared", "define", "judge"},
        "plan": {"shared", "define", "measure", "plan"},
        "cli": {"shared", "define", "measure", "judge", "plan", "cli"},
    }
    wrong = []
    for module in modules():
        if module in ("llmbench", "llmbench.__main__"):
            continue
        for target in imports_of(module):
            ok = allowed[wing(module)] | ({"judge"} if module in PLAN_READS_JUDGE else set())
            if wing(target) not in ok:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_import_cycles():
    graph = {m: imports_of(m) - {m} for m in modules()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    # a package importing its own submodules (re-exports) is not a cycle of design
    cycles = [
        c
        for c in cycles
        if not any(c.startswith(f"{p} ->") for p in ("llmbench.measure.sampling",))
    ]
    assert cycles == []


@pytest.mark.slow
def test_no_heavy_library_is_loaded_outside_the_rank_side():
    """Import each parent-side module in turn in a fresh interpreter; none may pull torch & co."""
    candidates = [m for m in modules() if m not in RANK_SIDE and m != "llmbench.__main__"]
    script = f"""
import importlib, json, sys
heavy = {HEAVY!r}
for name in {candidates!r}:
    importlib.import_module(name)
    loaded = [h for h in heavy if h in sys.modules]
    if loaded:
        print(json.dumps([name, loaded])); break
else:
    print(json.dumps(None))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) is None
