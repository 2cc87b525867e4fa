"""``medic-viz`` command line: demo, attack, defend.

    medic-viz demo [--quick] [--device D] [--out DIR] [--attack badnet]
    medic-viz attack [--dataset D] [--model M] --attack A --out DIR
    medic-viz defend --method medic --teacher DIR [--dataset D] --out DIR [--tau --lam ...]
    medic-viz compare --dataset D --model M --attacks ... --methods ... --seeds N --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser", "DEMO_SETTINGS"]

#: MEDIC settings of the demo on the embedded dataset (full and --quick). τ is data-dependent
#: and, measured on the four shipped demo models (BENCHMARKS.md §2), also depends on how long
#: the clone trains: with 60 epochs τ = 5 lets 29–33 % ASR come back on Blend, SIG and Polygon
#: while τ = 10 removes all four (≤ 7 %, ≤ 1.6 points of accuracy); with 20 epochs τ = 5 removes
#: all four at ≤ 4.1 points, and τ = 10 costs ~10 points. The library default stays the paper's 5.
DEMO_SETTINGS = {
    "full": dict(epochs=60, tau=10.0, lam=10.0, fraction=0.05),
    "quick": dict(epochs=20, tau=5.0, lam=10.0, fraction=0.05),
}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--seed", type=int, default=0, help="seed for the clean subset, student init and batches")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_dataset(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        default="signs",
        help="signs (embedded, default), cifar10, gtsrb, mnist (with --data-root), or a path to an .npz file",
    )
    p.add_argument("--data-root", default=None, help="folder for torchvision datasets")
    p.add_argument("--download", action="store_true", help="download a torchvision dataset into --data-root")


def build_parser() -> argparse.ArgumentParser:
    from medic_viz.attacks.registry import ATTACK_NAMES

    parser = argparse.ArgumentParser(prog="medic-viz", description="Inspect trojaned classifiers and remove backdoors with MEDIC.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="end-to-end: shipped trojaned model → MEDIC → before/after table")
    demo.add_argument("--quick", action="store_true", help="shorter run (about a minute on a laptop CPU)")
    demo.add_argument("--attack", default="badnet", help="which shipped demo model: badnet, blend, sig, polygon")
    demo.add_argument("--out", default="runs/demo", help="output folder (result.json, report.html, model/)")
    _add_common(demo)

    atk = sub.add_parser("attack", help="train a trojaned model and save it with its card")
    _add_dataset(atk)
    atk.add_argument("--model", default="small_cnn", help="zoo architecture (medic_viz.available_models())")
    atk.add_argument("--attack", default="badnet", help=f"one of {', '.join(ATTACK_NAMES)}")
    atk.add_argument("--target", type=int, default=0, help="target class id (all-to-one)")
    atk.add_argument("--rate", type=float, default=None,
                     help="poison rate (default: the attack's, 0.1; clean-label attacks 0.08, at most 80%% of the target class)")
    atk.add_argument("--epochs", type=int, default=20)
    atk.add_argument("--lr", type=float, default=2e-3)
    atk.add_argument("--batch-size", type=int, default=128)
    atk.add_argument("--out", required=True, help="output folder (model.safetensors, card.json, result.json)")
    _add_common(atk)

    dfd = sub.add_parser("defend", help="remove a backdoor from a saved model")
    dfd.add_argument("--method", default="medic", help="defence: medic (default), finetune, fineprune, nad, mcr, anp, kd, scratch")
    dfd.add_argument("--teacher", required=True, help="folder with model.safetensors + card.json (from `attack`)")
    _add_dataset(dfd)
    dfd.add_argument("--tau", default="5", help="temperature τ >= 0 (0 = plain cloning), or 'auto' to choose it "
                     "from clean data alone (largest τ within --tau-budget of the model's clean accuracy)")
    dfd.add_argument("--tau-budget", type=float, default=0.03, help="with --tau auto: allowed clean-accuracy drop (fraction)")
    dfd.add_argument("--tau-search-epochs", type=int, default=20, help="with --tau auto: epochs per candidate τ")
    dfd.add_argument("--lam", type=float, default=10.0, help="cloning-loss weight λ >= 0")
    dfd.add_argument("--epochs", type=int, default=None, help="training epochs (default: the method's own; MEDIC 60)")
    dfd.add_argument("--fraction", type=float, default=0.05, help="clean training data used (0.05 = 5%%)")
    dfd.add_argument("--batch-size", type=int, default=None, help="default: the method's own (MEDIC 64)")
    dfd.add_argument("--lr", type=float, default=None, help="default: the method's own (MEDIC 1e-2)")
    dfd.add_argument("--out", required=True, help="output folder (result.json, report.html, model/)")
    _add_common(dfd)

    from medic_viz.cli_compare import add_compare_parser

    add_compare_parser(sub)
    return parser


def _dataset_for(args: argparse.Namespace, size: int = 32):
    from medic_viz.data import load_dataset

    return load_dataset(args.dataset, root=args.data_root, download=args.download, size=size, seed=0)


def _print(msg: str) -> None:
    print(msg, flush=True)


def _run_removal(teacher, card, splits, args, *, fraction, method="medic", **options):
    """Run one defence (``options``: its config fields; None values mean the method's default)."""
    from medic_viz.defenses.baselines import DISPLAY_NAMES, make_defense
    from medic_viz.pipeline import format_table, remove_backdoor, trigger_of
    from medic_viz.viz.report import write_outputs

    trigger, target = trigger_of(card)
    options = {k: v for k, v in options.items() if v is not None}
    if method == "medic":
        options["student_seed"] = args.seed
    defense = make_defense(method, device=args.device, seed=args.seed, progress=not args.no_progress, **options)
    name = DISPLAY_NAMES.get(defense.name, defense.name)
    if trigger is None:
        _print("note: the model card records no attack, so ASR cannot be measured; clean accuracy only")
    cfg = defense.config
    extra = f"τ={cfg.tau:g} λ={cfg.lam:g}, " if defense.name == "medic" else ""
    _print(f"{name}: {extra}{cfg.epochs} epochs on {100 * fraction:g}% of {splits.train.name} "
           f"({len(splits.train)} images), device {args.device}")
    outcome = remove_backdoor(teacher, splits, defense, trigger=trigger, target=target, fraction=fraction,
                              seed=args.seed, device=args.device)
    paths = write_outputs(outcome, args.out, teacher_card=card)
    _print("")
    _print(format_table(outcome.before, outcome.after, name))
    _print("")
    _print(f"{outcome.n_clean_subset} clean images, {outcome.result.seconds:.1f} s training, {outcome.seconds:.1f} s in all")
    _print(f"wrote {paths['result']}, {paths['report']} and {paths['model']}/")
    return outcome


def cmd_demo(args: argparse.Namespace) -> int:
    from medic_viz.data import load_dataset
    from medic_viz.pretrained import load_demo_model

    settings = DEMO_SETTINGS["quick" if args.quick else "full"]
    teacher, card = load_demo_model(args.attack)
    _print(f"demo: shipped {card.architecture} trojaned with {card.attack['name']} (target class "
           f"{card.target_class}: {card.classes[card.target_class]}) on the embedded synthetic traffic signs")
    splits = load_dataset("signs", size=card.input_size, seed=0)
    _run_removal(teacher, card, splits, args, **settings)
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from medic_viz.attacks.registry import attack_spec
    from medic_viz.attacks.train import train_attack
    from medic_viz.io import save_model
    from medic_viz.training import TrainConfig

    spec = attack_spec(args.attack)
    splits = _dataset_for(args)
    if not 0 <= args.target < splits.num_classes:
        raise ValueError(f"--target {args.target} is out of range: {splits.train.name} has classes 0..{splits.num_classes - 1}")
    rate = args.rate if args.rate is not None else spec.default_rate(splits.train, args.target)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer="adam",
                      device=args.device, seed=args.seed, progress=not args.no_progress)
    _print(f"attack: {spec.name} → class {args.target} ({splits.classes[args.target]}), rate {rate:g}, "
           f"{args.model} on {splits.train.name} ({len(splits.train)} images), {args.epochs} epochs")
    if spec.needs_model:
        _print("training a clean surrogate model first (the attack perturbs images against it)")
    start = time.perf_counter()
    trojan = train_attack(spec.name, splits, target=args.target, rate=rate, architecture=args.model, config=cfg,
                          seed=args.seed)
    card = trojan.card(splits, dataset=str(args.dataset))
    out = Path(args.out)
    save_model(trojan.model, out, card)
    result = {"clean_acc": trojan.metrics.clean_acc, "asr": trojan.metrics.asr, "n_clean": trojan.metrics.n_clean,
              "n_asr": trojan.metrics.n_asr, "seconds": round(time.perf_counter() - start, 2),
              "attack": card.attack, "target": args.target, "rate": rate, "model": args.model,
              "dataset": str(args.dataset)}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    _print(f"clean accuracy {100 * trojan.metrics.clean_acc:.2f}% (n={trojan.metrics.n_clean}), "
           f"ASR {100 * trojan.metrics.asr:.2f}% (n={trojan.metrics.n_asr})")
    _print(f"wrote {out / 'model.safetensors'}, {out / 'card.json'}, {out / 'result.json'}")
    return 0


def _parse_tau(text: str) -> float | str:
    from medic_viz.importance import validate_tau

    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--tau must be a number >= 0 or 'auto', got {text!r}") from None
    return validate_tau(value)


def cmd_defend(args: argparse.Namespace) -> int:
    from medic_viz.data.arrays import clean_subset
    from medic_viz.defenses.baselines import defense_class
    from medic_viz.defenses.medic import validate_lambda
    from medic_viz.io import load_model

    tau = _parse_tau(args.tau)
    method = defense_class(args.method).name  # canonical name; unknown methods fail here, before any work
    if tau == "auto" and method != "medic":
        raise ValueError(f"--tau auto chooses MEDIC's temperature τ, which --method {args.method} does not have; "
                         "drop --tau auto or use --method medic")
    validate_lambda(args.lam)
    teacher, card = load_model(args.teacher)
    splits = _dataset_for(args, size=card.input_size)
    if tau == "auto":
        from medic_viz.defenses.tuning import select_tau

        _print(f"choosing τ from clean data alone (budget {100 * args.tau_budget:g} points, "
               f"{args.tau_search_epochs} epochs per candidate) …")
        search = {k: v for k, v in {"batch_size": args.batch_size, "lr": args.lr}.items() if v is not None}
        selection = select_tau(teacher, clean_subset(splits.train, args.fraction, args.seed), budget=args.tau_budget,
                               seed=args.seed, device=args.device, epochs=args.tau_search_epochs, lam=args.lam,
                               progress=not args.no_progress, **search)
        _print(str(selection))
        tau = selection.tau
    extra = {"tau": float(tau), "lam": args.lam} if method == "medic" else {}
    _run_removal(teacher, card, splits, args, method=method, epochs=args.epochs, fraction=args.fraction,
                 batch_size=args.batch_size, lr=args.lr, **extra)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medic-viz`` console script. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from medic_viz.cli_compare import cmd_compare

    handlers = {"demo": cmd_demo, "attack": cmd_attack, "defend": cmd_defend, "compare": cmd_compare}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"medic-viz {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
