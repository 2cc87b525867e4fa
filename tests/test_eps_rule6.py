"""Rule 6's decision (benchmarks/eps_development.rule6_verdict), by hand and on the committed
default cells it is held against."""

from __future__ import annotations

from benchmarks import eps_development
from benchmarks.common import RESULTS
from medic_viz.experiments import read_runs

WHOLE = 16  # 2 teachers × 4 seeds × 5 % and 10 %


def _run(teacher: str, seed: int, fraction: float, late: float, acc: float, scaled: bool, final: float | None = None,
         **options) -> dict:
    curve = [{"epoch": e, "clean_acc": acc, "asr": late} for e in range(1, 61)]
    opts = {"lam": 3.0, "layers": "auto", "eps": 0.1, **({"impact": "scaled"} if scaled else {}), **options}
    return {"attack": teacher, "seed": seed, "fraction": fraction, "asr": late if final is None else final,
            "clean_acc": acc, "curve": curve, "method_options": opts}


def _b(scaled: bool, above: int, acc: float) -> list[dict]:
    """B's 16 runs of one variant, the first ``above`` relapsing (last-10 live ASR 20 %, else 2 %)."""
    slots = [(t, s, f) for f in eps_development.RULE5_FRACTIONS for t in eps_development.RULE3_TEACHERS for s in range(4)]
    return [_run(t, s, f, 0.2 if i < above else 0.02, acc, scaled) for i, (t, s, f) in enumerate(slots)]


def _a(*asrs: float) -> list[dict]:
    return [_run(eps_development.RULE6_A_TEACHER, seed, 0.05, asr, 0.85, True) for seed, asr in enumerate(asrs)]


def test_rule6_makes_a_candidate_only_within_the_accuracy_guard() -> None:
    """Default: 2 of 16 relapsing, mean last-10 ASR (2·20 + 14·2)/16 ≈ 4.3 %, 97.67 % clean.
    The variant at 97.20 % (0.47 points lower) with A's runs at 6.9 and 2.8 %: a candidate; at
    97.10 % (0.57 lower): not, whatever A says."""
    default = _b(False, 2, 0.9767)
    verdict = eps_development.rule6_verdict(default + _b(True, 3, 0.9720) + _a(0.069, 0.028))
    assert "eps 0.1 2 of 16 above 10 %, mean last-10 live ASR 4.3 %, mean clean accuracy 97.67 %" in verdict
    assert "impact scaled 3 of 16, 5.4 %, 97.20 % (guard: within 0.5 points: met)" in verdict
    assert "A: 6.9 %, 2.8 % ASR (all ≤ 10 %)" in verdict and "a candidate" in verdict
    low = eps_development.rule6_verdict(default + _b(True, 0, 0.9710) + _a(0.069, 0.028))
    assert "missed" in low and low.endswith("the default does not move.")


def test_rule6_without_a_needs_b_fewer_and_lower() -> None:
    """A's second run at 12 % ASR: the variant needs fewer relapsing runs *and* a lower mean."""
    default = _b(False, 2, 0.9767)
    assert "a candidate" in eps_development.rule6_verdict(default + _b(True, 1, 0.9767) + _a(0.069, 0.12))
    same = eps_development.rule6_verdict(default + _b(True, 2, 0.9767) + _a(0.069, 0.12))
    assert "(not all ≤ 10 %)" in same and "no candidate" in same


def test_rule6_waits_for_every_run_and_ignores_other_initialisations() -> None:
    default, scaled = _b(False, 2, 0.9767), _b(True, 0, 0.9767)
    assert "not decided yet" in eps_development.rule6_verdict(default + scaled[1:] + _a(0.0, 0.0))
    assert "A: 1 of 2 runs" in eps_development.rule6_verdict(default + scaled + _a(0.0))
    moved = scaled[:-1] + [{**scaled[-1], "method_options": {**scaled[-1]["method_options"], "student_seed": 9}}]
    assert "impact scaled: 15 of 16" in eps_development.rule6_verdict(default + moved + _a(0.0, 0.0))


def test_rule6_baseline_is_the_committed_default_cells_as_the_rule_was_written() -> None:
    """BENCHMARKS.md §6 wrote rule 6 against the 16 committed ε = 0.1 cells: 2 of 16 relapsing,
    mean last-10 live ASR 4.3 %, mean clean accuracy 97.67 %."""
    rows = read_runs(RESULTS / "eps_development" / "runs.jsonl")
    above, lates, accs = eps_development._pooled(rows, eps_development.RULE6_DEFAULT)
    assert (above, len(lates)) == (2, WHOLE)
    assert f"{100 * sum(lates) / WHOLE:.1f}" == "4.3" and f"{100 * sum(accs) / WHOLE:.2f}" == "97.67"
    a_runs = [r for r in rows if r["attack"] == eps_development.RULE6_A_TEACHER
              and eps_development.variant_of(r) == eps_development.RULE6_VARIANT]
    assert sorted(round(100 * r["asr"], 1) for r in a_runs) == [2.8, 6.9]
