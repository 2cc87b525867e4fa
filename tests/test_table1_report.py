"""Issue 10's report script: which attacks enter the table, the status line, the alignment
target of the aligned-τ row, and RESULTS.md in step with the committed runs."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import table1_report as rep  # noqa: E402
from table1_aligned_tau import BASELINES, alignment_budget  # noqa: E402


def _row(attack, method, seed, before=0.97, acc=0.95):
    return {"attack": attack, "method": method, "seed": seed, "variant": method, "before_clean_acc": before,
            "clean_acc": acc, "before_asr": 1.0, "asr": 0.1, "teacher_id": attack, "seconds": 60.0}


def test_only_attacks_with_every_method_and_seed_are_complete():
    rows = [_row("badnet", m, s) for m in rep.METHODS for s in rep.SEEDS]
    rows += [_row("sig", m, s) for m in rep.METHODS for s in rep.SEEDS][:-1]  # sig's last MEDIC seed missing
    assert rep.complete_attacks(rows) == ["badnet"]
    whole, text = rep.status_line(rows, [])
    assert not whole and text.startswith(f"**PARTIAL — {len(rows)} of 128 grid cells done.**")
    assert "In the table (every method, both seeds): badnet. Started: sig." in text


def test_complete_only_with_every_attack_and_the_aligned_row():
    rows = [_row(a, m, s) for a in rep.ATTACKS for m in rep.METHODS for s in rep.SEEDS]
    aligned = [dict(_row(a, "medic", s), variant=rep.ALIGNED) for a in rep.ATTACKS for s in rep.SEEDS]
    assert rep.status_line(rows, aligned)[0]
    assert not rep.status_line(rows, aligned[:-2])[0]  # one attack's aligned row missing


def test_alignment_budget_is_the_baselines_mean_drop_by_hand():
    rows = [_row("badnet", m, s, before=0.97, acc=0.97 - 0.01 * (i + 1)) for i, m in enumerate(BASELINES) for s in (0, 1)]
    rows += [_row("badnet", "kd", 0, acc=0.5)]  # not a paper baseline: ignored
    assert alignment_budget(rows, "badnet") == pytest.approx(0.03)  # mean of 1..5 points
    assert alignment_budget(rows[:-2], "badnet") is None  # ANP seed 1 missing
    # a method that gains accuracy on average gives a zero budget, not a negative one
    gains = [_row("sig", m, s, before=0.90, acc=0.95) for m in BASELINES for s in (0, 1)]
    assert alignment_budget(gains, "sig") == 0.0


def test_results_md_block_matches_the_committed_runs():
    assert rep.main(["--check"]) == 0, "RESULTS.md is out of date: run python benchmarks/table1_report.py"
