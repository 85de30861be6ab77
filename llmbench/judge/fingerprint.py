"""What makes two runs' timings comparable: the environment fingerprint.

Written by the sweep into ``env.json``; read by ``compare`` and ``history`` to
refuse judging runs from different machines or library versions.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

FINGERPRINT_KEYS = (
    "accelerator",
    "accelerator_count",
    "driver",
    "cpu_model",
    "torch",
    "deepspeed",
    "transformers",
)


def fingerprint(env: dict[str, Any]) -> str:
    """Short hash of what makes timings comparable (hardware, driver, core libraries)."""
    blob = json.dumps({k: env.get(k) for k in FINGERPRINT_KEYS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def env_differences(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old → new`` for every fingerprint key that differs."""
    return [
        f"{key}: {baseline.get(key)} → {current.get(key)}"
        for key in FINGERPRINT_KEYS
        if baseline.get(key) != current.get(key)
    ]
