"""Issue 10's report script: which attacks enter the table, the status line, the alignment
target of the aligned-τ row, and RESULTS.md in step with the committed runs."""

import json

import pytest

import medic_viz.defenses.tuning as tuning
from benchmarks import table1_aligned_tau as al, table1_report as rep
from benchmarks.table1_aligned_tau import BASELINES, aligned_tau, alignment_budget


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
    assert rep.main(["--check"]) == 0, "RESULTS.md is out of date: run python -m benchmarks.table1_report"


def test_aligned_tau_on_the_committed_badnet_sweep_by_hand():
    """The BadNet sweep: trojaned model 99.49 % (388 of 390 hold-out images); one standard error
    (plus four: p = 390 / 394) is sqrt(0.98985 * 0.01015 / 394) = 0.51 points, so with a zero
    target τ = 2 (0.26 points below) qualifies and τ = 3 (0.77 below) does not; with a 2-point
    target τ = 5 (1.79 below) does and τ = 8 (2.56 below) does not."""
    sweep = {"reference_acc": 388 / 390, "n_holdout": 390,
             "rows": [{"tau": t, "clean_acc": k / 390} for t, k in ((0, 388), (1, 386), (2, 387), (3, 385), (5, 381), (8, 378))]}
    tau, allowed = aligned_tau(sweep, 0.0)
    assert tau == 2.0 and allowed == pytest.approx(0.00505, abs=1e-5)
    assert aligned_tau(sweep, 0.02)[0] == 5.0


def test_aligned_tau_on_the_committed_polygon_sweep_by_hand():
    """The Polygon sweep: the trojaned model gets all 390 hold-out images right and every clone
    misses at least one. Before, the margin was the plain binomial error, 0 at 100 %, so no τ
    qualified and the rule fell back to τ = 0 (plain cloning). With plus four (p = 392 / 394) the
    margin is sqrt(0.99492 * 0.00508 / 394) = 0.36 points: τ = 2 (389 of 390, 0.26 below)
    qualifies, τ = 3 (387, 0.77 below) does not."""
    sweep = {"reference_acc": 1.0, "n_holdout": 390,
             "rows": [{"tau": t, "clean_acc": k / 390}
                      for t, k in ((0, 389), (1, 389), (2, 389), (3, 387), (5, 385), (8, 382), (12, 383))]}
    tau, allowed = aligned_tau(sweep, 0.0)
    assert allowed == pytest.approx(0.00358, abs=1e-5)
    assert tau == 2.0


def test_aligned_script_sweeps_once_then_reuses_the_cache(tmp_path, monkeypatch, capsys):
    grid = [dict(_row("badnet", m, s, before=0.97, acc=0.96), teacher_folder="t/badnet") for m in BASELINES for s in rep.SEEDS]
    grid += [dict(_row("sig", "finetune", 0), teacher_folder="t/sig")]  # sig's baselines incomplete
    monkeypatch.setattr(al, "load_rows", lambda: (grid, []))
    monkeypatch.setattr(al, "SELECTION", tmp_path / "aligned_selection.json")
    monkeypatch.setattr(al, "load_model", lambda folder: (None, None))
    monkeypatch.setattr(al, "load_dataset", lambda path: type("S", (), {"train": None})())
    monkeypatch.setattr(al, "clean_subset", lambda *a, **k: None)
    calls = []

    def fake_select(teacher, clean, *, candidates, budget, **kw):
        calls.append(budget)
        # another run of the script (the other core) saves its attack meanwhile: it must survive
        (tmp_path / "aligned_selection.json").write_text(json.dumps({"polygon": {"tau": 2.0}}))
        rows = [{"tau": 0.0, "clean_acc": 0.99, "n_clean": 400, "seconds": 1.0},
                {"tau": 3.0, "clean_acc": 0.976, "n_clean": 400, "seconds": 1.0},
                {"tau": 8.0, "clean_acc": 0.95, "n_clean": 400, "seconds": 1.0}]
        return tuning.TauSelection(0.0, budget, 0.99, rows)

    monkeypatch.setattr(al, "select_tau", fake_select)
    assert al.main(["--attacks", "badnet", "sig", "--select-only"]) == 0
    out = capsys.readouterr().out
    assert "sig: the five baselines have not all run" in out
    # target 1 point + plus-four error (p = 398 / 404: 0.60 points) = 1.60 ≥ 1.4 (τ = 3), < 4 (τ = 8)
    assert "badnet: τ = 3" in out
    assert calls == [0.0]
    saved = json.loads((tmp_path / "aligned_selection.json").read_text())
    assert saved["badnet"]["tau"] == 3.0 and saved["badnet"]["target_drop"] == pytest.approx(0.01)
    assert saved["polygon"] == {"tau": 2.0}
    assert al.main(["--attacks", "badnet", "--select-only"]) == 0  # the sweep comes from the cache
    assert calls == [0.0]


def test_medic_curves_figures_keep_defaults_and_aligned_runs_apart(tmp_path, monkeypatch):
    """The aligned row's MEDIC runs have curves and seeds 0/1 too; drawn into the "MEDIC
    (defaults)" panels they were indistinguishable from the default's runs (before the fix); they
    get a figure of their own."""
    drawn = []

    class Fig:
        def write_html(self, path, **kw):
            pass

        def write_image(self, path, **kw):
            pass

    monkeypatch.setattr(rep, "grid_curves_figure",
                        lambda rows, **kw: drawn.append((list(rows), kw)) or Fig())  # type: ignore[func-returns-value]
    monkeypatch.setattr(rep, "comparison_figure", lambda rows, **kw: Fig())
    monkeypatch.setattr(rep, "export_figure", lambda fig, base: [base.with_suffix(".html"), base.with_suffix(".png")])
    curve = [{"epoch": 1, "clean_acc": 0.9, "asr": 0.1}]
    default = dict(_row("polygon", "medic", 0), variant="MEDIC", curve=curve, method_options={"tau": 8.0})
    aligned = dict(_row("polygon", "medic", 0), variant=rep.ALIGNED, curve=curve, method_options={"tau": 2.0})
    written = rep.write_figures([default, aligned], tmp_path)
    # one attack with one method is not a whole attack: no average drops, no removal-vs-accuracy figure
    assert written == ["docs/table1/comparison.png", "docs/table1/medic_curves.png",
                       "docs/table1/medic_aligned_curves.png"]
    (defaults, kw_d), (aligned_drawn, kw_a) = drawn
    assert defaults == [default] and kw_d["facet"] == "attack"
    # the aligned runs get their own figure, one panel per attack titled with its τ
    assert [r["variant"] for r in aligned_drawn] == [rep.ALIGNED] and kw_a["facet"] == "panel"
    assert aligned_drawn[0]["panel"] == "polygon (τ 2)"


def test_aligned_choice_table_by_hand():
    rows = [{"tau": t, "clean_acc": k / 390} for t, k in ((0, 386), (3, 388), (8, 380))]
    sel = {"wanet": {"candidates": [0, 3, 8], "rows": rows, "reference_acc": 1.0, "target_drop": 0.0,
                     "allowed_holdout_drop": 0.00358, "tau": 3.0},
           "badnet": {"candidates": [0, 3, 8], "rows": rows, "reference_acc": 388 / 390, "target_drop": 0.0,
                      "allowed_holdout_drop": 0.00505, "tau": 3.0}}
    text = rep.aligned_choice_table(sel)
    lines = text.splitlines()
    assert lines[0].endswith("| τ = 0 | τ = 3 | τ = 8 | τ chosen |")
    assert lines[2] == "| badnet | 0.00 | 0.51 | 99.49 | 98.97 | **99.49** | 97.44 | 3 |"  # attacks in the paper's order
    assert lines[3] == "| wanet | 0.00 | 0.36 | 100.00 | 98.97 | **99.49** | 97.44 | 3 (none within: the most accurate) |"
    assert rep.aligned_choice_table({}) == "" and rep.aligned_choice_table({"sig": {"rows": []}}) == ""
