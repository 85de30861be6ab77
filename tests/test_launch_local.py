"""Local launcher: the fork server hands every rank DeepSpeed's ops already loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# A script in a fresh interpreter: the fork server is one per process (pytest's may be
# running already), and what it forks must be importable from a file.
SCRIPT = """
import json, sys
from pathlib import Path
from llmbench.measure.launch.local import LocalLauncher

def loaded(path):
    from deepspeed.ops.op_builder.builder import OpBuilder
    Path(path).write_text(json.dumps(sorted(OpBuilder._loaded_ops)))

if __name__ == "__main__":  # the fork server imports this script too (its preload has __main__)
    out = Path(sys.argv[1])
    launcher = LocalLauncher("fork")
    report = launcher.build_ops(["FusedAdamBuilder"], out / "ops.json", 600)
    child = launcher._ctx.Process(target=loaded, args=(str(out / "loaded.json"),))
    child.start(); child.join()
    print(json.dumps({"report": report, "loaded": json.loads((out / "loaded.json").read_text())}))
"""


@pytest.mark.slow
def test_forked_processes_inherit_the_ops_the_server_loaded(tmp_path):
    script = tmp_path / "server_ops.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        env={**os.environ, "DS_ACCELERATOR": "cpu"},
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["report"]["FusedAdamBuilder"]["error"] is None
    assert "fused_adam" in result["loaded"]
