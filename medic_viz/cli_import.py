"""``medic-viz import``: a checkpoint made elsewhere → a medic_viz model folder.

    medic-viz import --checkpoint WRN-16-1-S-model_best.pth.tar --arch wrn16_1 --dataset cifar10 \\
        --data-root data --normalize none --target 5 --trigger "badnet:size=3,margin=0" --out models/medic-badnet

Reads the checkpoint safely (safetensors, or ``torch.load(weights_only=True)``), loads it
strictly into the architecture, measures clean accuracy (and ASR when a trigger is given) on
the dataset's test split, and writes ``model.safetensors``, ``card.json`` and ``result.json``
into ``--out``; ``defend`` and the notebooks take that folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from medic_viz.attacks.registry import attack_evaluator
from medic_viz.attacks.spec import SPEC_HELP, parse_trigger_spec
from medic_viz.cards import ModelCard
from medic_viz.cli_args import whole as _whole
from medic_viz.cli_common import MIN_IMAGE_SIZE, add_out as _add_out, prepare as _prepare
from medic_viz.data import load_dataset
from medic_viz.data_identity import dataset_record
from medic_viz.device import resolve_device
from medic_viz.importer import import_model, is_code_architecture, parse_normalize
from medic_viz.io import save_model
from medic_viz.limits import MAX_CLASSES
from medic_viz.outdir import OutputFolder

__all__ = ["add_import_parser", "cmd_import"]

_ARCH_HELP = ("zoo model (small_cnn, wrn16_1, preact_resnet18, resnet18, resnet34, vgg11_bn, mobilenet_v1) or "
              "package.module:callable for an architecture of your own. The latter IMPORTS AND RUNS YOUR CODE "
              "(the module, then callable(num_classes=...)); the current folder is on the import path. Use it "
              "only with code you trust; `defend` then needs --trust-arch-code to rebuild the model")


def add_import_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "import", help="turn a checkpoint made elsewhere into a model folder (measures clean accuracy and ASR)",
        description="Import a trojaned model trained elsewhere. The checkpoint is read without executing "
                    "anything: safetensors, or torch.load(weights_only=True); a whole pickled model is refused. "
                    "Layouts: a bare state dict, {'state_dict': ...} (with epoch, accuracies, optimizer ...), "
                    "{'model': ...}, 'module.'-prefixed keys (DataParallel).")
    p.add_argument("--checkpoint", required=True, help="weights file: .pt, .pth, .pth.tar, .safetensors")
    p.add_argument("--arch", required=True, help=_ARCH_HELP)
    p.add_argument("--num-classes", type=_whole(1, MAX_CLASSES), default=None,
                   help="classes of the model (default: the dataset's)")
    p.add_argument("--input-size", type=_whole(MIN_IMAGE_SIZE, 1024), default=32,
                   help="image side the model was trained at (default 32)")
    p.add_argument("--normalize", default="none",
                   help="normalisation the model expects on [0, 1] images: none (default), cifar10, imagenet, "
                        "mnist, half, MEAN,STD, or one mean and one std per channel (M1,M2,M3,S1,S2,S3)")
    p.add_argument("--dataset", default="signs",
                   help="data set it was trained on: signs, cifar10, gtsrb, mnist (with --data-root), or an .npz file")
    p.add_argument("--data-root", default=None, help="folder for torchvision datasets")
    p.add_argument("--download", action="store_true", help="download a torchvision dataset into --data-root")
    p.add_argument("--target", type=_whole(0), default=None, help="the backdoor's target class, if known")
    p.add_argument("--trigger", default=None, help=f"the trigger, if known (needs --target): {SPEC_HELP}")
    _add_out(p, "output folder (model.safetensors, card.json, result.json)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    return p


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cmd_import(args: argparse.Namespace) -> int:
    code = args.arch if is_code_architecture(args.arch) else None  # its file, found without importing it
    signals, out = _prepare(args, args.checkpoint, code=code, trigger=args.trigger)  # --out checked before any work
    with signals, out:
        return _import(args, out)


def _import(args: argparse.Namespace, out: OutputFolder) -> int:
    start = time.perf_counter()
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: file not found")
    if args.trigger is not None and args.target is None:
        raise ValueError("--trigger needs --target (the class the trigger leads to) to measure ASR")
    if args.target is not None and args.trigger is None:
        raise ValueError("--target needs --trigger (the trigger that leads to it); give both trigger and target "
                         "(or neither)")
    # the spec first: a typo should not cost a dataset load
    trigger = parse_trigger_spec(args.trigger, image_size=args.input_size) if args.trigger is not None else None

    splits = load_dataset(args.dataset, root=args.data_root, download=args.download, size=args.input_size, seed=0)
    channels, height, width = splits.image_shape
    if (height, width) != (args.input_size, args.input_size):
        raise ValueError(f"{splits.train.name} has {height}x{width} images but --input-size is {args.input_size}; "
                         "give the size the model was trained at and a dataset of that size")
    normalize = parse_normalize(args.normalize, channels)
    model, card = import_model(checkpoint, args.arch, args.num_classes or splits.num_classes,
                               input_size=args.input_size, in_channels=channels, normalize=normalize, device="cpu")
    if card.num_classes != splits.num_classes:
        raise ValueError(f"--num-classes {card.num_classes} but {splits.train.name} has {splits.num_classes} classes; "
                         "import the model with the dataset it was trained on")
    if args.target is not None and not 0 <= args.target < splits.num_classes:
        raise ValueError(f"--target {args.target} is out of range: {splits.train.name} has classes "
                         f"0..{splits.num_classes - 1}")

    device = resolve_device(args.device)
    evaluator = attack_evaluator(trigger, splits.test, args.target if trigger is not None else None, device=device)
    metrics = evaluator(model.to(device))
    model = model.cpu()

    card.classes = list(splits.classes)
    data = dataset_record(args.dataset)  # a file by its resolved path and SHA-256, never a relative path
    card.dataset, card.dataset_sha256 = data["dataset"], data["dataset_sha256"]
    card.attack = trigger.to_config() if trigger is not None else None
    card.target_class = args.target
    card.metrics = {k: v for k, v in metrics.as_dict().items() if v is not None}
    card.notes = f"imported from {checkpoint.name} with `medic-viz import`"
    card.extra["imported_from"] = {"file": checkpoint.name, "sha256": _sha256(checkpoint)}
    if args.trigger is not None:
        card.extra["trigger_spec"] = args.trigger
    card = ModelCard.from_dict(card.to_dict())  # the fields set above, validated as any card's
    save_model(model, out.path, card)
    result = {"clean_acc": metrics.clean_acc, "n_clean": metrics.n_clean, "asr": metrics.asr, "n_asr": metrics.n_asr,
              "architecture": args.arch, "num_classes": card.num_classes, "input_size": args.input_size,
              "normalize": card.normalize, **data, "target": args.target,
              "trigger": args.trigger, "checkpoint": str(checkpoint), "seconds": round(time.perf_counter() - start, 2)}
    (out.path / "result.json").write_text(json.dumps(result, indent=2))
    target_dir = out.publish()
    asr = (f"ASR {100 * metrics.asr:.2f}% (n={metrics.n_asr})" if metrics.asr is not None
           else "ASR cannot be measured (no --trigger given)")
    print(f"imported {checkpoint.name} as {args.arch} ({card.num_classes} classes, {args.input_size} px, "
          f"normalize {args.normalize})", flush=True)
    print(f"clean accuracy {100 * metrics.clean_acc:.2f}% (n={metrics.n_clean}) on the {splits.test.name} test split, "
          f"{asr}", flush=True)
    print(f"wrote {target_dir / 'model.safetensors'}, {target_dir / 'card.json'}, {target_dir / 'result.json'}",
          flush=True)
    return 0
