"""Which τ the default per-layer share stands for: the τ that MEDIC's calibration gives each
layer (share 1 %) on Figure 4's evaluation teachers, with the clean subset a 5 % run uses
(seed 0), for the library's layers and the paper's (``conv+bn``) — to set beside the global-τ
points of Figure 4. Teacher and clean data only; no training.

    python -m benchmarks.calibrated_taus [--threads 1]

Writes ``benchmarks/results/figure4_tau/calibrated_taus.md`` (and prints it).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from benchmarks.common import FIGURE4_ATTACKS, FIGURE4_OUT, GTSRB, evaluation_teachers
from medic_viz.data import load_dataset
from medic_viz.data.arrays import clean_subset
from medic_viz.defenses.medic import MedicConfig, preview_layer_taus
from medic_viz.importer import load_model_folder

OUT = FIGURE4_OUT / "calibrated_taus.md"
FRACTION, SEED = 0.05, 0


def table(taus: dict[tuple[str, str], dict[str, float]]) -> str:
    """Markdown: per teacher and layer set, the number of layers and min / median / max of
    their τ, then each layer's τ in forward order."""
    lines = ["| teacher | layers | n | τ min | τ median | τ max | per layer (forward order) |", "|---|---|---|---|---|---|---|"]
    for (teacher, layers), per_layer in taus.items():
        v = list(per_layer.values())
        lines.append(f"| {teacher} | {layers} | {len(v)} | {min(v):.1f} | {statistics.median(v):.1f} | {max(v):.1f} | "
                     + ", ".join(f"{name} {t:.1f}" for name, t in per_layer.items()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    teachers, _missing = evaluation_teachers(FIGURE4_ATTACKS)
    splits = load_dataset(str(GTSRB))
    clean = clean_subset(splits.train, FRACTION, SEED)
    taus: dict[tuple[str, str], dict[str, float]] = {}
    for folder in teachers:
        model, _card = load_model_folder(folder)
        for layers in ("auto", "conv+bn"):
            taus[(Path(folder).name, layers)] = preview_layer_taus(model, clean, MedicConfig(layers=layers, seed=SEED))
    text = (f"τ per layer calibrated to the default share (1 %), {len(clean):,} clean images (5 %, seed 0), "
            f"`python -m benchmarks.calibrated_taus`:\n\n" + table(taus))
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
