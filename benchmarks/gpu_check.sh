#!/usr/bin/env bash
# GPU check (issue 15): on a CUDA machine — no internet needed — run the MEDIC/plain step ratio
# and the paper's setting (WRN-16-1, 2,500 images of 32x32, 60 epochs, batch 64, bf16 and fp32),
# print a table and save it to benchmarks/results/gpu_check.{json,md}. Meant to finish within
# 5 minutes end to end on an H100/H200-class GPU.
#
#   bash benchmarks/gpu_check.sh [extra options of python -m benchmarks.gpu_check]
#
# Python: `python` from PATH when it imports torch with CUDA and medic_viz's dependencies, else
# the repository's .venv/bin/python (carried there with the working tree). Nothing is installed.
# GPU_CHECK_TIMEOUT (seconds, default 290) bounds the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TQDM_DISABLE=1

probe='import sys, torch
ok = torch.cuda.is_available()
try:
    import medic_viz  # noqa: F401  (its dependencies: safetensors, plotly, captum, ...)
except Exception as exc:
    print(f"  medic_viz does not import: {exc}", file=sys.stderr); ok = False
print(f"  torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}", file=sys.stderr)
sys.exit(0 if ok else 1)'

PY=""
for candidate in python python3 .venv/bin/python; do
    if command -v "$candidate" >/dev/null 2>&1 || [ -x "$candidate" ]; then
        echo "gpu_check: trying $candidate" >&2
        if "$candidate" -c "$probe"; then PY="$candidate"; break; fi
    fi
done
if [ -z "$PY" ]; then
    echo "gpu_check: no Python here imports torch with CUDA and medic_viz (tried python, python3, .venv/bin/python)." >&2
    echo "           Carry the repository's .venv, or install the package's dependencies into the GPU machine's Python." >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
start=$(date +%s)
timeout "${GPU_CHECK_TIMEOUT:-290}" "$PY" -m benchmarks.gpu_check "$@"
echo "gpu_check: $(( $(date +%s) - start )) s end to end"
