"""``model.config``: a file, a folder or a cached Hub id; current families; the override rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmbench.cli import cli
from llmbench.define.models import (
    _CONFIG_DEFAULTS,
    _CONFIG_NAMES,
    FAMILIES,
    build_model,
    config_dims,
    count_parameters,
    hf_config,
    resolve_dims,
)
from llmbench.define.schema import CaseSpec, case_problems
from llmbench.plan.describe import describe_model

ROOT = Path(__file__).parent.parent
LLAMA3 = ROOT / "scenarios" / "configs" / "llama3-tiny"
MIXTRAL = ROOT / "scenarios" / "configs" / "mixtral-tiny.json"


def populate_hub_cache(home: Path, repo: str, config: Path) -> None:
    """What ``hf download REPO config.json`` leaves under ``$HF_HOME/hub``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(config, root / "snapshots" / commit / "config.json")


@pytest.fixture
def hub(tmp_path, monkeypatch) -> str:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    populate_hub_cache(tmp_path / "hf", "acme/tiny-moe", MIXTRAL)
    return "acme/tiny-moe"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_config_defaults_are_the_config_class_defaults(family):
    """The json-only reader fills a missing key exactly as transformers would."""
    import transformers

    own = transformers.AutoConfig.for_model(family).to_dict()
    own.setdefault("rope_theta", (own.get("rope_parameters") or {}).get("rope_theta"))
    names = [*_CONFIG_NAMES[family].values(), "vocab_size", "tie_word_embeddings"]
    for name in names:
        table = _CONFIG_DEFAULTS[family].get(name)
        expected = own.get(name)
        if table is None and name == "num_key_value_heads":
            expected = None if own[name] == own["num_attention_heads"] else expected
        assert table == expected, (family, name)


@pytest.mark.parametrize(
    ("ref", "family", "layers_hidden", "experts"),
    [(str(LLAMA3), "llama", (2, 128), 0), (str(MIXTRAL), "mixtral", (2, 128), 4)],
)
def test_shipped_configs_read_without_torch_and_build_what_they_say(
    ref, family, layers_hidden, experts
):
    found, dims = config_dims(ref)
    assert found == family
    assert (dims.num_layers, dims.hidden_size, dims.num_experts) == (*layers_hidden, experts)
    cfg = hf_config(family, dims, "causal-lm", source=ref)
    assert cfg.dtype is None  # fp32 weights although the file says bf16: DeepSpeed casts
    model = build_model(cfg, "causal-lm", device="meta")
    assert type(model).__name__ == f"{'Llama' if family == 'llama' else 'Mixtral'}ForCausalLM"
    counts = count_parameters(model)
    from llmbench.plan.anatomy import counted

    assert counted(family, dims, "causal-lm").counts == counts


def test_llama3_config_keeps_its_rope_scaling_and_theta():
    family, dims = config_dims(str(LLAMA3))
    cfg = hf_config(family, dims, "causal-lm", source=str(LLAMA3))
    assert dims.rope_theta == 500000.0 and dims.kv_heads == 2
    assert cfg.rope_parameters["rope_type"] == "llama3"
    assert cfg.rope_parameters["rope_theta"] == 500000.0


def test_a_cached_hub_id_validates_builds_and_plans(hub, cli_runner):
    spec = CaseSpec.model_validate({"model": {"config": hub}})
    assert (spec.model.family, spec.model.size, spec.task) == ("mixtral", "config", "causal-lm")
    assert case_problems(spec) == []
    assert spec.model_name == "mixtral-2x128"
    cfg = hf_config("mixtral", spec.dims(), spec.task, source=hub)
    assert cfg.num_local_experts == 4
    out = cli_runner.invoke(cli, ["plan", "--model-config", hub, "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["model"]["family"] == "mixtral"


def test_a_folder_and_its_file_are_the_same_model():
    by_folder = CaseSpec.model_validate({"model": {"config": str(LLAMA3)}})
    by_file = CaseSpec.model_validate({"model": {"config": str(LLAMA3 / "config.json")}})
    assert by_folder.dims() == by_file.dims()
    assert (
        describe_model(config_path=LLAMA3).counts
        == describe_model(config_path=LLAMA3 / "config.json").counts
    )


def test_overrides_apply_on_top_of_a_config_and_rename_it():
    spec = CaseSpec.model_validate({"model": {"config": str(MIXTRAL), "num_layers": 4}})
    assert spec.dims().num_layers == 4 and spec.dims().num_experts == 4
    assert spec.model_name == "mixtral-4x128"


def test_an_overridden_hidden_size_gets_the_architectures_mlp_width():
    """GPT-2's transformers config derives n_inner = 4 × hidden when it is unset."""
    spec = CaseSpec.model_validate(
        {"model": {"family": "gpt2", "num_layers": 4, "hidden_size": 256}}
    )
    dims = spec.dims()
    assert dims.intermediate_size == 1024  # the preset's 512 stays only for hidden 128
    assert spec.model_name == "gpt2-4x256"
    model = build_model(hf_config("gpt2", dims, "causal-lm"), "causal-lm", device="meta")
    assert model.transformer.h[0].mlp.c_fc.weight.shape == (256, 1024)
    explicit = resolve_dims("gpt2", "tiny", {"hidden_size": 256, "intermediate_size": 300})
    assert explicit.intermediate_size == 300
    # a class with a fixed default (Llama's 11008) has no rule: the preset's ratio is kept
    assert resolve_dims("llama", "tiny", {"hidden_size": 256}).intermediate_size == 704
    moe = resolve_dims("qwen2_moe", "tiny", {"hidden_size": 256})
    assert (moe.expert_intermediate_size, moe.shared_expert_intermediate_size) == (128, 256)
    assert CaseSpec.model_validate({"model": {"family": "gpt2"}}).model_name == "gpt2-tiny"


@pytest.mark.parametrize(
    ("family", "size", "total", "active"),
    [  # totals the model cards state (billions, rounded as they round them)
        ("llama", "1b", 1.24, None),
        ("llama", "8b", 8.03, None),
        ("mistral", "7b", 7.25, None),
        ("qwen2", "0.5b", 0.49, None),
        ("qwen2", "7b", 7.62, None),
        ("mixtral", "8x7b", 46.7, 12.9),
        ("qwen2_moe", "a2.7b", 14.3, 2.7),
    ],
)
def test_presets_have_their_published_sizes(family, size, total, active):
    model = describe_model(f"{family}-{size}")
    digits = len(str(total).split(".")[1])
    assert round(model.counts.total / 1e9, digits) == total
    if active is not None:
        assert round(model.counts.active / 1e9, 1) == active


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ({"config": "acme/not-cached"}, "no Hub model in the local Hugging Face cache"),
        ({"config": "./nowhere/config.json"}, "no such file or folder"),
        ({"config": "BAD"}, "invalid JSON"),
        ({"config": "T5"}, "model_type 't5' is not one llmbench builds"),
        ({"config": "NEG"}, "num_hidden_layers must be a positive integer"),
        ({"config": str(MIXTRAL), "size": "7b"}, "a size names a preset"),
        ({"config": str(MIXTRAL), "family": "llama"}, "is a mixtral model, not llama"),
        ({"family": "gpt2", "num_experts": 4}, "dense model"),
        ({"family": "mixtral", "experts_per_token": 5}, "exceed the 4 experts"),
    ],
)
def test_bad_model_configs_fail_validation_in_one_line(
    tmp_path, monkeypatch, write_scenario, cli_runner, model, says
):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    files = {
        "BAD": '{"model_type": "llama",',
        "T5": '{"model_type": "t5"}',
        "NEG": '{"model_type": "mistral", "num_hidden_layers": 0}',
    }
    if model.get("config") in files:
        path = tmp_path / "config.json"
        path.write_text(files[model["config"]])
        model = {**model, "config": str(path)}
    scenario = write_scenario(json.dumps({"name": "bad", "model": model}))
    out = cli_runner.invoke(cli, ["validate", str(scenario)])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in out.output, out.output
