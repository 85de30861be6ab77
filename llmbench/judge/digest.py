"""A run's digest: the part of its results ``compare`` reads, in one file beside results.jsonl.

``compare`` judges statuses and metrics; it never reads a result's parameters,
losses, per-rank figures, micro-batch probes or profile artefacts, nor its
step times once the step deciles are among its metrics. Those are ~65 % of a
results line, and reading results.jsonl was half of a ``compare`` on 10,000
cases (per run: 0.18 s splitting and parsing 42 MB, 0.03 s the result objects).

``results.digest.json`` is two lines: a header (format, the size and
modification time of the results.jsonl it was made from, how many results),
then the results without those fields as one JSON list, in file order (the
list is what the history stores as the run's digest, taken as it is when a
run is indexed). It is trusted only while results.jsonl keeps that size and
time: an appended, resumed, repaired or edited results file makes it stale,
and a digest that is stale, unreadable or malformed is ignored, never an
error: ``compare`` then parses results.jsonl as before. A run writes its digest when its sweep ends; a
results file with a corrupt line gets none, so the warnings that line raises
are raised by every ``compare`` that reads it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from llmbench.judge.noise import RECORDED_DECILES
from llmbench.judge.result import CaseResult
from llmbench.judge.store import RunDir, gc_paused, replace_durably, result_problem

DIGEST = "results.digest.json"
FORMAT = 1
"""Bumped when what a digest holds changes; a digest of another format is ignored."""
UNJUDGED = ("params", "losses", "ranks", "probes", "profile")
"""Fields of a result that ``compare`` never reads."""


def _identity(path: Path) -> list[int] | None:
    """What tells the results file a digest was made from: its size and mtime (ns).

    make and rsync's quick check trust the same pair, and a copy that keeps
    times (``cp -p``, ``rsync -a``) keeps the digest valid. A rewrite to the
    same size within the clock tick the digest was made in would pass; a
    content hash would not, but costs a third of what the digest saves.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def digested(result: CaseResult) -> dict[str, Any]:
    """The result as its digest keeps it."""
    kept = dict(vars(result))
    for name in UNJUDGED:
        del kept[name]
    if all(isinstance(result.metrics.get(k), (int, float)) for k in RECORDED_DECILES):
        del kept["step_times_s"]  # compare reads the step scatter from the deciles (noise.py)
    return kept


def encode(results: Sequence[CaseResult], checked: bool = True) -> bytes | None:
    """The results as a digest keeps them (a JSON list); None when JSON cannot hold them.

    ``checked``: also None when a figure would not survive the trip: orjson
    writes a NaN (from a line another tool wrote) as null, and the digest would
    then judge differently from the results it stands for. Results as
    :meth:`~llmbench.judge.result.CaseResult.stored` need no check: their
    stored record went through the same orjson, NaN and all.
    """
    kept = [digested(r) for r in results]
    try:
        data = orjson.dumps(kept)
    except TypeError:  # not a JSON value: only results parsed from JSON are digested
        return None
    return data if not checked or orjson.loads(data) == kept else None


def decode(kept: Any, checked: bool = True) -> list[CaseResult] | None:
    """The results of a parsed digest list; None unless every entry is a case result.

    ``checked``: each result's fields are also checked for their types, as a
    results line's are (store.result_problem); without it (the history's own
    digests, trusted as its records are) only what the constructor refuses is
    caught (10k results: 0.027 s against 0.038 s).
    """
    if not isinstance(kept, list):
        return None
    with gc_paused():
        try:
            results = [CaseResult(params={}, **r) for r in kept]
        except TypeError:  # an entry that is not an object, or lacks or adds a field
            return None
    if checked and any(result_problem(vars(r)) for r in results):
        return None
    return results


def write_digest(run_dir: RunDir) -> bool:
    """Write the run's digest; False (and none written) when it cannot be made whole.

    None for a results file that changed while it was read (a writer still
    appending), that has a line ``compare`` would warn about, or that
    :func:`encode` refuses. A write that fails (a full disk) only costs later
    comparisons their speed.
    """
    before = _identity(run_dir.results_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = run_dir.results()
    if before is None or caught or _identity(run_dir.results_path) != before:
        return False
    kept = encode(results)
    if kept is None:
        return False
    head = orjson.dumps({"format": FORMAT, "of": before, "results": len(results)})
    try:
        replace_durably(run_dir.path / DIGEST, head + b"\n" + kept)
    except OSError:
        return False
    return True


def _current(run_dir: RunDir) -> tuple[int, bytes] | None:
    """(how many results, their encoding) of the run's digest while it is current."""
    identity = _identity(run_dir.results_path)
    if identity is None:
        return None
    try:
        head, kept = (run_dir.path / DIGEST).read_bytes().split(b"\n", 1)
        header = orjson.loads(head)
    except (OSError, ValueError):  # no file, no second line, or a damaged header
        return None
    if not (
        isinstance(header, dict)
        and header.get("format") == FORMAT
        and header.get("of") == identity
        and isinstance(header.get("results"), int)
    ):
        return None
    return header["results"], kept


def current_digest(run_dir: RunDir, count: int) -> bytes | None:
    """The encoded results of the run's digest (as :func:`encode` gave them) while it is
    current and holds ``count`` results; None otherwise."""
    found = _current(run_dir)
    return found[1] if found is not None and found[0] == count else None


def read_digest(run_dir: RunDir) -> list[CaseResult] | None:
    """The results the digest holds while it is current; None when it is absent or not to be trusted."""
    found = _current(run_dir)
    if found is None:
        return None
    try:
        with gc_paused():
            results = decode(orjson.loads(found[1]))
    except orjson.JSONDecodeError:
        return None
    return results if results is not None and len(results) == found[0] else None
