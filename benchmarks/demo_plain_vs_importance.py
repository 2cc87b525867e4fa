"""Does importance matter? MEDIC's default against plain cloning (one global τ = 0), same seed,
same budget, on every shipped demo model — and why the two part where they do (issue 32).

    python -m benchmarks.demo_plain_vs_importance                        # demo models, seeds 0 1
    python -m benchmarks.demo_plain_vs_importance --part gtsrb-small_cnn # GTSRB small_cnn teachers
    python -m benchmarks.demo_plain_vs_importance --table                # table + figures from what is done

Runs: ``Medic()`` (τ calibrated per layer to a 1 % share, λ = 3, the default layers) and
``Medic(tau=0)`` (uniform weights: plain cloning of the same layers), 60 epochs on 5 % of the
training set (the seed picks the subset, the student's initialisation and the batch order —
the same for both), through :func:`medic_viz.pipeline.remove_backdoor` as
``benchmarks.bench_medic_default`` runs them (so the default rows repeat that benchmark's).
Per epoch: clean accuracy and ASR on 1,000 test images; at the end, both on the whole test set.

Explanation, per layer of the teacher, from library functions only (:mod:`medic_viz.analysis`:
``rank_compromised_neurons``, ``compromised_neurons``, ``weight_share``, ``centre_share``,
``trigger_transfer``, ``target_readout``), on 512 test images of non-target classes: the
trigger's compromised neurons (moved ≥ 1 σ, at most 10 % of the layer) and the share of them in
the centre of the map; the share of the layer's clean cloning weight they get at τ = 0 (their
count share, by definition) and at the default's calibrated τ; how much of the teacher's
trigger response each repaired model kept, and how much of its clean representation it did not
copy; and the share of triggered images each model already places nearest to the target
class's clean mean there (where the backdoor arrives).

Resumable: one JSON per run under ``benchmarks/results/demo_plain_vs_importance/`` (skipped
when present); the repaired models go to ``…/models/`` (not committed) for the explanation of
the 60-epoch pairs, one JSON per (attack, seed) under ``…/explain/``. ``--epochs 20`` runs the
budget the notebooks' and the workshop's runs use. ``--threads`` sets torch threads.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from benchmarks.common import DOCS, GTSRB, RESULTS, TEACHERS
from medic_viz.analysis import (
    centre_share,
    compromised_neurons,
    rank_compromised_neurons,
    target_readout,
    trigger_transfer,
    weight_share,
)
from medic_viz.attacks.base import Trigger
from medic_viz.capture import resolve_layers
from medic_viz.data import load_dataset
from medic_viz.data.arrays import clean_subset
from medic_viz.defenses.medic import Medic
from medic_viz.experiments.presets import gtsrb_recipe
from medic_viz.experiments.resume import RowFolder, run_resumable
from medic_viz.io import load_model, save_model
from medic_viz.pipeline import remove_backdoor, trigger_of
from medic_viz.pretrained import load_demo_model
from medic_viz.stats import compute_layer_stats
from medic_viz.viz.curves import grid_curves_figure

OUT = RESULTS / "demo_plain_vs_importance"
FIGURES = DOCS / "plain_vs_importance"
DEMO_ATTACKS = ("badnet", "blend", "sig", "polygon")
GTSRB_ATTACKS = ("badnet", "blend", "sig", "polygon", "wanet")
#: The two settings compared: ``Medic()`` overrides.
VARIANTS: dict[str, dict] = {"default": {}, "tau0": {"tau": 0.0}}
LABELS = {"default": "default (τ per layer, 1 % share)", "tau0": "plain cloning (τ = 0)"}
#: Tables and figures list the attacks in this order: the one where importance matters first.
ATTACK_ORDER = {a: i for i, a in enumerate(("polygon", "sig", "blend", "badnet", "wanet"))}
#: The seed of the per-layer figure (seed 0's student starts its last linear layer from the demo
#: teachers' own initial weights — they were trained from seed 0 — so seed 1 is the clean view).
FIGURE_SEED = 1
#: Test images of non-target classes used for the explanation.
EXPLAIN_IMAGES = 512


def rows_for(part: str, seeds: list[int], attacks: list[str] | None, epochs: int = 60) -> list[dict]:
    names: tuple[str, ...]
    if part == "demo":
        dataset, model, names = "signs", "small_cnn", DEMO_ATTACKS
    elif part.startswith("gtsrb-"):
        dataset, model, names = "gtsrb", part.split("-", 1)[1], GTSRB_ATTACKS
    else:
        raise SystemExit(f"unknown part {part!r}: use demo or gtsrb-small_cnn")
    return [{"dataset": dataset, "model": model, "attack": a, "seed": s, "variant": v, "epochs": epochs}
            for a in names if not attacks or a in attacks for s in seeds for v in VARIANTS]


def row_name(row: dict) -> str:
    """``signs_small_cnn_polygon_s0_tau0`` (60 epochs), ``…_tau0_e20`` (another budget)."""
    budget = "" if row["epochs"] == 60 else f"_e{row['epochs']}"
    return f"{row['dataset']}_{row['model']}_{row['attack']}_s{row['seed']}_{row['variant']}{budget}"


class Data:
    """Teachers and datasets, loaded once."""

    def __init__(self, npz: str, device: str) -> None:
        self.npz, self.device = npz, device
        self._splits: dict[str, Any] = {}

    def splits(self, dataset: str):
        if dataset not in self._splits:
            self._splits[dataset] = load_dataset() if dataset == "signs" else load_dataset(self.npz)
        return self._splits[dataset]

    def teacher(self, row: dict):
        if row["dataset"] == "signs":
            return load_demo_model(row["attack"])
        recipe = gtsrb_recipe(row["attack"], row["model"], self.npz)
        if TEACHERS.find(recipe) is None:
            raise SystemExit(f"no cached GTSRB teacher for {row['attack']}/{row['model']}: run "
                             "python -m benchmarks.bench_medic_default --part gtsrb-small_cnn --teachers-only")
        return TEACHERS.load(recipe, device=self.device)


def run_row(row: dict, data: Data, args) -> dict:
    teacher, card = data.teacher(row)
    trigger, target = trigger_of(card)
    defense = Medic(epochs=row["epochs"], device=args.device, seed=row["seed"], student_seed=row["seed"], progress=False,
                    **VARIANTS[row["variant"]])
    curve: list[dict] = []

    def on_event(ev) -> None:
        if ev.kind in ("start", "epoch"):
            curve.append({"epoch": ev.epoch, "clean_acc": ev.clean_acc, "asr": ev.asr, "ce": ev.losses.get("ce"),
                          "clone": ev.losses.get("clone"), "seconds": round(ev.seconds, 1)})
            if ev.kind == "epoch" and ev.epoch % 10 == 0:
                print(f"  epoch {ev.epoch}: acc {ev.clean_acc:.3f} ASR {ev.asr:.3f} ({ev.seconds:.0f} s)", flush=True)

    t0 = time.perf_counter()
    o = remove_backdoor(teacher, data.splits(row["dataset"]), defense, trigger=trigger, target=target, fraction=0.05,
                        seed=row["seed"], device=args.device, live_eval_images=1000, callbacks=[on_event])
    seconds = round(time.perf_counter() - t0, 1)
    save_model(o.result.model.cpu(), OUT / "models" / row_name(row), card)
    return {
        **row,
        "overrides": VARIANTS[row["variant"]],
        "config": {k: v for k, v in o.result.config.items() if k != "progress"},
        "n_clean_subset": o.n_clean_subset,
        "before_acc": o.before.clean_acc, "before_asr": o.before.asr,
        "after_acc": o.after.clean_acc, "after_asr": o.after.asr,
        "n_clean": o.after.n_clean, "n_asr": o.after.n_asr,
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "curve": curve,
    }


def group_of(row: dict) -> dict:
    """The (dataset, model, attack, seed, epochs) a run belongs to: its two variants form a pair."""
    return {k: row[k] for k in ("dataset", "model", "attack", "seed", "epochs")}


def group_name(group: dict) -> str:
    return row_name({**group, "variant": "pair"})


def explain(group: dict, data: Data) -> dict:
    """Per layer of the teacher (every conv / norm / linear output): the trigger's compromised
    neurons at the default selection (≥ 1 σ, at most 10 %), the share of them in the centre of the
    map, their share of the clean cloning weight at τ = 0 and at the default's calibrated τ, and
    how much of the teacher's trigger response each repaired model kept, and the share of triggered
    images that already look like the target class there (teacher, both repaired models)."""
    runs = {v: RowFolder(OUT).read(row_name({**group, "variant": v})) for v in VARIANTS}
    teacher, card = data.teacher(group)
    attack, found = trigger_of(card)
    if not isinstance(attack, Trigger) or found is None:
        raise SystemExit(f"{row_name(group)}: its card records no single trigger and target to explain")
    trigger, target = attack, found
    splits = data.splits(group["dataset"])
    layers = resolve_layers(teacher, None)
    clean = clean_subset(splits.train, 0.05, group["seed"])
    stats = compute_layer_stats(teacher, clean, layers, device="cpu")
    images = splits.test.subset(torch.nonzero(splits.test.labels != target).flatten()[:EXPLAIN_IMAGES])
    uniform = rank_compromised_neurons(teacher, images, trigger, stats=stats, tau=0.0)
    taus = runs["default"]["config"]["layer_taus"]
    clones = {v: load_model(OUT / "models" / row_name({**group, "variant": v}))[0] for v in VARIANTS}
    transfer = trigger_transfer(teacher, clones, images, trigger, stats=stats)
    readout = target_readout({"teacher": teacher, **clones}, clean, images, trigger, target, stats=stats)
    per_layer = []
    for n in layers:
        idx = compromised_neurons(uniform, n)
        record = {"layer": n, "cloned": n in runs["default"]["config"]["layers"], "tau_default": taus.get(n),
                  "neurons": int(uniform.neuron_shift[n].size), "compromised": int(len(idx)),
                  "centre": centre_share(uniform, n, idx),
                  "shift": float(abs(uniform.neuron_shift[n].reshape(-1)[idx]).mean()) if len(idx) else float("nan"),
                  "weight_tau0": weight_share(uniform, n, idx), "weight_default": None,
                  **{f"kept_{v}": transfer.kept[v][n] for v in VARIANTS},
                  **{f"cosine_{v}": transfer.cosine[v][n] for v in VARIANTS},
                  **{f"clean_error_{v}": transfer.clean_error[v][n] for v in VARIANTS},
                  **{f"target_{m}": readout.target_share[m][n] for m in readout.models},
                  **{f"readout_acc_{m}": readout.clean_accuracy[m][n] for m in readout.models}}
        if n in taus and len(idx):
            sharp = rank_compromised_neurons(teacher, images, trigger, stats={n: stats[n]}, layers=[n], tau=taus[n])
            record["weight_default"] = weight_share(sharp, n, idx)
        per_layer.append(record)
    return {**group, "n_images": transfer.n_images, "after": {v: [runs[v]["after_acc"], runs[v]["after_asr"]] for v in VARIANTS},
            "teacher_shift": transfer.teacher_shift, "per_layer": per_layer}


def _pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None or v != v else f"{100 * v:.{digits}f}"


def _pair(r: dict, key: str, fmt=lambda v: f"{v:.2f}") -> str:
    """``τ = 0 / default`` of one per-layer quantity."""
    return f"{fmt(r[f'{key}_tau0'])} / {fmt(r[f'{key}_default'])}"


def _trio(r: dict) -> str:
    """``teacher / τ = 0 / default`` share of triggered images nearest to the target, %."""
    return " / ".join(_pct(r[f"target_{m}"], 0) for m in ("teacher", "tau0", "default")) + " %"


RESULT_HEADER = ("| data | attack | epochs | seed | trojaned acc / ASR | default acc / ASR | τ = 0 acc / ASR "
                 "| τ = 0 keeps the backdoor (ASR > 10 %) |\n|---|---|---|---|---|---|---|---|")
WHY_HEADER = ("| data | attack | seed | ASR τ = 0 / default | last cloned layer: trigger's neurons (in the centre) "
              "| their cloning weight: τ = 0 → default | trigger response kept: τ = 0 / default "
              "| clean representation not copied: τ = 0 / default | triggered images nearest to the target: "
              "teacher / τ = 0 / default | the same after the next (not cloned) convolution |\n"
              "|---|---|---|---|---|---|---|---|---|---|")
LAYER_HEADER = ("| data | attack | seed | layer | cloned (τ default) | compromised neurons | in the centre "
                "| cloning weight on them: τ = 0 → default | trigger response kept: τ = 0 / default "
                "| clean representation not copied: τ = 0 / default | nearest to the target: teacher / τ = 0 / default "
                "| nearest-class-mean clean accuracy: teacher / τ = 0 / default |\n" + "|---" * 12 + "|")


def write_tables(out: Path = OUT) -> str:
    """The results table (one line per attack, seed and budget) and the explanation table, as
    markdown (``table.md``); every layer's explanation in ``explain.md``."""
    runs = {row_name(r): r for r in RowFolder(out).rows()}
    groups: list[dict] = []
    for r in runs.values():
        if group_of(r) not in groups:
            groups.append(group_of(r))
    groups.sort(key=lambda g: (g["dataset"] != "signs", g["model"], -g["epochs"], ATTACK_ORDER.get(g["attack"], 9), g["seed"]))
    lines = [RESULT_HEADER]
    for g in groups:
        d, t = (runs.get(row_name({**g, "variant": v})) for v in ("default", "tau0"))
        if d is None or t is None:
            continue
        lines.append(f"| {g['dataset']} {g['model']} | {g['attack']} | {g['epochs']} | {g['seed']} "
                     f"| {_pct(d['before_acc'], 2)} / {_pct(d['before_asr'], 2)} | {_pct(d['after_acc'], 2)} / "
                     f"{_pct(d['after_asr'], 2)} | {_pct(t['after_acc'], 2)} / {_pct(t['after_asr'], 2)} "
                     f"| {'**yes**' if t['after_asr'] > 0.10 else 'no'} |")
    md = "\n".join(lines) + "\n"
    explained = sorted((e for e in RowFolder(out / "explain").rows() if e["epochs"] == 60),
                       key=lambda e: (e["dataset"] != "signs", e["model"], ATTACK_ORDER.get(e["attack"], 9), e["seed"]))
    if explained:
        why, full = [WHY_HEADER], [LAYER_HEADER]
        for e in explained:
            names = [r["layer"] for r in e["per_layer"]]
            last = [r for r in e["per_layer"] if r["cloned"]][-1]
            after = e["per_layer"][min(names.index(last["layer"]) + 2, len(names) - 1)]  # its conv, then norm
            why.append(f"| {e['dataset']} {e['model']} | {e['attack']} | {e['seed']} "
                       f"| {_pct(e['after']['tau0'][1])} / {_pct(e['after']['default'][1])} % "
                       f"| {last['layer']}: {_pct(last['compromised'] / last['neurons'])} % ({_pct(last['centre'], 0)} %) "
                       f"| {_pct(last['weight_tau0'])} % → {_pct(last['weight_default'])} % | {_pair(last, 'kept')} "
                       f"| {_pair(last, 'clean_error')} | {_trio(last)} | {after['layer']}: {_trio(after)} |")
            for r in e["per_layer"]:
                cloned = f"yes ({r['tau_default']:.1f})" if r["cloned"] else "no"
                full.append(f"| {e['dataset']} {e['model']} | {e['attack']} | {e['seed']} | {r['layer']} | {cloned} "
                            f"| {r['compromised']} / {r['neurons']} ({_pct(r['compromised'] / r['neurons'])} %) "
                            f"| {_pct(r['centre'], 0)} % | {_pct(r['weight_tau0'])} % → {_pct(r['weight_default'])} % "
                            f"| {_pair(r, 'kept')} | {_pair(r, 'clean_error')} | {_trio(r)} "
                            f"| {' / '.join(_pct(r[f'readout_acc_{m}'], 0) for m in ('teacher', 'tau0', 'default'))} % |")
        md += "\n" + "\n".join(why) + "\n"
        (out / "explain.md").write_text("\n".join(full) + "\n")
    (out / "table.md").write_text(md)
    return md


def write_figures(out: Path = OUT, docs: Path = FIGURES) -> None:
    """Per-epoch curves of every pair (one figure per dataset and budget) with the library's
    :func:`medic_viz.viz.curves.grid_curves_figure`, and the per-layer explanation (``why``)."""
    docs.mkdir(parents=True, exist_ok=True)
    runs = RowFolder(out).rows()
    for dataset, epochs in sorted({(r["dataset"], r["epochs"]) for r in runs}):
        rows = sorted(({**r, "MEDIC": "default" if r["variant"] == "default" else "τ = 0"}
                       for r in runs if (r["dataset"], r["epochs"]) == (dataset, epochs)),
                      key=lambda r: (ATTACK_ORDER.get(r["attack"], 9), r["seed"]))
        seeds = sorted({r["seed"] for r in rows})
        fig = grid_curves_figure(rows, facet="attack", series="MEDIC",
                                 title=f"{dataset}, small_cnn, {epochs} epochs, seed{'s' if len(seeds) > 1 else ''} "
                                       f"{', '.join(map(str, seeds))} (a line each): MEDIC's default against plain cloning "
                                       "(τ = 0) — clean accuracy (solid), ASR (dashed)")
        shown: set[str] = set()
        for trace in fig.data:  # one legend entry per setting, not per seed
            trace.showlegend = bool(trace.showlegend) and trace.name not in shown
            shown.add(trace.name)
        _write(fig, docs / f"curves_{dataset}_e{epochs}")
    explained = sorted((e for e in RowFolder(out / "explain").rows() if e["epochs"] == 60 and e["seed"] == FIGURE_SEED),
                       key=lambda e: (e["dataset"] != "signs", ATTACK_ORDER.get(e["attack"], 9)))
    if explained:
        panels = (("kept", "trigger response kept"), ("clean_error", "clean representation<br>not copied"),
                  ("target", "% triggered images<br>nearest to the target"))
        titles = [f"{e['dataset']} {e['attack']}" for e in explained]
        fig = make_subplots(rows=len(panels), cols=len(explained), subplot_titles=titles, shared_yaxes=True,
                            horizontal_spacing=0.03, vertical_spacing=0.1)
        colors = {"teacher": "#7f7f7f", "tau0": "#d62728", "default": "#1f77b4"}
        names = {"teacher": "trojaned teacher", **LABELS}
        for i, e in enumerate(explained, start=1):
            layers = [r["layer"] for r in e["per_layer"]]
            cloned = [r["layer"] for r in e["per_layer"] if r["cloned"]]
            for row, (key, _) in enumerate(panels[:2], start=1):
                for v in ("tau0", "default"):
                    fig.add_trace(go.Bar(x=layers, y=[r[f"{key}_{v}"] for r in e["per_layer"]], name=names[v],
                                         marker_color=colors[v], legendgroup=v, showlegend=i == 1 and row == 1),
                                  row=row, col=i)
            for m in ("teacher", "tau0", "default"):
                fig.add_trace(go.Scatter(x=layers, y=[100 * r[f"target_{m}"] for r in e["per_layer"]], mode="lines+markers",
                                         name=names[m], line=dict(color=colors[m]), legendgroup=m,
                                         showlegend=i == 1 and m == "teacher"), row=3, col=i)
            for row in range(1, len(panels) + 1):
                fig.add_vrect(x0=cloned[0], x1=cloned[-1], fillcolor="#2ca02c", opacity=0.08, line_width=0, row=row, col=i)
        fig.update_yaxes(range=[0, 1.25], row=1)
        fig.update_yaxes(range=[0, 1.25], row=2)
        fig.update_yaxes(range=[0, 102], row=3)
        for row, (_, label) in enumerate(panels, start=1):
            fig.update_yaxes(title_text=label, row=row, col=1)
        fig.update_layout(barmode="group", template="plotly_white", width=320 * len(explained) + 200, height=900,
                          title=f"Per layer (green band: the cloned layers), seed {FIGURE_SEED}, 60 epochs: plain cloning "
                                "copies the teacher's representation and its trigger response; MEDIC's default does not")
        _write(fig, docs / "why")


def _write(fig, stem: Path) -> None:
    fig.write_html(str(stem.with_suffix(".html")), include_plotlyjs="cdn")
    try:
        fig.write_image(str(stem.with_suffix(".png")), scale=1)
    except Exception as exc:  # noqa: BLE001 — kaleido needs Chromium; the HTML is always written
        print(f"PNG not written ({stem.name}): {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", action="append", default=[], help="demo (default) | gtsrb-small_cnn (repeatable)")
    p.add_argument("--attacks", nargs="+", default=None, help="only these attacks")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--npz", default=str(GTSRB))
    p.add_argument("--table", action="store_true", help="only the explanation of finished runs, the table and figures")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Data(args.npz, args.device)
    parts = args.part or ["demo"]
    rows = [] if args.table else [r for part in parts for r in rows_for(part, args.seeds, args.attacks, args.epochs)]

    def run(row: dict) -> dict:
        name = row_name(row)
        print(f"{name}: MEDIC {LABELS[row['variant']]}, {row['epochs']} epochs", flush=True)
        result = run_row(row, data, args)
        print(f"{name}: acc {100 * result['before_acc']:.2f} → {100 * result['after_acc']:.2f}, "
              f"ASR {100 * result['before_asr']:.2f} → {100 * result['after_asr']:.2f} ({result['seconds']:.0f} s)",
              flush=True)
        return result

    run_resumable(rows, RowFolder(OUT), row_name, run, log=lambda msg: print(msg, flush=True))
    store = RowFolder(OUT)
    pairs = []
    for r in store.rows():
        g = group_of(r)
        if g["epochs"] == 60 and g not in pairs and all(store.done(row_name({**g, "variant": v})) for v in VARIANTS) and \
                all((OUT / "models" / row_name({**g, "variant": v})).is_dir() for v in VARIANTS):
            pairs.append(g)
    run_resumable(pairs, RowFolder(OUT / "explain"), group_name, lambda g: explain(g, data),
                  log=lambda msg: print(msg, flush=True))
    print(write_tables())
    write_figures()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
