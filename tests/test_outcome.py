"""How a finished or killed case is classified."""

from __future__ import annotations

import json

from llmbench.measure.launch.outcome import classify, classify_error
from llmbench.measure.record import RankRecord


def rec(rank, status="ok", error_type=None, error=None) -> RankRecord:
    return RankRecord(rank=rank, world_size=2, status=status, error_type=error_type, error=error)


def test_deepspeed_refusals_are_unsupported():
    assert (
        classify_error("ValueError", "Type fp16 is not supported on your device.") == "unsupported"
    )
    assert (
        classify_error("Unsupported", "selective checkpointing is not implemented") == "unsupported"
    )


def test_oom_patterns():
    assert (
        classify_error("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB")
        == "oom"
    )
    assert (
        classify_error(
            "RuntimeError",
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes. Cannot allocate memory",
        )
        == "oom"
    )
    assert classify_error("RuntimeError", "shape mismatch") == "error"


def test_root_cause_beats_the_collective_echo(tmp_path):
    records = [
        rec(
            0,
            "error",
            "RuntimeError",
            "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer",
        ),
        rec(1, "error", "KeyError", "'NoSuchOptimizer'"),
    ]
    status, reason = classify(tmp_path, records, timed_out=False, timeout_s=10, last_phase=None)
    assert status == "error" and reason == "rank 1: KeyError: 'NoSuchOptimizer'"


def test_timeout_names_the_phase(tmp_path):
    status, reason = classify(
        tmp_path, [None, None], timed_out=True, timeout_s=8, last_phase="measure"
    )
    assert (status, reason) == ("timeout", "killed after 8 s during measure")


def test_a_rank_killed_without_a_record(tmp_path):
    (tmp_path / "leader.json").write_text(json.dumps({"exit_codes": {"0": 0, "1": -9}}))
    status, reason = classify(
        tmp_path, [rec(0), None], timed_out=False, timeout_s=10, last_phase=None
    )
    assert status == "oom" and "SIGKILL" in reason
    (tmp_path / "leader.json").write_text(json.dumps({"exit_codes": {"0": 0, "1": 3}}))
    (tmp_path / "rank1.log").write_text("UserWarning: something\nValueError: bad thing happened\n")
    status, reason = classify(
        tmp_path, [rec(0), None], timed_out=False, timeout_s=10, last_phase=None
    )
    assert status == "error" and reason.endswith("ValueError: bad thing happened")


def test_a_killed_rank_beats_its_peers_lost_connection(tmp_path):
    """A rank killed on another node leaves no record; its peer records only the echo."""
    (tmp_path / "leader.json").write_text(json.dumps({"exit_codes": {"0": 1, "1": -15}}))
    echo = "[gloo/transport/tcp/pair.cc:537] Read error [10.0.0.3]:33449: Connection reset by peer"
    records = [rec(0, "error", "RuntimeError", echo), None]
    assert classify(tmp_path, records, False, 10, None) == ("error", "rank 1 died from SIGTERM")
    (tmp_path / "leader.json").write_text(json.dumps({"exit_codes": {"0": 1, "1": 1}}))
    assert classify(tmp_path, records, False, 10, None)[1].startswith("rank 0: RuntimeError")


def test_all_ok(tmp_path):
    assert classify(tmp_path, [rec(0), rec(1)], False, 10, None) == ("ok", None)


def test_a_rank_oom_then_a_hang_is_oom_not_timeout(tmp_path):
    """On several GPUs the OOM rank's peers block in NCCL until the case is killed."""
    records = [
        rec(0, "error", "OutOfMemoryError", "CUDA out of memory. Tried to allocate 8.00 GiB"),
        None,  # the peer never got out of its collective
    ]
    status, reason = classify(tmp_path, records, True, 240, "init")
    assert status == "oom"
    assert reason.startswith("rank 0: OutOfMemoryError") and "killed after 240 s" in reason


def test_a_hang_without_a_failed_rank_is_a_timeout(tmp_path):
    status, reason = classify(tmp_path, [rec(0), None], True, 240, "measure")
    assert (status, reason) == ("timeout", "killed after 240 s during measure")
