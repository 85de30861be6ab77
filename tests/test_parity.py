"""Loss parity: references, deviations, tolerances, and the check on the real engine."""

from __future__ import annotations

import pytest

from llmbench.define.loader import parse_scenario
from llmbench.errors import UserError
from llmbench.judge.parity import ParityCheck, deviation, reference_spec
from llmbench.judge.result import CaseResult
from tests.conftest import read_results, run_dirs, run_llmbench


def test_reference_trains_the_same_global_batches_the_plainest_way():
    (case,) = parse_scenario(
        "training: {micro_batch: 3}\ndeepspeed: {zero_stage: 3, precision: bf16, offload_optimizer: cpu}\nparallel: {world_size: 4, tp: 2}"
    ).expand()
    ref = reference_spec(case.spec)
    assert ref.training.micro_batch == 3 * 2  # dp = 4 / tp 2
    assert (ref.deepspeed.zero_stage, ref.deepspeed.precision, ref.deepspeed.offload_optimizer) == (
        0,
        "fp32",
        "none",
    )
    assert (ref.parallel.world_size, ref.parallel.tp, ref.parallel.pp) == (1, 1, 1)
    assert ref.training.seed == case.spec.training.seed


def test_references_are_added_once_and_run_first():
    cases = parse_scenario("deepspeed: {zero_stage: [0, 1, 2]}\nparallel: {world_size: 2}").expand()
    check = ParityCheck(cases, "s.yaml")
    assert len(check.cases) == 4
    assert check.cases[0].label == "gpt2-tiny mb8 z0 fp32 ws1 dropout=0"
    assert {check.reference_of[c.id] for c in check.cases[1:]} == {check.cases[0].id}


def test_parity_forces_dropout_off_and_says_so():
    cases = parse_scenario(
        "model: {dropout: [config, 0.1, 0]}\ndeepspeed: {zero_stage: 1}"
    ).expand()
    check = ParityCheck(cases, "s.yaml")
    reference, (case,) = check.cases[0], check.cases[1:]  # three dropouts, one case to check
    assert case.spec.model.dropout == 0 and case.params["model.dropout"] == 0
    assert case.id == cases[2].id  # the explicit dropout-0 case, id unchanged
    assert case.label == "gpt2-tiny dropout=0" and reference.spec.model.dropout == 0


def test_deviation_and_tolerance_by_precision():
    ref = [7.0, 6.5, 6.0]
    assert deviation([7.0, 6.5005, 6.0], ref, "fp32").ok
    assert not deviation([7.0, 6.51, 6.0], ref, "fp32").ok
    assert deviation([7.0, 6.51, 6.0], ref, "bf16").ok
    dev = deviation([7.0, 6.6, 6.0], ref, "fp32")
    assert dev.max_abs == pytest.approx(0.1) and dev.max_rel == pytest.approx(0.1 / 6.5)
    assert not deviation([7.0, float("nan"), 6.0], ref, "bf16").ok


def test_annotations_carry_the_verdict_into_results():
    cases = parse_scenario("deepspeed: {zero_stage: [1, 2]}").expand()
    check = ParityCheck(cases, "s.yaml")
    ref_case, *others = check.cases
    ref = CaseResult(ref_case.id, ref_case.label, ref_case.params, "ok", losses=[7.0, 6.0])
    check.annotate(ref_case, ref)
    good = CaseResult(others[0].id, "", others[0].params, "ok", losses=[7.0, 6.0001])
    bad = CaseResult(others[1].id, "", others[1].params, "oom")
    check.annotate(others[0], good)
    check.annotate(others[1], bad)
    assert good.metrics["loss_parity_ok"] is True and good.metrics[
        "loss_parity_max_abs_dev"
    ] == pytest.approx(1e-4)
    assert (
        bad.metrics["loss_parity_ok"] is None and bad.null_reasons["loss_parity_ok"] == "case oom"
    )


def test_parity_refuses_what_it_cannot_compare():
    with pytest.raises(UserError, match="needs a fixed micro_batch"):
        ParityCheck(parse_scenario("training: {micro_batch: auto}").expand(), "s.yaml")


@pytest.mark.slow
@pytest.mark.usefixtures("ds_ops")
def test_zero_stages_pass_and_a_perturbed_case_fails(write_scenario, tmp_path):
    text = """\
name: parity
check: loss_parity
model: {family: gpt2, size: tiny}
training: {seq_len: 32, micro_batch: 2, warmup_steps: 0, steps: 6, lr: 0.001}
deepspeed:
  zero_stage: [0, 1, 2, 3]
  precision: fp32
parallel: {world_size: 2}
"""
    out = run_llmbench(["run", str(write_scenario(text)), "--output-dir", str(tmp_path / "ok")])
    assert out.returncode == 0, out.stdout + out.stderr
    (run_dir,) = run_dirs(tmp_path / "ok")
    results = read_results(run_dir)
    assert len(results) == 5  # the 1-rank reference was added
    # the reference is found by its layout, not its label (the label grew " dropout=0")
    assert all(
        r["metrics"].get("loss_parity_ok")
        for r in results
        if r["params"]["parallel.world_size"] > 1
    )
    # the same sweep with one case's learning rate changed behind DeepSpeed's back
    perturbed = text.replace(
        "  zero_stage: [0, 1, 2, 3]\n",
        "  zero_stage: 2\n  config:\n    - {}\n    - {optimizer: {type: AdamW, params: {lr: 0.01}}}\n",
    )
    out = run_llmbench(
        [
            "parity",
            str(write_scenario(perturbed, "perturbed.yaml")),
            "--output-dir",
            str(tmp_path / "bad"),
        ]
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "DIVERGED" in out.stdout
