"""The GPU check of issue 15, in one process: the MEDIC/plain step ratio and the paper's setting
(WRN-16-1, 2,500 clean images of 32×32, 60 epochs, batch 64) in bf16 and fp32, with a table.

    python -m benchmarks.gpu_check [--device cuda] [--epochs 60] [--images 2500]
        [--teacher-epochs 10] [--teacher-images N] [--precisions bf16 fp32] [--fused auto eager compile]
        [--skip-step-ratio] [--out benchmarks/results/gpu_check]

Run by ``bash benchmarks/gpu_check.sh`` (which finds a Python with CUDA). Data: GTSRB from
``../shared/data/gtsrb32.npz`` when present (43 classes), else the embedded synthetic signs — no
download either way. The trojaned teacher (BadNet, 10 % poisoned) is trained here first
(``--teacher-epochs``; its quality does not change the timings). Each MEDIC run is what
``medic-viz defend`` does: statistics pass, training with the live evaluation on 1,000 test
images after every epoch, then the whole test set; "MEDIC s" is the training (``train()``), "in
all" adds the statistics and both whole-test-set evaluations. Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import GTSRB, RESULTS
from medic_viz.attacks.registry import attack_evaluator
from medic_viz.attacks.train import train_attack
from medic_viz.data import load_dataset
from medic_viz.data.arrays import DatasetSplits, clean_subset
from medic_viz.defenses.medic import Medic
from medic_viz.resources import PeakMemory
from medic_viz.training import TrainConfig


def _dataset():
    if GTSRB.exists():
        return load_dataset(GTSRB), "gtsrb32.npz"
    return load_dataset("signs"), "embedded signs"


def paper_setting(device: str, epochs: int, images: int, teacher_epochs: int, precisions: list[str], fused: list[str],
                  teacher_images: int | None = None, on_row=None) -> list[dict]:
    splits, data_name = _dataset()
    if teacher_images:  # a smaller training set for the teacher (dry runs)
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
        splits = DatasetSplits(splits.train.subset(order[:teacher_images]), splits.test)
    t0 = time.perf_counter()
    trojan = train_attack("badnet", splits, target=1 if splits.num_classes > 1 else 0, rate=0.1, architecture="wrn16_1",
                          config=TrainConfig(epochs=teacher_epochs, batch_size=128, lr=2e-3, device=device, progress=False),
                          seed=0)
    teacher_s = time.perf_counter() - t0
    attack, target = trojan.trigger, trojan.target
    print(f"teacher: wrn16_1 BadNet on {data_name}, {teacher_epochs} epochs in {teacher_s:.1f} s — clean acc "
          f"{100 * trojan.metrics.clean_acc:.1f}%, ASR {100 * (trojan.metrics.asr or 0):.1f}%", flush=True)
    clean = clean_subset(splits.train, images / len(splits.train), 0)
    full = attack_evaluator(attack, splits.test, target, device=device)
    live = attack_evaluator(attack, splits.test, target, max_images=1000, seed=0, device=device)
    before = full(trojan.model.to(device))
    rows = []
    for prec in precisions:
        for mode in fused:
            t0 = time.perf_counter()
            with PeakMemory(device) as mem:
                result = Medic(tau=5.0, lam=10.0, epochs=epochs, batch_size=64, device=device, amp=(prec == "bf16"),
                               progress=False, fused=mode).run(trojan.model, clean, evaluator=live)
                after = full(result.model.to(device))
            total = time.perf_counter() - t0
            row = {"precision": prec, "fused": mode, "data": data_name, "images": len(clean), "epochs": epochs,
                   "medic_s": round(result.seconds, 1), "in_all_s": round(total, 1),
                   "before_acc": before.clean_acc, "before_asr": before.asr, "after_acc": after.clean_acc, "after_asr": after.asr,
                   **mem.as_dict(), "teacher_s": round(teacher_s, 1)}
            rows.append(row)
            if on_row is not None:
                on_row(rows)
            print(f"MEDIC {prec} fused={mode}: {row['medic_s']} s training, {row['in_all_s']} s in all; clean acc "
                  f"{100 * after.clean_acc:.1f}%, ASR {100 * (after.asr or 0):.1f}%; peak CUDA {row['cuda_peak_mb']} MiB",
                  flush=True)
    return rows


def step_ratio(model: str, device: str, threads: int, engines: list[str]) -> dict:
    """One row of ``python -m benchmarks.bench_step_ratio`` (20 steps a round, 3 rounds), run in a
    process of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "step_ratio.json"
        subprocess.run([sys.executable, "-m", "benchmarks.bench_step_ratio", "--models", model, "--device", device,
                        "--threads", str(threads), "--repeats", "20", "--rounds", "3", "--engines", *engines,
                        "--out", str(out)], check=True, cwd=Path(__file__).resolve().parents[1])
        return json.loads(out.read_text())["rows"][0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--images", type=int, default=2500)
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--teacher-images", type=int, default=None, help="train the teacher on this many images (default all)")
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    p.add_argument("--fused", nargs="+", default=["auto"], choices=["auto", "eager", "compile"])
    p.add_argument("--skip-step-ratio", action="store_true")
    p.add_argument("--step-engines", nargs="+", default=["reference", "eager", "compile"])
    p.add_argument("--out", default=str(RESULTS / "gpu_check"))
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to this Python (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    meta = {"torch": torch.__version__, "device": args.device, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(f"gpu_check: torch {meta['torch']}, {meta['gpu'] or args.device}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    saved: dict = {"meta": meta, "paper_setting": [], "step_ratio": []}

    def save() -> None:  # after every stage: a run cut short by the time limit keeps what it had
        saved["seconds"] = time.perf_counter() - start
        out.with_suffix(".json").write_text(json.dumps(saved, indent=2))

    # The paper's setting first (the figure that matters), then the step ratio.
    runs = paper_setting(args.device, args.epochs, args.images, args.teacher_epochs, args.precisions, args.fused,
                         args.teacher_images,
                         on_row=lambda rows: (saved.update(paper_setting=list(rows)), save()))  # type: ignore[func-returns-value]
    step_rows = []
    if not args.skip_step_ratio:
        for m in ("small_cnn", "wrn16_1"):
            step_rows.append(step_ratio(m, args.device, torch.get_num_threads(), args.step_engines))
            saved["step_ratio"] = step_rows
            save()
            r = step_rows[-1]
            print(f"step ratio {m}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratio_wall"].items() if k.startswith("medic"))
                  + f" (plain step {r['wall_ms']['plain']:.1f} ms)", flush=True)
    elapsed = time.perf_counter() - start
    lines = [f"# GPU check ({meta['gpu'] or args.device}, torch {meta['torch']}) — {elapsed:.0f} s end to end", ""]
    if step_rows:
        medic_columns = [f"MEDIC {k[6:-1]} (ratio)" for k in step_rows[0]["ratio_wall"] if k.startswith("medic")]
        lines += ["| model | plain step | " + " | ".join(medic_columns) + " |",
                  "|---|---|" + "---|" * sum(k.startswith("medic") for k in step_rows[0]["ratio_wall"])]
        for r in step_rows:
            cells = [f"{r['wall_ms'][k]:.1f} ms ({r['ratio_wall'][k]:.2f})" for k in r["ratio_wall"] if k.startswith("medic")]
            lines.append(f"| {r['model']} | {r['wall_ms']['plain']:.1f} ms | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["| precision | fused | data | images | epochs | MEDIC s | in all s | acc before → after | ASR before → after "
              "| peak CUDA MiB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        asr = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        lines.append(f"| {r['precision']} | {r['fused']} | {r['data']} | {r['images']} | {r['epochs']} | {r['medic_s']} | "
                     f"{r['in_all_s']} | {100 * r['before_acc']:.1f}% → {100 * r['after_acc']:.1f}% | "
                     f"{asr(r['before_asr'])} → {asr(r['after_asr'])} | {r['cuda_peak_mb']} |")
    table = "\n".join(lines)
    print("\n" + table)
    save()
    out.with_suffix(".md").write_text(table + "\n")
    print(f"\nwrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
