"""Train the GTSRB teachers of one protocol role into the shared cache
(``benchmarks/results/gtsrb_teachers/``), one after another, skipping those already there.

Each model is stored whole or not at all (the cache's folders are renamed into place), and a
model in training saves its state after every epoch (``gtsrb_teachers/.training/``, git-ignored),
so an interrupted run loses only the epoch in progress: run the same command again to go on.

    python -m benchmarks.train_teachers --role evaluation --arch wrn16_1 \\
        --attacks badnet sig cleanlabel polygon wanet --threads 1

Development teachers are seed 0 (the ones MEDIC's defaults were chosen on), evaluation
teachers seed 1 (:data:`medic_viz.experiments.protocol.ROLE_SEEDS`); the role goes into each card.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks.common import GTSRB, TEACHERS
from medic_viz.data import load_dataset
from medic_viz.experiments.presets import GTSRB_ATTACKS, gtsrb_recipe
from medic_viz.experiments.protocol import ROLE_SEEDS, ROLES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=ROLES, default="evaluation")
    parser.add_argument("--arch", default="wrn16_1")
    parser.add_argument("--attacks", nargs="+", default=["badnet", "sig", "cleanlabel", "polygon", "wanet"],
                        choices=sorted(GTSRB_ATTACKS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = None
    failed: list[str] = []
    for seed in ROLE_SEEDS[args.role]:
        for attack in args.attacks:
            recipe = gtsrb_recipe(attack, args.arch, GTSRB, seed=seed)
            found = TEACHERS.find(recipe)
            if found is not None:
                print(f"{recipe.name}: cached ({found.name})", flush=True)
                continue
            splits = splits or load_dataset(str(GTSRB))
            start = time.perf_counter()
            try:
                folder = TEACHERS.train(recipe, splits=splits, device=args.device)
            except ValueError as exc:  # a preset the attack refuses: say so, train the others
                failed.append(recipe.name)
                print(f"{recipe.name}: not trained: {exc}", file=sys.stderr, flush=True)
                continue
            print(f"{recipe.name}: trained in {time.perf_counter() - start:.0f} s → {folder}", flush=True)
    if failed:
        raise SystemExit(f"not trained: {', '.join(failed)} (see above)")


if __name__ == "__main__":
    main()
