"""What compiling the fused MEDIC loss costs: the first MEDIC step with ``fused="compile"`` minus
a later one, in a fresh process, with Inductor's on-disk cache empty (cold) and filled (warm).

    python -m benchmarks.bench_compile_time [--models small_cnn wrn16_1] [--cache-dir DIR]

Each measurement runs in its own Python process (``TORCHINDUCTOR_CACHE_DIR`` = a new folder for
"cold", the same folder again for "warm"). Prints seconds and writes
benchmarks/results/compile_time_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

CHILD = r"""
import json, sys, time, torch
from medic_viz.data import load_dataset
from medic_viz.defenses.base import fresh_copy
from medic_viz.defenses.medic import MedicObjective
from medic_viz.stats import compute_layer_stats
from medic_viz.importance import ImportanceOptions
from medic_viz.models import build_model
name = sys.argv[1]
splits = load_dataset("signs"); clean = splits.train.subset(torch.arange(256))
torch.manual_seed(0)
teacher = build_model(name, splits.num_classes).eval()
for p in teacher.parameters():
    p.requires_grad_(False)
stats = compute_layer_stats(teacher, clean, device="cpu")
x = clean.floats(torch.arange(64), "cpu"); y = clean.labels[:64]
obj = MedicObjective(teacher, fresh_copy(teacher, seed=1), stats, ImportanceOptions(tau=5.0), 10.0, fused="compile")
times = []
for b in (64, 64, 40, 40):  # the last, smaller batch of an epoch: no recompiling
    t = time.perf_counter(); obj.loss(x[:b], y[:b])[0].backward(); times.append(time.perf_counter() - t)
print(json.dumps({"mode": obj.clone_loss.mode, "steps_s": times}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["small_cnn", "wrn16_1"])
    p.add_argument("--cache-dir", default=None, help="Inductor cache for the runs (default: a new temporary folder)")
    args = p.parse_args(argv)
    rows = []
    root = Path(__file__).resolve().parent.parent
    for m in args.models:
        cache = args.cache_dir or tempfile.mkdtemp(prefix=f"inductor_{m}_")
        for state in ("cold", "warm"):
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "PYTHONPATH": str(root)}
            out = subprocess.run([sys.executable, "-c", CHILD, m], env=env, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            first, later = r["steps_s"][0], r["steps_s"][1]
            rows.append({"model": m, "cache": state, "mode": r["mode"], "first_step_s": round(first, 2),
                         "later_step_s": round(later, 3), "compile_s": round(first - later, 1),
                         "smaller_batch_first_s": round(r["steps_s"][2], 3)})
            print(f"{m:10s} {state}: first compiled step {first:.1f} s, later {later:.3f} s "
                  f"(≈ {first - later:.1f} s compiling); first step of a batch of 40: {r['steps_s'][2]:.3f} s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compile_time_cpu.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
