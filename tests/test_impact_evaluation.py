"""Rule 6 C (benchmarks/impact_evaluation): the candidate's cells on evaluation teachers of two
seeds, the point each row belongs to, the table and the decision, by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks import architectures, common, impact_evaluation
from benchmarks.common import ARCH_DEFAULT

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "sig_wrn16_1_e30_s1"
SCALED = impact_evaluation.SCALED


def _row(attack: str, model: str, tseed: int, seed: int, acc: float, asr: float, impact: str | None = None,
         **options) -> dict:
    opts = {"layers": "auto", "eps": 0.1, "lam": 3.0, "student_seed": seed, **({"impact": impact} if impact else {}),
            **options}
    return {"attack": f"{attack}_{model}_e30_s{tseed}", "model": model, "method": "medic", "seed": seed,
            "clean_acc": acc, "asr": asr, "before_clean_acc": 0.97, "before_asr": 1.0, "ablation": "none",
            "x": None, "fraction": 0.05, "method_options": opts}


def _all(default: tuple[float, float], scaled: tuple[float, float]) -> list[dict]:
    """Both points' 12 runs, each at one (clean accuracy, ASR)."""
    return [_row(a, m, t, s, *values, impact=impact)
            for a, m in impact_evaluation.RULE6C_TEACHERS for t in (1, 2) for s in (0, 1)
            for impact, values in ((None, default), ("scaled", scaled))]


def test_the_fresh_teachers_get_both_settings_and_the_first_seeds_only_the_candidate(tmp_path: Path) -> None:
    fresh = tmp_path / "sig_wrn16_1_e30_s2"
    shutil.copytree(TEACHER, fresh)
    first, second = impact_evaluation.grid([str(TEACHER)], [0, 1]), impact_evaluation.grid([str(fresh)], [0, 1])
    assert [c.method_options.get("impact") for c in first] == ["scaled", "scaled"]
    assert [c.method_options.get("impact") for c in second] == [None, None, "scaled", "scaled"]
    for cell in first + second:
        assert cell.test_part == "evaluation" and cell.fraction == 0.05 and cell.method_options["eps"] == 0.1
    # the seed-2 default cells are the architectures grid's cells for that teacher, the seed-1 ones are read
    assert {c.cell_id for c in second[:2]} <= {c.cell_id for c in architectures.grid([str(fresh)], [0, 1])}
    assert not {c.cell_id for c in first} & {c.cell_id for c in architectures.grid([str(TEACHER)], [0, 1])}


def test_each_row_has_its_point_and_other_series_have_none() -> None:
    assert impact_evaluation.point(_row("sig", "wrn16_1", 1, 0, 0.9, 0.1)) == ARCH_DEFAULT
    assert impact_evaluation.point(_row("sig", "wrn16_1", 2, 1, 0.9, 0.1, impact="scaled")) == SCALED
    assert impact_evaluation.point(_row("sig", "wrn16_1", 1, 0, 0.9, 0.1, eps=1e-5)) is None          # another ε
    assert impact_evaluation.point(_row("sig", "wrn16_1", 1, 0, 0.9, 0.1, student_seed=3)) is None    # another init
    assert impact_evaluation.point({**_row("sig", "wrn16_1", 1, 0, 0.9, 0.1), "fraction": 0.1}) is None
    assert impact_evaluation.point(_row("sig", "wrn16_1", 1, 0, 0.9, 0.1, impact="abs")) is None
    assert [impact_evaluation.teacher_seed(n) for n in ("sig_wrn16_1_e30_s2", "/a/polygon_mobilenet_v1_e30_s1", "x")] \
        == [2, 1, None]


def test_the_rule_counts_runs_meeting_the_target_and_guards_the_accuracy_by_hand() -> None:
    # teacher 97 %: the default 95 / 20 % misses everywhere, the candidate 94.5 / 5 % meets everywhere
    # (drop 2.5) at 0.5 points below the default: the guard holds at its edge → it becomes the default
    assert impact_evaluation.verdict(_all((0.95, 0.20), (0.945, 0.05))).endswith("becomes the default.")
    # 0.6 points below: the guard fails, the default stays although the candidate meets more often
    text = impact_evaluation.verdict(_all((0.95, 0.20), (0.944, 0.05)))
    assert "the default meets the target on 0, impact=\"scaled\" on 12" in text and "missed" in text
    assert text.endswith("the default does not move; the option stays documented.")
    # as many runs meeting the target: not more, the default stays
    assert "does not move" in impact_evaluation.verdict(_all((0.96, 0.05), (0.96, 0.05)))
    # a drop of 3.1 points misses the target even at 0 % ASR
    assert not impact_evaluation.meets_target({**_row("sig", "wrn16_1", 1, 0, 0.939, 0.0)})
    assert impact_evaluation.verdict(_all((0.95, 0.2), (0.95, 0.05))[:-1]).startswith("Rule 6 C: not decided yet")


def test_the_table_puts_both_points_beside_each_teacher_seed_by_hand() -> None:
    rows = [_row("sig", "wrn16_1", 2, 0, 0.96, 0.04), _row("sig", "wrn16_1", 2, 1, 0.94, 0.02),
            _row("sig", "wrn16_1", 2, 0, 0.90, 0.50, impact="scaled")]
    lines = impact_evaluation.table(rows).splitlines()
    assert lines[2] == ("| wrn16_1 | sig | 2 | 97.0 / 100.0 | 95.0 ± 1.4 / 3.0 ± 1.4 (n=2, target 2 of 2) | "
                        "90.0 / 50.0 (n=1, target 0 of 1) |")
    assert lines[3] == "" and lines[4].startswith("Rule 6 C: not decided yet (default: 2 of 12")


def test_a_teacher_seed_of_the_other_role_is_refused() -> None:
    with pytest.raises(ValueError, match="teacher seed 0 is not an evaluation seed: use one of 1, 2"):
        common.evaluation_teachers(["sig"], "wrn16_1", 0)
