"""Build the gallery shown in the README: what each shipped demo model's trigger does inside it.

    python scripts/make_gallery.py [--out docs/gallery] [--models badnet blend sig polygon clean]
                                   [--tau 5] [--images 512] [--no-png]

For every shipped demo model (``medic_viz/demo_models/<name>``):

- ``<name>_figure2.{html,png}``: the paper's Figure 2 for one test image (the first one of a
  non-target class that the model gets right and that the trigger flips to the target), for
  bn1–bn4 and the logits, at τ;
- ``<name>_neurons.{html,png}``: the channels the trigger shifts most over ``--images`` clean
  test images of non-target classes, against the importance MEDIC gives them on those images;

and ``compromised_stats.md`` / ``.json``: the compromised-neuron statistic
(:func:`medic_viz.analysis.compromised_importance_statistic`) for every model. Statistics μ, σ
come from MEDIC's clean subset (5 % of the training set, seed 0). The "clean" model has no
trigger of its own: it is shown with the BadNet trigger, as a control.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from medic_viz.analysis import (
    analyze_input,
    compromised_importance_statistic,
    find_flipping_image,
    rank_compromised_neurons,
)
from medic_viz.attacks.registry import make_trigger, trigger_from_config
from medic_viz.data import load_dataset
from medic_viz.data.arrays import clean_subset
from medic_viz.pretrained import DEMO_MODELS, load_demo_model
from medic_viz.stats import compute_layer_stats
from medic_viz.viz.analysis_figures import figure2_grid, neuron_ranking_figure
from medic_viz.viz.export import export_figure

ROOT = Path(__file__).resolve().parents[1]
FIGURE2_LAYERS = ("bn1", "bn2", "bn3", "bn4", "fc")
MAX_PNG_BYTES = 300_000


def _png_ok(paths: list[Path]) -> list[str]:
    notes = []
    for p in paths:
        if p.suffix == ".png" and p.stat().st_size > MAX_PNG_BYTES:
            notes.append(f"{p.name} is {p.stat().st_size // 1000} kB (> {MAX_PNG_BYTES // 1000} kB)")
    return notes


def build(name: str, splits, out: Path, tau: float, n_images: int, png: bool) -> dict:
    model, card = load_demo_model(name)
    model.eval()
    target = card.target_class if card.target_class is not None else 0
    trigger = trigger_from_config(card.attack) if card.attack else make_trigger("badnet")
    clean = clean_subset(splits.train, 0.05, seed=0)
    stats = compute_layer_stats(model, clean, device="cpu")
    # a model without a backdoor (the control) flips nothing: fall back to an image it gets right
    i = find_flipping_image(model, splits.test, trigger, target, strict=card.attack is not None)  # type: ignore[arg-type]  # a one-image trigger (no composite attack here)
    image, label = splits.test.floats(torch.tensor([i]))[0], int(splits.test.labels[i])
    analysis = analyze_input(model, image, trigger, label, stats=stats, class_names=splits.classes)  # type: ignore[arg-type]  # a one-image trigger (no composite attack here)
    written = export_figure(figure2_grid(analysis, list(FIGURE2_LAYERS), tau), out / f"{name}_figure2", png=png)

    pool = (splits.test.labels != target).nonzero()[:, 0][:n_images]
    images = splits.test.subset(pool)
    ranking = rank_compromised_neurons(model, images, trigger, stats=stats, tau=tau)  # type: ignore[arg-type]  # a one-image trigger (no composite attack here)
    hidden = [n for n in ranking.layers if n in analysis.map_layers]  # conv/norm layers, not the logits
    stats_out = {
        "neuron": compromised_importance_statistic(ranking, level="neuron").as_dict(),
        "neuron_hidden": compromised_importance_statistic(ranking, level="neuron", layers=hidden).as_dict(),
        "channel": compromised_importance_statistic(ranking, level="channel").as_dict(),
        "channel_hidden": compromised_importance_statistic(ranking, level="channel", layers=hidden).as_dict(),
    }
    neuron_stat = compromised_importance_statistic(ranking, level="neuron")
    written += export_figure(neuron_ranking_figure(ranking, 20, statistic=neuron_stat), out / f"{name}_neurons", png=png)
    p = analysis.predictions
    return {
        "model": name,
        "trigger": trigger.to_config()["name"] + ("" if card.attack else " (control: model has no backdoor)"),
        "clean_acc": (card.metrics or {}).get("clean_acc"),
        "asr": (card.metrics or {}).get("asr"),
        "example": {"test_index": i, "label": splits.classes[label], "clean_pred": splits.classes[p["clean"].label],
                    "triggered_pred": splits.classes[p["triggered"].label]},
        "statistics": stats_out,
        "top_channels": ranking.top(10).as_records(),
        "files": [str(w.relative_to(ROOT)) if w.is_relative_to(ROOT) else str(w) for w in written],
        "notes": _png_ok(written),
    }


def _no_nan(obj):
    """JSON-safe copy: NaN → None, numpy scalars → Python numbers."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def _fmt(v, pct=False) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.1f} %" if pct else f"{v:.3g}"


def _row(r: dict, s: dict, per_image: bool = False) -> str:
    extra = ""
    if per_image:
        extra = (f" {100 * s['image_percentile']:.0f} ({s['images_below']}/{s['n_images_tested']}, "
                 f"p {s['image_p_value']:.2g}) |")
    return (
        f"| {r['model']} | {r['trigger']} | {_fmt(r['clean_acc'], True)} | {_fmt(r['asr'], True)} | "
        f"{s['n_units']} ({s['n_selected']}) | **{100 * s['percentile']:.0f}** | {s['p_value']:.3g} | "
        f"{s['ratio']:.2f} ({s['null_ratio']:.2f}) | {s['spearman']:+.2f} / {s['spearman_within']:+.2f} | "
        f"{s['layers_below']}/{s['n_layers']} | {'yes' if s['supported'] else '**no**'} |" + extra
    )


_HEADER = [
    "| model | trigger | clean acc | ASR | units (selected) | percentile | p | ratio (random) | ρ pooled / within "
    "| layers below median | supports the claim |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]
_HEADER_IMG = [
    _HEADER[0] + " per image: percentile (images below 50, sign-test p) |",
    _HEADER[1] + "---|",
]


def _verdict(rows: list[dict], key: str) -> str:
    yes = [r["model"] for r in rows if r["statistics"][key]["supported"]]
    no = [r["model"] for r in rows if not r["statistics"][key]["supported"]]
    parts = []
    if yes:
        parts.append(f"supported for {', '.join(yes)}")
    if no:
        parts.append(f"not supported for {', '.join(no)}")
    return "; ".join(parts)


def _control(rows: list[dict]) -> list[str]:
    ctrl = next((r for r in rows if r["model"] == "clean"), None)
    if ctrl is None:
        return []
    s = ctrl["statistics"]["neuron"]
    return [
        f"- Control: the clean model (no backdoor) with the BadNet trigger gives percentile "
        f"{100 * s['percentile']:.0f} (p = {s['p_value']:.2g}, supported = {'yes' if s['supported'] else 'no'}). "
        "Where a trojaned model's number is no lower than this, the low importance of its shifted neurons "
        "says where the trigger sits (e.g. a corner patch on the background, where clean importance is low "
        "anyway), not that importance singles out the backdoor.",
    ]


def write_markdown(rows: list[dict], out: Path, tau: float, n_images: int) -> Path:
    lines = [
        "# Do compromised neurons get low importance on clean inputs?",
        "",
        "The paper's argument (Section 3, Figure 2) is that the neurons a trigger compromises are",
        "unimportant for clean inputs, so importance-weighted cloning does not copy them. This page",
        "tests that on the shipped demo models with `medic_viz.analysis.compromised_importance_statistic`;",
        "the test can come out either way, and the tables say which way it did.",
        "",
        f"Per model: {n_images} clean test images of non-target classes and their triggered copies x'.",
        "A unit's **shift** is the mean over images of |f(x') − f(x)| / σ (σ: clean standard deviation of",
        f"its channel); its **importance** is MEDIC's eq.(4) weight (τ = {tau:g}) on the *clean* image, as a",
        "share of its layer's total, averaged over images, relative to the layer average (1 = average).",
        "In every layer the most shifted units are selected as the \"compromised\" ones (last bullet).",
        "",
        "- **percentile**: their mean importance percentile within the layer (50 = no relation; the claim",
        "  predicts well below 50);",
        "- **p**: one-sided permutation p-value (2000 random selections of as many units per layer);",
        "- **ratio (random)**: their mean relative importance, and the median for random units (importance",
        "  is heavy-tailed, so random units also sit below 1);",
        "- **ρ**: Spearman correlation of |shift| and importance over all units, pooled / mean within layers;",
        "- **supports**: percentile < 50 and p < 0.05;",
        "- the selected units: neurons moved by ≥ 1 σ on average (channels: any shift), at most 10 % per layer.",
        "",
        "Statistics μ, σ come from MEDIC's clean subset (5 % of the training set, seed 0). Within one",
        "image eq.(4)'s ranking of neurons does not depend on τ (w ∝ exp(τ(|z| + g)/2)), so the",
        "percentiles barely move with τ. Regenerate with `python scripts/make_gallery.py`.",
        "",
        "## Neurons (feature-map elements, the paper's unit)",
        "",
        "The last column pairs each image with itself: per image, the neurons *its* trigger moves by",
        "≥ 1 σ (at most 10 % of a layer) and their importance percentile among that same clean image's",
        "neurons, averaged over layers; then the mean over images and how many images fall below 50.",
        "",
        *_HEADER_IMG,
        *[_row(r, r["statistics"]["neuron"], True) for r in rows],
        "",
        "Conv and norm layers only (without the logits):",
        "",
        *_HEADER_IMG,
        *[_row(r, r["statistics"]["neuron_hidden"], True) for r in rows],
        "",
        "## Channels (a whole feature map as one unit)",
        "",
        "A channel's shift and importance are its neurons' averaged over positions. Spatially local",
        "triggers shift a few positions of many channels, so this view can disagree with the neuron one.",
        "",
        *_HEADER,
        *[_row(r, r["statistics"]["channel"]) for r in rows],
        "",
        "Conv and norm layers only:",
        "",
        *_HEADER,
        *[_row(r, r["statistics"]["channel_hidden"]) for r in rows],
        "",
        "## Summary",
        "",
        f"- Neurons, all layers: {_verdict(rows, 'neuron')}.",
        "- Per image (neurons, all layers): "
        + "; ".join(f"{r['model']} {100 * r['statistics']['neuron']['image_percentile']:.0f} "
                    f"({r['statistics']['neuron']['images_below']}/{r['statistics']['neuron']['n_images_tested']} below 50)"
                    for r in rows) + ".",
        f"- Neurons, conv/norm layers: {_verdict(rows, 'neuron_hidden')}.",
        f"- Channels, all layers: {_verdict(rows, 'channel')}.",
        f"- Channels, conv/norm layers: {_verdict(rows, 'channel_hidden')}.",
        *_control(rows),
        "",
        "## Per layer (neurons)",
        "",
    ]
    for r in rows:
        lines += [f"### {r['model']}", "", "| layer | neurons | k | percentile | ratio | ρ | p |",
                  "|---|---|---|---|---|---|---|"]
        for d in r["statistics"]["neuron"]["per_layer"]:
            lines.append(f"| {d['layer']} | {d['units']} | {d['k']} | {100 * d['percentile']:.0f} | {d['ratio']:.2f} | "
                         f"{d['spearman']:+.2f} | {d['p_value']:.3g} |")
        lines.append("")
    path = out / "compromised_stats.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "gallery"))
    p.add_argument("--models", nargs="+", default=list(DEMO_MODELS))
    p.add_argument("--tau", type=float, default=5.0)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--no-png", action="store_true")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_dataset("signs", size=32, seed=0)
    rows = []
    for name in args.models:
        t0 = time.perf_counter()
        try:
            row = build(name, splits, out, args.tau, args.images, not args.no_png)
        except FileNotFoundError as exc:
            print(f"{name}: skipped ({exc})", flush=True)
            continue
        rows.append(row)
        s = row["statistics"]["neuron"]
        print(f"{name:8s} neurons: percentile {100 * s['percentile']:4.0f}  p={s['p_value']:.3g}  ratio {s['ratio']:.2f} "
              f"(random {s['null_ratio']:.2f})  ρ {s['spearman']:+.2f}/{s['spearman_within']:+.2f}  "
              f"supported={s['supported']}  per image {100 * s['image_percentile']:.0f} "
              f"({s['images_below']}/{s['n_images_tested']} below)  {time.perf_counter() - t0:.1f} s", flush=True)
        for note in row["notes"]:
            print(f"  warning: {note}")
    if not rows:
        print("no demo model found; build them with scripts/make_demo_models.py", file=sys.stderr)
        return 1
    md = write_markdown(rows, out, args.tau, args.images)
    (out / "compromised_stats.json").write_text(json.dumps(_no_nan(rows), indent=2, allow_nan=False) + "\n")
    print(f"wrote {md} and {len(rows)} × 2 figures to {out}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())
