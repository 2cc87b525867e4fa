"""MEDIC's weights (eqs. 2–4) and loss (eq. 1) have one definition, medic_viz.importance. A change
of the formula made there alone reaches everything derived from it — the heatmaps and ranking
(medic_viz.analysis), the loss by the definition (fused="reference") and the τ calibration — and
is caught where a faster form is kept on purpose: the fused eager/compiled kernels
(tests/test_fused.py: check_fused_equals_reference) and the calibration's closed form for eq.(4)
(tests/test_calibration.py: check_calibration_shortcut).

Each case monkeypatches one piece of the definition (the eq.2 score, the eq.3 score, the eq.4
combination) and checks every consumer; if someone copies the formula back into a consumer, the
consumer stops changing and the test fails."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

import medic_viz.importance as importance
from medic_viz.analysis import analyze_input, rank_compromised_neurons
from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.calibration import calibrate_tau, importance_scores
from medic_viz.defenses.medic import MedicObjective
from medic_viz.importance import ImportanceOptions
from medic_viz.stats import compute_layer_stats
from test_calibration import check_calibration_shortcut
from test_fused import _data, _net, check_fused_equals_reference

_ORIGINAL = {name: getattr(importance, name) for name in ("activation_score", "impact_score", "combine_importance")}

#: One change of the formula per piece of the definition.
CHANGES: dict[str, Callable[..., torch.Tensor]] = {
    # eq.(2) with a squared z-score
    "activation_score": lambda act, stats, zscore_mode="abs": _ORIGINAL["activation_score"](act, stats, zscore_mode) ** 2,
    # eq.(3) with a doubled gradient scale
    "impact_score": lambda grad, stats, impact_mode="signed": 2.0 * _ORIGINAL["impact_score"](grad, stats, impact_mode),
    # eq.(4) as the product A·G instead of sqrt(A·G)
    "combine_importance": lambda a, g: a * g,
}


def _observe() -> dict[str, Any]:
    """Everything derived from MEDIC's weights, on the tiny test net (default options, τ = 5)."""
    teacher, data = _net(0).eval(), _data()
    stats = compute_layer_stats(teacher, data, device="cpu")
    x, y = data.floats()[:8], data.labels[:8]
    opts = ImportanceOptions(tau=5.0)
    out: dict[str, Any] = {}
    trigger = BadNetTrigger(size=3, position="bottom-right", margin=1)
    analysis = analyze_input(teacher, x[0], trigger, int(y[0]), stats=stats)
    out["heatmap"] = torch.tensor(analysis.maps("1", 5.0)["combined"])
    ranking = rank_compromised_neurons(teacher, data.subset(torch.arange(12)), trigger, stats=stats, tau=5.0)
    out["ranking"] = torch.tensor(ranking.importance)
    ref = MedicObjective(teacher, _net(1), stats, opts, lam=10.0, fused="reference")
    out["reference loss"] = torch.stack([v.detach() for v in ref.loss(x, y)[2].values()])  # per layer
    out["teacher_pass weights"] = torch.cat([w.reshape(-1) for w in ref.teacher_pass(x, y)[1]])
    acts, grads = ref.teacher_activations(x, y)
    out["calibration scores"] = importance_scores(acts[1], grads[1], stats["1"], opts)
    out["calibrated tau"] = torch.tensor(calibrate_tau(acts[1], grads[1], stats["1"], opts, 0.05))
    eager = MedicObjective(teacher, _net(1), stats, opts, lam=10.0, fused="eager")
    out["fused eager loss"] = torch.stack([v.detach() for v in eager.loss(x, y)[2].values()])
    return out


def _changed(before: torch.Tensor, after: torch.Tensor) -> bool:
    """Every quantity is computed deterministically, so any difference is the change's."""
    return before.shape != after.shape or not torch.equal(before, after)


def _calibration_shortcut_holds() -> bool:
    teacher, data = _net(0).eval(), _data()
    stats = compute_layer_stats(teacher, data, device="cpu")
    obj = MedicObjective(teacher, teacher, stats, ImportanceOptions(), 1.0, fused="reference")
    acts, grads = obj.teacher_activations(data.floats()[:8], data.labels[:8])
    try:
        for opts in (ImportanceOptions(tau=5.0), ImportanceOptions(tau=5.0, criteria="activation"),
                     ImportanceOptions(tau=5.0, criteria="impact")):
            check_calibration_shortcut(acts[1], grads[1], stats["1"], opts)
    except AssertionError:
        return False
    return True


def _fused_equals_definition() -> bool:
    try:
        for opts in (ImportanceOptions(tau=5.0), ImportanceOptions(tau=5.0, criteria="activation"),
                     ImportanceOptions(tau=5.0, criteria="impact")):
            check_fused_equals_reference(opts, "eager")
    except AssertionError:
        return False
    return True


@pytest.fixture(scope="module")
def unchanged() -> dict[str, object]:
    assert _calibration_shortcut_holds() and _fused_equals_definition()  # as shipped: the faster forms hold
    return _observe()


@pytest.mark.parametrize("piece", sorted(CHANGES))
def test_a_change_of_the_definition_reaches_every_consumer_or_is_caught(monkeypatch, unchanged, piece):
    monkeypatch.setattr(importance, piece, CHANGES[piece])
    changed = _observe()
    # derived from the definition: these follow the change
    for what in ("heatmap", "ranking", "reference loss", "teacher_pass weights"):
        assert _changed(unchanged[what], changed[what]), f"{what} did not follow a change of importance.{piece}"
    # the fused kernels are a separate, faster form: they keep their numbers, and the equality
    # test that holds them to the definition now fails
    assert not _changed(unchanged["fused eager loss"], changed["fused eager loss"])
    assert not _fused_equals_definition(), f"check_fused_equals_reference missed a change of importance.{piece}"
    # the calibration takes its scores from the definition; its closed form for eq.(4) does not
    # follow a new combination rule, and the shortcut's equality test then fails
    if piece == "combine_importance":
        assert not _calibration_shortcut_holds(), "check_calibration_shortcut missed a change of eq.(4)"
    else:
        for what in ("calibration scores", "calibrated tau"):
            assert _changed(unchanged[what], changed[what]), f"{what} did not follow a change of importance.{piece}"
