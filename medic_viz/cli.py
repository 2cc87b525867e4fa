"""``medic-viz`` command line: demo, attack, defend, import, compare.

    medic-viz demo [--quick] [--device D] [--out DIR] [--attack badnet]
    medic-viz attack [--dataset D] [--model M] --attack A --out DIR
    medic-viz defend --method medic --teacher DIR [--dataset D] --out DIR [--tau --lam ...]
    medic-viz import --checkpoint FILE --arch A --dataset D [--target T --trigger SPEC] --out DIR
    medic-viz compare --dataset D --model M --attacks ... --methods ... --seeds N --out DIR
    medic-viz compare --teacher DIR [--teacher DIR ...] --methods ... --seeds N --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence, cast

import torch.nn as nn

# looked up through their modules when a command runs: what a test or benchmark puts there runs
# (tests/test_cli.py replaces tuning.select_tau; benchmarks/bench_defend_run.py times
# report.write_outputs and, with --threads, replaces resources.use_available_cpus)
import medic_viz.defenses.tuning as tuning
import medic_viz.pipeline as pipeline
import medic_viz.resources as resources
import medic_viz.viz.report as report
from medic_viz.attacks.registry import ATTACK_NAMES, attack_spec
from medic_viz.attacks.train import train_attack
from medic_viz.cards import ModelCard
from medic_viz.cli_args import MAX_SEED, Parser as _Parser, number as _number, whole as _whole
from medic_viz.cli_common import (
    EXPECTED_ERRORS,
    MIN_IMAGE_SIZE,
    add_out as _add_out,
    add_trust_arch_code,
    one_line as _one_line,
    prepare as _prepare,
    report_error,
    trusted_code,
)
from medic_viz.cli_compare import add_compare_parser, cmd_compare
from medic_viz.cli_import import add_import_parser, cmd_import
from medic_viz.cli_serve import add_serve_parser, cmd_serve
from medic_viz.data import load_dataset
from medic_viz.data.arrays import DatasetSplits, clean_subset
from medic_viz.data_identity import card_dataset, dataset_record
from medic_viz.defenses.registry import DEFENSES, DISPLAY_NAMES, defense_class, make_defense
from medic_viz.device import resolve_device
from medic_viz.importer import load_model_folder
from medic_viz.interrupts import Interrupted, SignalStop
from medic_viz.io import CARD_FILENAME, read_card, save_model
from medic_viz.metrics import format_before_after
from medic_viz.outdir import OutputFolder, pause_for_tests
from medic_viz.pretrained import DEMO_ATTACKS, demo_model_dir, load_demo_model
from medic_viz.run_settings import RunSettings, method_settings, unused_settings
from medic_viz.training import TrainConfig

__all__ = ["main", "build_parser", "report_error", "add_trust_arch_code", "trusted_code", "DEMO_SETTINGS",
           "EXPECTED_ERRORS"]

#: The demo's default --out, and what a previous demo left there (replaced without --overwrite).
DEMO_OUT = "runs/demo"
_RESULT_NAMES = frozenset({"result.json", "report.html", "model", "STOPPED"})

#: MEDIC settings of the demo on the embedded dataset. Full: the library's defaults (τ calibrated
#: per layer to a 1 % share, conv/norm layers between the first and the last convolution), 60
#: epochs. --quick (20 epochs): the default layers with the paper's global τ = 5 — at 20 epochs
#: the 1 % share has not yet recovered the accuracy (BadNet demo: 90.6 % against 94.1 % with
#: τ = 5, both ≤ 1.5 % ASR; trojaned 99.0 %).
#: λ is the library's default (medic_viz.defenses.medic.DEFAULT_LAM, written out so that the CLI
#: starts without importing torch; a test keeps them equal).
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "full": dict(epochs=60, tau=None, lam=3.0, fraction=0.05),
    "quick": dict(epochs=20, tau=5.0, lam=3.0, fraction=0.05),
}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--seed", type=_whole(0, MAX_SEED), default=0, help="seed for the clean subset, student init and batches")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")


def _add_dataset(p: argparse.ArgumentParser, *, from_card: bool = False) -> None:
    p.add_argument(
        "--dataset",
        default=None if from_card else "signs",
        help="signs (embedded), cifar10, gtsrb, mnist (with --data-root), or a path to an .npz file; default: "
             + ("the dataset in the model card, else signs" if from_card else "signs"),
    )
    p.add_argument("--data-root", default=None, help="folder for torchvision datasets")
    p.add_argument("--download", action="store_true", help="download a torchvision dataset into --data-root")
    p.add_argument("--image-size", type=_whole(MIN_IMAGE_SIZE, 1024), default=None,
                   help="resize a named dataset to this many pixels per side (default 32); an .npz keeps its own size")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medic-viz", description="Inspect trojaned classifiers and remove backdoors with MEDIC.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="end-to-end: shipped trojaned model → MEDIC → before/after table")
    demo.add_argument("--quick", action="store_true", help="shorter run (about a minute on a laptop CPU)")
    demo.add_argument("--attack", default="badnet", help="which shipped demo model: badnet, blend, sig, polygon")
    _add_out(demo, "output folder (result.json, report.html, model/); default runs/demo, where the previous demo "
             "result is replaced", required=False, default=None)
    _add_common(demo)

    atk = sub.add_parser("attack", help="train a trojaned model and save it with its card")
    _add_dataset(atk)
    atk.add_argument("--model", default="small_cnn", help="zoo architecture (medic_viz.available_models())")
    atk.add_argument("--attack", default="badnet", help=f"one of {', '.join(ATTACK_NAMES)}")
    atk.add_argument("--target", type=_whole(0), default=0, help="target class id (all-to-one)")
    atk.add_argument("--rate", type=_number(0.0, 1.0, low_open=True), default=None,
                     help="poison rate (default: the attack's, 0.1; clean-label attacks 0.08, at most 80%% of the target class)")
    atk.add_argument("--epochs", type=_whole(1, 100_000), default=20)
    atk.add_argument("--lr", type=_number(0.0, 1e6, low_open=True), default=2e-3)
    atk.add_argument("--batch-size", type=_whole(1, 1_000_000), default=128)
    _add_out(atk, "output folder (model.safetensors, card.json, result.json)")
    _add_common(atk)

    dfd = sub.add_parser("defend", help="remove a backdoor from a saved model")
    dfd.add_argument("--method", default="medic",
                     help=f"defence, one of: {', '.join(DEFENSES)} (default: medic)")
    dfd.add_argument("--teacher", required=True,
                     help="folder with model.safetensors + card.json (from `attack` or `import`)")
    add_trust_arch_code(dfd, "the teacher's")
    _add_dataset(dfd, from_card=True)
    dfd.add_argument("--tau", default=None, help="MEDIC only: one global temperature τ >= 0 for every layer, as in the paper "
                     "(0 = plain cloning), or 'auto' to choose it from clean data alone (largest τ within --tau-budget of the "
                     "model's clean accuracy). Default: none — τ is calibrated per layer (--share); the paper's is 5 "
                     "at --eps 1e-5 (a τ is sharper at a smaller ε: on WRN-16-1, τ 7 at the default ε 0.1 matches about as many "
                     "neurons as τ 5 at 1e-5)")
    dfd.add_argument("--share", type=_number(0.0, 1.0, low_open=True), default=None,
                     help="MEDIC only: calibrate τ per layer on the clean data so that each layer's weights match this share "
                          "of its neurons (default 0.01 when --tau is not given; not with --tau)")
    dfd.add_argument("--layers", default=None,
                     help="MEDIC only: hooked layers — default 'auto' = 'conv+bn-inner' (conv/norm outputs from the second "
                          "convolution to before the last stage — WRN's block3, a ResNet's layer4 — or the last convolution; "
                          "models with fewer than 3 convolutions: the next preset that fits); "
                          "'conv+bn-last' (from the first); "
                          "'conv+bn' (the MEDIC authors' command: no dense layers), 'all' (the paper's text, logits included), "
                          "or comma-separated module names. The paper's setting: --tau 5 --lam 10 --layers all --eps 1e-5")
    dfd.add_argument("--tau-budget", type=_number(0.0, 1.0), default=None,
                     help="with --tau auto: allowed clean-accuracy drop (fraction, default 0.03)")
    dfd.add_argument("--tau-search-epochs", type=_whole(1, 100_000), default=None,
                     help="with --tau auto: epochs per candidate τ (default 20)")
    dfd.add_argument("--lam", type=_number(0.0, 1e6), default=None,
                     help="MEDIC only: cloning-loss weight λ >= 0 (default 3; the paper's is 10)")
    dfd.add_argument("--eps", type=_number(0.0, 1e6, low_open=True), default=None,
                     help="MEDIC only: ε added to the teacher's variances, σ = sqrt(var + ε) (default 0.1; the paper's "
                          "1e-5, which stalls networks with small activations such as MobileNet-v1)")
    dfd.add_argument("--holdout-fraction", type=_number(0.0, 0.5), default=None,
                     help="MEDIC only: keep this share of the clean data out of training and report the clone's "
                          "accuracy on it against the teacher's, every epoch and at the end — what cloning costs, "
                          "measured with clean data alone (default 0: off; 0.1 keeps one image in ten)")
    dfd.add_argument("--epochs", type=_whole(1, 100_000), default=None,
                     help="training epochs (default: the method's own; MEDIC 60)")
    dfd.add_argument("--fraction", type=_number(0.0, 1.0, low_open=True), default=0.05,
                     help="clean training data used (0.05 = 5%%)")
    dfd.add_argument("--batch-size", type=_whole(1, 1_000_000), default=None, help="default: the method's own (MEDIC 64)")
    dfd.add_argument("--lr", type=_number(0.0, 1e6, low_open=True), default=None, help="default: the method's own (MEDIC 1e-2)")
    _add_out(dfd, "output folder (result.json, report.html, model/)")
    dfd.add_argument("--cpu-bf16", action="store_true",
                     help="bf16 autocast on the CPU too (about 1.4x faster steps on CPUs with native bf16; "
                     "bf16 rounding, as on CUDA where it is the default)")
    _add_common(dfd)

    add_compare_parser(sub)
    add_import_parser(sub)
    add_serve_parser(sub)
    return parser


def _dataset_for(args: argparse.Namespace) -> DatasetSplits:
    """The dataset named by ``--dataset``, resized to ``--image-size`` (default 32) when it is a
    named one; an npz keeps its size and ``--image-size`` must then match it."""
    size = args.image_size or MIN_IMAGE_SIZE
    splits = load_dataset(args.dataset, root=args.data_root, download=args.download, size=size, seed=0)
    _, h, w = splits.image_shape
    if args.image_size is not None and (h, w) != (size, size):
        raise ValueError(f"--image-size {size}: {args.dataset} holds {h}x{w} images and an .npz is not resized; "
                         "drop --image-size or resize the arrays")
    if len(splits.test) == 0 or len(splits.train) == 0:
        raise ValueError(f"{args.dataset}: the {'test' if len(splits.test) == 0 else 'training'} set is empty")
    return splits


def _card_datasets(folder: str) -> list[Path]:
    """Where the dataset a model folder's card names may be (as given, and a relative path
    against the folder), read without building anything; none when the card names no file or
    cannot be read (loading the folder says why, later)."""
    path = Path(folder) / CARD_FILENAME if Path(folder).is_dir() else Path(folder)
    try:
        name = read_card(path).dataset
    except (ValueError, OSError):
        return []
    if not name:
        return []
    given = Path(name).expanduser()
    return [given] if given.is_absolute() else [given, path.parent / given]


def _print(msg: str) -> None:
    print(msg, flush=True)


def _run_removal(teacher: nn.Module, card: ModelCard, splits: DatasetSplits, args: argparse.Namespace,
                 signals: SignalStop, out: OutputFolder, settings: RunSettings, *, cpu_bf16: bool = False) -> int:
    """Run the defence ``settings`` (a :class:`~medic_viz.run_settings.RunSettings`) describe —
    its options from them (``epochs`` for the main phase, the method's own for the others;
    ``cpu_bf16``: bf16 autocast on the CPU too) — and publish its folder; returns the exit
    status (0, or 128 + signal when stopped)."""
    trigger, target = pipeline.trigger_of(card)
    options = settings.to_defense_options(budget=False)
    options["progress"] = not args.no_progress
    if cpu_bf16:
        options["cpu_bf16"] = True
    defense = make_defense(settings.method, **options)
    name = DISPLAY_NAMES.get(defense.name, defense.name)
    if trigger is None:
        _print("note: the model card records no attack, so ASR cannot be measured; clean accuracy only")
    cfg = defense.config
    describe = getattr(cfg, "describe", None)  # how the run's sharpness was set (MEDIC's config says)
    extra = f"{describe()}, {_layers_text(cast(Any, cfg).layers)}, " if describe is not None else ""  # MEDIC's
    fraction = settings.fraction
    _print(f"{name}: {extra}{cfg.epochs} epochs on {100 * fraction:g}% of {splits.train.name} "
           f"({len(splits.train)} images), device {settings.device}")
    signals.phase = "train"
    outcome = pipeline.remove_backdoor(teacher, splits, defense, trigger=trigger, target=target, fraction=fraction,
                                       seed=settings.seed, device=settings.device, stop_event=signals.stop_event,
                                       callbacks=[lambda ev: pause_for_tests("train") if ev.kind == "epoch" and ev.epoch == 1
                                                  else None])
    signals.phase = "write"
    stopped = outcome.result.stopped
    data = dataset_record(getattr(args, "dataset", None) or "signs")  # the data this run used
    report.write_outputs(outcome, out.path, teacher_card=replace(card, **data), extra=data)
    done = [e.epoch for e in outcome.result.history if e.kind == "epoch"]
    target_dir = out.publish(stopped=stopped, note=(
        f"stopped by a signal after {done[-1] if done else 0} of {cfg.epochs} epochs; model/ is the model as it was "
        "at the stop, result.json says \"stopped\": true" if stopped else ""))
    _print("")
    _print(format_before_after(outcome.before, outcome.after, name))
    _print("")
    held = outcome.result.config.get("holdout")  # MEDIC with --holdout-fraction: the clone on clean data it never saw
    split = f" ({held['trained_on']} trained on, {held['images']} held out)" if held else ""
    _print(f"{outcome.n_clean_subset} clean images{split}, {outcome.result.seconds:.1f} s training, "
           f"{outcome.seconds:.1f} s in all")
    if outcome.result.config.get("coverage_note"):  # MEDIC: how much of the model only the labels train
        _print(f"note: {outcome.result.config['coverage_note']}")
    if outcome.result.config.get("fit_note"):  # MEDIC: the clone learnt nothing from the labels
        _print(f"note: {outcome.result.config['fit_note']}")
    if held:
        _print(f"clean hold-out ({held['images']:,} images, not trained on): clone {100 * held['clone_acc']:.2f}%, "
               f"teacher {100 * held['teacher_acc']:.2f}% ({abs(held['gap_points']):.2f} points "
               f"{'below' if held['gap_points'] >= 0 else 'above'})")
        if outcome.result.config.get("holdout_note"):
            _print(f"note: {outcome.result.config['holdout_note']}")
    _print(f"wrote {target_dir / 'result.json'}, {target_dir / 'report.html'} and {target_dir / 'model'}/")
    if stopped:
        _print(f"stopped after {done[-1] if done else 0} of {cfg.epochs} epochs: {target_dir} holds the model as it was "
               f"at the stop and is marked {target_dir / 'STOPPED'}")
        if target_dir != out.target:
            _print(f"{out.target} still holds the complete result it held (--overwrite replaces it only with a "
                   f"complete run); the stopped run went beside it, to {target_dir}")
        return 128 + (signals.signum or 2)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if str(args.attack).strip().lower() not in DEMO_ATTACKS:
        raise ValueError(f"--attack {args.attack!r}: the demo repairs a shipped trojaned model; choose one of "
                         f"{', '.join(DEMO_ATTACKS)}")
    settings = RunSettings.create(**DEMO_SETTINGS["quick" if args.quick else "full"], device=args.device,
                                  seed=args.seed)
    if args.out is None:  # the default folder belongs to the demo: its previous result is replaced
        args.out = DEMO_OUT
        folder = Path(DEMO_OUT)
        if folder.is_dir() and not folder.is_symlink() and {p.name for p in folder.iterdir()} <= _RESULT_NAMES:
            args.overwrite = True
    signals, out = _prepare(args, demo_model_dir(args.attack))
    with signals, out:
        teacher, card = load_demo_model(args.attack)
        shipped = cast(Any, card)  # a shipped demo model's card names its attack and target class
        _print(f"demo: shipped {card.architecture} trojaned with {shipped.attack['name']} (target class "
               f"{shipped.target_class}: {shipped.classes[shipped.target_class]}) on the embedded synthetic traffic signs")
        splits = load_dataset("signs", size=card.input_size, seed=0)
        return _run_removal(teacher, card, splits, args, signals, out, settings)


def cmd_attack(args: argparse.Namespace) -> int:
    spec = attack_spec(args.attack)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer="adam",
                      device=args.device, seed=args.seed, progress=not args.no_progress)
    signals, out = _prepare(args)
    with signals, out:
        splits = _dataset_for(args)
        if not 0 <= args.target < splits.num_classes:
            raise ValueError(f"--target {args.target} is not a class of {splits.train.name} "
                             f"(classes 0..{splits.num_classes - 1})")
        rate = args.rate if args.rate is not None else spec.default_rate(splits.train, args.target)
        _print(f"attack: {spec.name} → class {args.target} ({splits.classes[args.target]}), rate {rate:g}, "
               f"{args.model} on {splits.train.name} ({len(splits.train)} images), {args.epochs} epochs")
        if spec.needs_model:
            _print("training a clean surrogate model first (the attack perturbs images against it)")
        start = time.perf_counter()
        with resources.PeakMemory(resolve_device(args.device)) as memory:
            trojan = train_attack(spec.name, splits, target=args.target, rate=rate, architecture=args.model, config=cfg,
                                  seed=args.seed)
        signals.phase = "write"
        card = trojan.card(splits, dataset=str(args.dataset))
        save_model(trojan.model, out.path, card)
        pause_for_tests("write")
        result = {"clean_acc": trojan.metrics.clean_acc, "asr": trojan.metrics.asr, "n_clean": trojan.metrics.n_clean,
                  "n_asr": trojan.metrics.n_asr, "seconds": round(time.perf_counter() - start, 2),
                  "attack": card.attack, "target": args.target, "rate": trojan.rate, "rate_requested": rate,
                  "model": args.model,
                  "dataset": card.dataset, "dataset_sha256": card.dataset_sha256, "peak_memory": memory.as_dict()}
        (out.path / "result.json").write_text(json.dumps(result, indent=2))
        target_dir = out.publish()
    n_train = len(splits.train)
    rate_used, asr = cast(float, trojan.rate), cast(float, trojan.metrics.asr)  # an attack's: both measured
    if spec.poison_pool(splits.train, args.target) is not None:  # existing images stamped: the real share
        _print(f"poisoned {int(round(rate_used * n_train))} of {n_train} training images ({100 * rate_used:.2f} %)")
    _print(f"clean accuracy {100 * trojan.metrics.clean_acc:.2f}% (n={trojan.metrics.n_clean}), "
           f"ASR {100 * asr:.2f}% (n={trojan.metrics.n_asr})")
    _print(f"wrote {target_dir / 'model.safetensors'}, {target_dir / 'card.json'}, {target_dir / 'result.json'}")
    return 0


def _layers_text(layers: Any) -> str:
    """How the run's hooked layers were chosen, for the one-line summary."""
    if layers is None:
        return "all conv/norm/linear layers"
    if isinstance(layers, str):
        return f"layers {layers}"
    if callable(layers):
        return "layers chosen by a predicate"
    return f"layers {','.join(layers)}"


#: Options of ``--tau auto``: they go with ``--tau`` (a method without τ refuses them too).
_TAU_AUTO = ("tau_budget", "tau_search_epochs")


def _refuse_unused(args: argparse.Namespace, method: str) -> None:
    """Refuse the flags of run settings ``method`` does not use (MEDIC's ``--tau``, ``--share``,
    ``--layers``, ``--lam`` for a baseline): which settings a method uses is its class's
    (:func:`medic_viz.run_settings.method_settings`), as for the launcher and the grid."""
    unused = unused_settings(method)
    names = [n for n in unused if hasattr(args, n)] + [n for n in _TAU_AUTO if "tau" in unused]
    given = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in names if getattr(args, k) is not None]
    if not given:
        return
    owners = [m for m in DEFENSES if set(method_settings(m)) & set(unused) and m != method]
    whose = " or ".join(DEFENSES[m].display_name for m in owners)
    one = len(given) == 1
    raise ValueError(f"{' and '.join(given)} appl{'ies' if one else 'y'} to {whose}'s τ and λ only "
                     f"(--method {' or '.join(owners)}); --method {args.method} does not use {'it' if one else 'them'}: "
                     f"remove {'it' if one else 'them'}")


def _load_teacher(folder: str, trust_arch_code: str | None) -> tuple[nn.Module, ModelCard]:
    """A model folder, rebuilding an architecture of the user's own only when they name it."""
    return load_model_folder(folder, trust_arch_code=trust_arch_code)


def cmd_defend(args: argparse.Namespace) -> int:
    method = defense_class(args.method).name  # canonical name; unknown methods fail here, before any work
    trust = trusted_code(args)
    _refuse_unused(args, method)
    settings = RunSettings.from_cli_args(args)  # every setting checked here, before any work
    auto = args.tau is not None and str(args.tau).strip().lower() == "auto"
    if not auto and (args.tau_budget is not None or args.tau_search_epochs is not None):
        raise ValueError("--tau-budget and --tau-search-epochs apply to --tau auto only")
    # the dataset the teacher's card names is an input too, known before --out is checked
    signals, out = _prepare(args, args.teacher, datasets=_card_datasets(args.teacher), code=trust)
    with signals, out:
        teacher, card = _load_teacher(args.teacher, trust)
        if args.dataset is None:  # the card's, resolved against its folder and checked against its SHA-256
            args.dataset = card_dataset(card, args.teacher, f"--teacher {args.teacher}: ") or "signs"
        splits = _dataset_for(args)
        pipeline.check_image_size((card.in_channels, card.input_size), splits, "the teacher (its card)")
        if auto:
            budget = 0.03 if args.tau_budget is None else args.tau_budget
            search_epochs = 20 if args.tau_search_epochs is None else args.tau_search_epochs
            _print(f"choosing τ from clean data alone (budget {100 * budget:g} points, "
                   f"{search_epochs} epochs per candidate) …")
            search = {k: v for k, v in {"batch_size": args.batch_size, "lr": args.lr}.items() if v is not None}
            selection = tuning.select_tau(teacher, clean_subset(splits.train, settings.fraction, settings.seed),
                                          budget=budget, seed=settings.seed, device=settings.device,
                                          epochs=search_epochs, lam=settings.lam, progress=not args.no_progress,
                                          **search)
            _print(str(selection))
            settings = settings.replace(tau_mode="global", tau=float(selection.tau))
        return _run_removal(teacher, card, splits, args, signals, out, settings, cpu_bf16=args.cpu_bf16)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medic-viz`` console script. Returns the exit status.

    Every expected error (:data:`EXPECTED_ERRORS`) is printed as one line — what is wrong and
    what to do — with exit status 2 and no traceback (``--debug`` shows it). SIGINT/SIGTERM
    give 128 + the signal number (a run stopped during training keeps its model, marked
    ``STOPPED``). Anything else is reported as an internal error (exit 1)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a one-line usage error (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    resources.use_available_cpus()  # torch threads = the cores this process may use (OMP_NUM_THREADS wins)

    handlers = {"demo": cmd_demo, "attack": cmd_attack, "defend": cmd_defend, "compare": cmd_compare,
                "import": cmd_import, "serve": cmd_serve}
    prefix = f"medic-viz {args.command}"
    try:
        return handlers[args.command](args)
    except EXPECTED_ERRORS as exc:
        return report_error(prefix, exc, debug=getattr(args, "debug", False))
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else 2
        kept = ("finished cells are kept in --out/runs.jsonl; the same command resumes" if args.command == "compare"
                else "nothing was written to --out")
        print(f"{prefix}: interrupted ({'SIGTERM' if signum == 15 else 'SIGINT' if signum == 2 else signum}); {kept}",
              file=sys.stderr)
        return 128 + signum
    except Exception as exc:  # noqa: BLE001 - the boundary: a bug, reported in one line
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"{prefix}: internal error ({type(exc).__name__}: {_one_line(exc)}); rerun with --debug for the "
              "traceback and please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
