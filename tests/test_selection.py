"""The one tuning rule (medic_viz.experiments.selection): the pure choice by hand, the order of
strength every defence declares, the clean hold-out, and a tuning run end to end on tiny models
(candidates that one run serves read out of it, equal to their own runs)."""

import json

import pytest
import torch
import torch.nn as nn

from medic_viz.data.arrays import HOLDOUT_SEED_SALT, ImageArrays, clean_subset, holdout_subset
from medic_viz.defenses.anp import ANP
from medic_viz.defenses.base import clean_set_accuracy
from medic_viz.defenses.medic import DEFAULT_EPS_MEDIC, PAPER_EPS, Medic
from medic_viz.defenses.registry import DEFENSES, make_defense, tuning_space
from medic_viz.defenses.tunable import LR_RECIPES, Tunable, TuningSpace, candidate_label, strongest_within_budget
from medic_viz.defenses.tuning import choose_tau
from medic_viz.experiments.grid import build_grid
from medic_viz.experiments.selection import (
    BUDGET_POINTS,
    Selection,
    choose_setting,
    holdout_accuracies,
    read_selections,
    tune,
    tuned_cells,
    tuning_record,
    write_selections,
)


def _data(n: int = 120, classes: int = 3, seed: int = 0) -> ImageArrays:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, 8, 8, generator=g) * 255).to(torch.uint8)
    y = torch.arange(n) % classes
    return ImageArrays(x, y, classes=tuple("abcdefg"[:classes]), name="tiny")


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    ).eval()


# ------------------------------------------------------------------------------- the pure rule


def test_strongest_within_budget_by_hand():
    assert strongest_within_budget([0.0, 1.0, 2.9, 3.0, 3.1], 3.0) == 3  # equality counts
    assert strongest_within_budget([0.5, 4.0, 1.0, 6.0], 3.0) == 2  # not monotone: still the strongest within
    assert strongest_within_budget([5.0, 4.0, 4.0, 7.0], 3.0) == 2  # none within: smallest drop, strongest on a tie
    with pytest.raises(ValueError, match="no candidates"):
        strongest_within_budget([], 3.0)


def test_choose_setting_by_hand():
    cands = [{"lr": 0.01}, {"lr": 0.02}, {"lr": 0.05}, {"lr": 0.1}]
    teacher = {"a": 0.98, "b": 0.90}
    accs = [{"a": 0.98, "b": 0.91}, {"a": 0.96, "b": 0.89}, {"a": 0.95, "b": 0.86}, {"a": 0.90, "b": 0.85}]
    sel = choose_setting(cands, accs, teacher, 3.0, method="finetune", n_holdout=100)
    # mean drops in points: (0 - 1)/2 = -0.5; (2 + 1)/2 = 1.5; (3 + 4)/2 = 3.5; (8 + 5)/2 = 6.5
    assert [round(c.drop_points, 6) for c in sel.candidates] == [-0.5, 1.5, 3.5, 6.5]
    assert sel.index == 1 and sel.options == {"lr": 0.02} and sel.within_budget
    assert [c.within_budget for c in sel.candidates] == [True, True, False, False]
    assert choose_setting(cands, accs, teacher, 3.5).index == 2
    none = choose_setting(cands[2:], accs[2:], teacher, 1.0)
    assert none.index == 0 and not none.within_budget  # the most accurate when none is within
    assert "lr=0.02" in str(sel) and "<- chosen" in str(sel) and "(over budget)" in str(sel)
    with pytest.raises(ValueError, match="every candidate on every teacher"):
        choose_setting(cands[:1], [{"a": 0.9}], teacher)
    with pytest.raises(ValueError, match="one hold-out accuracy record per candidate"):
        choose_setting(cands, accs[:2], teacher)
    with pytest.raises(ValueError, match="budget_points"):
        choose_setting(cands, accs, teacher, -1.0)


def test_choose_tau_is_the_same_rule():
    rows = [{"tau": 5.0, "clean_acc": 0.80}, {"tau": 0.0, "clean_acc": 0.90}, {"tau": 2.0, "clean_acc": 0.88}]
    assert choose_tau(rows, 0.90, 0.03) == 2.0
    assert choose_tau(rows, 0.90, 0.10) == 5.0
    assert choose_tau(rows, 0.99, 0.001) == 0.0  # none within: the most accurate


def test_the_budget_is_inside_the_papers_accuracy_drops():
    paper = (2.1, 2.1, 2.2, 2.3, 4.4, 2.3)  # Table 1: Fine-tuning, Fine-pruning, NAD, MCR, ANP, MEDIC
    assert min(paper) <= BUDGET_POINTS <= max(paper)


# --------------------------------------------------------------------------- the declarations


def test_tuning_space_orders_candidates_weakest_first():
    space = TuningSpace((Tunable.over("threshold", (0.1, 0.2)), Tunable("lr", (LR_RECIPES[0], LR_RECIPES[-1]))))
    assert space.candidates() == [
        {"threshold": 0.1, "lr": 0.01, "schedule": "cosine"}, {"threshold": 0.1, "lr": 0.1, "schedule": "step"},
        {"threshold": 0.2, "lr": 0.01, "schedule": "cosine"}, {"threshold": 0.2, "lr": 0.1, "schedule": "step"}]
    assert space.options == ("threshold", "lr", "schedule")
    assert TuningSpace().candidates() == [{}]
    assert candidate_label({"betas": (250.0, 500.0), "lr": 0.1}) == "betas=250/500 lr=0.1"
    with pytest.raises(ValueError, match="same option"):
        TuningSpace((Tunable.over("lr", (0.1,)), Tunable("lr2", ({"lr": 0.2},))))
    with pytest.raises(ValueError, match="at least one candidate"):
        Tunable.over("lr", ())


@pytest.mark.parametrize("name", list(DEFENSES))
def test_every_method_declares_valid_candidates_in_order_of_strength(name):
    cls = DEFENSES[name]
    cands = tuning_space(name).candidates()
    assert cands and tuning_space(name) is cls.tuning
    for c in cands:
        make_defense(name, **c)  # every candidate is a valid option set
    assert set(cls.readout_options) <= set(tuning_space(name).options)
    # the most significant setting grows in strength as the class's docs say
    first = cls.tuning.settings[0].values if cls.tuning.settings else ()
    key = {"finetune": lambda v: v["lr"], "fineprune": lambda v: v["prune_ratio"], "nad": lambda v: sum(v["betas"]),
           "mcr": lambda v: -abs(v["t"] - 0.5), "anp": lambda v: v["threshold"], "medic": lambda v: -v["share"]}
    if name in key:
        strengths = [key[name](v) for v in first]
        assert strengths == sorted(strengths) and len(set(strengths)) == len(strengths)
    else:
        assert cands == [{}]  # KD and scratch: no free settings, their defaults


def test_the_authors_settings_are_among_the_candidates():
    assert {"lr": 0.1, "schedule": "step"} in tuning_space("finetune").candidates()
    assert {"t": 0.9, "momentum": 0.99} in tuning_space("mcr").candidates()
    assert {"threshold": 0.05, "eps": 0.2} in tuning_space("anp").candidates()
    assert {"prune_ratio": 0.5, "lr": 0.1, "schedule": "step"} in tuning_space("fineprune").candidates()


# ------------------------------------------------------------------------------------ hold-out


def test_holdout_is_outside_the_clean_subset_class_balanced_and_fixed():
    data = _data(300, classes=3)
    clean = clean_subset(data, 0.1, seed=4)
    hold = holdout_subset(data, 0.1, seed=4)
    rows = lambda d: {tuple(r.tolist()) for r in d.images.flatten(1)}  # noqa: E731 - the images are all distinct
    assert not rows(clean) & rows(hold)
    assert [int((hold.labels == c).sum()) for c in range(3)] == [10, 10, 10]  # round(0.1 · 100) per class
    again = holdout_subset(data, 0.1, seed=4)
    assert torch.equal(again.images, hold.images) and torch.equal(again.labels, hold.labels)
    assert len(holdout_subset(data, 0.1, seed=4, holdout_fraction=0.3)) == 90
    assert not torch.equal(holdout_subset(data, 0.1, seed=5).images, hold.images)
    # the rule, by hand: per class the images left, permuted by seed + HOLDOUT_SEED_SALT
    taken = {tuple(r.tolist()) for r in clean.images.flatten(1)}
    g = torch.Generator().manual_seed(4 + HOLDOUT_SEED_SALT)
    expected = []
    for c in range(3):
        members = torch.nonzero(data.labels == c).flatten()
        rest = torch.tensor([int(i) for i in members if tuple(data.images[i].flatten().tolist()) not in taken])
        expected.append(rest[torch.randperm(len(rest), generator=g)[:10]])
    assert torch.equal(torch.cat(expected).sort().values, torch.nonzero(
        torch.tensor([tuple(r.tolist()) in rows(hold) for r in data.images.flatten(1)])).flatten())
    with pytest.raises(ValueError, match="no hold-out is left"):
        holdout_subset(_data(6), 1.0, seed=0)


# --------------------------------------------------------------------------------- a tuning run


FAST = dict(epochs=1, batch_size=16, device="cpu", eval_every=0, progress=False)


def test_tune_runs_each_candidate_on_each_teacher_and_measures_the_holdout():
    data = _data(120)
    teachers = {"t0": _net(0), "t1": _net(1)}
    cands = [{"lr": 0.01, "schedule": "cosine"}, {"lr": 0.5, "schedule": "constant"}]
    sel = tune("finetune", teachers, data, fraction=0.2, seed=1, options=FAST, candidates=cands, budget_points=100.0)
    assert sel.method == "finetune" and sel.index == 1 and sel.n_holdout == 24  # budget 100: the strongest
    clean, hold = clean_subset(data, 0.2, 1), holdout_subset(data, 0.2, 1)
    dev = torch.device("cpu")
    for name, teacher in teachers.items():
        assert sel.teacher_acc[name] == clean_set_accuracy(teacher, hold, dev)
        for c, rec in zip(cands, sel.candidates):
            model = make_defense("finetune", **FAST, **c).run(teacher, clean).model
            assert rec.holdout_acc[name] == clean_set_accuracy(model, hold, dev)
    tight = choose_setting(cands, [c.holdout_acc for c in sel.candidates], sel.teacher_acc, 0.0)
    assert tight.index == strongest_within_budget([c.drop_points for c in sel.candidates], 0.0)


def test_readout_candidates_share_one_run_and_equal_their_own_runs(monkeypatch):
    data, teacher = _data(120), _net(2)
    opts = dict(FAST, iterations=None, lr=1.0)
    runs = []
    original = ANP._run
    def counted(self, *a, **k):
        runs.append(self.config.threshold)
        return original(self, *a, **k)

    monkeypatch.setattr(ANP, "_run", counted)
    cands = [{"threshold": 0.1, "eps": 0.2}, {"threshold": 0.6, "eps": 0.2}, {"threshold": 0.1, "eps": 0.4}]
    got, accs, _, _ = holdout_accuracies("anp", {"t": teacher}, data, fraction=0.2, options=opts, candidates=cands)
    assert got == cands and runs == [0.1, 0.1]  # one run per ε; threshold 0.6 read out of the first
    hold = holdout_subset(data, 0.2, 0)
    own = make_defense("anp", **opts, threshold=0.6, eps=0.2).run(teacher, clean_subset(data, 0.2, 0)).model
    assert accs[1]["t"] == clean_set_accuracy(own, hold, torch.device("cpu"))


def test_tuned_cells_and_the_record_round_trip(tmp_path):
    sel = choose_setting([{"threshold": 0.05}, {"threshold": 0.3}], [{"t": 0.9}, {"t": 0.89}], {"t": 0.9}, 3.0,
                         method="anp", n_holdout=50)
    cells = build_grid(attacks=["badnet"], methods=["finetune", "anp"], seeds=1, device="cpu")
    tuned = tuned_cells(cells, {"anp": sel})
    assert len(tuned) == 1 and tuned[0].method == "anp" and tuned[0].variant == "ANP, tuned"
    assert tuned[0].method_options["threshold"] == 0.3 and tuned[0].method_options["eps"] == 0.2
    assert tuned[0].cell_id != cells[1].cell_id  # beside the fixed-settings row, not instead of it
    path = write_selections(tmp_path / "sel.json", {"anp": sel})
    back = read_selections(path)["anp"]
    assert back == sel and isinstance(back, Selection)
    assert json.loads(path.read_text())["anp"]["candidates"][1]["holdout_acc"] == {"t": 0.89}
    nad = choose_setting([{"betas": (1.0, 2.0)}], [{"t": 0.5}], {"t": 0.5})
    assert Selection.from_dict(nad.as_dict()).options == {"betas": (1.0, 2.0)}


def test_tuned_cells_keep_the_grids_medic_eps():
    """A grid at the paper's ε = 1e-5 leaves ε out of its MEDIC cells' pinned options (they keep
    their ids); tuning such a cell must keep 1e-5, not re-pin it at the default 0.1 (the bug: Table 1's
    tuned MEDIC cells at 1e-5 got new ids and would have run at 0.1). At the default ε it stays 0.1."""
    sel = choose_setting([{"share": 0.01}, {"share": 0.005}], [{"t": 0.9}, {"t": 0.89}], {"t": 0.9}, 3.0,
                         method="medic", n_holdout=50)
    for eps in (PAPER_EPS, DEFAULT_EPS_MEDIC):
        cells = build_grid(attacks=["badnet"], methods=["medic"], seeds=1, device="cpu", medic={"eps": eps})
        tuned = tuned_cells(cells, {"medic": sel})
        assert len(tuned) == 1 and tuned[0].method_options["share"] == 0.005
        assert Medic.cell_run_options(tuned[0].method_options)["eps"] == eps
        assert ("eps" in tuned[0].method_options) == (eps != PAPER_EPS)
        untuned = {k: v for k, v in tuned[0].method_options.items() if k != "share"}
        assert untuned == {k: v for k, v in cells[0].method_options.items() if k != "share"}


def test_tuning_record_names_the_choice_behind_a_tuned_row_and_refuses_a_mismatch():
    """Hold-out 0.9 for the teacher; threshold 0.3 → 0.89 (drop 1 point, within B = 3): chosen,
    index 1 of 2. An untuned row has no record; a tuned row that ran another threshold, or a
    method with no selection, is an error, not a silent wrong record."""
    sel = choose_setting([{"threshold": 0.05}, {"threshold": 0.3}], [{"t": 0.9}, {"t": 0.89}], {"t": 0.9}, 3.0,
                         method="anp", n_holdout=50)
    row = {"cell_id": "c", "method": "anp", "variant": "ANP, tuned", "method_options": {"threshold": 0.3, "eps": 0.2}}
    record = tuning_record(row, {"anp": sel})
    assert record is not None
    assert record["chosen"] == sel.label and record["index"] == 1 and record["n_candidates"] == 2
    assert record["drop_points"] == pytest.approx(1.0) and record["within_budget"] and record["budget_points"] == 3.0
    assert record["teachers"] == ["t"] and record["n_holdout"] == 50
    assert tuning_record({**row, "variant": "ANP"}, {"anp": sel}) is None
    with pytest.raises(ValueError, match="other options than the recorded choice"):
        tuning_record({**row, "method_options": {"threshold": 0.05}}, {"anp": sel})
    with pytest.raises(ValueError, match="no selection is recorded for anp"):
        tuning_record(row, {})
    betas = choose_setting([{"betas": (1.0, 2.0)}], [{"t": 0.5}], {"t": 0.5}, method="nad")
    nad_row = {"method": "nad", "variant": "NAD, tuned", "method_options": {"betas": [1.0, 2.0]}}
    assert tuning_record(nad_row, {"nad": betas})["index"] == 0  # a tuple recorded, a JSON list ran: the same
