#!/usr/bin/env bash
# Wheels for the GPU validation machine (bench/gpu_validate.sh), into .whl/.
#
# That machine (nvidia-h200, /work/.library/device/KINDS.md) has torch with
# CUDA, nvcc and most of llmbench's dependencies, but no deepspeed, pydantic or
# hjson, and no network. This script carries exactly what it lacks:
#
#  1. the names: llmbench's runtime dependencies (pyproject.toml) and, through
#     the metadata of this environment (where the tests pass), theirs, keeping
#     every package that bench/gpu_image_packages.txt does not list, plus the
#     floors that image may not meet (FLOORS below);
#  2. one version of each: the one installed here, which is the version that
#     constraints-cpu.txt pins and the CPU tests ran with;
#  3. the wheels: binary ones for CPython 3.12 / manylinux x86-64 from PyPI;
#     deepspeed, which PyPI publishes as an sdist only, built here into its
#     pure-Python wheel (DS_BUILD_OPS unset: no op compiled; FusedAdam is
#     JIT-built on the GPU by nvcc, llmbench.measure.ops, or falls back);
#  4. a check: every requirement of every carried wheel is carried or in the
#     image, no name twice, and the total fits the 64 MiB a device call carries
#     with room for the working tree.
#
# Run from anywhere:  bench/gpu_wheels.sh   (PYTHON=... for another venv; CARRY=... above)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/work/venv/bin/python}
DEST=.whl
LIMIT_MIB=48 # of the 64 MiB a call carries; the rest is the working tree

# Packages the image has, but possibly older than a carried wheel requires:
# pydantic 2.14 needs typing-extensions >= 4.16, newer than some images hold.
# CARRY="transformers ..." adds more (the image's transformers is 5.17, the
# tests' 5.24: carry it if the image's version fails a case).
FLOORS="typing-extensions ${CARRY:-}"

names=$("$PY" - "$FLOORS" <<'PY'
import re, sys, tomllib
from importlib import metadata
from packaging.requirements import Requirement

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

image = {norm(l.strip()) for l in open("bench/gpu_image_packages.txt") if l.strip() and not l.startswith("#")}
marker_env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "extra": "",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}
todo = [Requirement(r) for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]]
todo += [Requirement(n) for n in sys.argv[1].split()]
forced = {norm(n) for n in sys.argv[1].split()}
carry = {}
while todo:
    req = todo.pop()
    name = norm(req.name)
    if name in carry or (name in image and name not in forced):
        continue
    version = metadata.version(req.name)
    carry[name] = version
    for dep in metadata.requires(req.name) or []:
        dep = Requirement(dep)
        if dep.marker is None or dep.marker.evaluate(marker_env):
            todo.append(dep)
print(" ".join(f"{n}=={v}" for n, v in sorted(carry.items())))
PY
)
echo "carrying: $names"

rm -rf "$DEST" && mkdir -p "$DEST"
binary=() source_only=()
for spec in $names; do
    case "$spec" in deepspeed==*) source_only+=("$spec") ;; *) binary+=("$spec") ;; esac
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEST" "${binary[@]}"
if ((${#source_only[@]})); then
    # setup.py imports torch: build against this environment's (only version info is recorded)
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "${source_only[@]}"
fi

"$PY" - "$DEST" "$LIMIT_MIB" <<'PY'
import re, sys, zipfile
from pathlib import Path
from packaging.requirements import Requirement

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

dest, limit = Path(sys.argv[1]), float(sys.argv[2])
image = {norm(l.strip()) for l in open("bench/gpu_image_packages.txt") if l.strip() and not l.startswith("#")}
env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "extra": "",
       "implementation_name": "cpython", "platform_python_implementation": "CPython"}
wheels = sorted(dest.glob("*.whl"))
names = [norm(w.name.split("-")[0]) for w in wheels]
problems = [f"{n} twice" for n in set(names) if names.count(n) > 1]
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:"):
                req = Requirement(line.split(":", 1)[1])
                if req.marker is not None and not req.marker.evaluate(env):
                    continue
                if norm(req.name) not in names and norm(req.name) not in image:
                    problems.append(f"{wheel.name} needs {req}, neither carried nor in the image")
total = sum(w.stat().st_size for w in wheels) / 2**20
for w in wheels:
    print(f"  {w.stat().st_size / 2**20:6.2f} MiB  {w.name}")
print(f"{len(wheels)} wheels, {total:.2f} MiB in {dest}/")
if total > limit:
    problems.append(f"{total:.1f} MiB is over the {limit:g} MiB budget")
if problems:
    sys.exit("gpu_wheels: " + "; ".join(problems))
PY
