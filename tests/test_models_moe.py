"""Mixture of experts and the current families: counts, FLOPs from active parameters, real training.

The hand count below is the tiny Mixtral config shipped in scenarios/configs
(hidden 128, 2 layers, 4 heads / 2 KV heads, 4 experts of MLP width 256, top-2,
vocabulary 1024, untied head), written out tensor by tensor.
"""

from __future__ import annotations

import math

import pytest

from llmbench.define.models import build_model, count_parameters, hf_config
from llmbench.define.schema import CaseSpec
from llmbench.flops import training_flops_per_token
from llmbench.plan.anatomy import counted
from tests.conftest import read_results, run_dirs, run_llmbench
from tests.test_models_config import LLAMA3, MIXTRAL, populate_hub_cache

H, F, E, K, L, V, KV = 128, 256, 4, 2, 2, 1024, 64
ATTENTION = H * H + H * KV + H * KV + H * H  # q, k, v, o (no biases)
ROUTER = E * H
EXPERT = 3 * H * F  # gate, up, down of one expert
NORMS = 2 * H
ACTIVE = L * (ATTENTION + ROUTER + K * EXPERT + NORMS) + H + V * H  # + final norm, lm_head
TOTAL = V * H + L * (ATTENTION + ROUTER + E * EXPERT + NORMS) + H + V * H


def test_moe_flops_per_token_use_the_active_parameters_by_hand():
    spec = CaseSpec.model_validate({"model": {"config": str(MIXTRAL)}})
    dims = spec.dims()
    model = build_model(
        hf_config("mixtral", dims, "causal-lm", source=str(MIXTRAL)), "causal-lm", "meta"
    )
    counts = count_parameters(model)
    assert counts.total == TOTAL == 1_148_544
    assert counts.expert == L * E * EXPERT
    assert counts.flops_params == ACTIVE == 624_256
    assert counts.active == TOTAL - L * (E - K) * EXPERT
    assert training_flops_per_token(counts.flops_params, L, H, 64) == 6 * ACTIVE + 12 * L * H * 64
    assert counted("mixtral", dims, "causal-lm").counts == counts  # the planner counts the same


def test_qwen2_moe_shared_expert_is_always_active():
    from llmbench.define.models import resolve_dims

    dims = resolve_dims("qwen2_moe", "tiny")
    counts = counted("qwen2_moe", dims, "causal-lm").counts
    per_expert = 3 * dims.hidden_size * dims.expert_width
    assert counts.expert == dims.num_layers * dims.num_experts * per_expert
    assert counts.total - counts.active == dims.num_layers * (dims.num_experts - 2) * per_expert


def test_moe_families_refuse_pipeline_and_autotp_with_a_reason():
    from llmbench.errors import Unsupported
    from llmbench.measure.training import build_training_model

    for parallel in ({"world_size": 2, "pp": 2}, {"world_size": 2, "tp": 2}):
        spec = CaseSpec.model_validate({"model": {"family": "mixtral"}, "parallel": parallel})
        with pytest.raises(Unsupported, match="mixtral"):
            build_training_model(spec)


ZOO = """\
name: zoo
training: {{data: text, data_path: sample, seq_len: 32, micro_batch: 4, warmup_steps: 0,
           steps: 6, lr: 0.003}}
deepspeed: {{precision: fp32, zero_stage: [2, 3]}}
model: {{family: [mistral, qwen2, mixtral, qwen2_moe]}}
include:
  - {{model.family: llama, model.config: {llama3}, deepspeed.zero_stage: 2}}
  - {{model.family: llama, model.config: {llama3}, deepspeed.zero_stage: 3}}
  - {{model.family: mixtral, model.config: acme/tiny-moe, deepspeed.zero_stage: 2}}
  - {{model.family: mixtral, model.config: {mixtral}, deepspeed.zero_stage: 3,
      parallel.world_size: 2}}
"""


@pytest.mark.slow
@pytest.mark.usefixtures("ds_ops")
def test_every_new_family_and_config_trains_under_zero_2_and_3(
    write_scenario, tmp_path, monkeypatch
):
    """First loss near ln(vocab), then falling; MoE under ZeRO-3 on 2 ranks (leaf blocks).

    Real text (the shipped sample): uniformly random tokens start at the best loss
    there is, ln(vocab), so only learnable data can show the loss fall.
    """
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    populate_hub_cache(tmp_path / "hf", "acme/tiny-moe", MIXTRAL)
    text = ZOO.format(llama3=LLAMA3, mixtral=MIXTRAL)
    out = run_llmbench(["run", str(write_scenario(text)), "--output-dir", str(tmp_path / "runs")])
    assert out.returncode == 0, out.stdout + out.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    results = read_results(run_dir)
    assert len(results) == 12
    for r in results:
        assert r["status"] == "ok", (r["label"], r["reason"])
        spec = CaseSpec.from_params(r["params"])
        first, last = r["losses"][0], r["losses"][-1]
        assert abs(first - math.log(spec.dims().vocab_size)) < 0.7, (r["label"], first)
        assert last < first, (r["label"], r["losses"])
        m, moe = r["metrics"], bool(spec.dims().num_experts)
        assert (m["params_expert"] > 0) == moe, r["label"]
        assert (m["params_active"] < m["params_total"]) == moe, r["label"]
    mixtral = [r for r in results if r["params"]["model.config"] == str(MIXTRAL)]
    assert mixtral[0]["metrics"]["params_flops_params"] == ACTIVE
    assert mixtral[0]["metrics"]["flops_per_token"] == 6 * ACTIVE + 12 * L * H * 32
    assert {r["label"].split()[0] for r in results} >= {"llama-2x128", "mixtral-2x128"}
