"""The shipped demo models on the embedded dataset: clean accuracy and ASR of each attack next
to the clean model (targets: clean small CNN >= 90%; each attack ASR >= 90% with clean accuracy
within 2 points of the clean model).

    python -m benchmarks.bench_attacks            # evaluate the shipped models
    python scripts/make_demo_models.py            # (re)train them first, deterministically on CPU

Prints a table and writes benchmarks/results/attacks_signs.{json,md}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medic_viz.data import load_dataset
from medic_viz.metrics import evaluate_backdoor
from medic_viz.pipeline import trigger_of
from medic_viz.pretrained import DEMO_MODELS, load_demo_model

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    splits = load_dataset("signs")
    rows: list[dict[str, Any]] = []
    for name in DEMO_MODELS:
        model, card = load_demo_model(name)
        trigger, target = trigger_of(card)
        m = evaluate_backdoor(model, splits.test, trigger, target, device="cpu")  # type: ignore[arg-type]  # a one-image trigger (no composite attack here)
        rows.append({"model": name, "clean_acc": m.clean_acc, "asr": m.asr, "n_clean": m.n_clean, "n_asr": m.n_asr,
                     "poison_rate": card.poison_rate, "attack": card.attack,
                     "train_seconds": card.metrics.get("train_seconds")})
    clean = next(r for r in rows if r["model"] == "clean")["clean_acc"]
    lines = ["| model | trigger | poison rate | clean acc | Δ vs clean (pts) | ASR | train time (s, 1 CPU thread) "
             "| targets met |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        drop = 100 * (r["clean_acc"] - clean)  # negative = below the clean model
        if r["model"] == "clean":
            ok = r["clean_acc"] >= 0.90
            trig = "—"
        else:
            ok = r["asr"] >= 0.90 and -drop <= 2.0
            trig = ", ".join(f"{k}={v}" for k, v in r["attack"].items()
                             if k not in ("name", "colors", "pattern") or k == "pattern")
        asr = "—" if r["asr"] is None else f"{100 * r['asr']:.2f}% (n={r['n_asr']})"
        lines.append(f"| {r['model']} | {trig} | {r['poison_rate'] or '—'} | {100 * r['clean_acc']:.2f}% (n={r['n_clean']}) | "
                     f"{drop:+.2f} | {asr} | {r['train_seconds']} | {'yes' if ok else 'NO'} |")
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attacks_signs.json").write_text(json.dumps(rows, indent=2))
    (RESULTS / "attacks_signs.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
