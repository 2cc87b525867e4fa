"""Why MEDIC's default does not learn on the MobileNet-v1 teacher (issue 27 item 4): channels
whose activation is constant on the clean data ("dead": the teacher's σ at the ε floor, √1e-5 ≈
3.2e-3) get the factor 1/σ² ≈ 1e5 in the cloning loss, so a fresh student's first batches are
all about them. Per hooked layer of each BadNet evaluation teacher (5 % clean data, seed 0):
channels, dead channels (σ ≤ 2·√ε), and the share of the plain (τ = 0) cloning loss of one clean
batch, between the teacher and a fresh student, that comes from them; then the totals.
Diagnosis only: nothing is chosen from it.

    OMP_NUM_THREADS=1 python -m benchmarks.diag_dead_channels    # → benchmarks/results/dead_channels.md
"""

from __future__ import annotations

import argparse
import math

import torch

from benchmarks.common import DEAD_FACTOR, GTSRB, RESULTS, evaluation_teachers
from medic_viz.capture import resolve_layers, run_with_cache
from medic_viz.data import load_dataset
from medic_viz.data.arrays import clean_subset
from medic_viz.defenses.base import fresh_copy
from medic_viz.io import load_model
from medic_viz.stats import DEFAULT_EPS, compute_layer_stats

OUT = RESULTS / "dead_channels.md"


def layer_rows(folder: str, splits, fraction: float = 0.05, seed: int = 0, batch: int = 64) -> list[dict]:
    """Per hooked layer: channels, dead channels and the dead channels' share of the plain
    cloning loss ``Σ_neurons (1/m)((f* − f)/σ)²`` on one clean batch, teacher vs fresh student."""
    teacher, _card = load_model(folder)
    clean = clean_subset(splits.train, fraction, seed)
    layers = resolve_layers(teacher, "auto", input_shape=clean.image_shape)
    stats = compute_layer_stats(teacher, clean, layers, batch_size=256, device="cpu")
    student = fresh_copy(teacher, seed=seed).eval()
    x = clean.images[:batch].float() / 255
    with torch.no_grad():
        t_cache, s_cache = run_with_cache(teacher.eval(), x, layers), run_with_cache(student, x, layers)
    floor = DEAD_FACTOR * math.sqrt(DEFAULT_EPS)
    rows = []
    for name in layers:
        t, s, st = t_cache[name].float(), s_cache[name].float(), stats[name]
        shape = (1, -1) + (1,) * (t.ndim - 2)
        per_channel = (((t - s) / st.std.view(shape)) ** 2 / t[0].numel()).sum(dim=tuple(i for i in range(t.ndim) if i != 1))
        per_channel = per_channel / len(x)
        dead = st.std <= floor
        total = float(per_channel.sum())
        rows.append({"layer": name, "channels": int(st.std.numel()), "dead": int(dead.sum()),
                     "loss": total, "dead_share": float(per_channel[dead].sum()) / total if total > 0 else 0.0})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["wrn16_1", "mobilenet_v1"])
    args = parser.parse_args(argv)
    splits = load_dataset(str(GTSRB))
    lines = ["# Dead channels and the cloning loss (BadNet evaluation teachers, 5 % clean data)", "",
             "`python -m benchmarks.diag_dead_channels`. Dead: σ ≤ 2·√ε (constant on the clean data). "
             "Loss: the plain (τ = 0) cloning term of one clean batch of 64, teacher vs a fresh student "
             "(before any training), as the engine weighs it (1/σ²).", "",
             "| model | layers | channels | dead channels | cloning loss | from dead channels | worst layer (dead share) |",
             "|---|---|---|---|---|---|---|"]
    for arch in args.archs:
        found, _missing = evaluation_teachers(["badnet"], arch)
        if not found:
            print(f"note: no {arch} BadNet evaluation teacher; skipped")
            continue
        rows = layer_rows(found[0], splits)
        for r in rows:
            print(f"{arch:13s} {r['layer']:22s} {r['dead']:4d}/{r['channels']:<5d} loss {r['loss']:10.2f} "
                  f"dead share {100 * r['dead_share']:5.1f} %")
        loss = sum(r["loss"] for r in rows)
        dead_loss = sum(r["loss"] * r["dead_share"] for r in rows)
        worst = max(rows, key=lambda r: r["loss"] * r["dead_share"])
        lines.append(f"| {arch} | {len(rows)} | {sum(r['channels'] for r in rows)} | {sum(r['dead'] for r in rows)} | "
                     f"{loss:.1f} | {100 * dead_loss / loss:.1f} % | {worst['layer']} "
                     f"({worst['dead']}/{worst['channels']} dead, {100 * worst['dead_share']:.0f} %) |")
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
