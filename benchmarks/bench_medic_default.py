"""MEDIC with the library's default configuration on real and demo data, every row with the
same settings (issue 9's proof table).

    python benchmarks/bench_medic_default.py --part demo            # the four shipped demo models
    python benchmarks/bench_medic_default.py --part gtsrb-small_cnn # GTSRB, small_cnn, 5 attacks
    python benchmarks/bench_medic_default.py --part gtsrb-wrn16_1   # GTSRB, WRN-16-1, 5 attacks
    python benchmarks/bench_medic_default.py --table                # table + curves from what is done
    python benchmarks/bench_medic_default.py --part table1-wrn16_1 --teachers-only  # issue 10's eight teachers

Rows: the four shipped demo models on the embedded signs (600 clean images), and GTSRB
(``../shared/data/gtsrb32.npz``: 39,209 / 12,630 images, 43 classes) trojaned with BadNet,
Blend, SIG, Polygon and WaNet (target class 1), for ``small_cnn`` and ``wrn16_1``; seeds 0 and 1
(the seed picks the 5 % clean subset, the student's initialisation and the batch order; one
teacher per attack and model). MEDIC: ``Medic()`` defaults, 60 epochs. Live clean accuracy
and ASR on 1,000 test images after every epoch; the final numbers on the whole test set.
Target (issue 9): ASR ≤ 10 % and clean-accuracy drop ≤ 3 points after 60 epochs, every row.

Resumable: one JSON per run under ``benchmarks/results/medic_default/`` (skipped when present),
teachers cached under ``benchmarks/results/gtsrb_teachers/``. ``--threads`` sets torch threads.

Other settings on the same rows (issue 9 item 3: the automatic choice against the best setting
in hindsight), each in ``benchmarks/results/medic_variants/<variant>/``::

    python benchmarks/bench_medic_default.py --part demo --variant lam10
    python benchmarks/bench_medic_default.py --part gtsrb-small_cnn --variant tau-auto
    python benchmarks/bench_medic_default.py --hindsight     # default vs --tau auto vs best variant, per row

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

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GTSRB = ROOT.parent / "shared" / "data" / "gtsrb32.npz"
TARGET = 1  # GTSRB "speed limit 30", one of the largest classes
DEMO_ATTACKS = ("badnet", "blend", "sig", "polygon")
GTSRB_ATTACKS = ("badnet", "blend", "sig", "polygon", "wanet")
#: Trigger options of the GTSRB teachers (the first three as in bench_medic_gtsrb.py, whose
#: teachers are reused); rate None = the registry's default rate.
GTSRB_TRIGGERS: dict[str, tuple[dict, float | None]] = {
    "badnet": ({"size": 3}, 0.1),
    "blend": ({"pattern": "noise", "alpha": 0.15, "seed": 0}, 0.1),
    "sig": ({"delta": 0.2, "frequency": 6}, 0.056),
    "polygon": ({}, None),
    # WaNet's defaults (k = 4, s = 0.5, noise mode ×2) gave a 15-epoch small_cnn teacher only
    # 22 % ASR (90.4 % accuracy): not a backdoor. A stronger warp without noise mode, as a
    # removal benchmark needs a working backdoor.
    "wanet": ({"k": 4, "s": 1.0, "cross_ratio": 0.0}, 0.1),
    # The rest of the paper's Table 1 (issue 10). Clean-Label: every class-1 image (rate above
    # its 5.7 % share) perturbed by PGD ε 16/255 against a WRN-16-1 adversarially trained at
    # ε 4/255 (as Turner et al., whose poisons come from a robust model of the victim's
    # architecture), then four 3x3 checkerboard patches 5 pixels in from the corners. In the
    # corners themselves (margin 0) the patches never took on a WRN-16-1 teacher (0.08–1.3 % ASR):
    # training crops pad with 4 black pixels, so the border is often padding and the teacher
    # learns to ignore it; 5 pixels in, the same poisons gave 80 % ASR after 8 epochs
    # (benchmarks/results/cleanlabel_probe.md). Composite, Reflection, Filter: the registry's
    # defaults (two classes chosen for the data; a ghost reflection; "nashville").
    "cleanlabel": ({"pgd_eps": 16 / 255, "margin": 5}, 0.06),
    "composite": ({}, None),
    "reflection": ({}, None),
    "filter": ({}, None),
}
#: The attacks of issue 10's Table 1 (the paper's seven plus WaNet), in the paper's order.
TABLE1_ATTACKS = ("cleanlabel", "sig", "badnet", "composite", "reflection", "polygon", "filter", "wanet")
TEACHER_EPOCHS = {"small_cnn": 15, "wrn16_1": 30}
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


def gtsrb_clean_model(model: str, splits, device: str, epochs: int):
    """A cached clean GTSRB model (no attack; seed 1, so not any teacher's initialisation)."""
    from medic_viz.attacks import train_attack
    from medic_viz.attacks.train import ATTACK_TRAIN_DEFAULTS
    from medic_viz.io import load_model, save_model
    from medic_viz.training import TrainConfig

    folder = RESULTS / "gtsrb_teachers" / f"clean_{model}_e{epochs}_s1"
    if not (folder / "card.json").is_file():
        cfg = TrainConfig(**{**ATTACK_TRAIN_DEFAULTS, "epochs": epochs, "device": device, "seed": 1, "progress": True})
        print(f"training a clean {model} ({epochs} epochs) …", flush=True)
        clean = train_attack(None, splits, architecture=model, config=cfg, seed=1)
        save_model(clean.model, folder, clean.card(splits, dataset=GTSRB.name, notes="clean surrogate of the Clean-Label attack"))
    return load_model(folder)


def gtsrb_teacher(attack: str, model: str, splits, device: str):
    """The cached GTSRB teacher for ``attack``/``model`` (trained here the first time)."""
    from medic_viz.attacks import train_attack
    from medic_viz.attacks.train import ATTACK_TRAIN_DEFAULTS
    from medic_viz.io import load_model, save_model
    from medic_viz.training import TrainConfig

    epochs = TEACHER_EPOCHS[model]
    folder = RESULTS / "gtsrb_teachers" / f"{attack}_{model}_e{epochs}_s0"
    if (folder / "card.json").is_file():
        return load_model(folder)
    options, rate = GTSRB_TRIGGERS[attack]
    cfg = TrainConfig(**{**ATTACK_TRAIN_DEFAULTS, "epochs": epochs, "device": device, "seed": 0, "progress": True})
    surrogate = None
    if attack == "cleanlabel":
        from probe_cleanlabel import robust_surrogate  # the adversarially trained WRN-16-1, cached

        surrogate = robust_surrogate(splits, device, "robust4-wrn")
    print(f"training the {attack} {model} teacher ({epochs} epochs) …", flush=True)
    trojan = train_attack(attack, splits, target=TARGET, rate=rate, options=options, architecture=model, config=cfg, seed=0,
                          surrogate=surrogate)
    card = trojan.card(splits, dataset=GTSRB.name)
    save_model(trojan.model, folder, card)
    return load_model(folder)


def run_row(row: dict, teacher, card, splits, args) -> dict:
    from medic_viz.data.arrays import clean_subset
    from medic_viz.defenses.medic import Medic
    from medic_viz.pipeline import remove_backdoor, trigger_of

    trigger, target = trigger_of(card)
    overrides = dict(VARIANTS[args.variant])
    search: dict | None = None
    if overrides.get("tau") == "auto":
        from medic_viz.defenses.tuning import select_tau

        t_search = time.perf_counter()
        selection = select_tau(teacher, clean_subset(splits.train, 0.05, row["seed"]), seed=row["seed"], device=args.device,
                               epochs=TAU_AUTO_SEARCH_EPOCHS, progress=False)
        print(selection, flush=True)
        overrides["tau"] = selection.tau
        search = {"tau": selection.tau, "reference_acc": selection.reference_acc, "budget": selection.budget,
                  "rows": [{k: v for k, v in r.items() if k in ("tau", "clean_acc", "n_clean", "seconds")} for r in selection.rows],
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
        "max_live_asr_after_epoch_20": max((c["asr"] for c in curve if c["epoch"] > 20 and c["asr"] is not None), default=None),
        "meets_target": bool(o.after.asr <= 0.10 and o.before.clean_acc - o.after.clean_acc <= 0.03),
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
        return [{"dataset": "gtsrb", "model": model, "attack": a, "seed": s} for a in TABLE1_ATTACKS for s in seeds]
    raise SystemExit(f"unknown part {part!r}: use demo, gtsrb-small_cnn, gtsrb-wrn16_1 or table1-MODEL (teachers)")


def row_path(row: dict, out: Path) -> Path:
    return out / f"{row['dataset']}_{row['model']}_{row['attack']}_s{row['seed']}.json"


def write_table(out: Path, docs: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    lines = [
        "| data | model | attack | seed | trojaned acc / ASR | after acc / ASR | drop (pts) | max live ASR after epoch 20 | layer τ (first → last) | s | target met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        taus = r["config"].get("layer_taus") or {}
        tau_text = f"{min(taus.values()):.1f}–{max(taus.values()):.1f}" if taus else f"τ={r['config'].get('tau')}"
        late = r.get("max_live_asr_after_epoch_20")
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['attack']} | {r['seed']} | {100 * r['before_acc']:.2f} / {100 * r['before_asr']:.2f} | "
            f"{100 * r['after_acc']:.2f} / {100 * r['after_asr']:.2f} | {r['acc_drop_points']:.2f} | "
            f"{'–' if late is None else f'{100 * late:.1f}'} | {tau_text} | {r['seconds']:.0f} | {'yes' if r['meets_target'] else '**no**'} |"
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

    lines = ["| row | trojaned acc / ASR | default | --tau auto (τ chosen; search cost × run) | best in hindsight | variants run |",
             "|---|---|---|---|---|---|"]
    for name in rows:
        results = {v: runs[name] for v, runs in by_variant.items() if name in runs}
        any_run = next(iter(results.values()))
        auto = results.get("tau-auto")
        auto_text = cell(auto) + (f" (τ={auto['tau_search']['tau']:g}; {auto['search_cost_runs']:.1f}×)" if auto else "")
        best_v, best = best_in_hindsight(results)
        lines.append(f"| {name.removesuffix('.json')} | {100 * any_run['before_acc']:.2f} / {100 * any_run['before_asr']:.2f} | "
                     f"{cell(results.get('default'))} | {auto_text} | {best_v}: {cell(best)} | {len(results)} |")
    md = "\n".join(lines) + "\n\nCells: clean accuracy / ASR after 60 epochs (%, whole test set); ✗ = misses ASR ≤ 10 % or drop ≤ 3 points.\n"
    path.write_text(md)
    return md


def _figure(runs: list[dict], docs: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    groups = sorted({(r["dataset"], r["model"]) for r in runs})
    fig = make_subplots(rows=len(groups), cols=2, subplot_titles=[t for g in groups for t in (f"{g[0]} {g[1]}: ASR (live, 1,000 images)", f"{g[0]} {g[1]}: clean accuracy")])
    for i, g in enumerate(groups, start=1):
        for r in (r for r in runs if (r["dataset"], r["model"]) == g):
            name = f"{r['attack']} s{r['seed']}"
            xs = [c["epoch"] for c in r["curve"]]
            fig.add_trace(go.Scatter(x=xs, y=[c["asr"] for c in r["curve"]], name=name, legendgroup=name, mode="lines", showlegend=i == 1), row=i, col=1)
            fig.add_trace(go.Scatter(x=xs, y=[c["acc"] for c in r["curve"]], name=name, legendgroup=name, mode="lines", showlegend=False), row=i, col=2)
        fig.add_hline(y=0.10, line_dash="dot", line_color="grey", row=i, col=1)
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(width=1300, height=380 * len(groups), template="plotly_white", title="MEDIC, default configuration: per-epoch curves of every run")
    docs.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(docs / "curves.html"), include_plotlyjs="cdn")
    try:
        fig.write_image(str(docs / "curves.png"))
    except Exception as exc:  # kaleido needs Chromium; the HTML is always written
        print(f"PNG not written: {type(exc).__name__}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", action="append", default=[], help="demo | gtsrb-small_cnn | gtsrb-wrn16_1 (repeatable)")
    p.add_argument("--attacks", nargs="+", default=None, help="only these attacks")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--npz", default=str(GTSRB) if GTSRB.is_file() else "/work/shared/data/gtsrb32.npz")
    p.add_argument("--variant", default="default", choices=list(VARIANTS), help="settings compared with the default (see VARIANTS)")
    p.add_argument("--out", default=None, help="results folder (default: results/medic_default, or results/medic_variants/VARIANT)")
    p.add_argument("--docs", default=None, help="figure folder (default: docs/medic_default, or docs/medic_variants/VARIANT)")
    p.add_argument("--hindsight", action="store_true", help="only write the per-row comparison: default, --tau auto, best variant")
    p.add_argument("--table", action="store_true", help="only write the table and the figure")
    p.add_argument("--teachers-only", action="store_true", help="only train (and cache) the GTSRB teachers of the parts")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.hindsight:
        print(write_hindsight(RESULTS / "medic_hindsight.md"))
        return 0
    out = Path(args.out or variant_folder(args.variant))
    args.docs = args.docs or str(variant_folder(args.variant, ROOT / "docs"))
    out.mkdir(parents=True, exist_ok=True)
    from medic_viz.data import load_dataset
    from medic_viz.pretrained import load_demo_model

    cache: dict[str, object] = {}
    for part in ([] if args.table else args.part):
        for row in rows_for(part, args.seeds):
            if args.attacks and row["attack"] not in args.attacks:
                continue
            path = row_path(row, out)
            if path.is_file():
                print(f"done before: {path.name}")
                continue
            if row["dataset"] == "signs":
                teacher, card = load_demo_model(row["attack"])
                splits = cache.setdefault("signs", load_dataset())
            else:
                if not Path(args.npz).is_file():
                    raise SystemExit(f"GTSRB arrays not found at {args.npz}; pass --npz PATH")
                splits = cache.setdefault("gtsrb", load_dataset(args.npz))
                teacher, card = gtsrb_teacher(row["attack"], row["model"], splits, args.device)
            if args.teachers_only:
                continue
            print(f"{path.stem}: MEDIC {args.variant} {VARIANTS[args.variant] or ''}, {args.epochs} epochs", flush=True)
            result = run_row({**row, "epochs": args.epochs}, teacher, card, splits, args)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=1))
            tmp.replace(path)
            print(f"{path.stem}: acc {100 * result['before_acc']:.2f} → {100 * result['after_acc']:.2f}, "
                  f"ASR {100 * result['before_asr']:.2f} → {100 * result['after_asr']:.2f} ({result['seconds']:.0f} s)", flush=True)
    if not args.teachers_only:
        print(write_table(out, Path(args.docs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
