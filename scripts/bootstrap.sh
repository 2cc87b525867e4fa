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
