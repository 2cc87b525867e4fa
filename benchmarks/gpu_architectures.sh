#!/usr/bin/env bash
# Issue 27 item 4 on a lent GPU: the ResNet-18 / VGG-11-BN / MobileNet-v1 evaluation teachers
# (BadNet, SIG, Polygon; 30 epochs each) and the architectures grid (MEDIC default and τ = 0,
# 5 % clean data, two seeds) — 5 to 18 CPU-hours per teacher here, minutes on a GPU.
#
# GTSRB (123 MB) is larger than what one device call carries (64 MiB with the working tree), so
# it travels in 32 MiB parts, one per call, kept on the machine between calls (it stays warm
# 30 s after each: send the calls back to back), then is joined and checked against its digest:
#
#   here, once:            bash benchmarks/gpu_architectures.sh split        # → .gpu_data/part-aa … -ad
#   device, part by part:  run(carry=[".gpu_data/part-aa"], command="bash benchmarks/gpu_architectures.sh receive")
#                          … the same for part-ab, part-ac, and last:
#   device, last part:     run(carry=[".gpu_data/part-ad", ".venv"], timeout_s=600,
#                              command="bash benchmarks/gpu_architectures.sh run [ARCH …]")
#
# `run` joins the parts, trains the missing teachers, runs the grid (resumable: a cut-short run
# keeps every finished cell), and packs runs.jsonl, the table and the teachers' cards (not their
# weights: up to 45 MB each) into $OUT/architectures.tar.gz. Back here: untar it in the
# repository root, then `python -m benchmarks.architectures --report`.
# GPU_RUN_TIMEOUT (seconds, default 540) bounds the training.
set -euo pipefail
cd "$(dirname "$0")/.."
SHA=b7ea99241aa5f0f9689ff8e5a82398709b5823a1d56e4f776be40cb0b28e80ba   # sha256 of gtsrb32.npz
PARTS=${GPU_PARTS:-/tmp/medic_viz_gtsrb_parts}   # where the parts gather on the machine
DIR=${GPU_DATA:-.gpu_data}                       # where they are cut, here
mode=${1:-}; shift || true
case "$mode" in
  split)
    src=${DATA:-../shared/data/gtsrb32.npz}
    [[ -f "$src" ]] || { echo "dataset not found: $src (set DATA=path/to/gtsrb32.npz)" >&2; exit 2; }
    mkdir -p "$DIR" && rm -f "$DIR"/part-*
    split -b 32M "$src" "$DIR"/part-
    ls -l "$DIR" ;;
  receive)
    mkdir -p "$PARTS" && cp "$DIR"/part-* "$PARTS"/ && ls -l "$PARTS" ;;
  run)
    mkdir -p "$PARTS" && { cp "$DIR"/part-* "$PARTS"/ 2>/dev/null || true; }
    cat "$PARTS"/part-* > "$PARTS/gtsrb32.npz" 2>/dev/null || true
    echo "$SHA  $PARTS/gtsrb32.npz" | sha256sum --quiet -c - 2>/dev/null || {
      echo "the parts in $PARTS do not join into gtsrb32.npz: send every part (receive) first" >&2; exit 2; }
    export MEDIC_VIZ_GTSRB="$PARTS/gtsrb32.npz" PYTHONPATH="$PWD" TQDM_DISABLE=1 PYTHONUNBUFFERED=1
    PY=python; "$PY" -c "import torch, medic_viz" 2>/dev/null || PY=.venv/bin/python
    archs=("$@"); [[ ${#archs[@]} -gt 0 ]] || archs=(mobilenet_v1 vgg11_bn resnet18)
    pack() {
      out=${OUT:-/tmp/out}; mkdir -p "$out"
      tar czf "$out/architectures.tar.gz" benchmarks/results/architectures \
        $(for a in "${archs[@]}"; do ls -d benchmarks/results/gtsrb_teachers/*_"$a"_e30_s1/card.json 2>/dev/null; done) || true
    }
    trap pack EXIT
    end=$(( $(date +%s) + ${GPU_RUN_TIMEOUT:-540} ))
    for a in "${archs[@]}"; do
      left=$(( end - $(date +%s) )); (( left > 30 )) || break
      timeout "$left" "$PY" -m benchmarks.train_teachers --role evaluation --arch "$a" --attacks badnet sig polygon --device cuda || true
      left=$(( end - $(date +%s) )); (( left > 30 )) || break
      timeout "$left" "$PY" -m benchmarks.architectures --archs "$a" --device cuda || true
    done ;;
  *)
    echo "usage: bash benchmarks/gpu_architectures.sh split|receive|run [ARCH …]" >&2; exit 2 ;;
esac
