#!/usr/bin/env bash
# The one prepared GPU validation (docs/gpu_validation.md): ≤ 10 minutes on one
# H200, install included. Needs the wheels of bench/gpu_wheels.sh in .whl/
# (deepspeed, pydantic, hjson and what they need that the machine lacks); the
# machine brings torch with CUDA, nvcc and the rest, and needs no network.
#
#   bench/gpu_validate.sh [OUT_DIR]      (default: $OUT, else /tmp/llmbench-gpu-validate/out)
#
# OUT_DIR receives at most 8 flat files (what the device tool brings back):
#   verdict.json        every check, pass / fail / null with its reason
#   preflight.json      NVML, torch, nvcc and `llmbench env` as the machine reported them
#   plan_validate.json  `llmbench plan --validate` on the run
#   run.tar.gz          the run directory (results.jsonl, per-case timelines, rank logs)
#   validate.log        everything printed, with the seconds each stage took
# Exit: 0 verdict pass, 1 verdict fail, 3 the install or the imports failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp/llmbench-gpu-validate/out}}
WORK=${WORK:-/tmp/llmbench-gpu-validate}
PY=${PYTHON:-python3}
RUN_BUDGET_S=${RUN_BUDGET_S:-450} # the sweep's share of the 10 minutes
mkdir -p "$OUT_DIR" "$WORK"
rm -rf "$WORK/runs"
export PYTHONUNBUFFERED=1
stage() { echo "[gpu_validate +${SECONDS}s] $*"; }

main() {
    stage "install wheels from .whl/ into $WORK/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" .whl/*.whl || return 3
    export PYTHONPATH="$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "import deepspeed, pydantic, hjson, llmbench.cli; print('deepspeed', deepspeed.__version__)" || return 3

    stage "preflight"
    timeout 120 "$PY" bench/gpu_preflight.py "$OUT_DIR/preflight.json" | tail -n 30

    stage "sweep scenarios/gpu_validate.yaml (budget ${RUN_BUDGET_S}s)"
    timeout "$RUN_BUDGET_S" "$PY" -m llmbench run scenarios/gpu_validate.yaml --output-dir "$WORK/runs"
    stage "sweep exit $?"
    RUN_DIR=$(ls -d "$WORK"/runs/*/ 2>/dev/null | tail -n 1)
    if [ -z "$RUN_DIR" ]; then
        stage "no run directory was created"
        echo '{"verdict": "fail", "checks": [], "reason": "the sweep left no run directory"}' >"$OUT_DIR/verdict.json"
        return 1
    fi

    stage "planner: llmbench plan --validate $RUN_DIR"
    timeout 120 "$PY" -m llmbench plan --validate "$RUN_DIR" --no-calibration --format json \
        -o "$OUT_DIR/plan_validate.json"

    stage "verdict"
    "$PY" -m llmbench.judge.gpu_validation "$RUN_DIR" "$OUT_DIR/preflight.json" \
        "$OUT_DIR/plan_validate.json" -o "$OUT_DIR/verdict.json"
    status=$?
    tar czf "$OUT_DIR/run.tar.gz" -C "$(dirname "$RUN_DIR")" "$(basename "$RUN_DIR")"
    stage "done: $OUT_DIR/verdict.json"
    return "$status"
}

main 2>&1 | tee "$OUT_DIR/validate.log"
exit "${PIPESTATUS[0]}"
