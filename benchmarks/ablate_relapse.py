"""Why does the MEDIC clone re-learn the backdoor late in training ("relapse"), and what stops it?

Research script for issue 9: runs MEDIC variants on one trojaned teacher and records the
per-epoch clean accuracy and ASR (live, on a fixed subset of the test set), then the final
numbers on the whole test set. Each variant is one JSON file under ``--out``; existing files
are skipped, so the script resumes after an interruption.

    python -m benchmarks.ablate_relapse --teacher benchmarks/results/gtsrb_teachers/badnet_small_cnn_e15_s0 \
        --variants convbn convbn_floor1 convbn_sgd --epochs 60 --threads 1

Variants are defined in ``VARIANTS`` below (name → settings). Settings:
``layers``: "all" (every conv/norm/linear, logits included) or "conv+bn" (the authors' command);
``floor``: zero the weights of neurons whose MEDIC weight is below ``floor`` × uniform (1/m);
``share``: per-layer τ calibrated on clean data so each layer's effective number of matched
neurons is ``share`` of its neurons (replaces the global τ);
``lam_decay``: λ decays linearly to 0 over the second half of training;
``optimizer``/``lr``: the student's optimiser.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from benchmarks.common import GTSRB, RESULTS
from medic_viz.capture import hookable_layers
from medic_viz.data import clean_subset, load_dataset
from medic_viz.data.arrays import iterate_batches
from medic_viz.defenses.base import fresh_copy
from medic_viz.defenses.medic import MedicObjective
from medic_viz.fused import FusedCloneLoss
from medic_viz.importance import ImportanceOptions, effective_neurons, layer_importance, weighted_squared_error
from medic_viz.io import load_model
from medic_viz.metrics import Evaluator
from medic_viz.pipeline import trigger_of
from medic_viz.stats import compute_layer_stats
from medic_viz.training import TrainConfig, train

VARIANTS: dict[str, dict] = {
    "all": {"layers": "all"},
    "convbn": {"layers": "conv+bn"},
    "convbn_floor1": {"layers": "conv+bn", "floor": 1.0},
    "convbn_floor2": {"layers": "conv+bn", "floor": 2.0},
    "convbn_sgd": {"layers": "conv+bn", "optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4},
    "convbn_share5": {"layers": "conv+bn", "share": 0.05},
    "convbn_share2": {"layers": "conv+bn", "share": 0.02},
    "convbn_share1": {"layers": "conv+bn", "share": 0.01},
    "convbn_lamdecay": {"layers": "conv+bn", "lam_decay": True},
    "convbn_tau10": {"layers": "conv+bn", "tau": 10.0},
    "convbn_tau20": {"layers": "conv+bn", "tau": 20.0},
    "convbn_tau0": {"layers": "conv+bn", "tau": 0.0},
    # Adam normalises each parameter's step, so a neuron's tiny importance weight does not slow
    # its matching once the clean loss has converged; SGD keeps the weights' scale.
    "convbn_share1_sgd": {"layers": "conv+bn", "share": 0.01, "optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4},
    "convbn_share1_floor1": {"layers": "conv+bn", "share": 0.01, "floor": 1.0},
    "convbn_sgd_tau5": {"layers": "conv+bn", "optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4},
    "convbn_share1_lamdecay": {"layers": "conv+bn", "share": 0.01, "lam_decay": True},
    "scratch": {"layers": "conv+bn", "lam": 0.0},
    # which layers carry the backdoor back (small_cnn names): post-ReLU outputs only; no last block
    "share1_relu": {"layers": ["relu1", "relu2", "relu3", "relu4"], "share": 0.01},
    "share1_no4": {"layers": ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"], "share": 0.01},
    "share1_only4": {"layers": ["conv4", "bn4"], "share": 0.01},
    "tau5_no4": {"layers": ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]},
    "share5_no4": {"layers": ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"], "share": 0.05},
    "share05_no4": {"layers": ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"], "share": 0.005},
    "share1_no4_lam3": {"layers": ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"], "share": 0.01, "lam": 3.0},
    "share1_no34": {"layers": ["conv1", "bn1", "conv2", "bn2"], "share": 0.01},
    "share1_no14": {"layers": ["conv2", "bn2", "conv3", "bn3"], "share": 0.01},
    "share1_no14_lam3": {"layers": ["conv2", "bn2", "conv3", "bn3"], "share": 0.01, "lam": 3.0},
    "all_sgd": {"layers": "all", "optimizer": "sgd", "lr": 0.03, "weight_decay": 5e-4},
}


def layer_set(model: torch.nn.Module, preset) -> list[str]:
    if isinstance(preset, list):
        return list(preset)
    if preset == "all":
        return hookable_layers(model)
    if preset == "conv+bn":
        return hookable_layers(model, ("conv", "norm"))
    raise ValueError(preset)


class VariantObjective(MedicObjective):
    """MEDIC's loss as the library defines it (``fused="reference"``:
    :func:`medic_viz.importance.layer_clone_loss`, τ per layer by ``set_layer_taus``), with one
    research variant: a weight floor (weights below ``floor`` × uniform are zeroed)."""

    def __init__(self, *args, floor: float = 0.0, **kw) -> None:
        super().__init__(*args, fused="reference", **kw)
        self.floor = floor
        self.kept: dict[str, list[float]] = {n: [] for n in self.layers}
        if floor > 0:
            taus = self.clone_loss.taus
            self.clone_loss = _FlooredCloneLoss(self)
            self.set_layer_taus(taus)

    def floored(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """``w`` with the weights below ``floor`` × uniform (share of the layer's sum) zeroed."""
        if self.floor <= 0:
            return w
        m = w[0].numel()
        norm = w.reshape(w.shape[0], -1)
        norm = norm / norm.sum(1, keepdim=True)
        keep = (norm * m >= self.floor).reshape(w.shape)
        self.kept[name].append(float(keep.float().mean()))
        return w * keep

    def teacher_pass(self, x, y, *, divide_by_variance=False):
        acts, weights = super().teacher_pass(x, y)  # the library's weights, τ per layer
        weights = [self.floored(n, w) for n, w in zip(self.layers, weights)]
        if divide_by_variance:
            weights = [w / (self.stats[n].std.float() ** 2).reshape((1, -1) + (1,) * (w.ndim - 2))
                       for n, w in zip(self.layers, weights)]
        return acts, weights


class _FlooredCloneLoss(FusedCloneLoss):
    """The per-layer term of :func:`medic_viz.importance.layer_clone_loss` with floored weights."""

    def __init__(self, objective: VariantObjective) -> None:
        super().__init__(objective.stats, objective.options, "reference")
        self.objective = objective

    def term(self, name, student, teacher, grad):
        opts = self.objective.layer_options[name]
        w = self.objective.floored(
            name, layer_importance(teacher, grad if opts.needs_gradients else None, self.stats[name], opts))
        w = w / (self.stats[name].std.float() ** 2).reshape((1, -1) + (1,) * (w.ndim - 2))
        return weighted_squared_error(student, teacher, w)


def calibrate_taus(objective: VariantObjective, clean, share: float, *, batches: int = 4,
                   batch_size: int = 64) -> dict[str, float]:
    """Per layer, the τ whose weights match ``share`` of the layer's neurons (exp-entropy), found by
    bisection on log τ over a few clean batches. Uses the teacher and clean data only."""
    xs, ys = [], []
    for i, (x, y) in enumerate(iterate_batches(clean, batch_size, shuffle=True, generator=torch.Generator().manual_seed(123))):
        if i >= batches:
            break
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    taus = {}
    for n in objective.layers:
        lo, hi = math.log(0.05), math.log(500.0)
        for _ in range(20):
            mid = (lo + hi) / 2
            objective.set_layer_taus({k: (math.exp(mid) if k == n else 1.0) for k in objective.layers})
            _, w = objective.teacher_pass(x, y)
            idx = objective.layers.index(n)
            frac = float(effective_neurons(w[idx]).mean()) / w[idx][0].numel()
            if frac > share:
                lo = mid
            else:
                hi = mid
        taus[n] = math.exp((lo + hi) / 2)
    objective.set_layer_taus(taus)
    return taus


def run_variant(name: str, settings: dict, args, splits, teacher, card, trigger, target) -> dict:
    torch.manual_seed(args.seed)
    clean = clean_subset(splits.train, args.fraction, seed=args.seed)
    layers = layer_set(teacher, settings.get("layers", "all"))
    t = fresh_copy(teacher, seed=0)  # placeholder to get a frozen copy cheaply
    teacher_frozen = __import__("copy").deepcopy(teacher).eval()
    for p in teacher_frozen.parameters():
        p.requires_grad_(False)
    del t
    student = fresh_copy(teacher, seed=args.seed)
    stats = compute_layer_stats(teacher_frozen, clean, layers, device="cpu")
    tau = float(settings.get("tau", args.tau))
    opts = ImportanceOptions(tau=tau)
    lam = float(settings.get("lam", args.lam))
    obj = VariantObjective(teacher_frozen, student, stats, opts, lam, floor=float(settings.get("floor", 0.0)))
    taus = None
    if "share" in settings:
        taus = calibrate_taus(obj, clean, float(settings["share"]))
    evaluator = Evaluator(splits.test, trigger, target, max_images=args.live_images, seed=0, device="cpu")
    cfg = TrainConfig(
        epochs=args.epochs,
        device="cpu",
        seed=args.seed,
        progress=False,
        optimizer=settings.get("optimizer", "adam"),
        lr=float(settings.get("lr", 1e-2)),
        weight_decay=float(settings.get("weight_decay", 1e-4)),
    )
    curve = []

    def on_event(ev):
        if ev.kind in ("start", "epoch"):
            curve.append({"epoch": ev.epoch, "acc": ev.clean_acc, "asr": ev.asr, "ce": ev.losses.get("ce"),
                          "clone": ev.losses.get("clone"), "layer_losses": ev.layer_losses, "seconds": round(ev.seconds, 1)})
            if args.partial_path is not None:
                args.partial_path.write_text(json.dumps({"variant": name, "settings": settings, "teacher": str(args.teacher),
                                                         "seed": args.seed, "partial": True, "curve": curve}, indent=1))
            if ev.kind == "epoch" and ev.epoch % 10 == 0:
                print(f"  [{name}] epoch {ev.epoch}: acc {ev.clean_acc:.3f} asr {ev.asr:.3f} ce {ev.losses.get('ce', 0):.3f} "
                      f"clone {ev.losses.get('clone', 0):.3f} ({ev.seconds:.0f}s)", flush=True)
            if settings.get("lam_decay") and ev.kind == "epoch":
                half = args.epochs / 2
                obj.lam = lam * (1.0 if ev.epoch < half else max(0.0, (args.epochs - ev.epoch) / half))

    t0 = time.perf_counter()
    res = train(obj, clean, cfg, evaluator=evaluator, callbacks=[on_event], label=name)
    final = Evaluator(splits.test, trigger, target, device="cpu")(res.model)
    kept = {n: (sum(v) / len(v) if v else None) for n, v in obj.kept.items()}
    return {
        "variant": name,
        "settings": settings,
        "teacher": str(args.teacher),
        "seed": args.seed,
        "tau": tau,
        "taus": taus,
        "lam": float(settings.get("lam", args.lam)),
        "layers": layers,
        "epochs": args.epochs,
        "n_clean": len(clean),
        "final_acc": final.clean_acc,
        "final_asr": final.asr,
        "n_test": final.n_clean,
        "n_asr": final.n_asr,
        "kept_share": kept,
        "seconds": round(time.perf_counter() - t0, 1),
        "curve": curve,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--dataset", default=str(GTSRB))
    p.add_argument("--variants", nargs="+", default=["convbn", "convbn_floor1"])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--tau", type=float, default=5.0)
    p.add_argument("--lam", type=float, default=10.0)
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--live-images", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "relapse"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    teacher, card = load_model(args.teacher)
    ds = card.dataset if args.dataset == "card" else args.dataset
    splits = load_dataset(ds)  # type: ignore[arg-type]  # a teacher's card names its dataset
    trigger, target = trigger_of(card)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tname = Path(args.teacher).name
    for v in args.variants:
        path = out / f"{tname}__{v}__e{args.epochs}_s{args.seed}.json"
        if path.is_file():
            r = json.loads(path.read_text())
            print(f"{v}: done before — acc {r['final_acc']:.4f} asr {r['final_asr']:.4f}")
            continue
        print(f"{tname}: variant {v} {VARIANTS[v]}", flush=True)
        args.partial_path = path.with_name(path.stem + ".partial")
        r = run_variant(v, VARIANTS[v], args, splits, teacher, card, trigger, target)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(r, indent=1))
        tmp.replace(path)
        args.partial_path.unlink(missing_ok=True)
        asr_curve = " ".join(f"{c['asr']*100:.0f}" for c in r["curve"][::10])
        print(f"{v}: acc {r['final_acc']:.4f} asr {r['final_asr']:.4f} ({r['seconds']:.0f}s); "
              f"ASR every 10 epochs: {asr_curve}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
