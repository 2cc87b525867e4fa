"""Rule 3 B's count (benchmarks/eps_development.rule3_table), by hand."""

from __future__ import annotations

from benchmarks import eps_development


def _run(attack: str, seed: int, eps: float | None, late: float, final: float, **options) -> dict:
    curve = [{"epoch": e, "clean_acc": 0.97, "asr": late} for e in range(1, 61)]
    opts = {"lam": 3.0, "layers": "auto", **({} if eps is None else {"eps": eps}), **options}
    return {"attack": attack, "seed": seed, "fraction": 0.05, "asr": final, "curve": curve, "method_options": opts}


def test_rule3_counts_runs_whose_last_ten_epochs_average_above_ten_percent():
    rows = [_run("sig_wrn16_1_e30_s0", 0, None, 0.245, 0.2175),       # ε = 1e-5 (unnamed): above
            _run("sig_wrn16_1_e30_s0", 1, None, 0.10, 0.003),         # exactly 10 %: not above
            _run("polygon_wrn16_1_e30_s0", 3, 0.1, 0.108, 0.108),     # ε = 0.1: above
            _run("polygon_wrn16_1_e30_s0", 2, 0.1, 0.5, 0.5, student_seed=0),  # another init: not rule 3 B's
            {**_run("sig_wrn16_1_e30_s0", 2, 0.1, 0.9, 0.9), "fraction": 0.02},  # 2 %: not counted
            _run("badnet_wrn16_1_e30_s0", 0, 0.1, 0.9, 0.9)]          # another teacher
    lines = eps_development.rule3_table(rows).splitlines()
    assert lines[2] == "| 1e-5 | 21.8 / 24.5 | 0.3 / 10.0 | – | – | – | – | – | – | 1 of 2 |"
    assert lines[3] == "| 0.1 | – | – | – | – | – | – | – | 10.8 / 10.8 | 1 of 1 |"
