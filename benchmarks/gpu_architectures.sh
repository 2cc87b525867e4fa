#!/usr/bin/env bash
# Issue 27 item 4 on a lent GPU: the ResNet-18 / VGG-11-BN / MobileNet-v1 evaluation teachers
# (BadNet, SIG, Polygon; 30 epochs each) and the architectures grid (MEDIC default and τ = 0,
# 5 % clean data, two seeds) — 5 to 18 CPU-hours per teacher here, minutes on a GPU.
#
# GTSRB (123 MB) is larger than what one device call carries (64 MiB with the working tree), so
# it travels in 40 MiB parts, one per call, kept on the machine between calls (it stays warm
# 30 s after each: send the calls back to back), then is joined and checked against its digest.
# The working tree must be under ~22 MiB for that (it is ~45 MiB with the committed results):
# `slim` moves the checkout to a temporary branch holding only the code, the WRN teachers, the
# tuning records and Table 1's rows (~18 MiB; a Table 1 part may keep running meanwhile), and
# `unslim` brings it back (the rows it appended meanwhile stay).
#
#   here, once:            bash benchmarks/gpu_architectures.sh split        # → .gpu_data/part-aa … -ac
#                          bash benchmarks/gpu_architectures.sh slim         # … and `unslim` after the calls
#   device, first part:    run(carry=[".gpu_data/part-aa"],
#                              command="bash benchmarks/gpu_architectures.sh receive && bash benchmarks/gpu_architectures.sh smoke")
#   device, second part:   run(carry=[".gpu_data/part-ab"], command="bash benchmarks/gpu_architectures.sh receive")
#   device, last part:     run(carry=[".gpu_data/part-ac"], timeout_s=600,
#                              command="bash benchmarks/gpu_architectures.sh run [ARCH …]")
#
# `smoke` runs the CUDA path end to end on random images (benchmarks/gpu_smoke.py, ~1 min) so a
# broken path costs one call, not the lease. `run` joins the parts and, for every architecture
# at once (each in its own copy of the code and results folder), trains its three teachers in
# parallel, then runs its grid (GPU_WORKERS cell processes, default 6; resumable: a cut-short
# run keeps every finished cell); it packs the rows, the teachers' cards and their manifest
# entries (not their weights: up to 45 MB each) into $OUT/architectures.tar.gz
# (benchmarks/results/architectures/{runs.jsonl,teacher_cards/,teacher_manifest_ARCH.json}), with one
# log per architecture. Back here: untar it in the repository root, then
# `python -m benchmarks.train_teachers --merge benchmarks/results/architectures/teacher_manifest_*.json`
# and `python -m benchmarks.architectures --report`.
# GPU_RUN_TIMEOUT (seconds, default 500) bounds the training; GPU_DEVICE (default cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
SHA=${GTSRB_SHA256:-b7ea99241aa5f0f9689ff8e5a82398709b5823a1d56e4f776be40cb0b28e80ba}   # sha256 of gtsrb32.npz (a test gives its own)
PARTS=${GPU_PARTS:-/tmp/medic_viz_gtsrb_parts}   # where the parts gather on the machine
DIR=${GPU_DATA:-.gpu_data}                       # where they are cut, here
WORK=${GPU_WORK:-/tmp}                           # where each architecture gets its copy, there
mode=${1:-}; shift || true
python_here() {   # $PY, else a Python that imports torch with CUDA (the GPU image's python3), else .venv's
  [[ -n ${PY:-} ]] && { echo "$PY"; return; }
  for p in python3 python .venv/bin/python; do
    "$p" -c "import torch, medic_viz; assert torch.cuda.is_available()" 2>/dev/null && { echo "$p"; return; }
  done
  echo python3
}
case "$mode" in
  split)
    src=${DATA:-../shared/data/gtsrb32.npz}
    [[ -f "$src" ]] || { echo "dataset not found: $src (set DATA=path/to/gtsrb32.npz)" >&2; exit 2; }
    mkdir -p "$DIR" && rm -f "$DIR"/part-*
    split -b ${PART_SIZE:-40M} "$src" "$DIR"/part-
    ls -l "$DIR" ;;
  slim)
    keep='^medic_viz/|^benchmarks/[^/]+$|^benchmarks/results/(gtsrb_teachers|tuning|table1_protocol|architectures)/|^[^/]+$'
    git rev-parse --verify -q gpu-slim >/dev/null && {
      echo "already slim (branch gpu-slim exists): run 'bash benchmarks/gpu_architectures.sh unslim' first" >&2; exit 2; }
    changed=$(git status --porcelain --untracked-files=no | cut -c4- | grep -vE "$keep" | head -1 || true)
    [[ -z $changed ]] || {
      echo "uncommitted changes in $changed would leave the tree with it: commit or stash them, then slim" >&2; exit 2; }
    git rev-parse --abbrev-ref HEAD > .git/gpu_slim_from
    git checkout -q -b gpu-slim
    # the other architectures' teachers trained here (12-45 MB each) would not fit one call: they stay
    # behind, and `run` is then given the architectures still missing (BENCHMARKS.md §6)
    big='^benchmarks/results/gtsrb_teachers/[^/]+_(mobilenet_v1|vgg11_bn|resnet18)_'
    { git ls-files | grep -vE "$keep"; git ls-files | grep -E "$big"; } | sort -u | xargs -r -d '\n' git rm -q
    git commit -qm "slim tree for the device calls (temporary branch: bash benchmarks/gpu_architectures.sh unslim)"
    echo "working tree that travels: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes" ;;
  unslim)
    [[ -f .git/gpu_slim_from ]] || { echo "not slim (no .git/gpu_slim_from)" >&2; exit 2; }
    git checkout -q "$(cat .git/gpu_slim_from)" && git branch -D gpu-slim && rm .git/gpu_slim_from ;;
  receive)
    mkdir -p "$PARTS" && cp "$DIR"/part-* "$PARTS"/ && ls -l "$PARTS" ;;
  smoke)
    # the CUDA path end to end on random images (≈ 1 min), before the parts' minutes are spent
    export PYTHONPATH="$PWD" TQDM_DISABLE=1 PYTHONUNBUFFERED=1
    timeout "${GPU_SMOKE_TIMEOUT:-150}" "$(python_here)" -m benchmarks.gpu_smoke --device "${GPU_DEVICE:-cuda}" ;;
  run)
    mkdir -p "$PARTS" && { cp "$DIR"/part-* "$PARTS"/ 2>/dev/null || true; }
    cat "$PARTS"/part-* > "$PARTS/gtsrb32.npz" 2>/dev/null || true
    echo "$SHA  $PARTS/gtsrb32.npz" | sha256sum --quiet -c - 2>/dev/null || {
      echo "the parts in $PARTS do not join into gtsrb32.npz: send every part (receive) first" >&2; exit 2; }
    export MEDIC_VIZ_GTSRB="$PARTS/gtsrb32.npz" TQDM_DISABLE=1 PYTHONUNBUFFERED=1
    PY=$(python_here); [[ $PY == /* || $PY != */* ]] || PY=$PWD/$PY
    archs=("$@"); [[ ${#archs[@]} -gt 0 ]] || archs=(mobilenet_v1 vgg11_bn resnet18)
    out=${OUT:-/tmp/out}; mkdir -p "$out"
    # each architecture in its own copy of the code and results (one process per results folder,
    # as the grids require), all at once: small models leave most of the GPU idle
    gather() {
      for a in "${archs[@]}"; do
        w=$WORK/medic_viz_arch_$a
        [[ -f $w/benchmarks/results/architectures/runs.jsonl ]] &&
          { mkdir -p benchmarks/results/architectures
            cat "$w"/benchmarks/results/architectures/runs.jsonl >> benchmarks/results/architectures/runs.jsonl; }
        # the teachers' cards and manifest entries (weights SHA-256, clean accuracy, ASR) — not
        # their weights; a card-only folder in the cache would stand for a model it lacks
        for f in "$w"/benchmarks/results/gtsrb_teachers/*_"$a"_e30_s1; do
          [[ -f $f/card.json ]] || continue
          mkdir -p benchmarks/results/architectures/teacher_cards
          cp "$f"/card.json "benchmarks/results/architectures/teacher_cards/$(basename "$f").json"
        done
        [[ -f $w/benchmarks/results/gtsrb_teachers/manifest.json ]] &&
          cp "$w"/benchmarks/results/gtsrb_teachers/manifest.json "benchmarks/results/architectures/teacher_manifest_$a.json"
        cp "$w"/log.txt "$out/log_$a.txt" 2>/dev/null || true
      done
      tar czf "$out/architectures.tar.gz" benchmarks/results/architectures || true
      ls -l "$out"
    }
    trap gather EXIT
    end=$(( $(date +%s) + ${GPU_RUN_TIMEOUT:-500} ))
    pids=()
    for a in "${archs[@]}"; do
      w=$WORK/medic_viz_arch_$a; rm -rf "$w"; mkdir -p "$w/benchmarks"
      cp -r medic_viz pyproject.toml "$w"/ && cp benchmarks/*.py "$w"/benchmarks/
      mkdir -p "$w"/benchmarks/results && cp -r benchmarks/results/gtsrb_teachers "$w"/benchmarks/results/ 2>/dev/null || true
      (
        cd "$w"; export PYTHONPATH="$w"
        for attack in badnet sig polygon; do   # the three teachers at once
          timeout $(( end - $(date +%s) )) "$PY" -m benchmarks.train_teachers --role evaluation --arch "$a" \
            --attacks "$attack" --device "${GPU_DEVICE:-cuda}" --threads 1 &
        done
        wait || true
        left=$(( end - $(date +%s) )); (( left > 30 )) || exit 0
        timeout "$left" "$PY" -m benchmarks.architectures --archs "$a" --device "${GPU_DEVICE:-cuda}" --threads 1 --workers "${GPU_WORKERS:-6}"
      ) > "$w/log.txt" 2>&1 &
      pids+=($!)
    done
    tick=0
    while :; do   # a line per architecture a minute, so the caller sees progress
      sleep 5; tick=$(( tick + 5 )); alive=0
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      if (( tick % 60 == 0 || ! alive )); then
        for a in "${archs[@]}"; do
          echo "[$(date +%T)] $a: $(grep -E 'trained in|^\[[0-9]+/' $WORK/medic_viz_arch_$a/log.txt 2>/dev/null | tail -1)"
        done
      fi
      (( alive )) || break
    done
    wait || true ;;
  *)
    echo "usage: bash benchmarks/gpu_architectures.sh split|slim|unslim|receive|smoke|run [ARCH …]" >&2; exit 2 ;;
esac
