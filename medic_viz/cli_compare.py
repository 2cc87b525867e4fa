"""``medic-viz compare``: the Table-1 grid (attacks × methods × seeds) and the paper's ablations.

    medic-viz compare --dataset ../shared/data/gtsrb32.npz --model small_cnn \\
        --attacks cleanlabel,sig,badnet,composite,reflection,polygon,filter \\
        --methods finetune,fineprune,nad,mcr,anp,kd,scratch,medic --seeds 3 --out runs/table1

    medic-viz compare --teacher models/medic-badnet --teacher models/medic-blend \
        --methods medic,finetune,nad --seeds 3 --out runs/mine

Writes ``runs.jsonl`` (one line per finished cell; re-running skips them), ``results.csv``,
``table.md`` and ``comparison.html`` into ``--out``; trojaned teachers are cached in
``--out/teachers``. ``--teacher DIR`` (repeated) compares models given as folders (from
``medic-viz import`` or ``attack``) instead of training one per attack: each folder is a
column group named after it, on its card's dataset unless ``--dataset`` says otherwise.
``--executor ray [--address ADDR]`` runs each cell as a Ray task.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from medic_viz.attacks.registry import ATTACKS, PAPER_ATTACKS
from medic_viz.cli_args import number, whole
from medic_viz.cli_common import EXPECTED_ERRORS, add_trust_arch_code, report_error, trusted_code
from medic_viz.data.tracks import CLEAN_FROM
from medic_viz.defenses.registry import DEFENSES, MAIN_METHOD
from medic_viz.experiments import ABLATIONS, TABLE1_METHODS, build_grid, run_grid
from medic_viz.experiments.runner import check_grid
from medic_viz.inputs import command_inputs
from medic_viz.interrupts import SignalStop
from medic_viz.outdir import prepare_resumable_folder
from medic_viz.run_settings import RunSettings, method_settings

__all__ = ["add_compare_parser", "cmd_compare", "parse_list"]


def parse_list(text: str | None, kind: type = str) -> list[Any] | None:
    """``"a,b, c"`` → ``["a", "b", "c"]`` (converted with ``kind``); None/empty → None."""
    if text is None or not str(text).strip():
        return None
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ValueError(f"could not read {text!r} as a comma-separated list of {kind.__name__}") from None


def add_compare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``compare`` sub-command to ``subparsers`` (of ``medic-viz``'s parser)."""
    p = subparsers.add_parser(
        "compare",
        help="compare MEDIC with baselines on a grid of attacks × methods × seeds (Table 1) or run an ablation",
        description="Run a resumable grid of backdoor-removal experiments and write results.csv, table.md, "
                    "comparison.html.",
    )
    p.add_argument("--dataset", default=None,
                   help="signs (embedded), cifar10/gtsrb/mnist (torchvision, needs a local copy), or an .npz path; "
                        "default: signs, or with --teacher the dataset in each folder's card")
    p.add_argument("--teacher", action="append", default=None, metavar="DIR",
                   help="a trojaned model given as a folder (from `medic-viz import` or `attack`), instead of "
                        "--attacks; repeat for several. Its card gives the architecture, the dataset, the trigger "
                        "and the target (no trigger: ASR is not measured)")
    add_trust_arch_code(p, "a --teacher's")
    p.add_argument("--model", default=None, help="zoo architecture of the trojaned models (default small_cnn)")
    p.add_argument("--attacks", default=None,
                   help=f"comma-separated attacks (default: the paper's seven). Available: {', '.join(ATTACKS)}")
    p.add_argument("--methods", default=",".join(TABLE1_METHODS),
                   help=f"comma-separated defences (default: Table 1's). Available: {', '.join(DEFENSES)}")
    p.add_argument("--data-root", default=None, help="folder of a torchvision dataset (cifar10, gtsrb, mnist)")
    p.add_argument("--seeds", type=whole(1, 10_000), default=3,
                   help="number of seeds (0..N-1); each has its own teacher and clean subset")
    p.add_argument("--out", required=True, help="output folder (resumable: finished cells are skipped); "
                   "new, empty, or holding a previous compare run")
    p.add_argument("--target", type=whole(0), default=None, help="target class of every attack (all-to-one; default 0)")
    p.add_argument("--rate", type=number(0.0, 1.0, low_open=True), default=None,
                   help="poison rate (default 0.1; clean-label attacks 0.08, at most 80%% of the target class)")
    p.add_argument("--fraction", type=number(0.0, 1.0, low_open=True), default=0.05,
                   help="clean data for the defences (0.05 = 5%% of the training set)")
    p.add_argument("--epochs", type=whole(1, 100_000), default=None,
                   help="defence budget in epochs for every method (default: each method's paper setting)")
    p.add_argument("--attack-epochs", type=whole(1, 100_000), default=None,
                   help="epochs to train each trojaned teacher (default 20)")
    p.add_argument("--teacher-seed", type=whole(0, 2**32 - 1), default=None,
                   help="train one teacher per attack with this seed, shared by every seed of the grid "
                        "(seeds then vary the clean subset and the defence only); default: one teacher per seed")
    p.add_argument("--max-train", type=whole(1), default=None,
                   help="use a fixed random subset of this many training images")
    p.add_argument("--max-test", type=whole(1), default=None, help="use a fixed random subset of this many test images")
    p.add_argument("--test-part", choices=("development", "evaluation"), default=None,
                   help="measure on this half of the test set (fixed, class-stratified): choose settings on "
                        "development, report on evaluation; default: the whole test set")
    p.add_argument("--clean-from", choices=CLEAN_FROM, default="images",
                   help="where each method's clean subset comes from: images at random (default) or as few of the "
                        "training set's 30-frame tracks as it takes (GTSRB's layout: a harder clean fit)")
    p.add_argument("--tau", type=number(0.0, 1000.0), default=None, help="MEDIC's global temperature τ in the comparison "
                   "(default: none — τ calibrated per layer to a 1%% share; the paper's is 5)")
    p.add_argument("--share", type=number(0.0, 1.0, low_open=True), default=None,
                   help="MEDIC: calibrate τ per layer to match this share of each layer's neurons (default 0.01 without --tau)")
    p.add_argument("--layers", default=None,
                   help="MEDIC's hooked layers: default auto (= conv+bn-inner: from the second convolution to before the "
                        "last stage); conv+bn-last, conv+bn, all (the paper's text), or module names")
    p.add_argument("--lam", type=number(0.0, 1e6), default=None,
                   help="MEDIC's λ in the comparison (default 3; the paper's is 10)")
    p.add_argument("--eps", type=number(0.0, 1e6, low_open=True), default=None,
                   help="MEDIC's ε added to the teacher's variances, σ = sqrt(var + ε) (default 0.1; the paper's 1e-5)")
    p.add_argument("--holdout-fraction", type=number(0.0, 0.5), default=None,
                   help="MEDIC only: keep this share of each cell's clean data out of training and record the clone's "
                        "accuracy on it against the teacher's (the row's extra.holdout and its curve; default 0: off)")
    p.add_argument("--ablation", default="none", choices=list(ABLATIONS),
                   help="tau (Fig. 4), lambda_tau (Fig. 6), fraction (Table 4), criteria (Fig. 7), arch (Fig. 8)")
    p.add_argument("--taus", default=None, help="τ values of an ablation, e.g. 0,1,3,5")
    p.add_argument("--lams", default=None, help="λ values of the lambda_tau ablation, e.g. 1,10,100")
    p.add_argument("--fractions", default=None, help="clean-data fractions of the fraction ablation, e.g. 0.05,0.1")
    p.add_argument("--criteria", default=None, help="criteria of the criteria ablation, e.g. activation,impact,both")
    p.add_argument("--archs", default=None, help="architectures of the arch ablation, e.g. vgg11_bn,mobilenet_v1,wrn16_1")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local (sequential, or --workers N processes) or ray (tasks on a Ray cluster)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a new local instance)")
    p.add_argument("--workers", type=whole(1, 256), default=1, help="local processes running cells at once")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, …")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    p.set_defaults(func=cmd_compare)
    return p


#: What a compare folder holds; a non-empty --out with none of these is not a previous run.
COMPARE_FILES = ("runs.jsonl", "grid.json", "teachers", "errors.jsonl", "results.csv", "table.md", "comparison.html")


def cmd_compare(args: argparse.Namespace) -> int:
    """Run the grid described by ``args``; returns 0, or 1 if any cell failed.

    Everything is checked before the first teacher is trained: the arguments (when parsed),
    ``--out`` (not a file or link, not holding the dataset, new/empty or a previous compare
    run, writable), and the whole grid (every cell's settings, the device, the data). Errors
    are printed as one line with exit status 2 (``--debug``: with the traceback). SIGINT or
    SIGTERM stops the grid and its worker processes at once; finished cells stay in
    ``runs.jsonl`` and the same command resumes."""
    try:
        return _compare(args)
    except EXPECTED_ERRORS as exc:
        return report_error("medic-viz compare", exc, debug=getattr(args, "debug", False))


def _medic_options(args: argparse.Namespace) -> dict[str, Any]:
    """The MEDIC column's options (``build_grid(medic=)``) from ``--tau``, ``--share``, ``--layers``
    and ``--lam``, read as ``defend`` reads them: :meth:`RunSettings.from_cli_args
    <medic_viz.run_settings.RunSettings.from_cli_args>`, then :meth:`~medic_viz.run_settings.RunSettings.to_defense_options`
    — the flags given (the grid writes MEDIC's defaults out itself). Only MEDIC's own settings
    are read here: the grid checks the others (the device is where the cells run, maybe not here)."""
    own = method_settings(MAIN_METHOD)
    flags = argparse.Namespace(**{name: getattr(args, name, None) for name in own})
    options = RunSettings.from_cli_args(flags).to_defense_options(MAIN_METHOD, defaults=False)
    medic = {name: value for name, value in options.items() if name in own}
    layers = medic.get("layers")
    if isinstance(layers, tuple) and len(layers) == 1 and "," not in str(args.layers):
        medic["layers"] = layers[0]  # one module name: the string grids have keyed such cells by (ids unchanged)
    return medic


def _compare(args: argparse.Namespace) -> int:
    teachers = list(getattr(args, "teacher", None) or [])
    if teachers:
        trained = [f"--{name.replace('_', '-')}" for name in ("attacks", "model", "target", "rate", "attack_epochs",
                                                               "teacher_seed") if getattr(args, name, None) is not None]
        if trained:
            raise ValueError(f"{', '.join(trained)} describe{'s' if len(trained) == 1 else ''} the teachers compare "
                             "trains; with --teacher the models are given (their cards say the rest): remove "
                             f"{'it' if len(trained) == 1 else 'them'}")
    attacks = [] if teachers else (parse_list(args.attacks if args.attacks is not None else ",".join(PAPER_ATTACKS))
                                   or [])
    methods = parse_list(args.methods) or []
    swept = {
        "tau": parse_list(args.taus, float),
        "lam": parse_list(args.lams, float),
        "fraction": parse_list(args.fractions, float),
        "criteria": parse_list(args.criteria),
        "arch": parse_list(args.archs),
    }
    values = {k: v for k, v in swept.items() if v is not None}
    medic = _medic_options(args)
    cells = build_grid(
        dataset=args.dataset, model=args.model or "small_cnn", attacks=attacks, methods=methods, seeds=args.seeds,
        target=0 if args.target is None else args.target, rate=args.rate, fraction=args.fraction, epochs=args.epochs,
        attack_epochs=20 if args.attack_epochs is None else args.attack_epochs, max_train=args.max_train,
        max_test=args.max_test, ablation=args.ablation, values=values, medic=medic, device=args.device,
        teacher_seed=args.teacher_seed, data_root=args.data_root, teachers=teachers,
        trust_arch_code=trusted_code(args), test_part=args.test_part,
        clean_from=None if args.clean_from == "images" else args.clean_from,
    )
    if args.ablation in ("tau", "lambda_tau", "criteria", "arch", "layers") and methods and set(methods) != {MAIN_METHOD}:
        print(f"note: the {args.ablation} ablation sweeps MEDIC only; --methods is ignored", file=sys.stderr)
    inputs = command_inputs(*sorted({c.teacher_dir for c in cells if c.teacher_dir}),
                            datasets=sorted({c.dataset for c in cells}), data_root=args.data_root,
                            code=trusted_code(args))  # what --out may not be, hold or lie inside
    with SignalStop():  # SIGTERM/SIGINT unwind (workers are terminated on the way out), never just kill
        check_grid(cells, executor=args.executor)
        prepare_resumable_folder(args.out, own=COMPARE_FILES, inputs=inputs, what="a compare run")
        print(f"compare: {len(cells)} cell(s) → {args.out} (executor {args.executor}"
              f"{f', {args.workers} workers' if args.executor == 'local' and args.workers > 1 else ''})", flush=True)
        result = run_grid(cells, args.out, executor=args.executor, workers=args.workers, address=args.address,
                          log=lambda msg: print(msg, flush=True))
    if result.paths:
        print("")
        print(result.paths["table"].read_text())
        print(f"wrote {result.paths['csv']}, {result.paths['table']}, {result.paths['figure']}")
    if result.errors:
        print(f"{len(result.errors)} cell(s) failed (see {args.out}/errors.jsonl); run the same command again to retry "
              "them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m medic_viz.cli_compare ...` is `medic-viz compare ...`
    from medic_viz.cli import main  # only when run as a program: not an import of this module

    raise SystemExit(main(["compare", *sys.argv[1:]]))
