"""Machine-readable exports of the results frame: CSV and JSON, one row per result.

Rows stay per result (one per repeat): aggregating is the reader's choice.
Unknown figures stay empty (CSV) or null (JSON), never 0; JSON keeps the
reasons (``null_reasons``) and the raw step times.
"""

from __future__ import annotations

import pandas as pd

from llmbench.judge.runs import LISTS

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A cell starting with one of these is a formula to Excel, LibreOffice and Sheets (OWASP CSV injection)."""


def _inert(value: object) -> object:
    """A text cell a spreadsheet shows as text: a leading ``'`` before a formula start.

    Numbers are left alone (a negative number is data, not a formula); labels,
    reasons and scenario names are user text and may start with ``=``.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_csv(frame: pd.DataFrame) -> str:
    """``frame`` as CSV with every text cell made inert for spreadsheets."""
    inert = frame.copy()
    for column in inert.columns:
        if not pd.api.types.is_numeric_dtype(inert[column]):
            inert[column] = inert[column].map(_inert)
    inert.columns = [_inert(str(c)) for c in inert.columns]
    return inert.to_csv(index=False)


def to_csv(frame: pd.DataFrame) -> str:
    return safe_csv(frame.drop(columns=[c for c in (*LISTS, "null_reasons") if c in frame.columns]))


def to_json(frame: pd.DataFrame) -> str:
    return frame.to_json(orient="records", date_format="iso", indent=1) + "\n"
