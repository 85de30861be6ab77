"""Reading corpora: documents, whitespace-aligned chunks, content digests, TSV rows, text8 form."""

from __future__ import annotations

import itertools
import platform
import re
import zipfile
from collections import Counter

import pytest

from llmbench.errors import UserError
from llmbench.measure.data.documents import (
    content_digest,
    iter_chunks,
    iter_labelled,
    iter_texts,
    normalise_text8,
    open_corpus,
    whitespace_cut,
)
from llmbench.measure.data.make_sample import SAMPLE, build_sample


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file or folder") as err:
        open_corpus(tmp_path / "text8")
    assert str(tmp_path / "text8") in str(err.value)
    assert "training.data_path" in str(err.value)


def test_folder_without_txt_files_is_a_user_error(tmp_path):
    (tmp_path / "notes.md").write_text("not a corpus file")
    with pytest.raises(UserError, match=r"holds no \.txt files"):
        open_corpus(tmp_path)


@pytest.mark.parametrize("content", ["", " \n\t  \n"], ids=["empty", "blank"])
def test_a_corpus_without_text_is_a_user_error(tmp_path, content):
    path = tmp_path / "text8"
    path.write_text(content)
    with pytest.raises(UserError, match="the corpus is empty") as err:
        content_digest(open_corpus(path))
    assert str(path) in str(err.value)


def test_folder_documents_are_sorted_txt_files_outside_dot_folders(tmp_path):
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("ant")
    (tmp_path / "a.txt").write_text("aardvark")
    (tmp_path / ".llmbench-cache").mkdir()
    (tmp_path / ".llmbench-cache" / "x.txt").write_text("cached")
    (tmp_path / "c.md").write_text("ignored")
    corpus = open_corpus(tmp_path)
    assert [d.path.relative_to(tmp_path).as_posix() for d in corpus.documents] == [
        "a.txt",
        "b.txt",
        "sub/a.txt",
    ]
    assert list(iter_texts(corpus)) == ["aardvark", "bee", "ant"]
    assert corpus.data_dir == tmp_path and not corpus.labelled


def test_zip_members_are_documents_and_hash_like_the_plain_file(tmp_path):
    text = "anarchism originated as a term of abuse " * 50
    plain = tmp_path / "text8"
    plain.write_text(text)
    archive = tmp_path / "text8.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("text8", text)
    corpus = open_corpus(archive)
    assert [d.name for d in corpus.documents] == [f"{archive}:text8"]
    assert "".join(iter_texts(corpus)) == text
    assert content_digest(corpus) == content_digest(open_corpus(plain))
    assert corpus.data_dir == tmp_path


def test_empty_zip_is_a_user_error(tmp_path):
    archive = tmp_path / "text8.zip"
    with zipfile.ZipFile(archive, "w"):
        pass
    with pytest.raises(UserError, match="holds no files"):
        open_corpus(archive)


def test_digest_follows_content_and_document_boundaries(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, parts in ((one, ("ab", "cd")), (two, ("abc", "d"))):
        folder.mkdir()
        for i, part in enumerate(parts):
            (folder / f"{i}.txt").write_text(part)
    assert content_digest(open_corpus(one)) != content_digest(open_corpus(two))
    (two / "0.txt").write_text("ab")
    (two / "1.txt").write_text("cd")
    assert content_digest(open_corpus(one)) == content_digest(open_corpus(two))


@pytest.mark.parametrize(
    ("buffer", "cut"),
    [
        ("the cat sat", 7),
        ("the cat   ", 7),
        ("the cat \n\t sat", 7),
        ("abc", 0),
        ("   leading", 0),
        ("a\u00a0 b", 1),  # a non-ASCII space belongs to the run that starts at it
    ],
)
def test_whitespace_cut_is_the_start_of_the_last_whitespace_run(buffer, cut):
    assert whitespace_cut(buffer) == cut


def test_one_line_file_streams_in_chunks_cut_before_whitespace(tmp_path):
    words = [f"w{i % 97}x{'y' * (i % 13)}" for i in range(5000)]
    text = " ".join(words) + "  \n"
    path = tmp_path / "text8"
    path.write_text(text)
    chunks = list(iter_chunks(open_corpus(path).documents[0], chunk_chars=256))
    assert "".join(chunks) == text
    assert len(chunks) > len(text) // 512
    for before, after in itertools.pairwise(chunks):
        assert not before[-1].isspace(), "a chunk ends inside a whitespace run"
        assert after[0].isspace(), "a chunk starts inside a word"
        assert len(before) < 2 * 256


def test_a_word_longer_than_a_chunk_is_kept_whole(tmp_path):
    text = "short " + "x" * 1000 + " tail"
    path = tmp_path / "long.txt"
    path.write_text(text)
    chunks = list(iter_chunks(open_corpus(path).documents[0], chunk_chars=64))
    assert "".join(chunks) == text
    assert any("x" * 1000 in c for c in chunks)


def test_non_utf8_bytes_are_a_user_error_naming_the_file(tmp_path):
    path = tmp_path / "binary.txt"
    path.write_bytes(b"fine text \xff\xfe more")
    with pytest.raises(UserError, match="not UTF-8 text") as err:
        list(iter_texts(open_corpus(path)))
    assert str(path) in str(err.value)


def test_tsv_rows_are_label_and_text(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text("pos\ta fine film\n\nneg\tdull\tand slow\n")
    corpus = open_corpus(path)
    assert corpus.labelled
    assert list(iter_labelled(corpus.documents[0])) == [
        ("pos", "a fine film"),
        ("neg", "dull\tand slow"),
    ]
    assert list(iter_texts(corpus)) == ["a fine film", "dull\tand slow"]


@pytest.mark.parametrize("line", ["no tab here", "\tno label", "pos\t   "])
def test_malformed_tsv_line_names_file_and_line(tmp_path, line):
    path = tmp_path / "reviews.tsv"
    path.write_text(f"pos\tgood\n{line}\n")
    with pytest.raises(UserError, match="label<TAB>text") as err:
        list(iter_labelled(open_corpus(path).documents[0]))
    assert str(err.value).startswith(f"{path}:2:")


def test_normalise_text8_follows_wikifil():
    assert normalise_text8("Hello, World!  It's 42.") == "hello world it s four two"
    assert normalise_text8("naïve café\nDÉJÀ-VU") == "na ve caf d j vu"


def test_shipped_sample_is_real_text_in_text8_form():
    text = SAMPLE.read_text()
    assert SAMPLE.stat().st_size < 1_000_000
    assert re.fullmatch(r"[a-z]+( [a-z]+)*", text), "not text8 form"
    words = text.split()
    assert len(words) > 100_000
    # real English: its most frequent words are English function words
    common = {w for w, _ in Counter(words).most_common(10)}
    assert {"the", "a", "is", "to", "of", "and", "in"} <= common
    notice = SAMPLE.with_name("sample_text8.LICENSE.txt").read_text()
    assert "PYTHON SOFTWARE FOUNDATION LICENSE" in notice


@pytest.mark.skipif(
    f"CPython {platform.python_version()},"
    not in SAMPLE.with_name("sample_text8.LICENSE.txt").read_text(),
    reason="the sample is reproducible only on the Python version that made it",
)
def test_shipped_sample_is_what_make_sample_generates():
    assert build_sample() == SAMPLE.read_text()
