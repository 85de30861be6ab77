"""Real-text corpora tokenised once per sweep, cached, and memory-mapped by the ranks.

``prepare_corpus`` runs in the parent, once per sweep, before any rank starts:
it trains a tokenizer on the corpus (see :mod:`llmbench.measure.data.tokenizer`) and
writes the whole corpus as one flat token array (``tokens.npy``, ``uint16``
when the vocabulary fits, else ``uint32``): every document's tokens followed
by a separator id (``<|endoftext|>`` or ``[SEP]``). Both are cached under a key
made of the corpus content and every setting that changes the output, so a
second sweep — or a second case with the same vocabulary — trains nothing.
The ranks read the entry with :meth:`PreparedCorpus.load` and
:func:`llmbench.measure.data.text.text_batches`.

A labelled corpus (``label<TAB>text`` lines, a ``.tsv`` file) also gets the
``[start, end)`` token span of every line and its label id: integer labels are
used as they are, other labels are numbered in sorted order.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmbench.errors import UserError
from llmbench.measure.data.documents import (
    KEY,
    TextCorpus,
    content_digest,
    iter_chunks,
    iter_labelled,
    iter_texts,
    open_corpus,
)
from llmbench.measure.data.tokenizer import (
    SpecialIds,
    check_vocab_size,
    library_version,
    load_tokenizer,
    special_ids,
    tokenizer_kind,
    train_tokenizer,
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer

LAYOUT_VERSION = 1
"""Bump when the files written here change meaning; it is part of every cache key."""
CACHE_DIR_NAME = ".llmbench-cache"
ENCODE_BATCH_CHUNKS = 16
"""Chunks per ``encode_batch`` call (256 Ki characters): the Encoding objects of a
batch cost ~80 bytes per token, so 64 chunks measured 18 MiB more peak RSS."""
ENCODE_BATCH_LINES = 4096
"""Lines per ``encode_batch`` call for labelled corpora."""
MANIFEST, TOKENIZER, TOKENS, DOCUMENTS, LABELS = (
    "manifest.json",
    "tokenizer.json",
    "tokens.npy",
    "documents.npy",
    "labels.npy",
)
Log = Callable[[str], None]


@dataclass(frozen=True)
class PreparedCorpus:
    """A tokenised corpus in its cache folder; ``manifest.json`` holds these fields."""

    directory: str
    key: str
    source: str
    """The corpus path this entry was built from (an identical corpus elsewhere reuses it)."""
    content_digest: str
    labelled: bool
    tokenizer_kind: str
    vocab_size: int
    """The model's vocabulary: every id is below it."""
    tokenizer_vocab_size: int
    """Ids the trained tokenizer uses (at most ``vocab_size``; less on a small corpus)."""
    num_tokens: int
    num_documents: int
    dtype: str
    pad_id: int
    separator_id: int
    cls_id: int | None
    mask_id: int | None
    num_classes: int | None
    """Labelled corpora: 1 + the largest label id."""
    label_names: tuple[str, ...] | None
    """Labelled corpora with non-integer labels: the name of each label id."""
    tokenizers_version: str
    prepare_s: float
    """Wall time of the preparation that built this cache entry."""
    reused: bool = False
    """True when this call found the entry in the cache (not stored)."""

    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def specials(self) -> SpecialIds:
        return SpecialIds(self.pad_id, self.separator_id, self.cls_id, self.mask_id)

    def tokens(self) -> np.ndarray:
        """The flat token stream, memory-mapped read-only."""
        return np.load(self.path / TOKENS, mmap_mode="r")

    def documents(self) -> np.ndarray:
        """Labelled corpora: ``[start, end)`` of every line's tokens in the stream."""
        return np.load(self.path / DOCUMENTS, mmap_mode="r")

    def labels(self) -> np.ndarray:
        return np.load(self.path / LABELS, mmap_mode="r")

    def tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.path / TOKENIZER)

    def to_json(self) -> str:
        data = asdict(self)
        del data["reused"]
        return json.dumps(data, indent=1)

    @classmethod
    def load(cls, directory: str | Path) -> PreparedCorpus:
        """Read a cache entry (ranks call this with the folder the parent prepared)."""
        data = json.loads((Path(directory) / MANIFEST).read_text())
        names = data["label_names"]
        return cls(**{**data, "label_names": tuple(names) if names is not None else None})


def cache_key(digest: str, labelled: bool, kind: str, vocab_size: int) -> str:
    """Everything that changes the tokenizer or the token array, hashed."""
    settings = {
        "corpus": digest,
        "labelled": labelled,
        "kind": kind,
        "vocab_size": vocab_size,
        "tokenizers": library_version(),
        "layout": LAYOUT_VERSION,
    }
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def user_cache_dir() -> Path:
    """``$LLMBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/llmbench/corpus`` (``~/.cache`` by default)."""
    if os.environ.get("LLMBENCH_CACHE_DIR"):
        return Path(os.environ["LLMBENCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmbench" / "corpus"


def cache_roots(corpus: TextCorpus, cache_dir: str | Path | None) -> list[Path]:
    """Where entries are looked up and built: next to the data, then the user cache."""
    if cache_dir is not None:
        return [Path(cache_dir)]
    return [corpus.data_dir / CACHE_DIR_NAME, user_cache_dir()]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def prepare_corpus(
    path: str | Path,
    family: str,
    vocab_size: int,
    cache_dir: str | Path | None = None,
    log: Log | None = None,
) -> PreparedCorpus:
    """Tokenise the corpus at ``path`` for a model of ``family`` with ``vocab_size`` ids.

    Safe to run in several processes at once: each builds in its own staging
    folder and publishes it with one atomic rename; a process that loses the
    race uses the winner's entry.
    """
    t0 = time.perf_counter()
    say = log or (lambda _: None)
    corpus = open_corpus(path)
    kind = tokenizer_kind(family)
    check_vocab_size(kind, vocab_size)
    digest = content_digest(corpus)
    key = cache_key(digest, corpus.labelled, kind, vocab_size)
    roots = cache_roots(corpus, cache_dir)
    for root in roots:
        if (root / key / MANIFEST).is_file():
            return replace(PreparedCorpus.load(root / key), reused=True)
    problems = []
    for root in roots:
        try:
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        except OSError as exc:  # read-only data folder: try the next root
            problems.append(f"{root}: {exc.strerror or exc}")
            continue
        try:
            say(f"training a {kind} tokenizer with {vocab_size} ids on {corpus.path}")
            return _build(corpus, kind, vocab_size, key, digest, staging, root / key, say, t0)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise UserError(
        f"no writable cache folder ({'; '.join(problems)})", where=str(corpus.path), key=KEY
    )


def _build(
    corpus: TextCorpus,
    kind: str,
    vocab_size: int,
    key: str,
    digest: str,
    staging: Path,
    final: Path,
    say: Log,
    t0: float,
) -> PreparedCorpus:
    tokenizer = train_tokenizer(kind, vocab_size, iter_texts(corpus))
    tokenizer.save(str(staging / TOKENIZER))
    specials = special_ids(tokenizer, kind)
    say(f"tokenising {corpus.path}")
    with _NpyWriter(staging / TOKENS, token_dtype(vocab_size)) as out:
        if corpus.labelled:
            num_documents, num_classes, names = _write_labelled(
                tokenizer, corpus, specials, out, staging
            )
        else:
            num_documents, num_classes, names = _write_packed(tokenizer, corpus, specials, out)
    prepared = PreparedCorpus(
        directory=str(final),
        key=key,
        source=str(corpus.path),
        content_digest=digest,
        labelled=corpus.labelled,
        tokenizer_kind=kind,
        vocab_size=vocab_size,
        tokenizer_vocab_size=tokenizer.get_vocab_size(),
        num_tokens=out.count,
        num_documents=num_documents,
        dtype=out.dtype.name,
        pad_id=specials.pad,
        separator_id=specials.separator,
        cls_id=specials.cls,
        mask_id=specials.mask,
        num_classes=num_classes,
        label_names=names,
        tokenizers_version=library_version(),
        prepare_s=time.perf_counter() - t0,
    )
    _write_durably(staging / MANIFEST, prepared.to_json().encode())
    staging.chmod(0o755)  # mkdtemp makes it private; a shared data folder's cache is for all
    try:
        os.rename(staging, final)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        return replace(PreparedCorpus.load(final), reused=True)  # another process won the race
    return prepared


def _batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def _encode(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def _write_packed(
    tokenizer: Tokenizer, corpus: TextCorpus, specials: SpecialIds, out: _NpyWriter
) -> tuple[int, None, None]:
    """Every document's tokens, each followed by the separator."""
    for doc in corpus.documents:
        for chunks in _batched(iter_chunks(doc), ENCODE_BATCH_CHUNKS):
            for ids in _encode(tokenizer, chunks):
                out.write(ids)
        out.write([specials.separator])
    return len(corpus.documents), None, None


def _write_labelled(
    tokenizer: Tokenizer,
    corpus: TextCorpus,
    specials: SpecialIds,
    out: _NpyWriter,
    staging: Path,
) -> tuple[int, int, tuple[str, ...] | None]:
    """Every line's tokens followed by the separator, plus its span and label."""
    spans = array("q")
    seen: dict[str, int] = {}  # label name -> its provisional id
    provisional = array("q")  # per line: its label in order of first appearance
    rows = (row for doc in corpus.documents for row in iter_labelled(doc))
    for batch in _batched(rows, ENCODE_BATCH_LINES):
        for (label, _), ids in zip(batch, _encode(tokenizer, [t for _, t in batch]), strict=True):
            spans.extend((out.count, out.count + len(ids)))
            out.write(ids)
            out.write([specials.separator])
            provisional.append(seen.setdefault(label, len(seen)))
    names = sorted(seen)
    if all(name.isdecimal() for name in names):
        label_of = {seen[name]: int(name) for name in names}
        label_names = None
    else:
        label_of = {seen[name]: i for i, name in enumerate(names)}
        label_names = tuple(names)
    lookup = np.array([label_of[i] for i in range(len(seen))], dtype=np.int64)
    labels = lookup[np.frombuffer(provisional, dtype=np.int64)]
    np.save(staging / DOCUMENTS, np.frombuffer(spans, dtype=np.int64).reshape(-1, 2))
    np.save(staging / LABELS, labels)
    return len(labels), int(labels.max()) + 1, label_names


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class _NpyWriter:
    """A 1-D ``.npy`` written piece by piece, its length unknown until the end.

    The header is written first with length 0 and rewritten at close; NumPy
    pads the header for in-place growth of the length, so both have the same size.
    """

    def __init__(self, path: Path, dtype: np.dtype):
        self.dtype = dtype
        self.count = 0
        self._fh = path.open("wb")
        self._header_bytes = self._write_header()

    def _write_header(self) -> int:
        self._fh.seek(0)
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.count,),
        }
        np.lib.format.write_array_header_1_0(self._fh, header)
        return self._fh.tell()

    def write(self, ids: Sequence[int]) -> None:
        self._fh.write(np.asarray(ids, dtype=self.dtype).tobytes())
        self.count += len(ids)

    def __enter__(self) -> _NpyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                if self._write_header() != self._header_bytes:
                    raise RuntimeError("the .npy header changed size")
                self._fh.flush()
                os.fsync(self._fh.fileno())
        finally:
            self._fh.close()
