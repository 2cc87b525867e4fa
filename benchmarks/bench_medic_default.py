"""MEDIC with the library's default configuration on real and demo data, every row with the
same settings (issue 9's proof table).

    python -m benchmarks.bench_medic_default --part demo            # the four shipped demo models
    python -m benchmarks.bench_medic_default --part gtsrb-small_cnn # GTSRB, small_cnn, 5 attacks
    python -m benchmarks.bench_medic_default --part gtsrb-wrn16_1   # GTSRB, WRN-16-1, 5 attacks
    python -m benchmarks.bench_medic_default --table                # table + curves from what is done
    python -m benchmarks.bench_medic_default --part table1-wrn16_1 --teachers-only  # issue 10's eight teachers

Rows: the four shipped demo models on the embedded signs (600 clean images), and GTSRB
(``../shared/data/gtsrb32.npz``: 39,209 / 12,630 images, 43 classes) trojaned with BadNet,
Blend, SIG, Polygon and WaNet (the library's GTSRB presets, ``medic_viz.experiments.presets``:
target class 1), for ``small_cnn`` and ``wrn16_1``; seeds 0 and 1
(the seed picks the 5 % clean subset, the student's initialisation and the batch order; one
teacher per attack and model). MEDIC: ``Medic()`` defaults, 60 epochs. Live clean accuracy
and ASR on 1,000 test images after every epoch; the final numbers on the whole test set.
Target (issue 9): ASR ≤ 10 % and clean-accuracy drop ≤ 3 points after 60 epochs, every row.

Resumable: one JSON per run under ``benchmarks/results/medic_default/`` (skipped when present:
``medic_viz.experiments.resume``), teachers cached under ``benchmarks/results/gtsrb_teachers/``
(``medic_viz.experiments.teachers.TeacherCache``). ``--threads`` sets torch threads.

Other settings on the same rows (issue 9 item 3: the automatic choice against the best setting
in hindsight), each in ``benchmarks/results/medic_variants/<variant>/``::

    python -m benchmarks.bench_medic_default --part demo --variant lam10
    python -m benchmarks.bench_medic_default --part gtsrb-small_cnn --variant tau-auto
    python -m benchmarks.bench_medic_default --hindsight     # default vs --tau auto vs best variant, per row

Variants (:data:`VARIANTS`): ``Medic()`` with one field changed; ``tau-auto`` = the CLI's
``--tau auto`` (global τ chosen on a 20 % hold-out of the clean subset, 20 epochs per candidate,
then a 60-epoch run) with its search cost as a multiple of the final run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from benchmarks.common import DOCS, GTSRB, RESULTS, TEACHERS
from medic_viz.data import load_dataset
from medic_viz.data.arrays import clean_subset
from medic_viz.defenses.medic import Medic
from medic_viz.defenses.tuning import select_tau
from medic_viz.experiments.presets import GTSRB_TABLE1_ATTACKS, gtsrb_recipe
from medic_viz.experiments.resume import RowFolder, run_resumable
from medic_viz.experiments.summary import peak_late_asr
from medic_viz.pipeline import remove_backdoor, trigger_of
from medic_viz.pretrained import load_demo_model

DEMO_ATTACKS = ("badnet", "blend", "sig", "polygon")
GTSRB_ATTACKS = ("badnet", "blend", "sig", "polygon", "wanet")


def _wrn16_1_layers(*, without: tuple[str, ...]) -> list[str]:
    """WRN-16-1's conv/norm outputs after the stem (its first convolution and that one's norm),
    in model order, without the modules whose names start with a prefix in ``without``."""
    names = [f"block{b}.layer.{u}.{m}" for b in (1, 2, 3) for u in (0, 1)
             for m in ("bn1", "conv1", "bn2", "conv2", "convShortcut")
             if (b, u, m) != (1, 0, "bn1") and (m != "convShortcut" or (u == 0 and b > 1))]
    return [n for n in names if not n.startswith(without)]


#: Settings compared with the default on the same rows: ``Medic()`` overrides ("tau": "auto" =
#: :func:`medic_viz.defenses.tuning.select_tau`, as ``medic-viz defend --tau auto``).
VARIANTS: dict[str, dict] = {
    "default": {},
    "lam10": {"lam": 10.0},  # the default until λ = 3 replaced it (the paper's λ)
    "lam1": {"lam": 1.0},
    "lam30": {"lam": 30.0},
    "share0.5": {"share": 0.005},
    "share2": {"share": 0.02},
    "share4": {"share": 0.04},
    "tau5": {"tau": 5.0},
    "paper": {"tau": 5.0, "layers": "all"},
    "tau-auto": {"tau": "auto"},
    # wrn16_1 only (module names) — issue 9's SIG wrn16_1 relapse. "wrn-lastconv": the default
    # layer set until the cut moved before the last stage (conv/norm outputs from the second
    # convolution up to the last one: blocks 1–2 and most of block3); "wrn-nolastunit": that set
    # without block3's last residual unit. (The default now hooks blocks 1–2 without the stem:
    # those runs were made as "wrn-noblock3", the same 16 layers.)
    "wrn-lastconv": {"layers": _wrn16_1_layers(without=("block3.layer.1.conv2",))},
    "wrn-nolastunit": {"layers": _wrn16_1_layers(without=("block3.layer.1.",))},
    "wrn-nolastunit-lam1": {"lam": 1.0, "layers": _wrn16_1_layers(without=("block3.layer.1.",))},
    "wrn-nolastunit-share0.5": {"share": 0.005, "layers": _wrn16_1_layers(without=("block3.layer.1.",))},
}
TAU_AUTO_SEARCH_EPOCHS = 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def gtsrb_teacher(attack: str, model: str, npz: str | Path, splits, device: str):
    """The cached GTSRB teacher for ``attack``/``model`` (the library's preset; trained the first time)."""
    return TEACHERS.load(gtsrb_recipe(attack, model, npz), splits=splits, device=device, progress=True)


def run_row(row: dict, teacher, card, splits, args) -> dict:
    trigger, target = trigger_of(card)
    overrides = dict(VARIANTS[args.variant])
    search: dict | None = None
    if overrides.get("tau") == "auto":
        t_search = time.perf_counter()
        selection = select_tau(teacher, clean_subset(splits.train, 0.05, row["seed"]), seed=row["seed"], device=args.device,
                               epochs=TAU_AUTO_SEARCH_EPOCHS, progress=False)
        print(selection, flush=True)
        overrides["tau"] = selection.tau
        search = {"tau": selection.tau, "reference_acc": selection.reference_acc, "budget": selection.budget,
                  "rows": [{k: v for k, v in r.items() if k in ("tau", "clean_acc", "n_clean", "seconds")}
                           for r in selection.rows],
                  "seconds": round(time.perf_counter() - t_search, 1)}
    defense = Medic(**{"epochs": args.epochs, "device": args.device, "seed": row["seed"], "student_seed": row["seed"],
                       "progress": False, **overrides})
    curve: list[dict] = []

    def on_event(ev) -> None:
        if ev.kind in ("start", "epoch"):
            curve.append({"epoch": ev.epoch, "acc": ev.clean_acc, "asr": ev.asr, "ce": ev.losses.get("ce"),
                          "clone": ev.losses.get("clone"), "seconds": round(ev.seconds, 1)})
            if ev.kind == "epoch" and ev.epoch % 10 == 0:
                print(f"  epoch {ev.epoch}: acc {ev.clean_acc:.3f} ASR {ev.asr:.3f} ({ev.seconds:.0f} s)", flush=True)

    t0 = time.perf_counter()
    o = remove_backdoor(teacher, splits, defense, trigger=trigger, target=target, fraction=0.05, seed=row["seed"],
                        device=args.device, live_eval_images=1000, callbacks=[on_event])
    cfg = o.result.config
    seconds = round(time.perf_counter() - t0, 1)
    return {
        **row,
        "variant": args.variant,
        "overrides": VARIANTS[args.variant],
        "tau_search": search,
        "search_cost_runs": None if search is None else round(search["seconds"] / seconds, 2),
        "config": {k: v for k, v in cfg.items() if k not in ("progress",)},
        "n_clean_subset": o.n_clean_subset,
        "before_acc": o.before.clean_acc, "before_asr": o.before.asr,
        "after_acc": o.after.clean_acc, "after_asr": o.after.asr,
        "n_clean": o.after.n_clean, "n_asr": o.after.n_asr,
        "acc_drop_points": 100 * (o.before.clean_acc - o.after.clean_acc),
        "max_live_asr_after_epoch_20": peak_late_asr(curve, 20),
        "meets_target": bool(o.after.asr <= 0.10  # type: ignore[operator]  # measured: the card has an attack
                             and o.before.clean_acc - o.after.clean_acc <= 0.03),
        "seconds": seconds,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "curve": curve,
    }


def rows_for(part: str, seeds: list[int]) -> list[dict]:
    if part == "demo":
        return [{"dataset": "signs", "model": "small_cnn", "attack": a, "seed": s} for a in DEMO_ATTACKS for s in seeds]
    if part.startswith("gtsrb-"):
        model = part.split("-", 1)[1]
        return [{"dataset": "gtsrb", "model": model, "attack": a, "seed": s} for a in GTSRB_ATTACKS for s in seeds]
    if part.startswith("table1-"):  # issue 10's teachers (with --teachers-only)
        model = part.split("-", 1)[1]
        return [{"dataset": "gtsrb", "model": model, "attack": a, "seed": s} for a in GTSRB_TABLE1_ATTACKS for s in seeds]
    raise SystemExit(f"unknown part {part!r}: use demo, gtsrb-small_cnn, gtsrb-wrn16_1 or table1-MODEL (teachers)")


def row_name(row: dict) -> str:
    return f"{row['dataset']}_{row['model']}_{row['attack']}_s{row['seed']}"


def write_table(out: Path, docs: Path) -> str:
    runs = RowFolder(out).rows()
    lines = [
        "| data | model | attack | seed | trojaned acc / ASR | after acc / ASR | drop (pts) | max live ASR after epoch 20 "
        "| layer τ (first → last) | s | target met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        taus = r["config"].get("layer_taus") or {}
        tau_text = f"{min(taus.values()):.1f}–{max(taus.values()):.1f}" if taus else f"τ={r['config'].get('tau')}"
        late = r.get("max_live_asr_after_epoch_20")
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['attack']} | {r['seed']} | "
            f"{100 * r['before_acc']:.2f} / {100 * r['before_asr']:.2f} | "
            f"{100 * r['after_acc']:.2f} / {100 * r['after_asr']:.2f} | {r['acc_drop_points']:.2f} | "
            f"{'–' if late is None else f'{100 * late:.1f}'} | {tau_text} | {r['seconds']:.0f} | "
            f"{'yes' if r['meets_target'] else '**no**'} |"
        )
    md = "\n".join(lines)
    (out / "table.md").write_text(md + "\n")
    if runs:
        _figure(runs, docs)
    return md


def variant_folder(variant: str, base: Path = RESULTS) -> Path:
    """Where a variant's runs (``base`` = RESULTS) or figures (``base`` = docs) go."""
    return base / "medic_default" if variant == "default" else base / "medic_variants" / variant


def _variant_runs() -> dict[str, dict[str, dict]]:
    """``{variant: {row file name: result}}`` for every finished run, the default included."""
    folders = {v: variant_folder(v) for v in VARIANTS}
    return {v: {p.name: json.loads(p.read_text()) for p in sorted(f.glob("*.json"))} for v, f in folders.items() if f.is_dir()}


def best_in_hindsight(results: dict[str, dict]) -> tuple[str, dict]:
    """The variant a defender who could see the trigger and the test set would pick for one
    row: the lowest final ASR among runs within the 3-point accuracy budget, else the smallest
    accuracy drop. ``results``: ``{variant: result}``."""
    within = {v: r for v, r in results.items() if r["acc_drop_points"] <= 3.0}
    if within:
        return min(within.items(), key=lambda kv: (kv[1]["after_asr"], kv[1]["acc_drop_points"]))
    return min(results.items(), key=lambda kv: kv[1]["acc_drop_points"])


def write_hindsight(path: Path) -> str:
    """Per row: the default, ``--tau auto`` and the best variant in hindsight (markdown)."""
    by_variant = _variant_runs()
    rows = sorted({name for runs in by_variant.values() for name in runs})

    def cell(r: dict | None) -> str:
        if r is None:
            return "–"
        mark = "" if r["meets_target"] else " ✗"
        return f"{100 * r['after_acc']:.2f} / {100 * r['after_asr']:.2f}{mark}"

    lines = ["| row | trojaned acc / ASR | default | --tau auto (τ chosen; search cost × run) | best in hindsight "
             "| variants run |",
             "|---|---|---|---|---|---|"]
    for name in rows:
        results = {v: runs[name] for v, runs in by_variant.items() if name in runs}
        any_run = next(iter(results.values()))
        auto = results.get("tau-auto")
        auto_text = cell(auto) + (f" (τ={auto['tau_search']['tau']:g}; {auto['search_cost_runs']:.1f}×)" if auto else "")
        best_v, best = best_in_hindsight(results)
        lines.append(f"| {name.removesuffix('.json')} | {100 * any_run['before_acc']:.2f} / {100 * any_run['before_asr']:.2f} | "
                     f"{cell(results.get('default'))} | {auto_text} | {best_v}: {cell(best)} | {len(results)} |")
    md = "\n".join(lines) + ("\n\nCells: clean accuracy / ASR after 60 epochs (%, whole test set); "
                             "✗ = misses ASR ≤ 10 % or drop ≤ 3 points.\n")
    path.write_text(md)
    return md


def _figure(runs: list[dict], docs: Path) -> None:
    groups = sorted({(r["dataset"], r["model"]) for r in runs})
    titles = [t for g in groups for t in (f"{g[0]} {g[1]}: ASR (live, 1,000 images)", f"{g[0]} {g[1]}: clean accuracy")]
    fig = make_subplots(rows=len(groups), cols=2, subplot_titles=titles)
    for i, g in enumerate(groups, start=1):
        for r in (r for r in runs if (r["dataset"], r["model"]) == g):
            name = f"{r['attack']} s{r['seed']}"
            xs = [c["epoch"] for c in r["curve"]]
            fig.add_trace(go.Scatter(x=xs, y=[c["asr"] for c in r["curve"]], name=name, legendgroup=name, mode="lines",
                                     showlegend=i == 1), row=i, col=1)
            fig.add_trace(go.Scatter(x=xs, y=[c["acc"] for c in r["curve"]], name=name, legendgroup=name, mode="lines",
                                     showlegend=False), row=i, col=2)
        fig.add_hline(y=0.10, line_dash="dot", line_color="grey", row=i, col=1)
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(width=1300, height=380 * len(groups), template="plotly_white",
                      title="MEDIC, default configuration: per-epoch curves of every run")
    docs.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(docs / "curves.html"), include_plotlyjs="cdn")
    try:
        fig.write_image(str(docs / "curves.png"))
    except Exception as exc:  # noqa: BLE001 - kaleido needs Chromium; the HTML is always written
        print(f"PNG not written: {type(exc).__name__}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", action="append", default=[], help="demo | gtsrb-small_cnn | gtsrb-wrn16_1 (repeatable)")
    p.add_argument("--attacks", nargs="+", default=None, help="only these attacks")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--npz", default=str(GTSRB))
    p.add_argument("--variant", default="default", choices=list(VARIANTS),
                   help="settings compared with the default (see VARIANTS)")
    p.add_argument("--out", default=None,
                   help="results folder (default: results/medic_default, or results/medic_variants/VARIANT)")
    p.add_argument("--docs", default=None, help="figure folder (default: docs/medic_default, or docs/medic_variants/VARIANT)")
    p.add_argument("--hindsight", action="store_true",
                   help="only write the per-row comparison: default, --tau auto, best variant")
    p.add_argument("--table", action="store_true", help="only write the table and the figure")
    p.add_argument("--teachers-only", action="store_true", help="only train (and cache) the GTSRB teachers of the parts")
    p.add_argument("--list-teachers", action="store_true", help="only print the cached teacher folder of each GTSRB "
                   "row of the parts, one per line (with --teachers-only: after training the missing ones)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.hindsight:
        print(write_hindsight(RESULTS / "medic_hindsight.md"))
        return 0
    out = Path(args.out or variant_folder(args.variant))
    args.docs = args.docs or str(variant_folder(args.variant, DOCS))
    out.mkdir(parents=True, exist_ok=True)

    cache: dict[str, object] = {}

    def splits_of(dataset: str):
        if dataset not in cache:
            cache[dataset] = load_dataset() if dataset == "signs" else load_dataset(args.npz)
        return cache[dataset]

    def teacher_of(row: dict):
        if row["dataset"] == "signs":
            return load_demo_model(row["attack"])
        recipe = gtsrb_recipe(row["attack"], row["model"], args.npz)
        splits = splits_of("gtsrb") if TEACHERS.find(recipe) is None else None  # the data only to train
        return TEACHERS.load(recipe, splits=splits, device=args.device, progress=True)

    def run(row: dict) -> dict:
        teacher, card = teacher_of(row)
        name = row_name(row)
        print(f"{name}: MEDIC {args.variant} {VARIANTS[args.variant] or ''}, {args.epochs} epochs", flush=True)
        result = run_row({**row, "epochs": args.epochs}, teacher, card, splits_of(row["dataset"]), args)
        print(f"{name}: acc {100 * result['before_acc']:.2f} → {100 * result['after_acc']:.2f}, "
              f"ASR {100 * result['before_asr']:.2f} → {100 * result['after_asr']:.2f} ({result['seconds']:.0f} s)", flush=True)
        return result

    rows = [row for part in ([] if args.table else args.part) for row in rows_for(part, args.seeds)
            if not args.attacks or row["attack"] in args.attacks]
    if any(row["dataset"] == "gtsrb" for row in rows) and not Path(args.npz).is_file():
        raise SystemExit(f"GTSRB arrays not found at {args.npz}; pass --npz PATH")
    if args.teachers_only:
        for row in rows:
            teacher_of(row)
    if args.list_teachers:  # in the order of --attacks when given
        for row in sorted(rows, key=lambda r: args.attacks.index(r["attack"]) if args.attacks else 0):
            if row["dataset"] == "gtsrb":
                print(TEACHERS.folder(gtsrb_recipe(row["attack"], row["model"], args.npz)))
    if args.teachers_only or args.list_teachers:
        return 0
    run_resumable(rows, RowFolder(out), row_name, run, log=lambda msg: print(msg, flush=True))
    print(write_table(out, Path(args.docs)))
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
