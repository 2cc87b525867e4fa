"""Late-ASR summaries of a run's live curve and the volatility survey of committed grids
(:mod:`benchmarks.diag_asr_volatility`), checked by hand on small cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pytest

from benchmarks import diag_asr_volatility as vol
from medic_viz.experiments.summary import epochs_above, late_asr_mean


def _curve(asrs: Sequence[float | None]) -> list[dict]:
    return [{"epoch": e, "clean_acc": 0.9, "asr": a} for e, a in enumerate(asrs)]


def test_late_asr_mean_averages_the_last_epochs_that_have_an_asr() -> None:
    curve = _curve([0.0, 0.9, 0.1, None, 0.3, 0.5])
    assert late_asr_mean(curve, last=3) == pytest.approx((0.1 + 0.3 + 0.5) / 3)  # the None epoch is skipped
    assert late_asr_mean(curve, last=5) == pytest.approx((0.0 + 0.9 + 0.1 + 0.3 + 0.5) / 5)
    assert late_asr_mean(curve, last=6) is None  # five points only
    assert late_asr_mean(None) is None and late_asr_mean(curve, last=0) is None


def test_epochs_above_counts_late_epochs_strictly_above_the_threshold() -> None:
    curve = _curve([0.5, 0.5, 0.05, 0.1, 0.11, 0.7])
    assert epochs_above(curve, 0.1, after_epoch=1) == 2  # epochs 4 and 5; 0.1 itself is not above
    assert epochs_above(curve, 0.1, after_epoch=-1) == 4
    assert epochs_above(None, 0.1) == 0


def _row(cell: str, grid: str, asr: float, *, eps: float | None = None, fraction: float = 0.05, seed: int = 0,
         curve: list[float] | None = None, **options) -> dict:
    opts = {"seed": seed, "student_seed": seed, "device": "cpu", "layers": "auto", "lam": 3.0, "share": 0.01, **options}
    if eps is not None:
        opts["eps"] = eps
    return {"cell_id": cell, "grid": grid, "model": "wrn16_1", "attack": "sig_wrn16_1_e30_s0", "method": "medic",
            "ablation": "none", "clean_from": "images", "fraction": fraction, "seed": seed, "asr": asr,
            "clean_acc": 0.97, "method_options": opts, "curve": _curve(curve or [asr] * 41)}


def test_only_the_default_up_to_eps_counts_as_a_default_run() -> None:
    assert vol.is_default_run(_row("a", "g", 0.1)) and vol.is_default_run(_row("a", "g", 0.1, eps=0.1))
    assert not vol.is_default_run(_row("a", "g", 0.1, lam=10.0))
    assert not vol.is_default_run(_row("a", "g", 0.1, kd_weight=1.0))
    assert not vol.is_default_run({**_row("a", "g", 0.1), "clean_from": "tracks"})
    assert not vol.is_default_run({**_row("a", "g", 0.1), "ablation": "tau"})


def test_repeats_are_one_cell_in_two_grids_with_different_results() -> None:
    rows = [_row("same", "g1", 0.10), _row("same", "g2", 0.22),  # one cell, two results: a repeat
            _row("equal", "g1", 0.05), _row("equal", "g2", 0.05),  # one cell, one result: not
            _row("alone", "g1", 0.30)]
    groups = vol.repeats(rows)
    assert [[r["grid"] for r in g] for g in groups] == [["g1", "g2"]]


def test_summary_counts_distinct_cells_per_eps_by_hand() -> None:
    late_swing = [0.0] * 31 + [0.8, 0.02] * 5  # passes 10 % after epoch 30, ends at 2 %; last-10 mean 41 %
    rows = [_row("c1", "g1", 0.02, curve=late_swing), _row("c1", "g2", 0.30),  # the same cell twice: counted once
            _row("c2", "g1", 0.25, seed=1),  # ends above 10 %, and sits there
            _row("c3", "g1", 0.01, eps=0.1),
            _row("c4", "g1", 0.5, fraction=0.02)]  # another amount: not in the 5 % summary
    assert vol.summary(rows) == [("wrn16_1", "sig", 1e-5, 2, 1, 2, 2), ("wrn16_1", "sig", 0.1, 1, 0, 0, 0)]
    line = vol.run_line(rows[0])
    assert line["final"] == pytest.approx(2.0) and line["late_mean"] == pytest.approx(41.0)
    assert line["peak"] == pytest.approx(80.0) and line["above"] == 5 and line["late_epochs"] == 10


def test_report_reads_grids_from_their_folders(tmp_path: Path) -> None:
    for grid, asr in (("g1", 0.05), ("g2", 0.4)):
        (tmp_path / grid).mkdir()
        row = {k: v for k, v in _row("same", grid, asr).items() if k != "grid"}
        (tmp_path / grid / "runs.jsonl").write_text(json.dumps(row) + "\n")
    rows = vol.committed_rows(tmp_path)
    assert sorted(r["grid"] for r in rows) == ["g1", "g2"]
    text = vol.report(rows)
    assert "| same (sig_wrn16_1_e30_s0, 5 %, seed 0, ε = 1e-05) | g2 |" in text
    assert "| wrn16_1 | sig | 1e-05 | 1 | 0 | 0 | 0 |" in text  # counted once, the first grid's row
    assert "seed 0 (student init 1), ε = 0.1" in vol._who(_row("x", "g", 0.1, eps=0.1, student_seed=1))
