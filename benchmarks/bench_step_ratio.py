"""Time of one MEDIC training step divided by one plain supervised step of the same student
on the same batch, measured in one run (target ≤ 1.8 on CPU), with a breakdown of where a
MEDIC step's time goes.

    python benchmarks/bench_step_ratio.py [--models small_cnn wrn16_1] [--device cpu] [--repeats 30]

Prints a table and writes benchmarks/results/step_ratio_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from medic_viz.capture import LayerRecorder
from medic_viz.data import load_dataset
from medic_viz.defenses.base import fresh_copy
from medic_viz.defenses.medic import MedicObjective, compute_layer_stats
from medic_viz.importance import ImportanceOptions
from medic_viz.metrics import resolve_device
from medic_viz.models import build_model
from medic_viz.training import SupervisedObjective

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, dev, repeats: int) -> float:
    for _ in range(3):
        fn()
    _sync(dev)
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(dev)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def measure(model_name: str, device: str, repeats: int, batch: int = 64) -> dict:
    dev = resolve_device(device)
    splits = load_dataset("signs")
    clean = splits.train.subset(torch.arange(512))
    torch.manual_seed(0)
    teacher = build_model(model_name, splits.num_classes).to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    stats = compute_layer_stats(teacher, clean, device=dev)
    x = clean.floats(torch.arange(batch), dev)
    y = clean.labels[:batch].to(dev)

    def stepper(objective):
        opt = torch.optim.Adam(objective.model.parameters(), lr=1e-3)

        def step():
            total, _, _ = objective.loss(x, y)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()

        return step

    plain_student = fresh_copy(teacher, seed=1).to(dev)
    medic_student = fresh_copy(teacher, seed=1).to(dev)
    medic_obj = MedicObjective(teacher, medic_student, stats, ImportanceOptions(tau=5.0), lam=10.0)
    plain = stepper(SupervisedObjective(plain_student))
    medic = stepper(medic_obj)
    # Interleave the two measurements so drifts in machine load hit both alike.
    plain_t, medic_t = [], []
    for _ in range(3):
        plain_t.append(_time(plain, dev, repeats))
        medic_t.append(_time(medic, dev, repeats))
    t_plain, t_medic = statistics.median(plain_t), statistics.median(medic_t)

    # Breakdown of a MEDIC step.
    layers = medic_obj.layers

    def teacher_fwd():
        with torch.no_grad(), LayerRecorder(teacher, layers):
            teacher(x)

    def teacher_fwd_bwd():
        with LayerRecorder(teacher, layers, make_leaf=True) as rec:
            loss = F.cross_entropy(teacher(x), y, reduction="sum")
            torch.autograd.grad(loss, rec.tensors())

    def teacher_pass():
        medic_obj.teacher_pass(x, y)

    parts = {
        "teacher forward (hooked)": _time(teacher_fwd, dev, repeats),
        "teacher forward + backward to activations": _time(teacher_fwd_bwd, dev, repeats),
        "teacher pass incl. importance": _time(teacher_pass, dev, repeats),
    }
    return {
        "model": model_name,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "batch": batch,
        "hooked_layers": len(layers),
        "plain_step_ms": 1000 * t_plain,
        "medic_step_ms": 1000 * t_medic,
        "ratio": t_medic / t_plain,
        "breakdown_ms": {k: 1000 * v for k, v in parts.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="+", default=["small_cnn", "wrn16_1"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    rows = [measure(m, args.device, args.repeats) for m in args.models]
    print(f"{'model':14s} {'device':7s} {'plain ms':>9s} {'MEDIC ms':>9s} {'ratio':>6s}  breakdown (ms)")
    for r in rows:
        bd = ", ".join(f"{k} {v:.1f}" for k, v in r["breakdown_ms"].items())
        print(f"{r['model']:14s} {r['device']:7s} {r['plain_step_ms']:9.1f} {r['medic_step_ms']:9.1f} {r['ratio']:6.2f}  {bd}")
    RESULTS.mkdir(exist_ok=True)
    dev_name = rows[0]["device"].split(":")[0]
    meta = {"torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor(),
            "cuda": torch.cuda.get_device_name(0) if dev_name == "cuda" else None}
    (RESULTS / f"step_ratio_{dev_name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
