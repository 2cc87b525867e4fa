"""Where a MEDIC training step spends its time: ``torch.profiler`` over a few steps of
MEDIC and of a plain step of the same student on the same batch (batch 64, 32×32 signs).

    OMP_NUM_THREADS=1 python -m benchmarks.profile_medic_step [--models small_cnn wrn16_1]
        [--threads 1 2] [--steps 10] [--fused reference compile]

Prints, per model and thread count, the top operators by self CPU time and a grouping of a
MEDIC step into phases (teacher forward, teacher backward to activations, importance, student
forward, cloning loss, backward, optimiser), and writes
``benchmarks/results/profile_medic_step.txt``.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import medic_viz.importance as definition
from medic_viz.capture import resolve_layers
from medic_viz.data import load_dataset
from medic_viz.defenses.base import fresh_copy
from medic_viz.defenses.medic import MedicObjective
from medic_viz.importance import ImportanceOptions
from medic_viz.models import build_model
from medic_viz.stats import compute_layer_stats
from medic_viz.training import SupervisedObjective

RESULTS = Path(__file__).resolve().parent / "results"


def _setup(model_name: str, batch: int = 64, layers: str = "auto"):
    splits = load_dataset("signs")
    clean = splits.train.subset(torch.arange(512))
    torch.manual_seed(0)
    teacher = build_model(model_name, splits.num_classes).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    stats = compute_layer_stats(teacher, clean, resolve_layers(teacher, layers), device="cpu")
    x = clean.floats(torch.arange(batch), "cpu")
    y = clean.labels[:batch]
    return teacher, stats, x, y


def _objective(teacher, stats, fused: str | None):
    student = fresh_copy(teacher, seed=1)
    kwargs: dict[str, Any] = {} if fused is None else {"fused": fused}  # "reference": the unfused definition
    return MedicObjective(teacher, student, stats, ImportanceOptions(tau=5.0), lam=10.0, **kwargs)


def _instrument(objective) -> None:
    """Mark the engine's phases for the profiler (wrapping what exists in this engine)."""
    def wrap(owner, attr, label):
        fn = getattr(owner, attr, None)
        if fn is None or getattr(fn, "_profiled", False):
            return

        def wrapped(*a, **k):
            with record_function(label):
                return fn(*a, **k)

        wrapped._profiled = True  # type: ignore[attr-defined]  # a mark on the function object
        setattr(owner, attr, wrapped)

    wrap(objective, "teacher_pass", "## teacher pass (fwd+bwd+importance)")
    for attr in ("layer_importance", "weighted_squared_error"):  # what fused="reference" runs per layer
        wrap(definition, attr, f"## {attr}")
    if hasattr(objective, "teacher_activations"):
        wrap(objective, "teacher_activations", "## teacher activations + gradients")
    clone_loss = getattr(objective, "clone_loss", None)
    if clone_loss is not None:
        wrap(clone_loss, "term", "## per-layer terms (forward)")


def _step_fn(objective):
    opt = torch.optim.Adam(objective.model.parameters(), lr=1e-3)

    def step(x, y):
        with record_function("## loss (forward)"):
            total, _, _ = objective.loss(x, y)
        opt.zero_grad(set_to_none=True)
        with record_function("## backward"):
            total.backward()
        with record_function("## optimiser"):
            opt.step()

    return step


def profile_model(model_name: str, threads: int, steps: int, fused: str | None, layers: str = "auto") -> str:
    torch.set_num_threads(threads)
    teacher, stats, x, y = _setup(model_name, layers=layers)
    medic = _objective(teacher, stats, fused)
    plain_obj = SupervisedObjective(fresh_copy(teacher, seed=1))
    _instrument(medic)
    medic_step, plain_step = _step_fn(medic), _step_fn(plain_obj)
    for _ in range(3):
        medic_step(x, y)
        plain_step(x, y)
    out = io.StringIO()
    t = {}
    for name, fn in (("plain", plain_step), ("medic", medic_step)):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn(x, y)
        t[name] = (time.perf_counter() - t0) / steps
    print(f"\n=== {model_name}, {threads} thread(s), batch {x.shape[0]}, engine {fused or 'default'}, "
          f"{len(stats)} hooked layers: "
          f"plain {1000 * t['plain']:.1f} ms, MEDIC {1000 * t['medic']:.1f} ms, ratio {t['medic'] / t['plain']:.2f} "
          "(unprofiled means) ===", file=out)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(steps):
            medic_step(x, y)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=48), file=out)
    # Phases marked with record_function (## …) — total CPU time per step.
    phases = {e.key: e.cpu_time_total / steps / 1000 for e in prof.key_averages()
              if e.key.startswith("## ") and "CompiledFxGraph" not in e.key}
    print("phases (ms per step, inclusive): " + ", ".join(f"{k[3:]} {v:.1f}" for k, v in sorted(phases.items())), file=out)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="+", default=["small_cnn", "wrn16_1"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--fused", nargs="+", default=["reference", "compile"],
                   help="MedicConfig.fused values to profile: reference (the unfused definition), auto, eager, compile")
    p.add_argument("--layers", default="auto", help="hooked layers (default: MEDIC's default 'auto'; 'all' = as before)")
    p.add_argument("--out", default=str(RESULTS / "profile_medic_step.txt"))
    args = p.parse_args(argv)
    text = "".join(profile_model(m, t, args.steps, f, args.layers) for t in args.threads for m in args.models for f in args.fused)
    print(text)
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
