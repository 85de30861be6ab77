"""The run history: an append-only SQLite index of every run, for trends and baselines.

One file (default ``reports/history.sqlite``, next to ``reports/runs/``) in
stdlib sqlite3's WAL mode, so readers never block the writer. Each run is
indexed in one ``BEGIN IMMEDIATE`` transaction that waits up to
``BUSY_TIMEOUT_S`` for the write lock: several processes can index at once and
none loses a row. The schema version is ``PRAGMA user_version``; a file from a
newer llmbench is refused rather than misread.

Append-only: triggers abort any UPDATE or DELETE. Indexing a run again adds
only the results it did not have (a resumed sweep), and decisions about runs
(a compare verdict, an operator's "good"/"bad" mark) are new rows, the latest
one winning.

Each result is stored whole (its results.jsonl line), so ``compare`` works
from a stored run id even after the run directory is gone; trend queries read
a metric out of the stored records with SQLite's ``json_extract``.

Change points over a metric's history use a rolling-median step detector
(see :func:`change_points`); each point also carries the noise band of the
good runs before it (noise.py), the band the gate judges a new run by.
"""

from __future__ import annotations

import difflib
import json
import operator
import sqlite3
import stat
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from llmbench.errors import UserError
from llmbench.judge.digest import FORMAT as DIGEST_FORMAT
from llmbench.judge.digest import current_digest, decode, encode
from llmbench.judge.noise import HISTORY_RUNS, Band, history_band
from llmbench.judge.result import CaseResult
from llmbench.judge.runs import FAILED_STATUSES, Run, read_run
from llmbench.judge.store import RESULTS, RunDir, gc_paused, loads
from llmbench.judge.thresholds import default_threshold

if TYPE_CHECKING:  # pandas is imported where a frame is built: compare never builds one
    import pandas as pd

SCHEMA_VERSION = 3
BUSY_TIMEOUT_S = 60.0
HISTORY_NAME = "history.sqlite"
DEFAULT_PATH = Path("reports") / HISTORY_NAME

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    scenario TEXT NOT NULL,
    fingerprint TEXT,
    source TEXT NOT NULL,
    path TEXT,
    started_at TEXT NOT NULL,
    indexed_at TEXT NOT NULL,
    env TEXT NOT NULL,
    scenario_doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    case_id TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    label TEXT NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (run_id, case_id, repeat)
);
CREATE INDEX IF NOT EXISTS runs_by_scenario ON runs (scenario, fingerprint, started_at);
CREATE INDEX IF NOT EXISTS results_by_status ON results (run_id, status, case_id);
CREATE TABLE IF NOT EXISTS digests (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    results INTEGER NOT NULL,
    format INTEGER NOT NULL,
    digest BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS digests_by_run ON digests (run_id);
CREATE TABLE IF NOT EXISTS verdicts (
    run_id TEXT NOT NULL,
    baseline_id TEXT,
    exit_code INTEGER NOT NULL,
    headline TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS marks (
    run_id TEXT NOT NULL,
    mark TEXT NOT NULL CHECK (mark IN ('good', 'bad')),
    note TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
"""
_TABLES = ("runs", "results", "verdicts", "marks", "digests")
_UPGRADE = """
DROP INDEX IF EXISTS metrics_by_name;
DROP TABLE IF EXISTS metrics;
"""
"""Schema 1 to 2: metrics are read from each result's stored record (``json_extract``).

Schema 1 also stored every numeric metric as a row of its own, three B-trees
of ~100-byte keys: 490,000 rows and ~1.2 s of a 10k-case run's 1.9 s of
indexing. Trends read a few hundred records per case and metric, where the
records themselves answer as fast.

Schema 2 to 3 only adds: each indexing's digest of its run (what ``compare``
reads of a result: judge/digest.py), so a baseline and the ten runs of a
noise band load at a third of the parsing, and an index of results by run and
status, which the run list's counts read instead of the records' pages (a
history of 110k results: 0.18 s → 0.03 s per listing). Runs indexed before
have no digest and load from their records.
"""


def _append_only_triggers() -> str:
    return "\n".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'the history is append-only'); END;"
        for table in _TABLES
        for op in ("UPDATE", "DELETE")
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def history_next_to(runs_root: Path) -> Path:
    """``reports/runs`` → ``reports/history.sqlite``: the index lives beside the runs.

    Not when that parent is writable by everyone (``--output-dir /tmp/runs``):
    any local user could then plant or replace the history next to /tmp.
    The index then lives inside the runs folder instead.
    """
    root = runs_root.resolve()
    try:
        shared = bool(root.parent.stat().st_mode & stat.S_IWOTH)
    except OSError:
        shared = False
    return (root if shared else root.parent) / HISTORY_NAME


def _same_result(stored: dict[str, Any], result: CaseResult) -> bool:
    """The same record, compared on the fields both have (a newer llmbench may add fields)."""
    current = json.loads(result.to_json())
    return all(stored[k] == current[k] for k in stored.keys() & current.keys())


def _conflict(run: Run, stored_path: str | None, what: str) -> UserError:
    """Two runs under one id: the history is append-only, so the second is refused, never dropped."""
    return UserError(
        f"run id {run.run_id} is already in the history (from {stored_path or 'elsewhere'}) "
        f"with different {what}; not indexed",
        where=str(run.path) if run.path else run.run_id,
    )


@dataclass(frozen=True)
class RunRow:
    run_id: str
    scenario: str
    fingerprint: str | None
    source: str
    path: str | None
    started_at: str
    cases: int
    statuses: dict[str, int]
    verdict: str | None
    """Headline of the latest comparison that judged this run."""
    exit_code: int | None
    """Exit code of that comparison."""
    mark: str | None


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL, retrying while another process holds it.

    Changing the journal mode of a fresh file takes an exclusive lock without
    consulting sqlite's busy handler, so two processes creating the history at
    once could get "database is locked" at once; wait for it as for the write lock.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class History:
    """The SQLite index at ``path`` (created on first write)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @contextmanager
    def _connect(self, write: bool) -> Iterator[sqlite3.Connection]:
        if not write and not self.path.exists():
            raise UserError("no history yet (index a run first)", where=str(self.path))
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise UserError(f"cannot open the history: {exc}", where=str(self.path)) from None
        try:
            _use_wal(db)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UserError(
                    f"written by a newer llmbench (schema {version}, this one reads {SCHEMA_VERSION})",
                    where=str(self.path),
                )
            if write:
                db.execute("BEGIN IMMEDIATE")
                if version < SCHEMA_VERSION:
                    db.executescript(_UPGRADE + _SCHEMA + _append_only_triggers())
                    db.execute("BEGIN IMMEDIATE")
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            yield db
            if write:
                db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise UserError(f"history database error: {exc}", where=str(self.path)) from None
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # ----------------------------------------------------------------- writing

    def index_run(self, run: Run, source: str = "llmbench") -> int:
        """Add a run and whichever of its results are not indexed yet; returns how many were added."""
        identity = (
            run.scenario_name,
            run.fingerprint,
            json.dumps(run.env, default=str),
            json.dumps(run.scenario, default=str),
        )
        with self._connect(write=True) as db:
            stored = db.execute(
                "SELECT scenario, fingerprint, env, scenario_doc, path FROM runs WHERE run_id = ?",
                (run.run_id,),
            ).fetchone()
            if stored is None:
                db.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run.run_id,
                        identity[0],
                        identity[1],
                        source,
                        str(run.path.resolve()) if run.path else None,
                        run.started_at or _now(),
                        _now(),
                        *identity[2:],
                    ),
                )
            elif tuple(stored[:4]) != identity:
                raise _conflict(run, stored[4], "its scenario or environment")
            known = {
                (case, repeat): record
                for case, repeat, record in db.execute(
                    "SELECT case_id, repeat, record FROM results WHERE run_id = ? ORDER BY rowid",
                    (run.run_id,),
                )
            }
            for r in run.results:
                record = known.get((r.case_id, r.repeat))
                if record is not None and not _same_result(json.loads(record), r):
                    raise _conflict(run, stored[4] if stored else None, f"case {r.case_id}")
            new = [r.stored() for r in run.results if (r.case_id, r.repeat) not in known]
            db.executemany(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (run.run_id, r.case_id, r.repeat, r.label, r.status, r.to_json(stored=True))
                    for r in new
                ],
            )
            if new:
                self._add_digest(db, run, list(known), new)
        return len(new)

    @staticmethod
    def _add_digest(
        db: sqlite3.Connection, run: Run, known: list[tuple[str, int]], new: list[CaseResult]
    ) -> None:
        """The digest of every result the index now holds of ``run``, in the index's order,
        as stored (``new`` already is); none when ``run`` lacks some of them.

        A run indexed whole, whose results were stored as they are, takes its run
        directory's digest as it is when that is current: the same bytes, unencoded.
        """
        data = None
        if not known and run.path is not None and all(map(operator.is_, new, run.results)):
            data = current_digest(RunDir(run.path), len(new))
        if data is None:
            by_key = {(r.case_id, r.repeat): r for r in run.results}
            if not all(key in by_key for key in known):
                return
            data = encode([by_key[key].stored() for key in known] + new, checked=False)
        if data is not None:
            db.execute(
                "INSERT INTO digests VALUES (?, ?, ?, ?)",
                (run.run_id, len(known) + len(new), DIGEST_FORMAT, data),
            )

    def index_paths(self, paths: Sequence[str | Path]) -> list[tuple[str, int]]:
        """Index run directories, or every run directory inside a folder of runs."""
        done = []
        for given in paths:
            path = Path(given)
            if (path / RESULTS).exists():
                found = [path]
            elif path.is_dir():
                found = sorted(p.parent for p in path.glob(f"*/{RESULTS}"))
                if not found:
                    raise UserError("no run directories here", where=str(path))
            else:
                raise UserError("not a run directory or a folder of runs", where=str(path))
            for run_path in found:
                run = read_run(run_path)
                done.append((run.run_id, self.index_run(run)))
        return done

    def record_verdict(
        self, run_id: str, baseline_id: str | None, exit_code: int, headline: str
    ) -> None:
        with self._connect(write=True) as db:
            db.execute(
                "INSERT INTO verdicts VALUES (?, ?, ?, ?, ?)",
                (run_id, baseline_id, exit_code, headline, _now()),
            )

    def mark(self, run_id: str, mark: str, note: str = "") -> None:
        """Record an operator's decision: 'good' makes a run eligible as a baseline, 'bad' excludes it."""
        with self._connect(write=True) as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise UserError("no such run in the history", where=str(self.path), key=run_id)
            db.execute("INSERT INTO marks VALUES (?, ?, ?, ?)", (run_id, mark, note, _now()))

    # ----------------------------------------------------------------- reading

    def runs(self, scenario: str | None = None, fingerprint: str | None = None) -> list[RunRow]:
        """Indexed runs, newest first, with their status counts, latest verdict and mark."""
        where, args = _filters(scenario=scenario, fingerprint=fingerprint)
        with self._connect(write=False) as db:
            rows = db.execute(
                f"""
                SELECT r.run_id, r.scenario, r.fingerprint, r.source, r.path, r.started_at,
                    (SELECT json_group_object(status, n) FROM (
                        SELECT status, COUNT(*) AS n FROM results s
                        WHERE s.run_id = r.run_id GROUP BY status)),
                    (SELECT COUNT(DISTINCT case_id) FROM results s WHERE s.run_id = r.run_id),
                    (SELECT exit_code FROM verdicts v WHERE v.run_id = r.run_id
                        ORDER BY v.rowid DESC LIMIT 1),
                    (SELECT headline FROM verdicts v WHERE v.run_id = r.run_id
                        ORDER BY v.rowid DESC LIMIT 1),
                    (SELECT mark FROM marks m WHERE m.run_id = r.run_id
                        ORDER BY m.rowid DESC LIMIT 1)
                FROM runs r {where}
                ORDER BY r.started_at DESC, r.run_id DESC
                """,
                args,
            ).fetchall()
        out = []
        for run_id, scen, fp, source, path, started, statuses, cases, code, headline, mark in rows:
            out.append(
                RunRow(
                    run_id=run_id,
                    scenario=scen,
                    fingerprint=fp,
                    source=source,
                    path=path,
                    started_at=started,
                    cases=cases,
                    statuses=json.loads(statuses) if statuses else {},
                    verdict=headline,
                    exit_code=code,
                    mark=mark,
                )
            )
        return out

    def load(self, run_id: str, judged_only: bool = False) -> Run | None:
        """A stored run, rebuilt from the index (no run directory needed); ``judged_only``:
        from its digest when the latest one holds every result indexed (digest.py)."""
        with self._connect(write=False) as db:
            row = db.execute(
                "SELECT env, scenario_doc, path FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                return None
            results = _digest(db, run_id) if judged_only else None
            if results is None:
                records = db.execute(
                    "SELECT record FROM results WHERE run_id = ? ORDER BY rowid", (run_id,)
                ).fetchall()
                with gc_paused():
                    results = [CaseResult.from_dict(loads(r)) for (r,) in records]
        path = Path(row[2]) if row[2] and Path(row[2]).is_dir() else None
        return Run(run_id, results, json.loads(row[0]), json.loads(row[1]), path)

    def good_runs(
        self,
        scenario: str,
        fingerprint: str | None,
        exclude: str,
        before: str | None = None,
        limit: int | None = None,
    ) -> list[RunRow]:
        """Runs of this scenario and environment, started before ``before``, fit to be a baseline; newest first.

        A run marked 'good' always is; one marked 'bad' never is; otherwise it
        is when none of its cases errored and its own comparison (if any) found
        no regression. So an unaccepted regression never becomes the baseline
        that would hide it the next night, nor widens the noise band.
        """
        found = []
        for run in self.runs(scenario=scenario, fingerprint=fingerprint):
            if run.run_id == exclude or run.mark == "bad":
                continue
            if before is not None and run.started_at > before:
                continue
            if run.mark != "good" and (
                any(run.statuses.get(s) for s in FAILED_STATUSES) or run.exit_code
            ):
                continue
            found.append(run)
            if limit is not None and len(found) == limit:
                break
        return found

    def last_good(
        self, scenario: str, fingerprint: str | None, exclude: str, before: str | None = None
    ) -> RunRow | None:
        """The newest of :meth:`good_runs`: the baseline ``latest`` stands for."""
        runs = self.good_runs(scenario, fingerprint, exclude, before, limit=1)
        return runs[0] if runs else None

    def metric_rows(
        self,
        metric: str,
        scenario: str | None = None,
        case: str | None = None,
        fingerprint: str | None = None,
    ) -> pd.DataFrame:
        """One row per ok result holding ``metric``: run, time, case, label, value."""
        import pandas as pd

        where, args = _filters(scenario=scenario, fingerprint=fingerprint, case=case)
        where = where.replace("WHERE", "AND") if where else ""
        path = _metric_path(metric)
        with self._connect(write=False) as db:
            rows = db.execute(
                f"""
                SELECT s.run_id, r.started_at, r.fingerprint, s.case_id, s.label,
                    json_extract(s.record, ?) AS value
                FROM results s
                JOIN runs r ON r.run_id = s.run_id
                WHERE s.status = 'ok' AND json_type(s.record, ?) IN ('integer', 'real')
                    {where}
                """,
                (path, path, *args),
            ).fetchall()
        return pd.DataFrame(
            rows, columns=["run_id", "started_at", "fingerprint", "case_id", "label", "value"]
        )

    def metric_names(self) -> list[str]:
        """Numeric metrics recorded by the newest run of each scenario (for did-you-mean hints)."""
        with self._connect(write=False) as db:
            return [
                name
                for (name,) in db.execute(
                    """
                    SELECT DISTINCT j.key
                    FROM results s, json_each(s.record, '$.metrics') j
                    WHERE s.run_id IN (
                        SELECT run_id FROM runs r
                        WHERE started_at = (
                            SELECT MAX(started_at) FROM runs WHERE scenario = r.scenario
                        )
                    ) AND j.type IN ('integer', 'real')
                    ORDER BY j.key
                    """
                )
            ]

    def has_metric(self, metric: str) -> bool:
        """Whether any ok result holds ``metric`` as a number (stops at the first)."""
        with self._connect(write=False) as db:
            return (
                db.execute(
                    "SELECT 1 FROM results WHERE status = 'ok' "
                    "AND json_type(record, ?) IN ('integer', 'real') LIMIT 1",
                    (_metric_path(metric),),
                ).fetchone()
                is not None
            )


def _digest(db: sqlite3.Connection, run_id: str) -> list[CaseResult] | None:
    """The run's latest digest while it holds as many results as the index (a resumed run
    indexed again adds results and a newer digest); None without one (schema 2 runs)."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'digests'").fetchone():
        return None  # a schema 2 file, read without being upgraded
    found = db.execute(
        "SELECT results, format, digest FROM digests WHERE run_id = ? ORDER BY rowid DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    if found is None or found[1] != DIGEST_FORMAT:
        return None
    (count,) = db.execute("SELECT COUNT(*) FROM results WHERE run_id = ?", (run_id,)).fetchone()
    if count != found[0]:
        return None
    try:
        with gc_paused():
            results = decode(orjson.loads(found[2]), checked=False)
    except orjson.JSONDecodeError:
        return None
    for result in results or ():  # as its records hold it (a digest taken from a renamed run
        result.run_id = run_id  # directory has the old id: read_run renames the results)
    return results


def _metric_path(metric: str) -> str:
    """The JSON path of a metric in a stored record, its name quoted (any character may occur)."""
    return '$.metrics."' + metric.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _filters(
    scenario: str | None = None, fingerprint: str | None = None, case: str | None = None
) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if scenario is not None:
        clauses.append("r.scenario = ?")
        args.append(scenario)
    if fingerprint is not None:
        clauses.append("r.fingerprint = ?")
        args.append(fingerprint)
    if case is not None:
        clauses.append("(s.case_id = ? OR s.label = ?)")
        args += [case, case]
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), args


# --------------------------------------------------------------------------- change points

MIN_SIDE = 3
"""Points needed on each side of a shift before it can be called one."""
WINDOW = 5
"""Points on each side used to estimate the levels before and after."""
Z = 4.0
"""How many robust standard deviations (1.4826 × MAD) a shift must span."""


def change_points(values: Sequence[float], metric: str) -> list[int]:
    """Indices where the level of a series shifts: a rolling-median step detector.

    At every index k with at least MIN_SIDE points on each side, compare the
    median of up to WINDOW points after k with the median of up to WINDOW
    points before it. The noise scale is 1.4826 × the median absolute
    deviation of both windows around their own medians (a robust standard
    deviation: Rousseeuw & Croux 1993). k is a candidate when the shift is
    larger than Z noise scales *and* beyond the metric's compare threshold
    (so history and compare agree on what a change is). Overlapping
    candidates keep only the strongest (non-maximum suppression over WINDOW).
    """
    threshold = default_threshold(metric)
    n = len(values)
    candidates: list[tuple[float, int]] = []
    for k in range(MIN_SIDE, n - MIN_SIDE + 1):
        before = list(values[max(0, k - WINDOW) : k])
        after = list(values[k : k + WINDOW])
        level_before, level_after = statistics.median(before), statistics.median(after)
        shift = abs(level_after - level_before)
        residuals = [abs(v - level_before) for v in before] + [abs(v - level_after) for v in after]
        scale = 1.4826 * statistics.median(residuals)
        floor = threshold.limit(level_before) if threshold else 0.05 * abs(level_before)
        if shift <= floor:
            continue
        score = shift / scale if scale > 0 else float("inf")
        if score > Z:
            candidates.append((score, k))
    chosen: list[int] = []
    for _, k in sorted(candidates, reverse=True):
        if all(abs(k - c) >= WINDOW for c in chosen):
            chosen.append(k)
    return sorted(chosen)


@dataclass
class Trend:
    metric: str
    frame: pd.DataFrame
    """run_id, started_at, fingerprint, case_id, label, value (the run's best process),
    band_low / band_high (the noise band from the runs before it), change_point."""

    @property
    def change_points(self) -> list[tuple[str, str]]:
        hits = self.frame[self.frame["change_point"]]
        return list(zip(hits["case_id"], hits["run_id"], strict=True))


def trend(
    history: History,
    metric: str,
    scenario: str | None = None,
    case: str | None = None,
    fingerprint: str | None = None,
    last: int | None = None,
) -> Trend:
    """A metric's history per case (each run's best process), bands and change points."""
    import numpy as np
    import pandas as pd

    rows = history.metric_rows(metric, scenario=scenario, case=case, fingerprint=fingerprint)
    if rows.empty:
        known = history.metric_names()
        # a hundred-odd names (per-collective profile figures among them): the near ones first
        close = difflib.get_close_matches(metric, known, n=3)
        hint = (
            ""
            if metric in known
            else f" (did you mean {' or '.join(close)}?)"
            if close
            else f" (recorded metrics: {', '.join(known[:12])}…)"
        )
        raise UserError(
            f"no ok results with this metric{hint}", where=str(history.path), key=metric
        )
    threshold = default_threshold(metric)
    # a run's figure is its best process, the figure the gate judges (noise.best)
    figure = "median" if threshold is None else "min" if threshold.worse > 0 else "max"
    per_run = (
        rows.groupby(["case_id", "run_id"], sort=False)
        .agg(
            started_at=("started_at", "first"),
            fingerprint=("fingerprint", "first"),
            label=("label", "first"),
            value=("value", figure),
        )
        .reset_index()
        .sort_values(["label", "case_id", "started_at", "run_id"], kind="stable")
    )
    per_run["started_at"] = pd.to_datetime(per_run["started_at"], utc=True, errors="coerce")
    # per case on plain lists, the frame assembled once: a frame per case (assign,
    # then concat) took ~6 s for 10k cases
    values, prints = per_run["value"].tolist(), per_run["fingerprint"].tolist()
    codes, _ = pd.factorize(per_run["case_id"])  # cases in the frame's (sorted) order
    by_case = np.argsort(codes, kind="stable")
    kept: list[int] = []
    low: list[float | None] = []
    high: list[float | None] = []
    flags: list[bool] = []
    for positions in np.split(by_case, np.flatnonzero(np.diff(codes[by_case])) + 1):
        rows_of = positions.tolist()
        bands = rolling_bands([values[i] for i in rows_of], [prints[i] for i in rows_of])
        shown = rows_of[-last:] if last else rows_of
        bands = bands[len(rows_of) - len(shown) :]
        marks = [False] * len(shown)
        for k in change_points([values[i] for i in shown], metric):
            marks[k] = True
        kept += shown
        low += [b.low if b else None for b in bands]
        high += [b.high if b else None for b in bands]
        flags += marks
    frame = per_run.iloc[kept].reset_index(drop=True)
    frame = frame.assign(band_low=low, band_high=high, change_point=flags)
    return Trend(metric, frame[[*TREND_COLUMNS]])


TREND_COLUMNS = (
    "run_id",
    "started_at",
    "fingerprint",
    "case_id",
    "label",
    "value",
    "band_low",
    "band_high",
    "change_point",
)


def rolling_bands(values: Sequence[float], fingerprints: Sequence[str | None]) -> list[Band | None]:
    """At each run, the noise band the gate would have judged it by: the history band of the
    ``HISTORY_RUNS`` runs before it with the same fingerprint (None while there are too few)."""
    bands: list[Band | None] = []
    for k, fp in enumerate(fingerprints):
        before = [v for v, f in zip(values[:k], fingerprints[:k], strict=True) if f == fp]
        bands.append(history_band(before[-HISTORY_RUNS:]))
    return bands


# --------------------------------------------------------------------------- resolving runs


def resolve_run(ref: str | Path, history: History | None, judged_only: bool = False) -> Run:
    """A run from a run directory, its results.jsonl, or a stored run id
    (``judged_only``: see :func:`~llmbench.judge.runs.read_run`)."""
    path = Path(ref)
    if path.is_dir():
        return read_run(path, judged_only)
    if path.is_file() and path.name == RESULTS:
        return read_run(path.parent, judged_only)
    if history is not None and history.path.exists():
        run = history.load(str(ref), judged_only)
        if run is not None:
            return run
    where = f" nor a run id in {history.path}" if history is not None else ""
    raise UserError(f"neither a run directory{where}", where=str(ref))


def default_metric(history: History) -> str:
    """Throughput when the history has it; step time otherwise (e.g. only micro-benchmarks)."""
    return "tokens_per_s" if history.has_metric("tokens_per_s") else "step_time_s_median"
