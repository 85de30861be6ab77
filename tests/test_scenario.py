"""Scenario schema, loading, overrides, expansion and every error path."""

from __future__ import annotations

import sys

import pytest

from llmbench.define.cases import Case, case_id
from llmbench.define.loader import load_scenario, parse_scenario
from llmbench.define.schema import CaseSpec
from llmbench.errors import UserError

ZERO = """\
name: z
model: {family: gpt2, size: tiny}
deepspeed:
  zero_stage: [0, 1, 2, 3]
  precision: [bf16, fp32, fp16]
parallel:
  world_size: [1, 2]
exclude:
  - {deepspeed.precision: fp16, parallel.world_size: 2}
"""


def error_of(text: str, overrides=(), source="s.yaml") -> str:
    with pytest.raises(UserError) as info:
        parse_scenario(text, source=source, overrides=overrides)
    return str(info.value)


def test_cartesian_product_with_exclude():
    cases = parse_scenario(ZERO).expand()
    assert len(cases) == 4 * 3 * 2 - 4
    assert not any(
        c.params["deepspeed.precision"] == "fp16" and c.params["parallel.world_size"] == 2
        for c in cases
    )
    # first axis slowest, in file order
    assert [c.params["deepspeed.zero_stage"] for c in cases[:5]] == [0, 0, 0, 0, 0]
    assert cases[0].label == "gpt2-tiny z0 bf16 ws1"


def test_case_ids_are_stable_and_distinct():
    first = [c.id for c in parse_scenario(ZERO).expand()]
    again = [c.id for c in parse_scenario(ZERO).expand()]
    assert first == again
    assert len(set(first)) == len(first)
    # a pinned id: changing how ids are computed breaks nightly history, so it must be deliberate
    settings = {"deepspeed": {"zero_stage": 2, "precision": "fp32"}, "parallel": {"world_size": 2}}
    spec = CaseSpec.model_validate({**settings, "model": {"dropout": 0}})
    assert Case.from_spec(spec).id == "886576241bba"
    assert case_id(Case.from_spec(spec).params) == "886576241bba"


def test_default_dropout_is_the_config_and_gets_its_own_id():
    """Before model.dropout existed every case trained with dropout off: those keep their
    ids; the default (the architecture's own dropout) is another model, so another id."""
    settings = {"deepspeed": {"zero_stage": 2, "precision": "fp32"}, "parallel": {"world_size": 2}}
    default = Case.from_spec(CaseSpec.model_validate(settings))
    assert default.spec.model.dropout == "config" and default.id == "d6fc767ff9ff"
    off = Case.from_spec(CaseSpec.model_validate({**settings, "model": {"dropout": 0.0}}))
    assert off.id == "886576241bba" and off.params["model.dropout"] == 0.0


def test_labels_name_a_dropout_that_is_not_the_configs():
    assert parse_scenario("model: {dropout: 0}").expand()[0].label == "gpt2-tiny dropout=0"
    assert parse_scenario("model: {dropout: config}").expand()[0].label == "gpt2-tiny"
    swept = parse_scenario("model: {dropout: [config, 0.1]}").expand()
    assert [c.label for c in swept] == ["gpt2-tiny dropout=config", "gpt2-tiny dropout=0.1"]
    assert (
        "dropout"
        not in parse_scenario("comm: {op: all_reduce}\nmodel: {dropout: 0}").expand()[0].label
    )


def test_id_ignores_spelling_of_a_default_and_size_alias():
    explicit = parse_scenario(
        "model: {family: gpt2, size: small}\ndeepspeed: {zero_stage: 0}"
    ).expand()[0]
    implicit = parse_scenario("model: {size: 125m}").expand()[0]
    assert explicit.id == implicit.id
    assert explicit.params["model.size"] == "125m"


def test_overrides_replace_and_sweep():
    s = parse_scenario(
        ZERO, overrides=["deepspeed.zero_stage=3", "training.steps=20", "model.size=[tiny,mini]"]
    )
    cases = s.expand()
    assert {c.params["deepspeed.zero_stage"] for c in cases} == {3}
    assert {c.params["training.steps"] for c in cases} == {20}
    assert {c.params["model.size"] for c in cases} == {"tiny", "mini"}
    assert "model.size" in s.swept


def test_override_into_raw_deepspeed_config():
    s = parse_scenario(
        "deepspeed: {config: {zero_optimization: {overlap_comm: true}}}",
        overrides=["deepspeed.config.zero_optimization.reduce_bucket_size=5000"],
    )
    cfg = s.expand()[0].spec.deepspeed.config
    assert cfg == {"zero_optimization": {"overlap_comm": True, "reduce_bucket_size": 5000}}


def test_include_adds_cases():
    text = ZERO + "include:\n  - {deepspeed.zero_stage: 3, deepspeed.offload_optimizer: cpu}\n"
    cases = parse_scenario(text).expand()
    extra = [c for c in cases if c.params["deepspeed.offload_optimizer"] == "cpu"]
    assert len(extra) == 1 and extra[0].params["deepspeed.zero_stage"] == 3
    assert "opt-off:cpu" in extra[0].label


def test_resolved_round_trips():
    import yaml

    s = parse_scenario(ZERO, overrides=["training.steps=7"])
    again = parse_scenario(yaml.safe_dump(s.resolved(), sort_keys=False))  # as RunDir writes it
    assert [c.id for c in again.expand()] == [c.id for c in s.expand()]


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        (
            "model:\n  family: gpt2\n  sise: tiny\n",
            (),
            "s.yaml:3: model.sise: unknown key (did you mean model.size?)",
        ),
        ("modle:\n  family: gpt2\n", (), "s.yaml:1: modle: unknown section (did you mean model?)"),
        (
            "deepspeed:\n  zero_stage: 4\n",
            (),
            "s.yaml:2: deepspeed.zero_stage: 4 is not valid: Input should be 0, 1, 2 or 3",
        ),
        ("training:\n  steps: [10, ten]\n", (), "s.yaml:2: training.steps: 'ten' is not valid"),
        (
            "training:\n  seq_len: -1\n",
            (),
            "s.yaml:2: training.seq_len: -1 is not valid: Input should be greater than 0",
        ),
        ("training:\n  steps: 5\n  steps: 6\n", (), "s.yaml:3: training.steps: duplicate key"),
        ("model: {family: gpt2, size: 7b}\n", (), "s.yaml:1: model.size: '7b' is not a gpt2 size"),
        (
            "model: {family: gpt2, size: tiny}\ntraining: {seq_len: 4096}\n",
            (),
            "s.yaml:2: training.seq_len: 4096 exceeds the model's max_positions 256",
        ),
        (
            "deepspeed: {zero_stage: 2, offload_param: cpu}\n",
            (),
            "s.yaml:1: deepspeed.offload_param: parameter offload needs zero_stage 3",
        ),
        (
            "run:\n  timeout_s: [1, 2]\n",
            (),
            "s.yaml:2: run.timeout_s: run settings cannot be swept",
        ),
        ("training:\n  steps: []\n", (), "s.yaml:2: training.steps: an empty list sweeps nothing"),
        (
            "deepspeed:\n  zero_stage: [1, 1]\n",
            (),
            "s.yaml:2: deepspeed.zero_stage: 1 is listed twice",
        ),
        ("model: [1, 2]\n", (), "s.yaml:1: model: expected a mapping"),
        (
            "exclude:\n  - {deepspeed.zero_stag: 1}\n",
            (),
            "s.yaml:2: exclude: deepspeed.zero_stag: unknown key (did you mean deepspeed.zero_stage?)",
        ),
        (
            "check: loss_parit\n",
            (),
            "s.yaml:1: check: unknown check 'loss_parit' (did you mean loss_parity?)",
        ),
        (
            "{}",
            ("trainig.steps=3",),
            "command line: trainig.steps: unknown key (did you mean training.steps?)",
        ),
        (
            "{}",
            ("training.steps",),
            "command line: override 'training.steps' is not of the form key=value",
        ),
        ("{}", ("training.steps=abc",), "command line: training.steps: 'abc' is not valid"),
        (
            "deepspeed: {zero_stage: [0, 1]}\nexclude:\n  - {deepspeed.zero_stage: [0, 1]}\n",
            (),
            "s.yaml: every case is excluded",
        ),
        ("model: {family: gpt2\n", (), "s.yaml:2: invalid YAML"),
    ],
)
def test_errors_name_file_line_and_key(text, overrides, expected):
    assert error_of(text, overrides).startswith(expected)


def test_impossible_combination_in_a_sweep_names_it_and_suggests_exclude():
    text = "parallel:\n  world_size: [1, 2]\n  tp: [1, 2]\n"
    message = error_of(text)
    assert message.startswith("s.yaml:2: parallel.world_size: 1 is not divisible by tp×pp = 2×1")
    assert "parallel.world_size=1, parallel.tp=2" in message and "exclude" in message
    ok = text + "exclude:\n  - {parallel.world_size: 1, parallel.tp: 2}\n"
    assert len(parse_scenario(ok).expand()) == 3


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError, match="no such scenario file"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="not a file"):
        load_scenario(tmp_path)


def test_expansion_does_not_import_torch():
    import subprocess

    code = "import sys; from llmbench.define.loader import parse_scenario; parse_scenario(open('scenarios/zero_sweep.yaml').read()).expand(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_10000_case_matrix_expands():
    text = (
        "training:\n  seed: ["
        + ", ".join(str(i) for i in range(2500))
        + "]\ndeepspeed:\n  zero_stage: [0, 1, 2, 3]\n"
    )
    cases = parse_scenario(text).expand()
    assert len(cases) == 10_000
    assert len({c.id for c in cases}) == 10_000


def test_comm_size_range_sweeps_powers_of_two():
    s = parse_scenario("comm: {op: all_gather, size_bytes: 1KiB..8KiB}\nparallel: {world_size: 2}")
    cases = s.expand()
    assert [c.params["comm.size_bytes"] for c in cases] == [1024, 2048, 4096, 8192]
    assert [c.label for c in cases] == [
        "all_gather 1KiB",
        "all_gather 2KiB",
        "all_gather 4KiB",
        "all_gather 8KiB",
    ]
    assert parse_scenario(
        "{}", overrides=["comm.op=broadcast", "comm.size_bytes=1MiB..2MiB"]
    ).swept == ["comm.size_bytes"]


def test_comm_errors():
    assert error_of("comm: {op: all_reduce, size_bytes: 3KiB..8KiB}").startswith(
        "s.yaml:1: comm.size_bytes: '3KiB..8KiB': a range runs from a power of two"
    )
    assert error_of("comm: {op: all_reduce, size_bytes: 6}\nparallel: {world_size: 2}").startswith(
        "s.yaml:1: comm.size_bytes: 6 bytes of fp32 do not split evenly over 2 ranks"
    )


def test_byte_sizes_read_as_plain_integers():
    import yaml

    s = parse_scenario("training: {rank_memory_limit_bytes: 1.5GiB}")
    assert s.expand()[0].params["training.rank_memory_limit_bytes"] == 1610612736
    assert "1610612736" in yaml.safe_dump(s.resolved())


ALIAS_BOMB = (
    'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    + "deepspeed:\n  config: {x: *i}\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            ALIAS_BOMB,
            "s.yaml:1: invalid YAML: anchors and aliases (&name, *name) are not supported",
        ),
        ("deepspeed: &d\n  config: *d\n", "s.yaml:1: invalid YAML: anchors and aliases"),
        (
            "deepspeed:\n  config: {x: !!python/object/apply:os.system [echo hi]}\n",
            "s.yaml:2: invalid YAML: could not determine a constructor for the tag",
        ),
        ("deepspeed:\n  config: " + "[" * 5000 + "]" * 5000 + "\n", "s.yaml"),
        ("", "s.yaml: the scenario file is empty"),
        ("# only a comment\n", "s.yaml: the scenario file is empty"),
        (
            "training:\n  lr: .inf\n",
            "s.yaml:2: training.lr: inf is not valid: numbers must be finite",
        ),
        (
            "deepspeed:\n  config: {x: .nan}\n",
            "s.yaml:2: deepspeed.config: {'x': nan} is not valid",
        ),
        ("name: " + "n" * 101 + "\n", "s.yaml:1: name: 101 characters; a name has at most 100"),
    ],
)
def test_hostile_or_empty_scenarios_end_in_one_line(text, expected):
    import time

    t0 = time.monotonic()
    message = error_of(text, ())
    assert message.startswith(expected) and "\n" not in message
    assert time.monotonic() - t0 < 5


def test_an_alias_in_an_override_is_refused():
    assert error_of("{}", ("deepspeed.config.x=&a [*a]",)).startswith(
        "command line: deepspeed.config.x: cannot parse the value"
    )


def test_a_huge_sweep_is_refused_before_expansion_unless_the_cap_is_raised():
    text = "training:\n  seed: [" + ", ".join(map(str, range(10**4))) + "]\n"
    text += "  steps: [" + ", ".join(map(str, range(1, 10**4 + 1))) + "]\n"
    message = error_of(text, ())
    assert message == (
        "s.yaml: the sweep has 100,000,000 combinations, more than the cap of 10,000; "
        "narrow it, or raise the cap with --max-cases 100000000"
    )
    small = "training:\n  seed: [" + ", ".join(map(str, range(20))) + "]\n"
    with pytest.raises(UserError, match="more than the cap of 10"):
        parse_scenario(small, max_cases=10)
    assert len(parse_scenario(small, max_cases=20).expand()) == 20
