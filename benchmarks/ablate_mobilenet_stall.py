"""Why does MEDIC's default not learn on the MobileNet-v1 BadNet teacher? (issue 27 item 4: its
two default cells were at 5–8 % clean accuracy after 25 of 60 epochs, the cross-entropy at chance.)
A few epochs of each variant on the same teacher, clean subset (5 %, seed 0) and optimiser, so the
causes can be told apart:

- ``default``: the library's default (ε = 1e-5 on σ², so a channel constant on the clean data
  is weighed 1/σ² ≈ 1e5 in the cloning loss);
- ``eps 1e-3`` … ``eps 3e-1``: σ floored at 0.03 / 0.1 / 0.17 / 0.32 / 0.55 (``MedicConfig.eps``), dead
  and small channels tamed;
- ``lam 0``: no cloning loss at all, cross-entropy only with MEDIC's optimiser (Adam, lr 1e-2):
  can this network learn from 1,960 labels with it?

- ``floor ρ layer`` / ``floor ρ model``: σ_c floored at ρ times its layer's RMS σ, or the
  median of those over the hooked layers (``MedicConfig.sigma_floor``; scale-free, unlike ε);
- ``lr 2e-3``: MEDIC's optimiser at the teachers' learning rate (Adam 2e-3 instead of 1e-2).

``--role evaluation`` (the default; the first table): diagnosis on the *evaluation* teacher,
nothing is chosen from it. ``--role development``: the same probes on the development teacher
(seed 0) and the development half of the test set, where a fix may be chosen (BENCHMARKS.md §6
states the rule). Live clean accuracy and ASR on 1,000 test images of the role's half per epoch;
the table and the per-epoch rows go to ``benchmarks/results/mobilenet_stall[_development].{md,json}``
after every variant (resumable by variant).

    python -m benchmarks.ablate_mobilenet_stall --epochs 8 --threads 2
    python -m benchmarks.ablate_mobilenet_stall --role development --epochs 12 --threads 2 \
        --variants default "floor 0.3 layer" "floor 0.1 model" "eps 1e-2" "lr 2e-3" "floor 0.3 layer + lr 2e-3"

``default`` is the library's default of the day: the committed probes ran when it was ε = 1e-5;
since 2026-12-05 it is ε = 0.1 (BENCHMARKS.md §6), so ``eps 1e-5`` is not in this list's names
and re-running ``default`` now probes ε = 0.1.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.common import GTSRB, RESULTS, teachers_of_role
from medic_viz.attacks.registry import trigger_from_config
from medic_viz.data import load_dataset
from medic_viz.defenses.registry import make_defense
from medic_viz.experiments.protocol import DEVELOPMENT, EVALUATION, splits_part
from medic_viz.io import load_model
from medic_viz.pipeline import remove_backdoor

VARIANTS: dict[str, dict] = {
    "default": {}, "eps 1e-3": {"eps": 1e-3}, "eps 1e-2": {"eps": 1e-2}, "lam 0": {"lam": 0.0},
    "floor 0.1 layer": {"sigma_floor": 0.1}, "floor 0.3 layer": {"sigma_floor": 0.3},
    "floor 0.1 model": {"sigma_floor": 0.1, "sigma_floor_scope": "model"},
    "floor 0.3 model": {"sigma_floor": 0.3, "sigma_floor_scope": "model"},
    "eps 3e-2": {"eps": 3e-2}, "eps 1e-1": {"eps": 1e-1}, "eps 3e-1": {"eps": 3e-1},
    "lr 2e-3": {"lr": 2e-3}, "floor 0.3 layer + lr 2e-3": {"sigma_floor": 0.3, "lr": 2e-3},
}


def outputs(role: str) -> tuple:
    """The table and the rows of ``role``'s probes."""
    stem = "mobilenet_stall" if role == EVALUATION else f"mobilenet_stall_{role}"
    return RESULTS / f"{stem}.md", RESULTS / f"{stem}.json"


def run_variant(folder: str, splits, options: dict, epochs: int) -> dict:
    """One short MEDIC run: per-epoch clean accuracy, ASR and losses, and the seconds."""
    teacher, card = load_model(folder)
    trigger = trigger_from_config(card.attack) if card.attack else None
    start = time.perf_counter()
    outcome = remove_backdoor(teacher, splits, make_defense("medic", epochs=epochs, eval_every=1, **options),
                              trigger=trigger, target=card.target_class, fraction=0.05, seed=0, device="cpu",
                              live_eval_images=1000)
    curve = [{"epoch": e.epoch, "clean_acc": e.clean_acc, "asr": e.asr,
              "losses": {k: round(v, 4) for k, v in e.losses.items()}}
             for e in outcome.result.history if e.kind in ("start", "epoch")]
    return {"options": options, "epochs": epochs, "curve": curve, "after_clean_acc": outcome.after.clean_acc,
            "after_asr": outcome.after.asr, "seconds": round(time.perf_counter() - start, 1),
            "torch_threads": torch.get_num_threads()}


def table(results: dict[str, dict]) -> str:
    lines = ["| variant | epochs | clean acc per epoch (%, 1,000 images) | CE at the end | cloning loss at the end | "
             "after: clean acc / ASR (%, the role's test half) | seconds |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        accs = " ".join(f"{100 * p['clean_acc']:.0f}" for p in r["curve"] if p["clean_acc"] is not None)
        last = r["curve"][-1]["losses"]
        lines.append(f"| {name} | {r['epochs']} | {accs} | {last.get('ce', float('nan')):.2f} | "
                     f"{last.get('clone', 0.0):.1f} | {100 * r['after_clean_acc']:.1f} / {100 * r['after_asr']:.1f} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", nargs="+", default=["default", "eps 1e-3", "eps 1e-2", "lam 0"],
                        choices=list(VARIANTS))
    parser.add_argument("--role", choices=[DEVELOPMENT, EVALUATION], default=EVALUATION)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    found, _missing = teachers_of_role(["badnet"], args.role, "mobilenet_v1")
    if not found:
        raise SystemExit(f"no MobileNet-v1 BadNet {args.role} teacher: python -m benchmarks.train_teachers "
                         f"--role {args.role} --arch mobilenet_v1 --attacks badnet")
    splits = splits_part(load_dataset(str(GTSRB)), args.role)
    out_md, out_json = outputs(args.role)
    results = json.loads(out_json.read_text()) if out_json.is_file() else {}
    for name in args.variants:
        if name in results and results[name]["epochs"] == args.epochs:
            continue
        results[name] = run_variant(found[0], splits, VARIANTS[name], args.epochs)
        print(f"{name}: {results[name]['seconds']:.0f} s", flush=True)
        out_json.write_text(json.dumps(results, indent=1) + "\n")
        role_flag = "" if args.role == EVALUATION else f" --role {args.role}"
        purpose = ("diagnosis only (nothing chosen from it)" if args.role == EVALUATION else
                   "development teacher and test half: where a fix may be chosen (BENCHMARKS.md §6)")
        header = (f"# MEDIC on the MobileNet-v1 BadNet {args.role} teacher: what stalls it\n\n"
                  f"`python -m benchmarks.ablate_mobilenet_stall{role_flag} --epochs {args.epochs}`; "
                  f"5 % clean data (seed 0), {purpose}.\n\n")
        out_md.write_text(header + table(results))
    print(table(results))


if __name__ == "__main__":
    main()
