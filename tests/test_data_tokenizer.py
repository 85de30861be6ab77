"""Locally trained tokenizers: scheme per family, exact vocabulary size, special ids, chunk-safe."""

from __future__ import annotations

import pytest

from llmbench.errors import UserError
from llmbench.measure.data.documents import Document, iter_chunks
from llmbench.measure.data.make_sample import SAMPLE
from llmbench.measure.data.tokenizer import (
    BPE,
    WORDPIECE,
    check_vocab_size,
    special_ids,
    tokenizer_kind,
    train_tokenizer,
)

# a quarter of the sample: enough for 1 024 ids, quick to train on
TEXT = SAMPLE.read_text()[:250_000]


@pytest.fixture(scope="module")
def by_kind():
    return {kind: train_tokenizer(kind, 1024, [TEXT]) for kind in (BPE, WORDPIECE)}


@pytest.fixture(params=[BPE, WORDPIECE])
def trained(request, by_kind):
    return request.param, by_kind[request.param]


def test_causal_families_get_bpe_and_encoders_wordpiece():
    assert {f: tokenizer_kind(f) for f in ("gpt2", "llama", "bert", "distilbert")} == {
        "gpt2": BPE,
        "llama": BPE,
        "bert": WORDPIECE,
        "distilbert": WORDPIECE,
    }


def test_vocabulary_is_the_models_size_with_pad_at_zero(trained):
    kind, tokenizer = trained
    assert tokenizer.get_vocab_size() == 1024
    ids = special_ids(tokenizer, kind)
    assert ids.pad == 0
    assert ids.separator not in (None, 0)
    if kind == WORDPIECE:
        assert {tokenizer.id_to_token(i) for i in (ids.cls, ids.mask)} == {"[CLS]", "[MASK]"}
        assert len(set(ids.all)) == 4
    else:
        assert ids.cls is None and ids.mask is None


def test_encoding_round_trips_real_text(trained):
    _, tokenizer = trained
    sentence = "the interpreter raises an exception when the assertion fails"
    ids = tokenizer.encode(sentence, add_special_tokens=False).ids
    assert max(ids) < 1024 and 0 not in ids
    assert len(ids) < len(sentence) / 2, "no merges were learned"
    assert tokenizer.decode(ids) == sentence


def test_chunked_encoding_equals_whole_encoding(trained, tmp_path):
    """Cutting at whitespace runs must not change a single id (why prepare may stream)."""
    _, tokenizer = trained
    text = "A line  with   runs of spaces,\n\n\tnewlines; tabs.  " + TEXT[:20_000] + "\n  end "
    path = tmp_path / "doc.txt"
    path.write_text(text)
    chunks = list(iter_chunks(Document(path), chunk_chars=97))
    assert len(chunks) > 100
    whole = tokenizer.encode(text, add_special_tokens=False).ids
    pieces = [i for c in chunks for i in tokenizer.encode(c, add_special_tokens=False).ids]
    assert pieces == whole


def test_bpe_knows_every_byte(by_kind):
    tokenizer = by_kind[BPE]
    ids = tokenizer.encode("ünïcödé → 数据", add_special_tokens=False).ids
    assert tokenizer.decode(ids) == "ünïcödé → 数据"


@pytest.mark.parametrize(("kind", "too_small"), [(BPE, 257), (WORDPIECE, 5)])
def test_too_small_vocabulary_is_a_user_error(kind, too_small):
    check_vocab_size(kind, too_small + 1)
    with pytest.raises(UserError, match=f"vocab_size {too_small} is too small"):
        check_vocab_size(kind, too_small)
