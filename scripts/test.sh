#!/usr/bin/env bash
# The whole test suite: ruff and mypy, then unit, integration, CLI end to end, notebooks (nbval) and the
# browser test.
# Usage: bash scripts/test.sh [extra pytest args]
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || exit 1
# Headless Chromium for the browser test (Debian/Ubuntu, as root or with sudo); skipped elsewhere.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing chromium for the browser test" >&2
  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
    || echo "[setup] could not install chromium; the browser test will be skipped" >&2
fi
# Lint and types first (docs/architecture.md "Lint and types"); configuration in pyproject.toml.
echo "[lint] ruff check" >&2
.venv/bin/python -m ruff check . || { echo "ERROR: ruff found problems (above)." >&2; exit 1; }
echo "[types] mypy" >&2
.venv/bin/python -m mypy || { echo "ERROR: mypy found problems (above)." >&2; exit 1; }
export TQDM_DISABLE=1 MEDIC_VIZ_FAST=1 PYTHONHASHSEED=0
.venv/bin/python -m pytest -p no:cacheprovider --timeout=900 "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "ERROR: pytest collected no tests — this is a failure, not a pass." >&2
  exit 1
fi
exit "$rc"
