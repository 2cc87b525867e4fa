"""Is a global τ the same setting at ε = 1e-5 and at ε = 0.1? (rule 10 of BENCHMARKS.md §6)

MEDIC's weights are softmaxes of τ times per-neuron scores in the teacher's σ units, with
σ = sqrt(var + ε). A larger ε changes those units, so one global τ (Figure 4's points) may weight
the neurons more or less sharply at one ε than at the other, while the default — τ per layer
calibrated to a 1 % share (:func:`medic_viz.defenses.medic.preview_layer_taus`) — aims at the
same sharpness at either ε by construction. Per Figure 4 teacher (evaluation, WRN-16-1), its
cells' layers (every conv/norm output, ``conv+bn``) and the 5 % clean subset of seed 0, on the
subset's augmented batches as a run sees them
(:func:`medic_viz.analysis.sharpness.criteria_sharpness`, eq.(4)):

- the effective share of each layer's neurons that one global τ matches, at each ε, averaged
  over layers (100 % is uniform, plain cloning);
- the τ per layer the default calibrates at each ε (median and range over layers).

Teacher and clean training images only: no trigger, no test image, nothing chosen.

    OMP_NUM_THREADS=1 python -m benchmarks.diag_tau_eps   # → benchmarks/results/tau_eps.md
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import GTSRB, RESULTS, TEACHERS
from medic_viz.analysis import criteria_sharpness
from medic_viz.capture import resolve_layers
from medic_viz.data import clean_subset, load_dataset
from medic_viz.defenses.medic import MedicConfig, preview_layer_taus
from medic_viz.experiments.presets import gtsrb_recipe
from medic_viz.experiments.protocol import ROLE_SEEDS
from medic_viz.stats import compute_layer_stats

OUT = RESULTS / "tau_eps.md"
EPSILONS = (1e-5, 0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", nargs="+", default=["badnet", "cleanlabel", "sig"])
    parser.add_argument("--taus", nargs="+", type=float, default=[1.0, 3.0, 5.0, 7.0])
    parser.add_argument("--layers", default="conv+bn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = load_dataset(str(GTSRB))
    clean = clean_subset(splits.train, 0.05, args.seed)
    head = ("| teacher | ε | " + " | ".join(f"share at τ = {t:g} (%)" for t in args.taus)
            + " | default: τ per layer at a 1 % share, median [min, max] |")
    lines = [head, "|" + "---|" * (3 + len(args.taus))]
    for attack in args.attacks:
        recipe = gtsrb_recipe(attack, "wrn16_1", GTSRB, seed=ROLE_SEEDS["evaluation"][0])
        teacher, _ = TEACHERS.load(recipe, splits=splits, train=False)
        teacher.eval()
        layers = resolve_layers(teacher, args.layers, input_shape=splits.train.image_shape)
        for eps in EPSILONS:
            start = time.perf_counter()
            stats = compute_layer_stats(teacher, clean, layers, eps=eps)
            shares = [criteria_sharpness(teacher, clean, taus=tau, stats=stats, augment=True, seed=args.seed)
                      .mean_share("both") for tau in args.taus]
            taus = list(preview_layer_taus(teacher, clean, MedicConfig(eps=eps, layers=args.layers)).values())
            line = (f"| {recipe.name} | {eps:g} | " + " | ".join(f"{100 * s:.1f}" for s in shares)
                    + f" | {statistics.median(taus):.2f} [{min(taus):.2f}, {max(taus):.2f}] |")
            lines.append(line)
            print(line, f"({time.perf_counter() - start:.0f} s)", flush=True)
    text = (f"Figure 4's evaluation teachers (WRN-16-1), layers `{args.layers}` ({len(layers)}), the 5 % clean subset "
            f"of seed {args.seed}, its augmented batches; eq.(4)'s effective share of each layer's neurons, averaged "
            f"over layers. Command: `python -m benchmarks.diag_tau_eps --attacks {' '.join(args.attacks)}`\n\n"
            + "\n".join(lines) + "\n")
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
