"""Train the GTSRB teachers of one protocol role into the shared cache
(``benchmarks/results/gtsrb_teachers/``), one after another, skipping those already there.

Each model is stored whole or not at all (the cache's folders are renamed into place), and a
model in training saves its state after every epoch (``gtsrb_teachers/.training/``, git-ignored),
so an interrupted run loses only the epoch in progress: run the same command again to go on.

    python -m benchmarks.train_teachers --role evaluation --arch wrn16_1 \\
        --attacks badnet sig cleanlabel polygon wanet --threads 1

Development teachers are seed 0 (the ones MEDIC's defaults were chosen on), evaluation
teachers seed 1, and ``--seed 2`` a second, fresh evaluation set
(:data:`medic_viz.experiments.protocol.ROLE_SEEDS`); the role goes into each card.

Every stored teacher is recorded in ``gtsrb_teachers/manifest.json`` (weights' SHA-256, clean
accuracy, ASR; :mod:`medic_viz.experiments.teacher_manifest`), which is committed even where the
weights are not (ResNet-18 teachers, 45 MB each, and the first VGG-11-BN one are git-ignored and
trained again on first use; the other VGG-11-BN teachers, 37 MB each, are committed: a session's
fresh checkout has no git-ignored teacher, nor the training state under ``.training/``).
``--check`` compares the teachers here with it (exit status 1 when one
differs); ``--record`` records the ones here (after copying teachers in); ``--merge FILE …``
adds the entries of teachers trained on a GPU machine whose weights stayed there
(``benchmarks/gpu_architectures.sh``).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks.common import GTSRB, TEACHERS
from medic_viz.data import load_dataset
from medic_viz.experiments.presets import GTSRB_ATTACKS, gtsrb_recipe
from medic_viz.experiments.protocol import ROLE_SEEDS, ROLES, check_role_seed
from medic_viz.experiments.teacher_manifest import check_manifest, merge_manifest, record_models


def check(root) -> int:
    """Print every teacher against the manifest; the number that differ."""
    statuses = check_manifest(root)
    for s in statuses:
        print(f"{s.name:<34} {s.status:<10} {s.detail}")
    counts = {k: sum(s.status == k for s in statuses) for k in ("same", "differs", "missing", "unrecorded")}
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    return counts["differs"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=ROLES, default="evaluation")
    parser.add_argument("--arch", default="wrn16_1")
    parser.add_argument("--attacks", nargs="+", default=["badnet", "sig", "cleanlabel", "polygon", "wanet"],
                        choices=sorted(GTSRB_ATTACKS))
    parser.add_argument("--seed", type=int, default=None,
                        help="training seed, one of the role's (default: its first: development 0, evaluation 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--check", action="store_true", help="compare the teachers here with the manifest, train none")
    parser.add_argument("--record", action="store_true", help="record the teachers here in the manifest, train none")
    parser.add_argument("--merge", nargs="+", metavar="FILE", help="add the entries of these manifests, train none")
    args = parser.parse_args(argv)
    if args.merge:
        for path in args.merge:
            try:
                added = merge_manifest(TEACHERS.root, path)
            except (OSError, ValueError) as exc:
                raise SystemExit(str(exc)) from None
            print(f"{path}: {len(added)} entries added or changed{': ' + ', '.join(added) if added else ''}")
        return
    if args.record:
        print(f"recorded {len(record_models(TEACHERS.root))} teachers in {TEACHERS.root / 'manifest.json'}")
        return
    if args.check:
        raise SystemExit(1 if check(TEACHERS.root) else 0)
    if args.seed is not None:
        try:
            check_role_seed(args.role, args.seed)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = None
    failed: list[str] = []
    seed = ROLE_SEEDS[args.role][0] if args.seed is None else args.seed
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
