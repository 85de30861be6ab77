"""Corpus preparation: caching, cache keys, errors, concurrency, streaming memory, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from llmbench.cli import cli
from llmbench.errors import UserError
from llmbench.measure.data import corpus as corpus_module
from llmbench.measure.data.corpus import CACHE_DIR_NAME, PreparedCorpus, prepare_corpus
from llmbench.measure.data.make_sample import SAMPLE

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_WORDS = SAMPLE.read_text().split()


def words_file(path: Path, n_bytes: int, seed: int = 0) -> Path:
    """A one-line text8-style file of about ``n_bytes``: words drawn from the shipped sample."""
    words = np.array(SAMPLE_WORDS)
    rng = np.random.default_rng(seed)
    with path.open("w") as fh:
        written = 0
        while written < n_bytes:
            piece = " ".join(words[rng.integers(0, len(words), 50_000)]) + " "
            fh.write(piece)
            written += len(piece)
    return path


@pytest.fixture
def count_training(monkeypatch):
    """How many tokenizers prepare_corpus trained (the timing-free proof of caching)."""
    calls = []
    real = corpus_module.train_tokenizer

    def counting(*args, **kwargs):
        calls.append(args[:2])
        return real(*args, **kwargs)

    monkeypatch.setattr(corpus_module, "train_tokenizer", counting)
    return calls


def test_second_prepare_reuses_tokenizer_and_tokens(tmp_path, count_training):
    path = words_file(tmp_path / "text8", 50_000)
    first = prepare_corpus(path, "gpt2", 512)
    assert count_training == [("bpe", 512)] and not first.reused
    assert first.path.parent == tmp_path / CACHE_DIR_NAME
    files = {name: (first.path / name).stat() for name in ("tokenizer.json", "tokens.npy")}
    second = prepare_corpus(path, "gpt2", 512)
    assert count_training == [("bpe", 512)], "the tokenizer was trained again"
    assert second.reused and second.directory == first.directory
    for name, before in files.items():
        after = (second.path / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert np.array_equal(second.tokens(), first.tokens())


def test_cache_key_follows_content_and_settings(tmp_path, count_training):
    path = words_file(tmp_path / "text8", 50_000)
    base = prepare_corpus(path, "gpt2", 512)
    assert prepare_corpus(path, "llama", 512).key == base.key, "same BPE settings, same entry"
    keys = {
        "vocab": prepare_corpus(path, "gpt2", 600).key,
        "kind": prepare_corpus(path, "bert", 512).key,
    }
    path.write_text(path.read_text() + " one more word")
    keys["content"] = prepare_corpus(path, "gpt2", 512).key
    assert base.key not in keys.values() and len(set(keys.values())) == 3
    assert len(count_training) == 4


def test_zip_of_the_same_text_reuses_the_plain_files_entry(tmp_path, count_training):
    path = words_file(tmp_path / "text8", 20_000)
    with zipfile.ZipFile(tmp_path / "text8.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(path, "text8")
    assert (
        prepare_corpus(tmp_path / "text8.zip", "gpt2", 512).key
        == prepare_corpus(path, "gpt2", 512).key
    )
    assert len(count_training) == 1


def test_read_only_data_folder_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    path = words_file(data / "text8", 20_000)
    (data / CACHE_DIR_NAME).write_text("a file where the cache folder would go")
    monkeypatch.setenv("LLMBENCH_CACHE_DIR", str(tmp_path / "user-cache"))
    prepared = prepare_corpus(path, "gpt2", 512)
    assert prepared.path.parent == tmp_path / "user-cache"
    assert prepare_corpus(path, "gpt2", 512).reused


def test_prepared_tokens_decode_to_the_corpus(tmp_path):
    prepared = prepare_corpus(SAMPLE, "gpt2", 1024, cache_dir=tmp_path)
    tokens = prepared.tokens()
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    assert prepared.num_tokens == len(tokens) and tokens[-1] == prepared.separator_id
    text = prepared.tokenizer().decode([int(t) for t in tokens[:-1]])
    assert text == SAMPLE.read_text()
    manifest = json.loads((prepared.path / "manifest.json").read_text())
    assert "reused" not in manifest and PreparedCorpus.load(prepared.path) == prepared


def missing_file(folder: Path) -> Path:
    return folder / "missing.txt"


def empty_file(folder: Path) -> Path:
    (folder / "empty.txt").write_text("")
    return folder / "empty.txt"


def empty_folder(folder: Path) -> Path:
    (folder / "sub").mkdir()
    return folder / "sub"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (missing_file, "no such file or folder"),
        (empty_file, "the corpus is empty"),
        (empty_folder, r"holds no \.txt files"),
    ],
)
def test_unusable_corpus_is_a_user_error(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(UserError, match=message) as err:
        prepare_corpus(path, "gpt2", 1024)
    assert str(err.value).startswith(f"{path}: training.data_path: ")
    assert "\n" not in str(err.value)


def test_prepare_data_command(tmp_path):
    cli_runner = CliRunner()
    path = words_file(tmp_path / "text8", 20_000)
    first = cli_runner.invoke(cli, ["prepare-data", str(path), "--model", "bert-tiny"])
    assert first.exit_code == 0, first.output
    assert "wordpiece tokenizer with 1,024 of 1,024 ids, prepared in" in first.output
    second = cli_runner.invoke(cli, ["prepare-data", str(path), "--model", "bert-tiny"])
    assert "found in the cache" in second.output
    missing = cli_runner.invoke(cli, ["prepare-data", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such file or folder" in missing.output


def test_losing_a_preparation_race_uses_the_winners_entry(tmp_path, monkeypatch):
    path = words_file(tmp_path / "text8", 20_000)
    real = corpus_module.train_tokenizer
    winner = []

    def racing(*args, **kwargs):
        # another process publishes the same entry while this one is training
        monkeypatch.setattr(corpus_module, "train_tokenizer", real)
        winner.append(prepare_corpus(path, "gpt2", 512))
        return real(*args, **kwargs)

    monkeypatch.setattr(corpus_module, "train_tokenizer", racing)
    loser = prepare_corpus(path, "gpt2", 512)
    assert not winner[0].reused and loser.reused
    assert loser == replace(winner[0], reused=True)
    assert [p.name for p in (tmp_path / CACHE_DIR_NAME).iterdir()] == [loser.key]


@pytest.mark.slow
def test_concurrent_preparations_publish_one_entry(tmp_path):
    script = "import sys; from llmbench.measure.data.corpus import prepare_corpus; print(prepare_corpus(sys.argv[1], 'gpt2', 1024).directory)"
    path = words_file(tmp_path / "text8", 400_000)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1]
    cache = tmp_path / CACHE_DIR_NAME
    assert [p.name for p in cache.iterdir()] == [Path(outs[0]).name], "staging folder left behind"
    assert PreparedCorpus.load(outs[0]).num_tokens == len(np.load(Path(outs[0]) / "tokens.npy"))


_PEAK_RSS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from llmbench.measure.data.corpus import prepare_corpus

    def status_kib(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])

    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = status_kib("VmRSS")
    prepare_corpus(sys.argv[1], "gpt2", 1024, cache_dir=sys.argv[2])
    print(status_kib("VmHWM") - before)
    """
)
STREAMING_BOUND_BYTES = 64 << 20
"""Stated bound: preparing a corpus of any size raises peak RSS by less than 64 MiB
(measured 23-26 MiB for one-line files of 2 MB to 100 MB)."""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_preparing_a_one_line_file_streams(tmp_path):
    """Peak RSS growth stays under the bound and does not grow with the file."""

    def growth_bytes(n_bytes: int) -> int:
        path = words_file(tmp_path / f"text8-{n_bytes}", n_bytes, seed=n_bytes)
        out = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, str(path), str(tmp_path / f"cache-{n_bytes}")],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
            cwd=ROOT,
        )
        return int(out.stdout.strip()) * 1024

    small, large = growth_bytes(1 << 20), growth_bytes(16 << 20)
    assert large < STREAMING_BOUND_BYTES
    # holding the 16 MiB file (or its tokens) in memory even once would add 15 MiB here
    assert large - small < 8 << 20, f"peak RSS grew {small >> 20} → {large >> 20} MiB"


def test_integer_tsv_labels_are_used_as_they_are(tmp_path):
    path = tmp_path / "graded.tsv"
    path.write_text("".join(f"{g}\tgrade {g} text here\n" for g in (0, 2, 10) * 5))
    prepared = prepare_corpus(path, "gpt2", 400)
    assert prepared.label_names is None and prepared.num_classes == 11
    assert sorted(set(prepared.labels().tolist())) == [0, 2, 10]
