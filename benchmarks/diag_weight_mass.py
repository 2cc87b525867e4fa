"""How much of the cloning term's weight MEDIC's default keeps, against plain cloning (τ = 0).

Eq.(4)'s weights ``w = sqrt(A·G)`` are not renormalised: per sample and layer ``Σ w ≤ 1``
(Cauchy–Schwarz), with 1 only when ``A = G`` (τ = 0: ``w = 1/m``, plain cloning). So at the same
λ, plain cloning's term weighs more than the default's — by how much is measured here: per
teacher and hooked layer, ``Σ_neurons sqrt(A/m)`` on the first 128 images of the clean 5 % subset
(seed 0) at the τ per layer a run calibrates, with σ as a run estimates it (ε 0.1). The impact
criterion is taken as uniform (``G = 1/m``): on these teachers eq.(3)'s weights match
99.9–100 % of each layer (``benchmarks/results/importance_criteria/``), so this is eq.(4) to
that precision. No trigger, no test image.

    OMP_NUM_THREADS=1 python -m benchmarks.diag_weight_mass --teachers badnet:wrn16_1:1 badnet:mobilenet_v1:1 badnet:vgg11_bn:1
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import GTSRB, RESULTS, TEACHERS
from medic_viz.capture import resolve_layers, run_with_cache
from medic_viz.data import clean_subset, load_dataset
from medic_viz.data.arrays import iterate_batches
from medic_viz.defenses.medic import MedicConfig, preview_layer_taus
from medic_viz.experiments.presets import gtsrb_recipe
from medic_viz.importance import activation_importance
from medic_viz.stats import compute_layer_stats

OUT = RESULTS / "importance_criteria" / "weight_mass.md"


def layer_masses(teacher: torch.nn.Module, clean, n_images: int = 128) -> dict[str, float]:
    """Per hooked layer (``"auto"``), the mean over images of ``Σ_neurons sqrt(A/m)``."""
    layers = resolve_layers(teacher, "auto", input_shape=clean.image_shape)
    stats = compute_layer_stats(teacher, clean, layers, eps=MedicConfig().eps)
    taus = preview_layer_taus(teacher, clean)
    x, _ = next(iter(iterate_batches(clean.subset(torch.arange(min(n_images, len(clean)))), n_images)))
    with torch.no_grad():
        acts = run_with_cache(teacher, x, layers)
    masses = {}
    for n in layers:
        a = activation_importance(acts[n], stats[n], float(taus[n]))
        masses[n] = float((a.flatten(1).sqrt().sum(1) / a[0].numel() ** 0.5).mean())
    return masses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teachers", nargs="+", default=["badnet:wrn16_1:1", "badnet:mobilenet_v1:1", "badnet:vgg11_bn:1"],
                        help="attack:architecture:seed of cached GTSRB teachers")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = load_dataset(str(GTSRB))
    clean = clean_subset(splits.train, 0.05, 0)
    lines = ["| teacher | hooked layers | Σ w per layer, mean (min – max) | plain cloning (τ = 0) |", "|---|---|---|---|"]
    for spec in args.teachers:
        parts = spec.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise SystemExit(f"--teachers {spec!r}: give attack:architecture:seed, e.g. badnet:vgg11_bn:1")
        attack, arch, seed = parts
        recipe = gtsrb_recipe(attack, arch, GTSRB, seed=int(seed))
        teacher, _ = TEACHERS.load(recipe, splits=splits, train=False)
        teacher.eval()
        masses = list(layer_masses(teacher, clean).values())
        line = (f"| {recipe.name} | {len(masses)} | {sum(masses) / len(masses):.3f} ({min(masses):.3f} – {max(masses):.3f}) "
                f"| 1 |")
        lines.append(line)
        print(line, flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("Weight mass of MEDIC's default (τ per layer at a 1 % share, ε 0.1) against plain cloning, first 128 "
                   "images of the 5 % clean subset (seed 0); impact taken as uniform. Command: `python -m "
                   f"benchmarks.diag_weight_mass --teachers {' '.join(args.teachers)}`\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
