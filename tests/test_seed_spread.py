"""More seeds where two cannot tell (benchmarks/seed_spread, rule 8): the paired sign test by
hand, the per-run scatter, the grid's cells (the same computations as the architectures grid's
and plain_matched's at other seeds) and the table, by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import architectures, plain_matched, protocol_report, seed_spread
from benchmarks.common import ARCH_DEFAULT, ARCH_PLAIN, MATCHED
from medic_viz.metrics import paired_sign_test
from medic_viz.viz.summary_figures import per_run_scatter_figure

ROOT = Path(__file__).resolve().parents[1]
TEACHER = str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "sig_wrn16_1_e30_s1")


def test_paired_sign_test_by_hand() -> None:
    """9 lower, 1 higher: p = 2 · (1 + 10) / 2^10 = 0.021484375; ties (|d| ≤ 1) are left out;
    3 vs 3: p = 1 (capped); nothing untied: p = 1."""
    first, second = [0.0] * 9 + [5.0] + [2.0, 3.5], [2.0] * 9 + [1.0] + [2.5, 3.0]
    test = paired_sign_test(first, second, tie=1.0)
    assert (test.wins, test.losses, test.ties) == (9, 1, 2)
    assert test.p_value == pytest.approx(22 / 1024)
    assert paired_sign_test([0, 0, 0, 9, 9, 9], [5] * 6).p_value == 1.0
    assert paired_sign_test([1.0, 2.0], [1.5, 2.5], tie=1.0) == (0, 0, 2, 1.0)
    assert paired_sign_test([0.0] * 5, [1.0] * 5).p_value == pytest.approx(2 / 32)  # 5 of 5: 2 · 1/32
    with pytest.raises(ValueError, match="needs pairs"):
        paired_sign_test([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="tie"):
        paired_sign_test([1.0], [2.0], tie=-1)


def test_per_run_scatter_draws_every_run_in_its_panel_with_the_target_corner() -> None:
    rows = [{"panel": a, "series": s, "label": f"seed {k}", "clean_acc": 0.9 + k / 100, "asr": k / 10,
             "before_clean_acc": 0.98 if a == "sig" else 0.95} for a in ("sig", "polygon") for s in ("x", "y")
            for k in range(3)]
    fig = per_run_scatter_figure(rows, target=(10.0, 3.0))
    assert len(fig.data) == 4 and [t.name for t in fig.data] == ["x", "y", "x", "y"]
    assert [t.showlegend for t in fig.data] == [True, True, False, False]
    sig_x = fig.data[0]
    assert list(sig_x.x) == pytest.approx([90.0, 91.0, 92.0]) and list(sig_x.y) == pytest.approx([0.0, 10.0, 20.0])
    assert fig.data[2].xaxis == "x2" and list(fig.data[2].text) == ["seed 0", "seed 1", "seed 2"]
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert [(r.x0, r.x1, r.y0, r.y1) for r in rects] == [(pytest.approx(95.0), 100, 0, 10.0), (pytest.approx(92.0), 100, 0, 10.0)]
    with pytest.raises(ValueError):
        per_run_scatter_figure([{"panel": "sig", "clean_acc": 0.9}])


def test_grid_is_the_architectures_and_matched_cells_at_other_seeds() -> None:
    """Seeds 0–1 of this grid are the very cells already run (read, not re-run); seeds 2–5 are the
    same computations at other seeds."""
    assert {c.cell_id for c in seed_spread.grid([TEACHER], [0, 1])} == \
        {c.cell_id for c in architectures.grid([TEACHER], [0, 1]) + plain_matched.grid([TEACHER], [0, 1])}
    cells = seed_spread.grid([TEACHER], seed_spread.SEEDS)
    assert len(cells) == 3 * 4 and sorted({c.seed for c in cells}) == [2, 3, 4, 5]
    assert sorted(float(c.method_options.get("lam", 3.0)) for c in cells) == [0.1] * 4 + [3.0] * 8


def _row(attack: str, seed: int, acc: float, asr: float, point: str, model: str = "wrn16_1", eps: float = 0.1) -> dict:
    ablation = "none" if point == ARCH_DEFAULT else "tau"
    opts = {"layers": "auto", "eps": eps, "lam": 0.1 if point == MATCHED else 3.0, **({"tau": 0.0} if ablation == "tau" else {})}
    return {"attack": f"{attack}_{model}_e30_s1", "model": model, "method": "medic", "seed": seed, "clean_acc": acc,
            "asr": asr, "before_clean_acc": 0.98, "before_asr": 1.0, "ablation": ablation,
            "x": 0.0 if ablation == "tau" else None, "method_options": opts}


def test_spread_rows_keep_each_attack_point_and_seed_once_and_nothing_else() -> None:
    rows = [_row("sig", 2, 0.97, 0.05, ARCH_DEFAULT), _row("sig", 2, 0.5, 0.5, ARCH_DEFAULT),   # a second copy: dropped
            _row("sig", 2, 0.97, 0.05, ARCH_DEFAULT, eps=1e-5),                                # another ε
            _row("sig", 2, 0.97, 0.05, ARCH_DEFAULT, model="mobilenet_v1"),                    # another architecture
            _row("badnet", 2, 0.97, 0.05, ARCH_DEFAULT)]                                       # another attack
    kept = seed_spread.spread_rows(rows)
    assert len(kept) == 1 and kept[0]["clean_acc"] == 0.97 and kept[0]["point"] == ARCH_DEFAULT


def test_table_by_hand() -> None:
    """SIG, three seeds. Default: 97/4, 96/40, 97/2 → 96.7 ± 0.6 / 15.3 ± 21.4, median 4.0, 2 of 3
    (96/40 misses on ASR); plain λ = 3: 98/7, 98/5, 94/0 → 96.7 ± 2.3 / 4.0 ± 3.6, 2 of 3 (94 is a
    drop of 4); matched: 97/30, 97/10, 97/2.5 → 2 of 3 (10.0 meets, ≤). Pairs vs plain λ = 3: 4 < 7
    lower, 40 > 5 and 2 > 0 higher → 1, 2, 0, p = 2 · 4/8 = 1; vs matched: 4 < 30 lower, 40 > 10
    higher, 2 vs 2.5 tied → 1, 1, 1, p = 1."""
    pts = {ARCH_DEFAULT: [(0.97, 0.04), (0.96, 0.40), (0.97, 0.02)], ARCH_PLAIN: [(0.98, 0.07), (0.98, 0.05), (0.94, 0.0)],
           MATCHED: [(0.97, 0.30), (0.97, 0.10), (0.97, 0.025)]}
    rows = seed_spread.spread_rows([_row("sig", s, a, r, p) for p, v in pts.items() for s, (a, r) in enumerate(v)])
    # default, seed 1: 60 % at epoch 30 (the late peak), 22 % over the last 10 epochs
    rows[1]["curve"] = [{"epoch": e, "asr": 0.6 if e == 30 else 0.2 + 0.02 * (e > 50)} for e in range(1, 61)]
    lines = seed_spread.table(rows).splitlines()
    assert lines[2] == "| sig | default | 3 | 96.7 ± 0.6 | 15.3 ± 21.4, live ≤ 60 % | 4.0 | 2 of 3 |"
    assert lines[3] == "| sig | τ = 0 (plain cloning) | 3 | 96.7 ± 2.3 | 4.0 ± 3.6 | 5.0 | 2 of 3 |"
    assert lines[4] == "| sig | plain cloning at λ = 0.1 | 3 | 97.0 ± 0.0 | 14.2 ± 14.2 | 10.0 | 2 of 3 |"
    assert "| sig | 1 | 96.0 / 40.0 (last 10: 22) | 98.0 / 5.0 | 97.0 / 10.0 |" in lines  # epochs 51–60
    assert lines[-1] == ("- default vs plain cloning at λ = 0.1: 3 pairs; the default lower in 1, higher in 1, tied in 1; "
                         "sign test p = 1")
    assert lines[-2] == ("- default vs τ = 0 (plain cloning): 3 pairs; the default lower in 1, higher in 2, tied in 0; "
                         "sign test p = 1")


def test_results_block_shows_the_seed_spread_after_the_architectures_once_its_table_is_written(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(protocol_report, "SEED_SPREAD_OUT", tmp_path)
    assert "More seeds on WRN-16-1" not in protocol_report.block()
    (tmp_path / "table.md").write_text("| sig | default | 6 |\n")
    block = protocol_report.block()
    assert block.index("**Architectures**") < block.index("More seeds on WRN-16-1") < block.index("| sig | default | 6 |") \
        < block.index("**Table 1 under the protocol")
