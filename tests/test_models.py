"""Model families: configs, presets and exact parameter counts."""

from __future__ import annotations

import pytest
import torch

from llmbench.define.models import (
    FAMILIES,
    build_model,
    count_parameters,
    hf_config,
    meta_parameter_counts,
    parse_model_name,
    resolve_dims,
)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("task_index", [0, 1])
def test_tiny_counts_match_the_real_model(family, task_index):
    fam = FAMILIES[family]
    task = fam.tasks[task_index]
    dims = resolve_dims(family, "tiny")
    torch.manual_seed(0)
    model = build_model(hf_config(family, dims, task), task)
    counts = count_parameters(model)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts == meta_parameter_counts(family, dims, task)
    assert counts.num_layers == dims.num_layers
    assert counts.embedding > 0 and counts.non_embedding == counts.total - counts.embedding


def test_gpt2_125m_counts_known_figures():
    counts = meta_parameter_counts("gpt2", resolve_dims("gpt2", "125m"), "causal-lm")
    # GPT-2 small: 124,439,808 parameters with the LM head tied to the token embedding
    assert counts.total == 124_439_808
    assert counts.head_tied
    assert counts.embedding == 50257 * 768 + 1024 * 768
    # 6N uses every matmul weight: the tied head counts once, position embeddings do not
    assert counts.flops_params == counts.total - 1024 * 768


def test_llama_7b_counts_on_meta_device():
    counts = meta_parameter_counts("llama", resolve_dims("llama", "7b"), "causal-lm")
    assert counts.total == 6_738_415_616  # Llama 2 7B
    assert not counts.head_tied and counts.head == 32000 * 4096
    # untied head: the input embedding does no matmul, the output head does
    assert counts.embedding == 32000 * 4096
    assert counts.flops_params == counts.total - 32000 * 4096


def test_every_preset_has_a_consistent_shape():
    for family in FAMILIES.values():
        for size, dims in family.presets.items():
            assert dims.hidden_size % dims.num_heads == 0, (family.name, size)
            assert dims.num_heads % dims.kv_heads == 0, (family.name, size)


def test_parse_model_name():
    assert parse_model_name("llama-7b") == ("llama", "7b")
    assert parse_model_name("gpt2-small") == ("gpt2", "125m")
    assert parse_model_name("distilbert-base") == ("distilbert", "66m")
    with pytest.raises(KeyError):
        parse_model_name("llama-6b")


def test_dimension_overrides():
    dims = resolve_dims("llama", "tiny", {"num_layers": 3, "hidden_size": None})
    assert dims.num_layers == 3 and dims.hidden_size == 128


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_config_round_trip(family):
    from llmbench.define.models import dims_from_config

    for dims in FAMILIES[family].presets.values():
        back = dims_from_config(family, hf_config(family, dims, FAMILIES[family].default_task))
        assert back.num_layers == dims.num_layers and back.hidden_size == dims.hidden_size
        assert back.kv_heads == dims.kv_heads and back.intermediate_size == dims.intermediate_size
        assert (back.vocab_size, back.max_positions, back.tie_embeddings) == (
            dims.vocab_size,
            dims.max_positions,
            dims.tie_embeddings,
        )


def _dropouts(model) -> set[float]:
    """Every dropout probability the model applies: its Dropout modules and its attention's."""
    found = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    for module in model.modules():
        for attr in ("attention_dropout", "attn_dropout"):
            rate = getattr(module, attr, None)
            found |= {rate} if isinstance(rate, float) else set()
    return found


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_dropout_keeps_the_config_or_sets_every_layer(family):
    import transformers

    from llmbench.define.models import DROPOUT_NAMES

    task = FAMILIES[family].default_task
    dims = resolve_dims(family, "tiny")
    own = getattr(transformers, type(hf_config(family, dims, task)).__name__)()
    kept = hf_config(family, dims, task)
    assert [getattr(kept, n) for n in DROPOUT_NAMES[family]] == [
        getattr(own, n) for n in DROPOUT_NAMES[family]
    ]
    for rate in (0.0, 0.25):
        model = build_model(hf_config(family, dims, task, dropout=rate), task, device="meta")
        assert _dropouts(model) <= {rate}
    if DROPOUT_NAMES[family] != ("attention_dropout",):  # Llama & co. have no dropout at all
        assert _dropouts(build_model(kept, task, device="meta")) - {0.0}
