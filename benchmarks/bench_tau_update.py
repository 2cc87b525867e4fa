"""Time of one τ update of every importance map of one input, from cache (target ≤ 50 ms on CPU,
so that a τ slider feels instant).

    python -m benchmarks.bench_tau_update [--models small_cnn wrn16_1] [--repeats 50] [--threads 1]

For each model: statistics from 512 clean images of the embedded signs data, then
:func:`medic_viz.analysis.analyze_input` on one test image with the BadNet trigger (the only
forward/backward passes), then, for a new τ at each repeat (no memoised result can be reused):

- ``importance_ms``: ``analysis.importance(τ, c)`` for c = activation, impact, combined, every
  hooked layer — the per-neuron tensors (eqs. 2–4);
- ``maps_ms``: ``analysis.all_maps(τ)`` — those tensors plus the 2-D maps of every layer that a
  figure redraw needs (mean |·| over channels).

Each is the median over ``--repeats`` updates, after one warm-up at τ ∉ the timed set. Prints a
table and writes benchmarks/results/tau_update_cpu.json. Weights are freshly initialised
(timing does not depend on them).

``--workbench`` also times the whole workbench view (``workbench_app`` on the shipped BadNet demo
model, after a 1-epoch run so that the before/after figure is drawn too): ``workbench_ms`` is one
move of its τ slider, i.e. the picker's, explorer's and before/after figures redrawn and the
launcher's slider moved (needs the ``notebooks`` extra; no browser: the time spent in the kernel).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from medic_viz.analysis import analyze_input
from medic_viz.attacks.registry import make_trigger
from medic_viz.data import load_dataset
from medic_viz.models import build_model
from medic_viz.stats import compute_layer_stats
from medic_viz.widgets.apps import workbench_app
from medic_viz.widgets.state import WorkbenchState

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS = 50.0


def _median_ms(fn, taus: list[float]) -> float:
    samples = []
    for tau in taus:
        t = time.perf_counter()
        fn(tau)
        samples.append(1000.0 * (time.perf_counter() - t))
    return statistics.median(samples)


def measure(model_name: str, repeats: int) -> dict:
    splits = load_dataset("signs")
    clean = splits.train.subset(torch.arange(512))
    torch.manual_seed(0)
    model = build_model(model_name, splits.num_classes).eval()
    stats = compute_layer_stats(model, clean, device="cpu")
    image, label = splits.test.floats(torch.tensor([0]))[0], int(splits.test.labels[0])
    t = time.perf_counter()
    analysis = analyze_input(model, image, make_trigger("badnet"), label, stats=stats)  # type: ignore[arg-type]  # a one-image trigger (no composite attack here)
    build_ms = 1000.0 * (time.perf_counter() - t)
    analysis.all_maps(0.123)  # warm-up (also reduces the τ-independent maps once)
    n_neurons = sum(analysis.activations["clean"][n].numel() for n in analysis.layers)
    taus_a = [1.0 + 0.01 * i for i in range(repeats)]
    taus_b = [2.0 + 0.01 * i for i in range(repeats)]

    def importance(tau: float) -> None:
        for crit in ("activation", "impact", "combined"):
            analysis.importance(tau, crit)

    return {
        "model": model_name,
        "layers": len(analysis.layers),
        "neurons": n_neurons,
        "analyze_input_ms": round(build_ms, 1),
        "importance_ms": round(_median_ms(importance, taus_a), 2),
        "maps_ms": round(_median_ms(analysis.all_maps, taus_b), 2),
        "repeats": repeats,
    }


def measure_workbench(repeats: int) -> dict:
    state = WorkbenchState.from_demo("badnet", epochs=1, device="cpu", eval_images=100)
    app = workbench_app(state)
    state.launch()
    state.wait()
    assert state.compared is not None, "the run did not end normally"

    def move(tau: float) -> None:
        app.tau.value = tau

    move(0.123)  # warm-up
    return {"model": "badnet demo (small_cnn)", "views": "picker + explorer + before/after + launcher slider",
            "workbench_ms": round(_median_ms(move, [3.0 + 0.01 * i for i in range(repeats)]), 2), "repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["small_cnn", "wrn16_1"])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, a laptop-like worst case)")
    p.add_argument("--workbench", action="store_true", help="also time one τ move of the whole workbench view")
    p.add_argument("--out", default=str(RESULTS / "tau_update_cpu.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [measure(m, args.repeats) for m in args.models]
    print(f"τ update of all importance maps of one input, CPU, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'model':10s} {'layers':>6s} {'neurons':>8s} {'importance (ms)':>16s} {'+ 2-D maps (ms)':>16s}  "
          f"target ≤ {TARGET_MS:g} ms")
    for r in rows:
        ok = "ok" if r["maps_ms"] <= TARGET_MS else "SLOW"
        print(f"{r['model']:10s} {r['layers']:6d} {r['neurons']:8d} {r['importance_ms']:16.2f} {r['maps_ms']:16.2f}  {ok}")
    workbench = measure_workbench(args.repeats) if args.workbench else None
    if workbench is not None:
        ok = "ok" if workbench["workbench_ms"] <= TARGET_MS else "SLOW"
        print(f"workbench view, one τ move ({workbench['views']}): {workbench['workbench_ms']:.2f} ms  {ok}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "tau_update",
        "target_ms": TARGET_MS,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "results": rows,
        **({"workbench": workbench} if workbench is not None else {}),
    }, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
