"""Which DeepSpeed ops a sweep builds, and what it does when the Adam ops cannot be built."""

from __future__ import annotations

from llmbench.measure.ops import optimizer_fallback

BUILT = {"op": "fused_adam", "seconds": 41.0, "error": None}


def test_no_fallback_when_the_adam_ops_built():
    assert optimizer_fallback({"FusedAdamBuilder": BUILT}) is None


def test_torch_adam_when_fused_adam_cannot_be_built():
    """A pip-only GPU machine: no nvcc, so FusedAdam's JIT build fails."""
    report = {
        "FusedAdamBuilder": {
            "op": "fused_adam",
            "seconds": None,
            "error": "RuntimeError: Error building extension 'fused_adam': nvcc not found",
        }
    }
    why = optimizer_fallback(report)
    assert "nvcc not found" in why and "torch's AdamW" in why and "optimizer_impl" in why


def test_a_failed_cpu_adam_also_falls_back():
    report = {"FusedAdamBuilder": BUILT, "CPUAdamBuilder": {"seconds": None, "error": "boom"}}
    assert "CPUAdamBuilder: boom" in optimizer_fallback(report)
