"""Which criterion carries MEDIC's weights on the GTSRB teachers, and do they spare the neurons a
trigger moves? (issue 27: the late relapses). Per development teacher and clean subset (the cells'
own: ``clean_subset(train, fraction, seed)``), at the τ per layer a run calibrates
(:func:`medic_viz.defenses.medic.preview_layer_taus`) and its statistics (σ with MEDIC's ε), on the
subset's augmented batches as a run sees them (:func:`medic_viz.analysis.sharpness.criteria_sharpness`):

- the effective share of neurons each criterion matches — eq.(2) activation, eq.(3) impact,
  eq.(4) both (1 % is what the calibration aims eq.(4) at; 100 % is uniform);
- the weight each gives the 1 % of neurons per layer that the trigger moves most (measured on 512
  non-target images of the *development* half of the test set), as a multiple of uniform;
- the teacher's cross-entropy on the subset and on unseen development images (eq.(3) scales with
  its gradient);
- the same with ``impact="scaled"`` (the gradient over its per-sample spread; not the paper's, τ
  calibrated for it), which keeps eq.(3) ranking neurons when the teacher fits its images;
- beside it, whether the MEDIC cells of that subset relapsed (last-10-epoch mean of the live ASR
  of the committed ``eps_development`` and ``cut_development`` rows, ε = 1e-5 and 0.1).

Development teachers and images only; it uses the trigger, as a diagnostic, never as a setting.

    OMP_NUM_THREADS=1 python -m benchmarks.diag_importance_criteria --attacks sig polygon --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import GTSRB, RESULTS, TEACHERS
from medic_viz.analysis import criteria_sharpness, rank_compromised_neurons
from medic_viz.attacks.base import Trigger
from medic_viz.capture import resolve_layers
from medic_viz.data import clean_subset, load_dataset
from medic_viz.defenses.medic import MedicConfig, preview_layer_taus
from medic_viz.experiments import read_runs
from medic_viz.experiments.presets import gtsrb_recipe
from medic_viz.experiments.protocol import DEVELOPMENT, ROLE_SEEDS, part_of_test_set
from medic_viz.experiments.summary import late_asr_mean
from medic_viz.pipeline import trigger_of
from medic_viz.stats import compute_layer_stats

OUT = RESULTS / "importance_criteria"
#: The development grids whose default cells (layers ``auto``, λ 3, eq.(3) as written) it reads.
CELLS = (RESULTS / "eps_development", RESULTS / "cut_development")
#: The share of each layer's neurons counted as the trigger's (most moved, mean |Δ| in σ).
TOP = 0.01


def relapse_of(attack: str, arch: str, seed: int, fraction: float) -> str:
    """The committed default cells' last-10 live ASR (%) for this teacher and subset (eq.(3) as
    written, λ 3, the default layers), ``"<ε 1e-5> / <ε 0.1>"`` ("–" where a cell is missing). A
    row that names no ε ran at 1e-5, the default of the day."""
    teacher = f"{attack}_{arch}_e30_s{ROLE_SEEDS['development'][0]}"
    found: dict[float, str] = {}
    for row in (row for folder in CELLS for row in read_runs(folder / "runs.jsonl")):
        options = row.get("method_options") or {}
        if (row.get("attack") == teacher and row.get("seed") == seed and abs(row.get("fraction", 0) - fraction) < 1e-9
                and options.get("student_seed", seed) == seed and str(options.get("layers", "auto")) == "auto"
                and float(options.get("lam", 3.0)) == 3.0 and options.get("impact", "signed") == "signed"):
            late = late_asr_mean(row.get("curve"))
            found[float(options.get("eps", 1e-5))] = "–" if late is None else f"{100 * late:.1f}"
    return f"{found.get(1e-5, '–')} / {found.get(0.1, '–')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="wrn16_1")
    parser.add_argument("--attacks", nargs="+", default=["sig", "polygon"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = load_dataset(str(GTSRB))
    dev_test = part_of_test_set(splits.test, DEVELOPMENT)
    head = ("| teacher | subset seed | teacher CE, subset / unseen (mean, nats) | effective share, activation / impact / "
            "both (%) | impact share on unseen (%) | trigger's 1 % of neurons: weight × uniform, activation / impact / "
            "both (p99 both) | `impact=\"scaled\"`: effective share, impact / both (%) | `impact=\"scaled\"`: "
            "trigger's neurons × uniform, impact / both | its MEDIC cells: last-10 live ASR at ε = 1e-5 / 0.1 (%) |")
    lines = [head, "|" + "---|" * 9]
    for attack in args.attacks:
        recipe = gtsrb_recipe(attack, args.arch, GTSRB, seed=ROLE_SEEDS["development"][0])
        teacher, card = TEACHERS.load(recipe, splits=splits, train=False)
        teacher.eval()
        trigger, target = trigger_of(card)
        if not isinstance(trigger, Trigger):
            raise SystemExit(f"{recipe.name}: its card records no single trigger ({card.attack}); pick another attack")
        layers = resolve_layers(teacher, "auto", input_shape=splits.train.image_shape)
        probe = dev_test.subset(torch.nonzero(dev_test.labels != target).flatten()[:512])
        unseen = dev_test.subset(torch.arange(min(len(dev_test), 1960)))
        eps = MedicConfig().eps  # σ as a run estimates it (the cloning loss's units)
        reference = compute_layer_stats(teacher, clean_subset(splits.train, args.fraction, args.seeds[0]), layers, eps=eps)
        ranking = rank_compromised_neurons(teacher, probe, trigger, stats=reference, layers=layers)
        moved = {}
        for name in layers:
            shift = ranking.neuron_shift[name].reshape(-1)
            moved[name] = torch.from_numpy(np.argsort(-shift, kind="stable")[: max(1, round(TOP * shift.size))].copy())
        for seed in args.seeds:
            start = time.perf_counter()
            clean = clean_subset(splits.train, args.fraction, seed)
            stats = compute_layer_stats(teacher, clean, layers, eps=eps)
            taus = preview_layer_taus(teacher, clean)
            seen = criteria_sharpness(teacher, clean, taus=taus, stats=stats, neurons=moved, augment=True, seed=seed)
            scaled_taus = preview_layer_taus(teacher, clean, MedicConfig(impact="scaled"))
            scaled = criteria_sharpness(teacher, clean, taus=scaled_taus, stats=stats, neurons=moved, augment=True,
                                        seed=seed, impact="scaled")
            new = criteria_sharpness(teacher, unseen, taus=taus, stats=stats)
            share = " / ".join(f"{100 * seen.mean_share(c):.2f}" for c in ("activation", "impact", "both"))
            weight = " / ".join(f"{seen.mean_neuron_weight(c):.2f}" for c in ("activation", "impact", "both"))
            p99 = np.mean(list(seen.neuron_weight_p99["both"].values()))
            line = (f"| {recipe.name} | {seed} | {seen.loss_mean:.4f} / {new.loss_mean:.4f} | {share} | "
                    f"{100 * new.mean_share('impact'):.2f} | {weight} ({p99:.1f}) | "
                    f"{100 * scaled.mean_share('impact'):.2f} / {100 * scaled.mean_share('both'):.2f} | "
                    f"{scaled.mean_neuron_weight('impact'):.2f} / {scaled.mean_neuron_weight('both'):.2f} | "
                    f"{relapse_of(attack, args.arch, seed, args.fraction)} |")
            lines.append(line)
            print(line, f"({time.perf_counter() - start:.0f} s)", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{args.arch}_{int(round(100 * args.fraction))}pct.md"
    text = (f"Development teachers ({args.arch}), {args.fraction:.0%} clean subsets, layers `auto` ({len(layers)}), τ per layer "
            f"calibrated to a 1 % share; weights averaged over layers and the subset's augmented images. Command: "
            f"`python -m benchmarks.diag_importance_criteria --arch {args.arch} --attacks {' '.join(args.attacks)} "
            f"--seeds {' '.join(map(str, args.seeds))} --fraction {args.fraction:g}`\n\n" + "\n".join(lines) + "\n")
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
