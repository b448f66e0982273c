#!/usr/bin/env bash
# GPU figures for vectorised trials (tests/benchmarks/gpu_vectorised.py says what
# is measured). On a 1-GPU machine, from the repository root:
#
#     bash tests/benchmarks/gpu_vectorised.sh                  # about 8 minutes: the four ways
#     bash tests/benchmarks/gpu_vectorised.sh --dry-run        # the plan, runs nothing
#     bash tests/benchmarks/gpu_vectorised.sh --cpu            # the harness on the CPU (smoke scale)
#
# The full budget needs tinyshakespeare: OVERNIGHT_DATA, ./.data/tinyshakespeare/input.txt (git-
# ignored: copy it there and carry .data to the GPU machine) or ../shared/data. The figures are
# printed as a Markdown table and written to $OUT/gpu_vectorised.json when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if [ ! -f .data/tinyshakespeare/input.txt ] && [ -f ../shared/data/tinyshakespeare/input.txt ] && [ -z "${OVERNIGHT_DATA:-}" ]; then
  mkdir -p .data/tinyshakespeare && cp ../shared/data/tinyshakespeare/input.txt .data/tinyshakespeare/
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv || true
export OVERNIGHT_OFFLINE=1
JSON=()
[ -n "${OUT:-}" ] && JSON=(--json "$OUT/gpu_vectorised.json")
exec timeout "${GPU_VEC_TIMEOUT:-570}" "$PY" tests/benchmarks/gpu_vectorised.py "${JSON[@]}" "$@"
