"""Batches of real text: packing per task, sharding across data-parallel ranks, lazy reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llmbench.define.loader import load_scenario
from llmbench.errors import UserError
from llmbench.measure.data.corpus import PreparedCorpus, prepare_corpus
from llmbench.measure.data.make_sample import SAMPLE
from llmbench.measure.data.text import coprime_walk, text_batches

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_WORDS = set(SAMPLE.read_text().split())


@pytest.fixture(scope="module")
def prepared_sample(tmp_path_factory):
    """The shipped sample, prepared for gpt2-tiny and bert-tiny (1 024 ids each)."""
    cache = tmp_path_factory.mktemp("cache")
    return {
        family: prepare_corpus(SAMPLE, family, 1024, cache_dir=cache) for family in ("gpt2", "bert")
    }


def arange_corpus(directory: Path, num_tokens: int) -> PreparedCorpus:
    """A prepared corpus whose token at position p is p: batches show where they were read."""
    np.save(directory / "tokens.npy", np.arange(num_tokens, dtype=np.uint32))
    return PreparedCorpus(
        directory=str(directory),
        key="arange",
        source="arange",
        content_digest="-",
        labelled=False,
        tokenizer_kind="bpe",
        vocab_size=num_tokens,
        tokenizer_vocab_size=num_tokens,
        num_tokens=num_tokens,
        num_documents=1,
        dtype="uint32",
        pad_id=0,
        separator_id=1,
        cls_id=None,
        mask_id=None,
        num_classes=None,
        label_names=None,
        tokenizers_version="-",
        prepare_s=0.0,
    )


def test_ranks_read_disjoint_shards_in_a_full_pass(tmp_path):
    corpus = arange_corpus(tmp_path, 10_000)
    seq_len, micro_batch, dp = 16, 5, 4
    windows_per_rank = 10_000 // dp // seq_len  # 156
    count = windows_per_rank // micro_batch + 3  # wraps around into a second pass
    seen = {}
    for rank in range(dp):
        batches = text_batches(corpus, "causal-lm", seq_len, micro_batch, count, 7, rank, dp)
        rows = torch.cat([b["input_ids"] for b in batches]).numpy()
        assert rows.shape == (count * micro_batch, seq_len)
        assert (np.diff(rows, axis=1) == 1).all(), "a row is not a contiguous token range"
        starts = rows[:, 0]
        shard = range(rank * 2500, (rank + 1) * 2500)
        assert all(s in shard and (s - shard.start) % seq_len == 0 for s in starts)
        first_pass = starts[:windows_per_rank]
        assert len(set(first_pass)) == windows_per_rank, "a window repeated before a full pass"
        assert list(starts[windows_per_rank:]) == list(first_pass[: len(starts) - windows_per_rank])
        seen[rank] = set(rows.ravel())
    for a in range(dp):
        for b in range(a + 1, dp):
            assert not seen[a] & seen[b], f"ranks {a} and {b} read the same tokens"


def test_same_dp_rank_gets_identical_batches_and_seed_changes_order(tmp_path):
    corpus = arange_corpus(tmp_path, 4096)

    def ids(seed: int) -> list[torch.Tensor]:
        return [b["input_ids"] for b in text_batches(corpus, "causal-lm", 8, 4, 12, seed, 1, 2)]

    assert all(torch.equal(x, y) for x, y in zip(ids(3), ids(3), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(ids(3), ids(4), strict=True))


@pytest.mark.parametrize("n", [1, 2, 3, 10, 64, 97, 1000])
def test_coprime_walk_visits_every_item_once(n):
    for seed in range(5):
        stride, offset = coprime_walk(n, seed)
        assert sorted((stride * k + offset) % n for k in range(n)) == list(range(n))


def test_batches_are_read_lazily(tmp_path):
    corpus = arange_corpus(tmp_path, 4096)
    batches = text_batches(corpus, "causal-lm", 16, 2, 10**12, 0, 0, 1)
    assert len(batches) == 10**12
    last = batches[-1]["input_ids"]
    assert torch.equal(last, batches[10**12 - 1]["input_ids"])
    with pytest.raises(IndexError):
        batches[10**12]


def test_causal_lm_batches(prepared_sample):
    prepared = prepared_sample["gpt2"]
    batches = text_batches(prepared, "causal-lm", 64, 4, 6, 1234, 0, 1)
    for batch in batches:
        assert set(batch) == {"input_ids", "labels"}
        ids = batch["input_ids"]
        assert ids.shape == (4, 64) and ids.dtype == torch.int64
        assert torch.equal(batch["labels"], ids)
        assert ids.min() >= 0 and ids.max() < 1024
    words = set(prepared.tokenizer().decode(batches[0]["input_ids"][0].tolist()).split()[1:-1])
    assert words <= SAMPLE_WORDS, "a row does not decode to the sample's words"


def test_masked_lm_batches_label_only_masked_positions(prepared_sample):
    prepared = prepared_sample["bert"]
    specials = prepared.specials
    plain = text_batches(prepared, "causal-lm", 32, 8, 5, 9, 0, 1)
    masked = text_batches(prepared, "masked-lm", 32, 8, 5, 9, 0, 1)
    fractions = []
    for original, batch in zip(plain, masked, strict=True):
        ids, inputs, labels = original["input_ids"], batch["input_ids"], batch["labels"]
        assert inputs.shape == labels.shape == (8, 32) and labels.dtype == torch.int64
        assert (ids[:, 0] == specials.cls).all() and (ids[:, -1] == specials.separator).all()
        target = labels != -100
        assert torch.equal(target, inputs == specials.mask)
        assert torch.equal(labels[target], ids[target])
        assert torch.equal(inputs[~target], ids[~target])
        assert not torch.isin(labels[target], torch.tensor(specials.all)).any()
        assert target.any(dim=1).all(), "a row without a target"
        assert inputs.max() < 1024
        fractions.append(target.float().mean().item())
    assert 0.08 < np.mean(fractions) < 0.22


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_classification_label_is_first_token_modulo_num_labels(prepared_sample, family):
    prepared = prepared_sample[family]
    lead = 1 if family == "bert" else 0
    for batch in text_batches(prepared, "sequence-classification", 32, 8, 4, 5, 0, 1, 3):
        ids, labels = batch["input_ids"], batch["labels"]
        assert ids.shape == (8, 32) and labels.shape == (8,) and labels.dtype == torch.int64
        assert torch.equal(labels, ids[:, lead] % 3)
    assert set(
        torch.cat(
            [
                b["labels"]
                for b in text_batches(prepared, "sequence-classification", 32, 8, 20, 5, 0, 1, 3)
            ]
        ).tolist()
    ) == {0, 1, 2}


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_labelled_tsv_rows_carry_their_labels(tmp_path, family):
    lines = [("pos", f"a fine film number {i} " * (1 + i % 4)) for i in range(40)]
    lines += [("neg", f"dull and slow {i} " * (1 + i % 3)) for i in range(40)]
    path = tmp_path / "reviews.tsv"
    path.write_text("".join(f"{label}\t{text}\n" for label, text in lines))
    prepared = prepare_corpus(path, family, 400)
    assert prepared.label_names == ("neg", "pos") and prepared.num_documents == 80
    tokenizer = prepared.tokenizer()
    texts = {" ".join(text.split()): label for label, text in lines}
    batches = text_batches(prepared, "sequence-classification", 24, 4, 20, 0, 1, 2, 2)
    for batch in batches:
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        assert ids.shape == mask.shape == (4, 24)
        assert torch.equal(ids == 0, mask == 0), "attention must cover exactly the non-pad tokens"
        for row, m, label in zip(ids, mask, labels, strict=True):
            text = tokenizer.decode(row[m.bool()].tolist())
            match = [t for t in texts if t.startswith(text) or text.startswith(t)]
            assert match, text
            assert prepared.label_names[label] == texts[match[0]]
    with pytest.raises(UserError, match=r"2 labels but training\.num_labels is 1"):
        text_batches(prepared, "sequence-classification", 24, 4, 1, 0, 0, 1, 1)
    causal = text_batches(prepared, "causal-lm", 24, 4, 2, 0, 0, 1)
    assert set(causal[0]) == {"input_ids", "labels"}


def test_too_small_corpus_is_a_user_error(tmp_path):
    corpus = arange_corpus(tmp_path, 100)
    with pytest.raises(UserError, match="too small for 4 data-parallel ranks at seq_len 32"):
        text_batches(corpus, "causal-lm", 32, 1, 1, 0, 0, 4)


def test_quickstart_scenario_trains_on_the_shipped_sample(tmp_path):
    scenario = load_scenario(ROOT / "scenarios" / "text8_quickstart.yaml")
    (case,) = scenario.expand()
    spec = case.spec
    assert (spec.training.data, spec.task) == ("text", "causal-lm")
    assert spec.training.data_path == "sample"  # the shipped sample, found from any directory
    prepared = prepare_corpus(
        spec.training.data_path, spec.model.family, spec.dims().vocab_size, tmp_path
    )
    steps = spec.training.warmup_steps + spec.training.steps
    batches = text_batches(
        prepared,
        spec.task,
        spec.training.seq_len,
        spec.training.micro_batch,
        steps,
        spec.training.seed,
        0,
        spec.parallel.dp,
    )
    assert len({tuple(b["input_ids"][0].tolist()) for b in batches}) == steps, "data repeats"
