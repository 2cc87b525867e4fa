#!/usr/bin/env bash
# Create .venv (if needed) and install medic_viz with its notebook and test extras into it.
# Re-installs only when pyproject.toml changed since the last install. Used by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating virtual environment .venv" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.medic_viz_installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing medic_viz and its dependencies into .venv (first time: a few minutes, torch is large)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -e ".[notebooks,dev]" >&2
  touch "$stamp"
fi
# The checkout's root on the environment's path (a .pth file, rewritten when the checkout moves):
# the benchmark scripts import `benchmarks.common`, so `python benchmarks/NAME.py` works as well
# as `python -m benchmarks.NAME` from the root. A plain `pip install` of medic_viz does not get it.
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
root=$(pwd -P)
if [ "$(cat "$site/medic_viz_checkout.pth" 2>/dev/null)" != "$root" ]; then
  printf '%s\n' "$root" > "$site/medic_viz_checkout.pth"
fi
