"""Machine-readable exports of the results frame: CSV and JSON, one row per result.

Rows stay per result (one per repeat): aggregating is the reader's choice.
Unknown figures stay empty (CSV) or null (JSON), never 0; JSON keeps the
reasons (``null_reasons``) and the raw step times.
"""

from __future__ import annotations

import pandas as pd

from llmbench.judge.runs import LISTS


def to_csv(frame: pd.DataFrame) -> str:
    flat = frame.drop(columns=[c for c in (*LISTS, "null_reasons") if c in frame.columns])
    return flat.to_csv(index=False)


def to_json(frame: pd.DataFrame) -> str:
    return frame.to_json(orient="records", date_format="iso", indent=1) + "\n"
