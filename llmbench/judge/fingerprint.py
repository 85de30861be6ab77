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

TEST_SLOWDOWN = "test_slowdown"
"""env.json key: the fraction of the test-only slowdown hook (measure/slowdown.py), null in real runs."""


def test_hook_warning(env: dict[str, Any]) -> str | None:
    """A warning when a run was slowed on purpose by the test-only hook (never silent)."""
    value = env.get(TEST_SLOWDOWN)
    if not value:
        return None
    return (
        f"test-only slowdown hook active in this run: every timed step slowed by {value:g} × itself"
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
