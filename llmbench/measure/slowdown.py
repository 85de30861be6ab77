"""A test-only slowdown hook: how the regression gate's detection power is measured.

``LLMBENCH_TEST_SLOWDOWN=0.1`` makes every timed step of every rank sleep for
0.1 × the time the step itself took, inside the timed region: a known, uniform
~10 % slowdown of exactly the code path the gate watches, whatever the
machine's load (``bench/gate_quality.py`` uses it to check that the gate
catches it). It exists only for that benchmark. So that it can never
silently affect a real run, the sweep records the fraction in ``env.json``
(``test_slowdown``) and ``llmbench compare`` prints a warning on every output
of a comparison that involves such a run.
"""

from __future__ import annotations

import math
import os
import time

from llmbench.errors import UserError

ENV = "LLMBENCH_TEST_SLOWDOWN"


def fraction() -> float | None:
    """The injected fraction, None when the hook is off; refuses a value outside (0, 1]."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise UserError(f"a test-only slowdown fraction in (0, 1], not {text!r}", key=ENV)
    return value


def sleep_after(step_s: float, injected: float | None) -> None:
    """Inside a timed step: sleep ``injected`` × the step's own time (nothing when off)."""
    if injected:
        time.sleep(injected * step_s)
