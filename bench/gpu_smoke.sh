#!/usr/bin/env bash
# GPU smoke check: a small real sweep (scenarios/gpu_smoke.yaml: ZeRO 0-3 ×
# bf16/fp16 on gpt2-125m, one GPU, NVML on), then per case: tokens/s, TFLOP/s,
# MFU, allocator peak, NVML device peak and energy per step. Needs an NVIDIA GPU
# and llmbench installed (pip install -e . with the machine's CUDA torch);
# finishes in a few minutes including imports. Extra arguments are overrides,
# e.g.  bench/gpu_smoke.sh training.steps=20
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1

"$PY" -m llmbench env
status=0
"$PY" -m llmbench run scenarios/gpu_smoke.yaml "$@" --output-dir "$OUT/runs" || status=$?
"$PY" - "$OUT"/runs/*/results.jsonl <<'PY'
import json, sys

def num(v, scale=1.0, fmt="{:.1f}"):
    return "-" if v is None else fmt.format(v / scale)

cols = ("case", "status", "tok/s", "TFLOP/s", "MFU", "alloc GiB", "NVML GiB", "J/step")
print(" | ".join(cols))
for line in open(sys.argv[1]):
    r = json.loads(line)
    m = r["metrics"]
    print(" | ".join([
        r["label"], r["status"],
        num(m.get("tokens_per_s"), fmt="{:.0f}"),
        num(m.get("tflops_per_s_per_device")),
        num(m.get("mfu"), fmt="{:.3f}"),
        num(m.get("allocator_peak_bytes"), 2**30, "{:.2f}"),
        num(m.get("device_memory_used_peak_bytes"), 2**30, "{:.2f}"),
        num(m.get("energy_j_per_step"), fmt="{:.2f}"),
    ]) + ("" if r["status"] == "ok" else f"  ({r['reason']})"))
    for key in ("mfu", "device_memory_used_peak_bytes", "energy_j_per_step"):
        if m.get(key) is None and key in r.get("null_reasons", {}):
            print(f"    {key}: null — {r['null_reasons'][key]}")
PY
exit "$status"
