"""Analytical parameter counts against the model transformers builds on the meta device."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmbench.define.models import FAMILIES, build_model, count_parameters, hf_config
from llmbench.plan.anatomy import counted

CASES = [
    (family, size, task)
    for family, fam in FAMILIES.items()
    for size in fam.presets
    for task in fam.tasks
]


@pytest.mark.parametrize(("family", "size", "task"), CASES)
def test_every_preset_counts_exactly_as_built(family, size, task):
    dims = FAMILIES[family].presets[size]
    model = build_model(hf_config(family, dims, task), task, device="meta")
    c = counted(family, dims, task)
    assert c.counts == count_parameters(model)
    assert c.largest_module_params == max(
        sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()
    )
    distinct = {id(p): p.numel() for p in model.parameters()}
    assert c.tensor_numels == tuple(sorted(distinct.values(), reverse=True))


def test_planning_a_preset_imports_neither_torch_nor_transformers():
    code = (
        "import sys; from llmbench.plan.describe import describe_model; "
        "describe_model('llama-70b'); "
        "print('torch' in sys.modules or 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
