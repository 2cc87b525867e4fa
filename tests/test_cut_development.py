"""Rule 4's grid (benchmarks/cut_development.py): which cells it runs, how it names them, what it
borrows from another grid, and its table computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import common, cut_development
from medic_viz.experiments import build_grid

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = ROOT / "benchmarks" / "results" / "gtsrb_teachers"
FIXED = {"lam": 3.0, "share": 0.01, "eps": 0.1}


def test_each_cell_is_named_by_its_layers_and_the_default_cell_is_the_librarys():
    folder = [str(TEACHERS / "badnet_mobilenet_v1_e30_s0")]
    cells = cut_development.grid(folder, list(cut_development.VARIANTS), seeds=[0, 1])
    assert [(c.seed, cut_development.variant_of({"method_options": c.method_options, "seed": c.seed})) for c in cells] == \
        [(0, "default"), (0, "cut res"), (1, "default"), (1, "cut res")]
    assert {c.test_part for c in cells} == {"development"} and {c.fraction for c in cells} == {0.05}
    assert cells[1].method_options["layers"] == "conv+bn-inner-res"
    default = build_grid(dataset=str(common.GTSRB), teachers=folder, methods=["medic"], seeds=[0],
                                test_part="development")[0]
    assert default.cell_id == cells[0].cell_id
    # another ε, λ, share or student init is another series
    for changed in ({"eps": 1e-5}, {"lam": 0.3}, {"share": 0.002}, {"student_seed": 1}):
        row = {"seed": 0, "method_options": {**FIXED, "layers": "auto", **changed}}
        assert cut_development.variant_of(row) is None, changed
    assert cut_development.variant_of({"seed": 0, "method_options": {**FIXED, "layers": "conv+bn"}}) is None


def test_the_table_by_hand():
    """Teacher 98 %, clone 96.5 %: 1.5 points; live ASR 0.30 on the last 10 of 30 epochs → mean
    30.0 %, 10 epochs above 10 % after epoch 20 (epochs 21–30); a row without a curve shows "–"."""
    curve = [{"epoch": e, "clean_acc": 0.9, "asr": 0.30 if e > 20 else 0.05} for e in range(1, 31)]
    rows = [{"model": "mobilenet_v1", "attack": "sig_mobilenet_v1_e30_s0", "seed": 1, "clean_acc": 0.965, "asr": 0.25,
             "before_clean_acc": 0.98, "curve": curve, "seconds": 1430.4, "method_options": {**FIXED, "layers": "auto"}},
            {"model": "mobilenet_v1", "attack": "sig_mobilenet_v1_e30_s0", "seed": 0, "clean_acc": 0.97, "asr": 0.02,
             "before_clean_acc": 0.98, "seconds": 10.0,
             "method_options": {**FIXED, "layers": "conv+bn-inner-res"}}]
    lines = cut_development.table(rows).splitlines()
    assert lines[2:] == ["| mobilenet_v1 | sig_mobilenet_v1_e30_s0 | cut res | 0 | 98.0 → 97.0 (1.0) | 2.0 | – | 0 | 10 |",
                         "| mobilenet_v1 | sig_mobilenet_v1_e30_s0 | default | 1 | 98.0 → 96.5 (1.5) | 25.0 | 30.0 | 10 | 1430 |"]


def test_known_rows_borrow_only_plain_networks_default_cells_at_five_percent(tmp_path, monkeypatch: pytest.MonkeyPatch):
    other = tmp_path / "other"
    other.mkdir()
    base = {"before_clean_acc": 0.98, "clean_acc": 0.96, "asr": 0.01, "seconds": 1.0, "seed": 0, "fraction": 0.05,
            "attack": "t", "method": "medic"}
    rows = [{**base, "cell_id": "a", "model": "mobilenet_v1", "method_options": {**FIXED, "layers": "auto"}},
            {**base, "cell_id": "b", "model": "wrn16_1", "method_options": {**FIXED, "layers": "auto"}},
            {**base, "cell_id": "c", "model": "mobilenet_v1", "fraction": 0.02, "method_options": {**FIXED, "layers": "auto"}},
            {**base, "cell_id": "d", "model": "mobilenet_v1", "method_options": {**FIXED, "eps": 0.3, "layers": "auto"}}]
    (other / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(cut_development, "OUT", tmp_path / "mine")
    monkeypatch.setattr(cut_development, "SHARED", (other,))
    assert [r["cell_id"] for r in cut_development.known_rows()] == ["a"]
