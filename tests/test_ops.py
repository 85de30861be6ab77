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


def test_a_build_lock_whose_owner_is_gone_is_stale_and_one_held_open_is_not(tmp_path, capsys):
    """kill -9 mid-build leaves torch's ``<op>/lock``; every later sweep waited on it for ever."""
    import subprocess
    import sys

    from llmbench.measure.ops import clear_stale_locks, stale_locks

    orphan = tmp_path / "fused_adam" / "lock"
    held = tmp_path / "py311_cpu" / "cpu_adam" / "lock"
    for lock in (orphan, held):
        lock.parent.mkdir(parents=True)
        lock.touch()
    owner = subprocess.Popen(
        [sys.executable, "-c", f"f = open({str(held)!r}); print(1, flush=True); input()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        owner.stdout.readline()  # it has the lock open, as torch's FileBaton does while building
        assert stale_locks(tmp_path) == [orphan]
        clear_stale_locks(tmp_path)
    finally:
        owner.kill()
        owner.wait()
    assert not orphan.exists() and held.exists()
    assert capsys.readouterr().err == (
        f"llmbench: removed {orphan}, a torch extension build lock whose owner is gone "
        "(an interrupted op build)\n"
    )


def test_an_op_build_that_times_out_takes_its_compilers_with_it(tmp_path):
    """The builder's children (ninja, c++) are in its process group and die with it."""
    import sys
    import time

    import psutil

    from llmbench.measure.launch.local import run_in_own_group

    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        f"open({str(pid_file)!r}, 'w').write(str(c.pid)); time.sleep(600)"
    )
    with (tmp_path / "out").open("w") as fh:
        t0 = time.monotonic()
        assert run_in_own_group([sys.executable, "-c", script], fh, timeout_s=3) is None
    assert time.monotonic() - t0 < 10
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(grandchild) and time.monotonic() < deadline:
        if psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.05)
    assert (
        not psutil.pid_exists(grandchild)
        or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    )


def test_builds_lock_and_clean_under_torch_extensions_dir(monkeypatch, tmp_path):
    """torch builds under TORCH_EXTENSIONS_DIR when set, so the lock and the stale scan must too."""
    from llmbench.measure.ops import extensions_root

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert extensions_root() == tmp_path
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    assert extensions_root() != tmp_path
