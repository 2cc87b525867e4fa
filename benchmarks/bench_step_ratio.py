"""Time of one MEDIC training step divided by one plain supervised step of the same student on
the same batch (target ≤ 1.8), for the unfused definition (``fused="reference"``) and the fused one — eager and
compiled — measured in one run, with a breakdown of where a MEDIC step's time goes.

    python -m benchmarks.bench_step_ratio [--models small_cnn wrn16_1] [--threads 1 2]
        [--device cpu] [--repeats 10] [--rounds 5] [--engines reference eager compile]

Every round times each variant for ``--repeats`` steps, one variant after the other
(interleaved, so drifts in machine load hit all alike); a round's ratio is its MEDIC median
over its plain median (the plain step in the same memory format; ``plain+cl`` itself is given
relative to the usual plain step), and the table gives the median over rounds. On a CPU both wall time and
process CPU time are recorded: on a machine shared with other jobs, CPU time (1 thread) is the
steadier of the two. Prints a table and writes benchmarks/results/step_ratio_<device>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from medic_viz.capture import LayerRecorder, resolve_layers
from medic_viz.data import load_dataset
from medic_viz.defenses.base import fresh_copy
from medic_viz.defenses.medic import MedicObjective
from medic_viz.device import resolve_device
from medic_viz.fused import compile_available
from medic_viz.importance import ImportanceOptions
from medic_viz.models import build_model
from medic_viz.stats import compute_layer_stats
from medic_viz.training import SupervisedObjective

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, dev: torch.device, repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of ``fn`` over ``repeats`` calls (after one warm-up)."""
    fn()
    _sync(dev)
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        _sync(dev)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def measure(model_name: str, device: str, threads: int, repeats: int, rounds: int, engines: list[str], batch: int = 64,
            layers: str = "auto") -> dict:
    dev = resolve_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    splits = load_dataset("signs")
    clean = splits.train.subset(torch.arange(512))
    torch.manual_seed(0)
    teacher = build_model(model_name, splits.num_classes).to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    stats = compute_layer_stats(teacher, clean, resolve_layers(teacher, layers), device=dev)
    x = clean.floats(torch.arange(batch), dev)
    y = clean.labels[:batch].to(dev)
    opts = ImportanceOptions(tau=5.0)

    x_cl = x.contiguous(memory_format=torch.channels_last)
    teacher_cl = copy.deepcopy(teacher).to(memory_format=torch.channels_last)

    def stepper(objective, cl: bool = False):
        opt = torch.optim.Adam(objective.model.parameters(), lr=1e-3)
        xx = x_cl if cl else x

        def step():
            total, _, _ = objective.loss(xx, y)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()

        return step

    def student(cl: bool):
        s = fresh_copy(teacher, seed=1).to(dev)
        return s.to(memory_format=torch.channels_last) if cl else s

    objectives, steps = {}, {"plain": stepper(SupervisedObjective(student(False)))}
    if any(e.endswith("+cl") for e in engines):
        steps["plain+cl"] = stepper(SupervisedObjective(student(True)), cl=True)
    for eng in engines:
        base, cl = eng.removesuffix("+cl"), eng.endswith("+cl")
        t = teacher_cl if cl else teacher
        if base == "compile" and not compile_available(dev):
            print(f"  (no compiler for {dev}: skipping {eng})")
            continue
        else:
            objectives[eng] = MedicObjective(t, student(cl), stats, opts, lam=10.0, fused=base)
        steps[f"medic[{eng}]"] = stepper(objectives[eng], cl)
    compile_s = None
    compiled = [e for e in objectives if e.startswith("compile")]
    if compiled:  # compile outside the timed rounds, and say how long it took
        t0 = time.perf_counter()
        for e in compiled:
            steps[f"medic[{e}]"]()
        compile_s = time.perf_counter() - t0
        for e in compiled:
            if objectives[e].clone_loss.mode != "compile":
                print(f"  compiled engine fell back to eager: {objectives[e].clone_loss.fallback_reason}")

    hooked = next(iter(objectives.values())).layers

    def teacher_fwd():
        with torch.no_grad(), LayerRecorder(teacher, hooked):
            teacher(x)

    def teacher_fwd_bwd():
        next(iter(objectives.values())).teacher_activations(x, y)

    parts = {"teacher forward (hooked)": teacher_fwd, "teacher forward + backward to activations": teacher_fwd_bwd}
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in [*steps, *parts]}
    for _ in range(rounds):
        for k, fn in [*steps.items(), *parts.items()]:
            samples[k].append(_time(fn, dev, repeats))

    def med(key: str, i: int) -> float:
        return statistics.median(s[i] for s in samples[key])

    def ratio(key: str, i: int) -> float:
        """Median over rounds of this variant ÷ the plain step in the same memory format."""
        plain = "plain+cl" if key.endswith("+cl]") else "plain"  # ("plain+cl" itself: vs the usual plain)
        return statistics.median(m[i] / p[i] for m, p in zip(samples[key], samples[plain]))

    return {
        "model": model_name,
        "device": str(dev),
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "batch": batch,
        "hooked_layers": len(hooked),
        "layers": list(hooked),
        "neurons_per_image": int(sum(s.mean.numel() * s.count // len(clean) for s in stats.values())),
        "compile_seconds": compile_s,
        "repeats": repeats,
        "rounds": rounds,
        "wall_ms": {k: 1000 * med(k, 0) for k in samples},
        "cpu_ms": {k: 1000 * med(k, 1) for k in samples},
        "ratio_wall": {k: ratio(k, 0) for k in samples if k != "plain"},
        "ratio_cpu": {k: ratio(k, 1) for k in samples if k != "plain"},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["small_cnn", "wrn16_1"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="CPU threads (ignored on a GPU)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--engines", nargs="+", default=["reference", "eager", "compile"],
                   choices=["reference", "eager", "compile", "reference+cl", "eager+cl", "compile+cl"],
                   help="MEDIC losses to time; '+cl': teacher, student and batch channels-last (vs a channels-last plain step)")
    p.add_argument("--layers", default="auto",
                   help="hooked layers (a preset of medic_viz.capture.LAYER_PRESETS; default: MEDIC's default "
                   "'auto'; 'all' = every conv/norm/linear output, as measured before the default changed)")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/step_ratio_<device>.json)")
    args = p.parse_args(argv)
    threads = args.threads if resolve_device(args.device).type == "cpu" else [0]
    rows = []
    for t in threads:
        for m in args.models:
            print(f"measuring {m}, {t} thread(s) …", flush=True)
            rows.append(measure(m, args.device, t, args.repeats, args.rounds, args.engines, layers=args.layers))
    print()
    print(f"{'model':10s} {'thr':>3s} {'variant':24s} {'wall ms':>8s} {'ratio':>6s} {'CPU ms':>8s} {'ratio':>6s}")
    for r in rows:
        for k in r["wall_ms"]:
            rw, rc = r["ratio_wall"].get(k), r["ratio_cpu"].get(k)
            print(f"{r['model']:10s} {r['threads'] or '-':>3} {k:24.24s} {r['wall_ms'][k]:8.1f} "
                  f"{'' if rw is None else f'{rw:.2f}':>6s} "
                  f"{r['cpu_ms'][k]:8.1f} {'' if rc is None else f'{rc:.2f}':>6s}")
        if r["compile_seconds"] is not None:
            print(f"{r['model']:10s} {r['threads'] or '-':>3} first compiled step (compiling): {r['compile_seconds']:.1f} s")
    RESULTS.mkdir(exist_ok=True)
    dev_name = rows[0]["device"].split(":")[0]
    meta = {"torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor(),
            "cuda": torch.cuda.get_device_name(0) if dev_name == "cuda" else None}
    out = Path(args.out) if args.out else RESULTS / f"step_ratio_{dev_name}.json"
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
