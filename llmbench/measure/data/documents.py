"""Plain-text corpora on disk: their documents, streamed in whitespace-aligned chunks.

A corpus (``training.data_path``) is one of

* a text file of any shape, e.g. ``text8`` (one 100 MB line) — one document;
* a ``.zip`` archive (e.g. ``text8.zip``) — every member is a document;
* a folder — every ``*.txt`` file below it (sorted, dot-folders skipped) is a document;
* a ``.tsv`` file of ``label<TAB>text`` lines — every line is a labelled document.

Nothing here holds a whole document in memory: a 100 MB one-line file is read
in chunks that end where a run of whitespace begins, so the tokenizers'
pre-tokenisers (GPT-2's regex, BERT's whitespace split) never see a word cut
in two and tokenising the chunks gives the same ids as tokenising the whole.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from llmbench.errors import UserError

KEY = "training.data_path"
CHUNK_CHARS = 1 << 14
"""Characters per chunk. tokenizers buffers 256 items of a training iterator
(twice: as Python strings and in Rust), so 16 Ki-character chunks keep that near
8 MiB; 64 Ki measured 11 MiB more peak RSS when preparing a one-line file."""
MAX_CARRY_CHARS = 1 << 24
"""A "word" longer than this (no whitespace for 16 Mi characters) is cut anyway."""
_READ_BYTES = 1 << 20
_ASCII_SPACE = " \n\t\r\f\v"


@dataclass(frozen=True)
class Document:
    """One document of a corpus: a file, or a member of a zip archive."""

    path: Path
    member: str | None = None

    @property
    def name(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @contextmanager
    def open_bytes(self) -> Iterator[BinaryIO]:
        if self.member is None:
            with self.path.open("rb") as fh:
                yield fh
        else:
            with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as fh:
                yield fh

    @contextmanager
    def open_text(self) -> Iterator[io.TextIOWrapper]:
        """UTF-8 text with universal newlines; invalid bytes raise (see :func:`decoding`)."""
        with self.open_bytes() as raw, io.TextIOWrapper(raw, encoding="utf-8") as text:
            yield text


@dataclass(frozen=True)
class TextCorpus:
    """The documents of a user's corpus, in a fixed order."""

    path: Path
    documents: tuple[Document, ...]
    labelled: bool
    """``label<TAB>text`` lines (a ``.tsv`` file) rather than free text."""

    @property
    def data_dir(self) -> Path:
        """Where the corpus lives: the folder itself, or the folder holding the file."""
        return self.path if self.path.is_dir() else self.path.parent


SAMPLE = Path(__file__).with_name("sample_text8.txt")


def open_corpus(path: str | Path) -> TextCorpus:
    """Find the documents of ``path``; a missing or empty corpus is a :class:`UserError`.

    ``sample`` names the real-text sample shipped with llmbench, so scenarios
    work from any directory and after a plain ``pip install``.
    """
    path = SAMPLE if str(path) == "sample" else Path(path).expanduser()
    if not path.exists():
        raise UserError("no such file or folder", where=str(path), key=KEY)
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*.txt") if p.is_file() and not _hidden(p, path)),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not files:
            raise UserError("the folder holds no .txt files", where=str(path), key=KEY)
        docs = tuple(Document(p) for p in files)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = sorted(i.filename for i in archive.infolist() if not i.is_dir())
        if not members:
            raise UserError("the zip archive holds no files", where=str(path), key=KEY)
        docs = tuple(Document(path, m) for m in members)
    else:
        docs = (Document(path),)
    return TextCorpus(path, docs, labelled=path.suffix.lower() == ".tsv")


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts[:-1])


@contextmanager
def decoding(doc: Document) -> Iterator[None]:
    """Turn a decoding failure into one line naming the document."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text ({exc.reason})", where=doc.name, key=KEY) from None


def content_digest(corpus: TextCorpus) -> str:
    """BLAKE2b of the documents' bytes, streamed; the corpus part of a cache key.

    Hashing decompressed bytes makes ``text8`` and ``text8.zip`` one corpus.
    Each document's length is hashed after it, so moving a boundary between
    documents changes the digest. A corpus with no non-blank byte is refused here,
    before any tokenizer is trained on it.
    """
    digest = hashlib.blake2b(digest_size=20)
    has_text = False
    buffer = bytearray(_READ_BYTES)
    view = memoryview(buffer)
    for doc in corpus.documents:
        size = 0
        with doc.open_bytes() as fh:
            while n := fh.readinto(buffer):
                digest.update(view[:n])
                size += n
                has_text = has_text or bool(bytes(view[:n]).strip())
        digest.update(size.to_bytes(8, "little"))
    if not has_text:
        raise UserError("the corpus is empty (no text)", where=str(corpus.path), key=KEY)
    return digest.hexdigest()


def whitespace_cut(buffer: str) -> int:
    """Index where the last run of whitespace in ``buffer`` starts; 0 when there is none.

    Cutting there (the run goes with the next chunk) splits no pre-token: GPT-2's
    pattern attaches whitespace only to the *following* word, and BERT's
    pre-tokeniser drops it.
    """
    cut = max(buffer.rfind(c) for c in _ASCII_SPACE)
    while cut > 0 and buffer[cut - 1].isspace():
        cut -= 1
    return max(cut, 0)


def iter_chunks(doc: Document, chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
    """The text of ``doc`` as chunks of about ``chunk_chars`` characters, cut at whitespace."""
    carry = ""
    with decoding(doc), doc.open_text() as fh:
        while block := fh.read(chunk_chars):
            buffer = carry + block
            cut = whitespace_cut(buffer)
            if cut == 0 and len(buffer) < MAX_CARRY_CHARS:
                carry = buffer
                continue
            cut = cut or len(buffer)
            yield buffer[:cut]
            carry = buffer[cut:]
    if carry:
        yield carry


def iter_labelled(doc: Document) -> Iterator[tuple[str, str]]:
    """``(label, text)`` for every non-blank line of a ``label<TAB>text`` document."""
    with decoding(doc), doc.open_text() as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            label, tab, text = line.rstrip("\n").partition("\t")
            label, text = label.strip(), text.strip()
            if not tab or not label or not text:
                raise UserError(
                    "expected a line of the form label<TAB>text", where=f"{doc.name}:{number}"
                )
            yield label, text


def iter_texts(corpus: TextCorpus) -> Iterator[str]:
    """Every piece of text of the corpus in order (label columns left out): what a tokenizer learns from."""
    for doc in corpus.documents:
        if corpus.labelled:
            yield from (text for _, text in iter_labelled(doc))
        else:
            yield from iter_chunks(doc)


_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_NOT_LETTER = re.compile(r"[^a-z]+")
_DIGIT = re.compile(r"[0-9]")


def normalise_text8(text: str) -> str:
    """Text in text8 form: lower-case a–z words separated by single spaces.

    Follows Matt Mahoney's ``wikifil.pl`` (the script that made text8): digits
    are spelled out, everything else that is not a letter becomes a space.
    """
    text = _DIGIT.sub(lambda m: f" {_DIGIT_WORDS[int(m.group())]} ", text.lower())
    return _NOT_LETTER.sub(" ", text).strip()
