"""Plain cloning at the default's cloning strength (benchmarks/plain_matched): its cells, the
point each row belongs to, and the table, by hand."""

from __future__ import annotations

from pathlib import Path

from benchmarks import architectures, plain_matched
from benchmarks.common import ARCH_DEFAULT, ARCH_PLAIN

ROOT = Path(__file__).resolve().parents[1]
TEACHER = str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "sig_wrn16_1_e30_s1")


def _row(seed: int, acc: float, asr: float, ablation: str = "tau", lam: float = 0.1, **options) -> dict:
    opts = {"layers": "auto", "eps": 0.1, "lam": lam, **({"tau": 0.0} if ablation == "tau" else {}), **options}
    return {"attack": "sig_wrn16_1_e30_s1", "model": "wrn16_1", "method": "medic", "seed": seed, "clean_acc": acc,
            "asr": asr, "before_clean_acc": 0.98, "before_asr": 1.0, "ablation": ablation,
            "x": 0.0 if ablation == "tau" else None, "method_options": opts}


def test_matched_cells_are_plain_cloning_at_lambda_0_1_and_not_the_architectures_cells() -> None:
    ours, theirs = plain_matched.grid([TEACHER], [0, 1]), architectures.grid([TEACHER], [0, 1])
    assert len(ours) == 2 and not {c.cell_id for c in ours} & {c.cell_id for c in theirs}
    for cell in ours:
        assert cell.method_options["lam"] == 0.1 and cell.method_options["tau"] == 0.0
        assert cell.method_options["eps"] == 0.1 and cell.test_part == "evaluation"


def test_each_row_has_its_point_and_other_series_have_none() -> None:
    assert plain_matched.point(_row(0, 0.9, 0.1)) == plain_matched.MATCHED
    assert plain_matched.point(_row(0, 0.9, 0.1, lam=3.0)) == ARCH_PLAIN
    assert plain_matched.point(_row(0, 0.9, 0.1, ablation="none", lam=3.0)) == ARCH_DEFAULT
    assert plain_matched.point(_row(0, 0.9, 0.1, lam=0.3)) is None                   # another λ
    assert plain_matched.point(_row(0, 0.9, 0.1, eps=1e-5)) is None                  # another ε
    assert plain_matched.point(_row(0, 0.9, 0.1, layers="conv+bn")) is None          # other layers


def test_table_sets_the_three_points_side_by_side_by_hand() -> None:
    """Default 96 / 4 and 94 / 2 → 95.0 ± 1.4 / 3.0 ± 1.4; plain λ = 3: 97 / 80; matched: 90 / 50
    and 92 / 30 → 91.0 ± 1.4 / 40.0 ± 14.1. A teacher without a matched row gets no line."""
    rows = [_row(0, 0.96, 0.04, ablation="none", lam=3.0), _row(1, 0.94, 0.02, ablation="none", lam=3.0),
            _row(0, 0.97, 0.80, lam=3.0), _row(0, 0.90, 0.50), _row(1, 0.92, 0.30),
            {**_row(0, 0.9, 0.9, ablation="none", lam=3.0), "attack": "badnet_wrn16_1_e30_s1"}]
    lines = plain_matched.table(rows).splitlines()
    assert lines[2:] == ["| wrn16_1 | sig | 98.0 / 100.0 | 95.0 ± 1.4 / 3.0 ± 1.4 (n=2) | 97.0 / 80.0 (n=1) | "
                         "91.0 ± 1.4 / 40.0 ± 14.1 (n=2) |"]
