"""How sharp MEDIC's weights are on a teacher: effective number of neurons matched per image
(exp-entropy of eq.(4) weights), per layer, at several τ — the diagnostic behind BENCHMARKS.md §3.

    python -m benchmarks.diag_effective_neurons MODEL_DIR DATASET [--taus 5 20]
    e.g. python -m benchmarks.diag_effective_neurons medic_viz/demo_models/badnet signs
"""

from __future__ import annotations

import argparse

import torch

from medic_viz.data import clean_subset, load_dataset
from medic_viz.defenses.base import fresh_copy
from medic_viz.defenses.medic import MedicObjective
from medic_viz.importance import ImportanceOptions, effective_neurons
from medic_viz.io import load_model
from medic_viz.stats import compute_layer_stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("dataset")
    p.add_argument("--taus", nargs="+", type=float, default=[5.0, 20.0])
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args(argv)
    teacher, _ = load_model(args.model_dir)
    splits = load_dataset(args.dataset)
    clean = clean_subset(splits.train, 0.05, 0)
    stats = compute_layer_stats(teacher, clean, device="cpu")
    idx = torch.arange(min(args.batch, len(clean)))
    x, y = clean.floats(idx), clean.labels[idx]
    for tau in args.taus:
        obj = MedicObjective(teacher, fresh_copy(teacher), stats, ImportanceOptions(tau=tau), 10.0)
        _, weights = obj.teacher_pass(x, y)
        cells = [f"{n}: {effective_neurons(w).mean():.0f}/{w[0].numel()}" for n, w in zip(obj.layers, weights)]
        print(f"τ={tau:g}  " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
