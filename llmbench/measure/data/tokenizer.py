"""Tokenizers trained locally on the corpus, sized to the model's vocabulary.

llmbench never downloads a tokenizer: the model's vocabulary size is a sweep
setting (1 024 for ``tiny``, 50 257 for GPT-2 125m, ...), and a tokenizer
trained to exactly that size on the corpus at hand gives the embedding and
LM-head shapes the benchmark means to measure, on ids that follow the corpus'
real token statistics.

* Causal families (gpt2, llama): byte-level BPE, GPT-2's scheme (Radford et
  al. 2019, section 2.2) — every byte is in the vocabulary, so no text is ever
  unknown.
* Encoder families (bert, distilbert): WordPiece with BERT's lower-casing
  normaliser and pre-tokeniser (Devlin et al. 2019).

Id 0 is always the pad token (the models are configured with
``pad_token_id=0``); the other special ids are read back from the trained
tokenizer, never assumed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmbench.define.models import FAMILIES
from llmbench.errors import UserError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

BPE, WORDPIECE = "bpe", "wordpiece"
SPECIAL_TOKENS = {
    BPE: ("<pad>", "<|endoftext|>"),
    WORDPIECE: ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
}
"""In id order: the first is id 0, the pad token."""
_BYTE_ALPHABET = 256


@dataclass(frozen=True)
class SpecialIds:
    """Ids the batch builder needs; ``None`` where the scheme has no such token."""

    pad: int
    separator: int
    """Ends every document in the packed token stream (``<|endoftext|>`` or ``[SEP]``)."""
    cls: int | None
    mask: int | None

    @property
    def all(self) -> tuple[int, ...]:
        return tuple(i for i in (self.pad, self.separator, self.cls, self.mask) if i is not None)


def tokenizer_kind(family: str) -> str:
    """BPE for families that train as causal LMs, WordPiece for the encoders."""
    return BPE if "causal-lm" in FAMILIES[family].tasks else WORDPIECE


def check_vocab_size(kind: str, vocab_size: int) -> None:
    """Refuse a vocabulary too small for the scheme before any training starts."""
    floor = len(SPECIAL_TOKENS[kind]) + (_BYTE_ALPHABET if kind == BPE else 1)
    if vocab_size < floor:
        raise UserError(
            f"vocab_size {vocab_size} is too small for a {kind} tokenizer (needs at least {floor})",
            key="model.vocab_size",
        )


def train_tokenizer(kind: str, vocab_size: int, texts: Iterable[str]) -> Tokenizer:
    """Train a ``kind`` tokenizer of at most ``vocab_size`` ids on ``texts`` (streamed)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    check_vocab_size(kind, vocab_size)
    specials = list(SPECIAL_TOKENS[kind])
    if kind == BPE:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        # every kept character costs two ids (word-initial and ``##`` continuation)
        alphabet = (vocab_size - len(specials)) // 4
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            limit_alphabet=alphabet,
            show_progress=False,
        )
    tokenizer.train_from_iterator(texts, trainer)
    got = tokenizer.get_vocab_size()
    if got > vocab_size:
        raise UserError(
            f"the corpus needs {got} base tokens for a {kind} tokenizer; vocab_size {vocab_size} is too small",
            key="model.vocab_size",
        )
    return tokenizer


def special_ids(tokenizer: Tokenizer, kind: str) -> SpecialIds:
    """The special ids of a trained tokenizer; id 0 must be the pad token."""
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS[kind]}
    if None in ids.values() or ids[SPECIAL_TOKENS[kind][0]] != 0:
        raise ValueError(f"{kind} tokenizer lacks its special tokens or pad is not id 0: {ids}")
    if kind == BPE:
        return SpecialIds(pad=0, separator=ids["<|endoftext|>"], cls=None, mask=None)
    return SpecialIds(pad=0, separator=ids["[SEP]"], cls=ids["[CLS]"], mask=ids["[MASK]"])


def load_tokenizer(path: str | Path) -> Tokenizer:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def library_version() -> str:
    """The tokenizers version: part of every cache key, since training output may change with it."""
    import tokenizers

    return tokenizers.__version__
