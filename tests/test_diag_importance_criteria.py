"""The diagnostic's relapse column reads every development grid that holds default cells."""

from __future__ import annotations

from benchmarks import diag_importance_criteria as diag


def test_relapse_column_finds_default_cells_of_the_cut_grid_too():
    # MobileNet-v1 SIG's default development cell lives in cut_development (its last ten live
    # epochs average 82 % ASR); the first version read eps_development alone and showed "–".
    assert diag.relapse_of("sig", "mobilenet_v1", 0, 0.05) == "– / 82.0"


def test_relapse_column_keeps_both_eps_and_ignores_other_variants():
    # WRN-16-1 SIG, subset seed 3 at 10 %: ε = 1e-5 relapsed (41.5 %), ε = 0.1 did not; the
    # "impact scaled" or other-λ cells of the same subset must not overwrite the default's value.
    assert diag.relapse_of("sig", "wrn16_1", 3, 0.1) == "41.5 / 1.1"
    assert diag.relapse_of("sig", "mobilenet_v1", 7, 0.05) == "– / –"
