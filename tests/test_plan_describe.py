"""Describing the planned model: presets, config files on disk, overrides, mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmbench.define.models import meta_parameter_counts, resolve_dims
from llmbench.errors import UserError
from llmbench.plan.describe import describe_model

DATA = Path(__file__).parent / "data" / "plan"


def test_preset_counts_come_from_the_meta_model():
    model = describe_model("llama-7b")
    assert model.counts == meta_parameter_counts("llama", resolve_dims("llama", "7b"), "causal-lm")
    assert model.total_params == 6_738_415_616
    # DeepSpeed's "largest layer": the embedding (and the untied head), 32000 × 4096
    assert model.largest_module_params == 32000 * 4096
    assert model.tensor_numels[0] == 32000 * 4096
    assert sum(model.tensor_numels) == model.total_params
    assert model.embedding_params + model.block_params + model.head_params + model.other_params == (
        model.total_params
    )


def test_tied_head_is_counted_once():
    model = describe_model("gpt2-125m")
    assert model.counts.head_tied and model.head_params == 0
    assert model.total_params == 124_439_808  # GPT-2 small


def test_persistent_tensors_are_the_small_ones():
    model = describe_model("gpt2-mini")
    small = [n for n in model.tensor_numels if n <= 100_000]
    assert model.persistent_numel(100_000) == sum(small) > 0
    assert model.persistent_numel(0) == 0


def test_a_transformers_config_file_or_its_folder(tmp_path):
    model = describe_model(config_path=DATA / "llama_config.json")
    assert model.family == "llama"
    assert (model.dims.num_layers, model.dims.hidden_size, model.dims.kv_heads) == (4, 256, 2)
    (tmp_path / "config.json").write_text((DATA / "llama_config.json").read_text())
    assert describe_model(config_path=tmp_path).counts == model.counts


def test_overrides_change_the_model():
    base = describe_model("llama-7b")
    shallow = describe_model("llama-7b", overrides={"num_layers": 2})
    assert shallow.counts.per_layer == base.counts.per_layer
    assert shallow.total_params == base.total_params - 30 * base.counts.per_layer
    assert shallow.name == "llama-7b*"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "llama-7c"}, "did you mean llama-7b"),
        ({"config_path": DATA / "unsupported_config.json"}, "model_type 't5' is not one llmbench"),
        ({"config_path": DATA / "missing.json"}, "no such file or folder"),
        ({}, "give either a model name"),
        ({"name": "llama-7b", "overrides": {"layers": 2}}, "did you mean num_layers"),
        ({"name": "llama-7b", "overrides": {"num_heads": 3}}, "do not divide evenly"),
        ({"name": "gpt2-tiny", "task": "masked-lm"}, "does not support 'masked-lm'"),
    ],
)
def test_mistakes_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        describe_model(**kwargs)


def test_invalid_json_names_the_line(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{\n  "model_type": "llama",\n  oops\n}\n')
    with pytest.raises(UserError, match=r"config.json:3: invalid JSON"):
        describe_model(config_path=bad)
