"""Durable results: run directories with an append-only, fsynced results.jsonl.

Layout of ``<output_dir>/<run_id>/``:

* ``scenario.yaml`` – the scenario as resolved (overrides applied)
* ``env.json`` – where and with what it ran
* ``results.jsonl`` – one :class:`~llmbench.judge.result.CaseResult` per line, appended
  and fsynced the moment a case ends, so an interrupted sweep keeps every
  finished case and ``--resume`` reruns only what is missing
* ``cases/<case_id>[-r<repeat>]/`` – task, rank records, logs, timeline
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from llmbench.errors import UserError
from llmbench.judge.result import CaseResult

RESULTS = "results.jsonl"


class CorruptLineWarning(UserWarning):
    """A results line that is not valid JSON (e.g. truncated by a crash); it is skipped."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_line(path: Path, line: str) -> None:
    """Append one line durably: a single locked write, then fsync.

    The lock keeps lines whole when several processes append to one file.
    """
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every valid line; corrupt lines warn and are skipped."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                warnings.warn(
                    f"{path}:{number}: skipping a corrupt line ({exc.msg if hasattr(exc, 'msg') else exc})",
                    CorruptLineWarning,
                    stacklevel=2,
                )
                continue
            if not isinstance(obj, dict):
                warnings.warn(
                    f"{path}:{number}: skipping a line that is not a JSON object",
                    CorruptLineWarning,
                    stacklevel=2,
                )
                continue
            yield number, obj


_SHAPES = {
    "case_id": str,
    "label": str,
    "status": str,
    "params": dict,
    "metrics": dict,
    "null_reasons": dict,
    "step_times_s": list,
}
_REQUIRED = ("case_id", "label", "params", "status")


def _result_problem(obj: dict[str, Any]) -> str | None:
    """Why a JSON object is not a case result, or None when it is one."""
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        return f"missing {', '.join(missing)}"
    wrong = [k for k, kind in _SHAPES.items() if k in obj and not isinstance(obj[k], kind)]
    return f"wrong type of {', '.join(wrong)}" if wrong else None


@dataclass
class RunDir:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    @classmethod
    def create(cls, output_dir: str | Path, scenario_name: str) -> RunDir:
        """A new, empty run directory named ``<UTC time>-<scenario>``; never reuses one."""
        root = Path(output_dir)
        root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.utcnow().strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", scenario_name).strip("-") or "run"
        for n in range(1000):
            path = root / (f"{stamp}-{slug}" + (f"-{n}" if n else ""))
            try:
                path.mkdir()
            except FileExistsError:
                continue
            _fsync_dir(root)
            return cls(path)
        raise RuntimeError(f"cannot create a run directory under {root}")

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        path = Path(path)
        if not (path / RESULTS).exists() and not (path / "scenario.yaml").exists():
            raise UserError(
                "not a run directory (no results.jsonl or scenario.yaml)", where=str(path)
            )
        return cls(path)

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        self._write(name, json.dumps(data, indent=2, default=str))

    def write_yaml(self, name: str, data: dict[str, Any]) -> None:
        self._write(name, yaml.safe_dump(data, sort_keys=False))

    def _write(self, name: str, text: str) -> None:
        tmp = self.path / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path / name)

    def read_json(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / name).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def append(self, result: CaseResult) -> None:
        append_line(self.results_path, result.to_json())

    def results(self) -> list[CaseResult]:
        """Every line that is a case result; JSON that is not one is skipped like a corrupt line."""
        if not self.results_path.exists():
            return []
        results = []
        for number, obj in read_jsonl(self.results_path):
            problem = _result_problem(obj)
            if problem is None:
                results.append(CaseResult.from_dict(obj))
                continue
            warnings.warn(
                f"{self.results_path}:{number}: skipping a line that is not a case result ({problem})",
                CorruptLineWarning,
                stacklevel=2,
            )
        return results

    def done(self) -> set[tuple[str, int]]:
        """(case id, repeat) of every case already recorded."""
        return {(r.case_id, r.repeat) for r in self.results()}

    def case_dir(self, case_id: str, repeat: int = 0) -> Path:
        return self.path / "cases" / (case_id if repeat == 0 else f"{case_id}-r{repeat}")
