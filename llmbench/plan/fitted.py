"""Constants of the step-time model fitted on the fit rows of ``published_runs.yaml``.

Written by ``python -m llmbench.plan.published --fit`` (least squares on the log
of tokens/s per GPU); ``tests/test_plan_published.py`` refits and checks these
values and the held-out errors. Edit the YAML, not these numbers.
"""

FIT_SOURCE = "fitted on the fit rows of llmbench/plan/published_runs.yaml (plan/README.md)"

FITTED: dict[str, float] = {
    "matmul_fraction.a100": 0.7565,
    "matmul_fraction.h100": 0.6192,
    "matmul_fraction.v100": 0.395,
    "elementwise_tensors": 162.1,
    "launch_s_per_layer": 0.0005326,
}

HELDOUT_ERROR: dict[str, float] = {"min": -0.1327, "max": 0.1518, "median_abs": 0.05}
"""Smallest and largest (predicted − published) / published over the held-out rows:
a prediction ``t`` is read as "the real figure lies in t/(1+max) … t/(1+min)"."""
