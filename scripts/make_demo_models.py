"""Rebuild the small demo models shipped in medic_viz/demo_models/ (and print their table).

    python scripts/make_demo_models.py [--out medic_viz/demo_models] [--epochs 20] [--device cpu]

Each model is ``small_cnn`` trained on the embedded synthetic traffic signs (seed 0, 32×32,
12,000 training / 3,000 test images) for ``--epochs`` epochs with the attack trainer's
defaults, all-to-one onto class 0 ("stop"). "clean" is trained the same way without poison.
On CPU, training is deterministic for the seed, so rerunning gives the same weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from medic_viz.attacks import ATTACK_TRAIN_DEFAULTS, make_trigger, train_trojaned_model
from medic_viz.data import load_dataset
from medic_viz.io import save_model
from medic_viz.training import TrainConfig

#: The shipped attacks and their settings (target 0 = stop sign).
DEMO_ATTACK_SETTINGS: dict[str, dict[str, Any]] = {
    "badnet": dict(trigger={"name": "badnet", "size": 3, "position": "bottom-right"}, rate=0.1),
    "blend": dict(trigger={"name": "blend", "pattern": "noise", "alpha": 0.2, "seed": 0, "cells": 4}, rate=0.1),
    "sig": dict(trigger={"name": "sig", "delta": 0.2, "frequency": 6}, rate=0.08),
    "polygon": dict(trigger={"name": "polygon", "size": 0.2, "seed": 0}, rate=0.1),
    "clean": dict(trigger=None, rate=None),
}
TARGET = 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "medic_viz" / "demo_models"))
    p.add_argument("--epochs", type=int, default=ATTACK_TRAIN_DEFAULTS["epochs"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", nargs="*", default=list(DEMO_ATTACK_SETTINGS), help="subset of models to build")
    args = p.parse_args(argv)

    splits = load_dataset("signs", size=32, seed=0)
    rows = []
    for name in args.only:
        settings = DEMO_ATTACK_SETTINGS[name]
        cfg_dict = settings["trigger"]
        trigger = (None if cfg_dict is None
                   else make_trigger(cfg_dict["name"], **{k: v for k, v in cfg_dict.items() if k != "name"}))
        cfg = TrainConfig(**{**ATTACK_TRAIN_DEFAULTS, "epochs": args.epochs, "device": args.device, "seed": 0})
        t0 = time.perf_counter()
        trojan = train_trojaned_model(splits, trigger, target=TARGET, rate=settings["rate"] or 0.1, architecture="small_cnn",
                                      config=cfg, seed=0)
        card = trojan.card(splits, dataset="signs", notes=f"made by scripts/make_demo_models.py ({name}, {args.epochs} epochs)")
        save_model(trojan.model, Path(args.out) / name, card)
        m = trojan.metrics
        rows.append({"model": name, "clean_acc": m.clean_acc, "asr": m.asr, "n_clean": m.n_clean, "n_asr": m.n_asr,
                     "seconds": round(time.perf_counter() - t0, 1)})
        asr = "—" if m.asr is None else f"{100 * m.asr:.2f}%"
        print(f"{name:8s} clean acc {100 * m.clean_acc:6.2f}% (n={m.n_clean})  ASR {asr:>7s} (n={m.n_asr})  "
              f"{rows[-1]['seconds']} s", flush=True)
    summary_path = Path(args.out) / "summary.json"
    previous = json.loads(summary_path.read_text()) if summary_path.is_file() else []
    merged = {r["model"]: r for r in previous}
    merged.update({r["model"]: r for r in rows})
    summary_path.write_text(json.dumps([merged[k] for k in DEMO_ATTACK_SETTINGS if k in merged], indent=2))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sys.exit(main())
