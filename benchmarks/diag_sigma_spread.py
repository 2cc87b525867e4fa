"""How far below their layer's typical spread do a teacher's channels go? (issue 27 item 4)

MEDIC's loss divides each channel by the teacher's σ_c² on the clean data. On the MobileNet-v1
teacher a third of the hooked channels are constant (σ at the ε floor, weight ≈ 1e5;
``benchmarks/results/dead_channels.md``). A floor on σ relative to its layer — σ_c ≥ ρ ·
median_c σ_c — bounds the weight of any channel to 1/ρ² times the layer's typical one, whatever
the activations' scale. The layer's typical spread is its RMS, ``sqrt(mean_c σ_c²)``, not its median
(in a layer where most channels are dead, as in MobileNet-v1's last blocks, the median is itself at
the ε floor); the model's is the median of its layers' RMS (MobileNet-v1's depthwise convolutions
feed a norm, and their whole outputs are small: 0.006–0.1). This survey counts, for every cached
GTSRB teacher, the hooked channels (library default layers, 5 % clean data, seed 0) that such a
floor would touch for several ρ: where it touches none, a run with the floor is the run without
it, to the bit. A second table does the same for an absolute ε (σ² = var + ε): the channels it
dominates and the median factor by which it shrinks the weights 1/σ².

    OMP_NUM_THREADS=1 python -m benchmarks.diag_sigma_spread   # → benchmarks/results/sigma_spread.md
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from benchmarks.common import DEAD_FACTOR, GTSRB, RESULTS, TEACHERS
from medic_viz.capture import resolve_layers
from medic_viz.data import load_dataset
from medic_viz.data.arrays import clean_subset
from medic_viz.io import load_model
from medic_viz.stats import DEFAULT_EPS, compute_layer_stats, layer_spread

OUT = RESULTS / "sigma_spread.md"
RHOS = (0.01, 0.03, 0.1, 0.3)
#: Absolute ε values (MedicConfig.eps) whose effect the second table shows.
EPSILONS = (0.1, 0.3, 1.0)


def teacher_row(folder: Path, splits, fraction: float = 0.05, seed: int = 0) -> dict:
    """Hooked channels, the smallest σ_c / median σ of any layer, and channels below ρ·median per ρ."""
    teacher, _card = load_model(str(folder))
    clean = clean_subset(splits.train, fraction, seed)
    layers = resolve_layers(teacher, "auto", input_shape=clean.image_shape)
    stats = compute_layer_stats(teacher, clean, layers, batch_size=256, device="cpu")
    spread = layer_spread(stats)
    by_rms = torch.cat([s.std / spread[n] for n, s in stats.items()])
    by_model = torch.cat([s.std for s in stats.values()]) / statistics.median(spread.values())
    var = torch.cat([s.std for s in stats.values()]) ** 2  # var + DEFAULT_EPS, per channel
    dead = sum(int((s.std <= DEAD_FACTOR * DEFAULT_EPS ** 0.5).sum()) for s in stats.values())
    return {"teacher": folder.name, "layers": len(layers), "channels": int(by_rms.numel()), "dead": dead,
            "min_model": float(by_model.min()), "min_rms": float(by_rms.min()),
            "below_model": {rho: int((by_model < rho).sum()) for rho in RHOS},
            "below_rms": {rho: int((by_rms < rho).sum()) for rho in RHOS},
            # ε: channels it dominates (var < ε) and the median factor its weight 1/σ² shrinks by
            "under_eps": {e: int((var < e).sum()) for e in EPSILONS},
            "shrink_eps": {e: float(((var + e) / var).median()) for e in EPSILONS}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contains", default="", help="only teachers whose folder name contains this")
    args = parser.parse_args(argv)
    splits = load_dataset(str(GTSRB))
    folders = sorted(p for p in Path(TEACHERS.root).iterdir()
                     if (p / "model.safetensors").is_file() and args.contains in p.name)
    lines = ["# σ relative to its layer or model: channels a floor σ_c ≥ ρ · typical σ would touch", "",
             "`python -m benchmarks.diag_sigma_spread`. Every cached GTSRB teacher, the library's default "
             "layers, 5 % clean data (seed 0), the teacher's σ_c as the engine computes it (ε = 1e-5). "
             "Dead: σ_c ≤ 2·√ε (constant on the clean data). Columns ρ: hooked channels with σ_c < ρ · the "
             "layer's RMS σ (`sigma_floor_scope=\"layer\"`) / < ρ · the median of the layers' RMS σ (`\"model\"`).", "",
             "| teacher | layers | channels | dead | smallest σ_c / layer RMS / model's | "
             + " | ".join(f"ρ = {r:g}" for r in RHOS) + " |",
             "|---|---|---|---|---|" + "---|" * len(RHOS)]
    rows = []
    for folder in folders:
        row = teacher_row(folder, splits)
        rows.append(row)
        lines.append(f"| {row['teacher']} | {row['layers']} | {row['channels']} | {row['dead']} | "
                     f"{row['min_rms']:.3g} / {row['min_model']:.3g} | "
                     + " | ".join(f"{row['below_rms'][r]} / {row['below_model'][r]}" for r in RHOS) + " |")
        print(lines[-1], flush=True)
    lines += ["", "## An absolute ε instead (`MedicConfig.eps`): how much it moves each teacher's weights", "",
              "Per ε: hooked channels whose variance on the clean data is below ε (ε dominates their σ²) / the "
              "median over all hooked channels of the factor their weight 1/σ² shrinks by, (var + ε) / var.", "",
              "| teacher | channels | " + " | ".join(f"ε = {e:g}" for e in EPSILONS) + " |",
              "|---|---|" + "---|" * len(EPSILONS)]
    lines += [f"| {r['teacher']} | {r['channels']} | "
              + " | ".join(f"{r['under_eps'][e]} / {r['shrink_eps'][e]:.2f}×" for e in EPSILONS) + " |" for r in rows]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
