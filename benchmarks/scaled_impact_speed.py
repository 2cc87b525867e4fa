"""Why were the ``impact="scaled"`` cells ~1.4× slower than the default's? (BENCHMARKS.md §6,
rule 6 B.) A profile of two MEDIC epochs on a GTSRB WRN-16-1 teacher (one thread) put 16 % of
the scaled run's CPU time in ``aten::std`` — the per-sample spread that divides eq.(3)'s score
(:func:`medic_viz.importance.scaled_impact_divisor`), 4.6 ms per call against 0.2–0.7 ms for a
two-pass mean-and-norm. This script keeps that evidence, measured in one run:

1. the divisor alone, ``Tensor.std`` (the form the rule 6 B cells ran with) against the
   library's, at the shapes of WRN-16-1's hooked layers (batch 128; contiguous and
   channels-last), in ms per call;
2. one MEDIC training step (teacher forward + backward, student step) with the signed score
   (the default), the scaled score with the library's divisor, and with ``Tensor.std`` put back,
   each divided by the signed step's time.

    python -m benchmarks.scaled_impact_speed [--threads 1] [--rounds 5] [--repeats 8]

Prints the tables and writes ``benchmarks/results/scaled_impact_speed/table.md`` and
``runs.json``. Ratios only (a CPU shared with other jobs moves absolute times); the variants
are interleaved within each round and the table gives medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import Counter
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterator, Literal

import torch

from benchmarks.common import GTSRB, RESULTS, TEACHERS
from medic_viz import importance
from medic_viz.capture import LayerRecorder, resolve_layers
from medic_viz.data import load_dataset
from medic_viz.data.arrays import clean_subset
from medic_viz.defenses.base import fresh_copy
from medic_viz.defenses.medic import MedicObjective
from medic_viz.importance import ImportanceOptions
from medic_viz.io import load_model
from medic_viz.stats import compute_layer_stats

OUT = RESULTS / "scaled_impact_speed"
TEACHER = "sig_wrn16_1_e30_s0"


def std_divisor(g: torch.Tensor) -> torch.Tensor:
    """The divisor as the rule 6 B cells computed it: ``Tensor.std`` of each flattened sample."""
    spread = g.reshape(g.shape[0], -1).float().std(1, unbiased=False).clamp_min(1e-30)
    return spread.reshape((-1,) + (1,) * (g.ndim - 1)).to(g.dtype)


@contextmanager
def divisor(fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """The engine computes the divisor with ``fn`` inside the block (always restored)."""
    kept = importance.scaled_impact_divisor
    importance.scaled_impact_divisor = fn  # type: ignore[assignment]
    try:
        yield
    finally:
        importance.scaled_impact_divisor = kept


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` calls, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, repeats: int) -> dict[str, list[float]]:
    """Per variant, its median time in each of ``rounds`` rounds (the variants one after another)."""
    out: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            out[name].append(median_seconds(fn, repeats))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = TEACHERS.root / TEACHER
    if not folder.is_dir() or not GTSRB.is_file():
        raise SystemExit(f"needs the committed teacher {folder} and the GTSRB arrays {GTSRB}")
    teacher, _ = load_model(folder)
    for p in teacher.parameters():
        p.requires_grad_(False)
    clean = clean_subset(load_dataset(GTSRB).train, 0.05, seed=0)
    layers = resolve_layers(teacher, "auto")
    stats = compute_layer_stats(teacher, clean, layers)
    x = clean.floats(torch.arange(args.batch))
    y = clean.labels[: args.batch]

    with torch.no_grad(), LayerRecorder(teacher, layers) as rec:
        teacher(x)
        layers_of_shape = Counter(tuple(t.shape) for t in rec.tensors())
    rows: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(0)
    for shape, count in layers_of_shape.items():
        g = torch.randn(shape, generator=gen) * 1e-3
        for layout, t in (("contiguous", g), ("channels-last", g.contiguous(memory_format=torch.channels_last))):
            times = interleaved({"std": partial(std_divisor, t), "library": partial(importance.scaled_impact_divisor, t)},
                                args.rounds, args.repeats * 4)
            rows.append({"shape": list(shape), "n_layers": count, "layout": layout,
                         "std_ms": 1e3 * statistics.median(times["std"]),
                         "library_ms": 1e3 * statistics.median(times["library"])})

    def step_of(impact: Literal["signed", "scaled"]) -> Callable[[], None]:
        objective = MedicObjective(teacher, fresh_copy(teacher, seed=1), stats, ImportanceOptions(tau=5.0, impact=impact),
                                   lam=3.0)
        opt = torch.optim.Adam(objective.model.parameters(), lr=1e-3)

        def step() -> None:
            total, _, _ = objective.loss(x, y)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()

        return step

    signed, scaled = step_of("signed"), step_of("scaled")

    def scaled_with_std() -> None:
        with divisor(std_divisor):
            scaled()

    steps = interleaved({"signed": signed, "scaled": scaled, "scaled, Tensor.std": scaled_with_std},
                        args.rounds, args.repeats)
    step_rows = [{"variant": k, "ms": 1e3 * statistics.median(v),
                  "ratio": statistics.median(a / b for a, b in zip(v, steps["signed"]))} for k, v in steps.items()]

    md = [f"# The scaled impact's divisor and step time ({platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s), batch {args.batch}, {TEACHER}, {len(layers)} hooked layers)", "",
          "| activation shape | layers | layout | `Tensor.std` ms | library ms | speed-up |", "|---|---|---|---|---|---|"]
    md += [f"| {'×'.join(map(str, r['shape'][1:]))} | {r['n_layers']} | {r['layout']} | {r['std_ms']:.2f} | "
           f"{r['library_ms']:.2f} | {r['std_ms'] / r['library_ms']:.1f}× |" for r in rows]
    md += ["", "| MEDIC step (λ = 3, τ = 5) | ms | ÷ signed step |", "|---|---|---|"]
    md += [f"| {r['variant']} | {r['ms']:.0f} | {r['ratio']:.2f} |" for r in step_rows]
    text = "\n".join(md) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "table.md").write_text(text)
    (OUT / "runs.json").write_text(json.dumps({"threads": args.threads, "batch": args.batch, "teacher": TEACHER,
                                               "divisor": rows, "step": step_rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
