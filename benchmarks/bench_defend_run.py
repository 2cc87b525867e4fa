"""Where a whole ``medic-viz defend`` run spends its time: the run is the CLI's own
(``medic_viz.cli.main(["defend", ...])``), with timers wrapped around its parts — evaluation of
the trojaned and the repaired model on the whole test set, the statistics pass, the live
evaluation after every epoch, augmentation, the training steps, writing the outputs.

    python benchmarks/bench_defend_run.py --teacher DIR [--images 2500] [--epochs 3]
        [--extrapolate 60] [--threads N] [--fused auto|compile|eager]
        [--channels-last auto|on|off] [--cpu-bf16] [--label NAME] [--out FILE]

The dataset is the embedded signs (``--images`` sets the clean subset: ``--fraction`` =
images / 12,000). Every part is timed in wall time and in process CPU time (all threads): on a
machine shared with other jobs, wall time counts the time other processes had the cores, so
before/after comparisons there use CPU time with one thread.

``--extrapolate E`` adds what a run of E epochs would take, **extrapolated**: the measured run
plus (E − epochs) × the median of its epochs after the first (steps and that epoch's live
evaluation; the first epoch also pays compiling and warm-up, counted once). Works on older
checkouts too (options they lack are left out), so before/after can be measured with
``PYTHONPATH=<checkout>``. It imports only medic_viz: run it by its path, as above (``python -m``
would put this checkout's medic_viz first, ahead of ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import resource
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

import medic_viz
import medic_viz.data.arrays as arrays
import medic_viz.defenses.medic as medic_mod
import medic_viz.metrics as metrics
import medic_viz.pipeline as pipeline
import medic_viz.stats as layer_statistics
import medic_viz.viz.report as report
from medic_viz.cli import main as cli_main
from medic_viz.data import load_dataset

RESULTS = Path(__file__).resolve().parent / "results"


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _wrap(owner, name: str, timers: dict, label) -> None:
    """Time calls of ``owner.name`` into ``timers[label(...)]`` (skipped if it does not exist)."""
    fn = getattr(owner, name, None)
    if fn is None:
        return

    @functools.wraps(fn)
    def timed(*a, **k):
        w, c = _now()
        try:
            return fn(*a, **k)
        finally:
            w2, c2 = _now()
            key = label(*a, **k) if callable(label) else label
            t = timers[key]
            t["wall"] += w2 - w
            t["cpu"] += c2 - c
            t["calls"] += 1
            t.setdefault("ends", []).append((w2, c2))

    setattr(owner, name, timed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--images", type=int, default=2500)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--extrapolate", type=int, default=60)
    p.add_argument("--tau", default="5")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CLI's choice)")
    p.add_argument("--fused", default=None, help="MedicConfig.fused (newer engines only)")
    p.add_argument("--channels-last", default=None, choices=["auto", "on", "off"],
                   help="TrainConfig.channels_last (newer engines only)")
    p.add_argument("--cpu-bf16", action="store_true", help="pass --cpu-bf16 to the CLI (newer engines only)")
    p.add_argument("--label", default="")
    p.add_argument("--out", default=None,
                   help="append the row to this JSON list (default benchmarks/results/defend_run_cpu.json)")
    args = p.parse_args(argv)


    n_train = len(load_dataset("signs").train)
    fraction = args.images / n_train

    timers: dict = defaultdict(lambda: {"wall": 0.0, "cpu": 0.0, "calls": 0})

    def eval_kind(self, model):
        return "evaluation, whole test set (before + after)" if len(self.y) >= 2000 else "live evaluation (every epoch)"

    _wrap(metrics.Evaluator, "__call__", timers, eval_kind)
    _wrap(layer_statistics, "compute_layer_stats", timers, "statistics pass")  # the engine looks it up there
    if "compute_layer_stats" in vars(medic_mod):  # older engines called a name of their own
        _wrap(medic_mod, "compute_layer_stats", timers, "statistics pass")
    _wrap(arrays.Augmentation, "__call__", timers, "augmentation")
    _wrap(medic_mod, "train", timers, "train() in all")  # the name Medic.run calls
    for owner, name in ((report, "write_outputs"), (pipeline, "save_outcome")):  # write_outputs is a view now
        _wrap(owner, name, timers, "writing result.json, report.html, model")
    fields = {f.name for f in dataclasses.fields(medic_mod.MedicConfig)}
    overrides = {}
    if args.fused is not None and "fused" in fields:
        overrides["fused"] = args.fused
    if args.channels_last is not None and "channels_last" in fields:
        overrides["channels_last"] = {"on": True, "off": False}.get(args.channels_last, args.channels_last)
    if overrides:
        real_init = medic_mod.Medic.__init__

        def init(self, config=None, **kw):
            real_init(self, config, **{**kw, **overrides})

        medic_mod.Medic.__init__ = init  # type: ignore[method-assign]  # the options this engine has, forced
    if args.threads:  # after the CLI's own choice of threads
        import medic_viz.resources as res  # noqa: PLC0415 — only with --threads; an older checkout (PYTHONPATH=) may lack it

        real_use = getattr(res, "use_available_cpus", None)
        if real_use is not None:
            res.use_available_cpus = lambda threads=None: real_use(args.threads)
        torch.set_num_threads(args.threads)

    out_dir = Path("/tmp") / f"bench_defend_{int(time.time() * 1000)}"
    cli_args = ["defend", "--teacher", args.teacher, "--dataset", "signs", "--fraction", f"{fraction:.6f}",
                "--epochs", str(args.epochs), "--tau", args.tau, "--out", str(out_dir), "--no-progress", "--device", "cpu"]
    if args.cpu_bf16:
        cli_args.append("--cpu-bf16")
    w0, c0 = _now()
    rc = cli_main(cli_args)
    w1, c1 = _now()
    if rc != 0:
        raise SystemExit(f"medic-viz defend failed ({rc})")
    result = json.loads((out_dir / "result.json").read_text())

    def per_epoch(i: int) -> tuple[list[float], float]:
        ends = [e[i] for e in timers["live evaluation (every epoch)"].get("ends", [])]
        durations = [b - a for a, b in zip(ends, ends[1:])]  # epoch e: its steps + its live evaluation
        later = durations[1:] or durations
        return durations, statistics.median(later) if later else float("nan")

    (wall_epochs, wall_rate), (cpu_epochs, cpu_rate) = per_epoch(0), per_epoch(1)
    extra = args.extrapolate - args.epochs
    row = {
        "label": args.label or str(Path(medic_viz.__file__).parent),
        "threads": torch.get_num_threads(),
        "images": result["config"]["n_clean_subset"],
        "epochs": args.epochs,
        "fused": result["config"].get("fused", "(no option: reference engine)"),
        "channels_last": result["config"].get("channels_last", "(no option)"),
        "cpu_bf16": result["config"].get("cpu_bf16", "(no option)"),
        "wall_s": round(w1 - w0, 1),
        "cpu_s": round(c1 - c0, 1),
        "parts": {k: {"wall_s": round(v["wall"], 2), "cpu_s": round(v["cpu"], 2), "calls": v["calls"]}
                  for k, v in timers.items()},
        "epoch_wall_s": [round(d, 2) for d in wall_epochs],
        "epoch_cpu_s": [round(d, 2) for d in cpu_epochs],
        f"extrapolated_{args.extrapolate}_epochs_wall_s": round(w1 - w0 + extra * wall_rate),
        f"extrapolated_{args.extrapolate}_epochs_cpu_s": round(c1 - c0 + extra * cpu_rate),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "result_peak_memory": result.get("peak_memory"),
        "argv": sys.argv[1:],
    }
    print(json.dumps(row, indent=2))
    out = Path(args.out) if args.out else RESULTS / "defend_run_cpu.json"
    out.parent.mkdir(exist_ok=True)
    rows = json.loads(out.read_text()) if out.exists() else []
    rows.append(row)
    out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
