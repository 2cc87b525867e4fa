"""Per layer: how far a teacher's trigger moves its neurons, and the MEDIC importance those
neurons get on clean images — for the cached GTSRB teachers (``benchmarks.common.TEACHERS``).

Research script for issue 9 (why SIG on wrn16_1 is not removed while BadNet, Blend, Polygon and
WaNet are). Uses the trigger (a diagnostic, not a defence).

    python -m benchmarks.diag_compromised_layers --model wrn16_1 --attacks badnet sig wanet

Prints, per teacher and layer: the 10 % most trigger-shifted neurons' mean relative clean
importance (1 = the layer's average) and their mean clean-importance percentile within the layer (50 = no relation; the paper's
claim predicts < 50). Writes benchmarks/results/compromised_layers_<model>.md.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import GTSRB, RESULTS, TEACHERS
from medic_viz.analysis import compromised_importance_statistic, rank_compromised_neurons
from medic_viz.data import clean_subset, load_dataset
from medic_viz.experiments.presets import gtsrb_recipe
from medic_viz.pipeline import trigger_of


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="wrn16_1")
    p.add_argument("--attacks", nargs="+", default=["badnet", "blend", "sig", "polygon", "wanet"])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--tau", type=float, default=5.0)
    p.add_argument("--layers", default="conv+bn")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    splits = load_dataset(str(GTSRB))
    clean = clean_subset(splits.train, 0.05, 0)
    lines = [f"Model {args.model}, {args.images} clean test images (non-target), τ = {args.tau:g}, layers {args.layers}. "
             "Cells: the 10 % most trigger-shifted neurons' mean relative clean importance (1 = the layer's average) / "
             "their mean clean-importance percentile within the layer (%; 50 = no relation, the paper's claim "
             "predicts < 50).", ""]
    table: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for attack in args.attacks:
        teacher, card = TEACHERS.load(gtsrb_recipe(attack, args.model, GTSRB), splits=splits, progress=True)
        trigger, target = trigger_of(card)
        test = splits.test.subset(torch.nonzero(splits.test.labels != target).flatten()[: args.images])  # type: ignore[call-overload]
        ranking = rank_compromised_neurons(teacher, test, trigger, stats=clean, layers=args.layers,  # type: ignore[arg-type]
                                           tau=args.tau)  # GTSRB presets: one-image triggers
        stat = compromised_importance_statistic(ranking, min_shift=0.0, n_permutations=200)
        print(f"{attack}: percentile {100 * stat.percentile:.0f}, p {stat.p_value:.3f}", flush=True)
        for row in stat.per_layer:
            name = row["layer"]
            if name not in order:
                order.append(name)
            table.setdefault(name, {})[attack] = f"{row['ratio']:.2f} / {100 * row['percentile']:.0f}" if row.get("k") else "–"
        table.setdefault("(all layers)", {})[attack] = f"/ {100 * stat.percentile:.0f}"
    lines.append("| layer | " + " | ".join(args.attacks) + " |")
    lines.append("|---|" + "---|" * len(args.attacks))
    for name in order + ["(all layers)"]:
        lines.append(f"| {name} | " + " | ".join(table.get(name, {}).get(a, "") for a in args.attacks) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = RESULTS / f"compromised_layers_{args.model}.md"
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
