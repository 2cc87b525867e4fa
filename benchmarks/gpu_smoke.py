"""A one-minute check, on a GPU machine, that the grid's CUDA path runs end to end before a
lease's minutes go into real work: for each architecture of the architectures grid, a BadNet
teacher (1 epoch) and one MEDIC cell (1 epoch) on random 32×32 images, on ``cuda``, through
the grid runner with two worker processes — the same code as
``python -m benchmarks.architectures --device cuda`` —, and the BadNet, SIG and Polygon
presets of the first one through the teacher cache (``benchmarks.train_teachers``'s path), on
data that needs no transfer.

    python -m benchmarks.gpu_smoke [--device cuda] [--archs resnet18 …]

Prints one line per cell and the seconds it took; exits 1 when a cell failed (with its error).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ARCHITECTURES
from medic_viz.experiments.grid import build_grid
from medic_viz.experiments.presets import gtsrb_recipe
from medic_viz.experiments.runner import run_grid
from medic_viz.experiments.teachers import TeacherCache


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "random.npz"
        np.savez(data, x_train=rng.integers(0, 256, (640, 32, 32, 3), dtype=np.uint8), y_train=np.arange(640) % 4,
                 x_test=rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8), y_test=np.arange(128) % 4)
        cache = TeacherCache(Path(tmp) / "cache")
        for attack in ("badnet", "sig", "polygon"):
            start = time.perf_counter()
            try:
                cache.train(gtsrb_recipe(attack, args.archs[0], data, epochs=1, seed=1), device=args.device, log=None)
                state = "ok"
            except Exception as exc:  # noqa: BLE001 — reported, and the exit status says so
                failed[f"teacher {attack}"] = f"{type(exc).__name__}: {exc}"
                state = "FAILED"
            print(f"smoke teacher cache {attack} {args.archs[0]} on {args.device}: {state} "
                  f"in {time.perf_counter() - start:.1f} s", flush=True)
        for arch in args.archs:
            start = time.perf_counter()
            cells = build_grid(dataset=str(data), model=arch, attacks=["badnet"], methods=["medic"], seeds=1,
                               fraction=0.25, epochs=1, attack_epochs=1, device=args.device)
            result = run_grid(cells, Path(tmp) / arch, workers=2, log=None)
            failed.update(result.errors)
            state = "FAILED" if result.errors else "ok"
            print(f"smoke {arch} on {args.device}: {state} in {time.perf_counter() - start:.1f} s", flush=True)
    for cid, error in failed.items():
        print(f"  {cid}: {error}", file=sys.stderr)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
