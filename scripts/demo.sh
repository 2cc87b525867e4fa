#!/usr/bin/env bash
# The main job: shipped trojaned model -> MEDIC -> before/after table, result.json, report.html.
# Usage: bash scripts/demo.sh [--quick] [--device cpu|cuda|auto] [--out DIR] [--attack badnet|blend|sig|polygon]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/medic-viz demo "$@"
