"""The fused MEDIC loss (medic_viz.fused): the same loss and student gradients as the one
definition (medic_viz.importance.layer_clone_loss, run by the engine with fused="reference") for
every importance option, by the eager and the compiled implementation; the choice between them;
the fallback when compiling fails.

:func:`check_fused_equals_reference` is what holds the fast forms to the definition: if the
formula changes in medic_viz.importance and not in medic_viz.fused, it fails
(tests/test_one_definition.py checks that it does)."""

import itertools
import warnings
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn as nn

import medic_viz.fused as fused
from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.medic import Medic, MedicConfig, MedicObjective, preview_layer_taus
from medic_viz.fused import FUSED_MODES, FusedCloneLoss, fused_layer_loss, resolve_fused_mode
from medic_viz.importance import ImportanceOptions, LayerStats, layer_clone_loss
from medic_viz.stats import compute_layer_stats


def _net(seed: int = 0) -> nn.Sequential:
    """Conv, BN, in-place ReLU (overwrites the BN output), strided conv, linear logits."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    )


def _data(n: int = 40, seed: int = 0) -> ImageArrays:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, 8, 8, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 3, (n,), generator=g)
    return ImageArrays(x, y, classes=("a", "b", "c"), name="tiny")


#: Every importance option: τ (0 = plain cloning, the paper's 5, a sharp 40) × criteria × z-score
#: × impact sign × reduction of the teacher's loss for the impact gradient.
OPTIONS = [
    ImportanceOptions(tau=tau, criteria=c, zscore=z, impact=i, loss_reduction=r)  # type: ignore[arg-type]  # the Literals
    for tau, c, z, i, r in itertools.product(
        (0.0, 5.0, 40.0), ("both", "activation", "impact"), ("abs", "signed"), ("signed", "abs", "scaled"), ("sum", "mean")
    )
]


def _option_id(o: ImportanceOptions) -> str:
    return f"tau{o.tau:g}-{o.criteria}-{o.zscore}-{o.impact}-{o.loss_reduction}"


def check_fused_equals_reference(
    opts: ImportanceOptions,
    mode: str,
    *,
    batch: int = 7,
    channels_last: bool = False,
    layer_taus: dict[str, float] | None = None,
    layers: list[str] | None = None,
    bf16: bool = False,
) -> MedicObjective:
    """One MEDIC step of a ``fused=mode`` objective against the same step with
    ``fused="reference"`` (the definition): per-layer terms, total loss and every student
    parameter's gradient equal to float rounding. ``layer_taus``: τ per layer on both;
    ``bf16``: both under CPU bf16 autocast (as training with ``cpu_bf16=True``);
    ``channels_last``: the fused side runs channels-last. Raises AssertionError otherwise."""
    teacher = _net(0).eval()
    data = _data()
    stats = compute_layer_stats(teacher, data, layers, device="cpu")
    x, y = data.floats()[:batch], data.labels[:batch]
    student_a, student_b = _net(1), _net(1)
    fused_obj = MedicObjective(teacher, student_a, stats, opts, lam=10.0, fused=mode)
    ref_obj = MedicObjective(teacher, student_b, stats, opts, lam=10.0, fused="reference")
    if layer_taus is not None:
        fused_obj.set_layer_taus(layer_taus)
        ref_obj.set_layer_taus(layer_taus)
    x_fused = x
    if channels_last:  # only the fused path runs channels-last
        fused_obj.teacher = _net(0).eval().to(memory_format=torch.channels_last)
        student_a.to(memory_format=torch.channels_last)
        x_fused = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        total, _, per_layer = fused_obj.loss(x_fused, y)
        ref_total, _, ref_layers = ref_obj.loss(x, y)
    assert ref_obj.clone_loss.mode == "reference"
    assert set(per_layer) == set(ref_layers) == set(stats)
    # The two forms round τ·z differently (τ·((t − μ)/σ) vs t·(τ/σ) − τμ/σ), an error of
    # ~τ·|z|·eps in the softmax's exponent: a sharper τ gets a proportionally wider margin.
    sharp = max(1.0, max([opts.tau, *(layer_taus or {}).values()]) / 5.0)
    for n in ref_layers:
        torch.testing.assert_close(per_layer[n], ref_layers[n], rtol=2e-5 * sharp, atol=1e-7,
                                   msg=lambda m: f"layer {n}: {m}")  # noqa: B023 — assert_close calls msg at once, in this iteration
    torch.testing.assert_close(total, ref_total, rtol=2e-5 * sharp, atol=1e-6)
    total.backward()
    ref_total.backward()
    # float32 sums over batch and positions: both paths are ~1e-6·max|grad| from a float64 run
    # (the conv bias before a train-mode BN has a true gradient of 0: only that noise is left);
    # bf16 autocast: the student's backward runs in bf16 on both sides, from the same float32 terms
    scale = max(float(q.grad.abs().max()) for q in student_b.parameters())
    rtol, atol = (2e-2, 1e-2 * scale) if bf16 else (1e-4, 2e-6 * sharp * scale)
    for (name, p), q in zip(student_a.named_parameters(), student_b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=rtol, atol=atol,
                                   msg=lambda m: f"{name}: {m}")  # noqa: B023 — assert_close calls msg at once, in this iteration
    # Not vacuous: the cloning term carries real gradient (and importance changes it).
    assert sum(float(v.detach()) for v in per_layer.values()) > 0
    return fused_obj


def _reference_loss(teacher, stats, opts, x, y):
    """The total loss of one step by the definition (fused="reference")."""
    total, _, _ = MedicObjective(teacher, _net(1), stats, opts, lam=10.0, fused="reference").loss(x, y)
    return total


@pytest.mark.parametrize("opts", OPTIONS, ids=_option_id)
def test_eager_fused_loss_and_gradients_equal_the_definition(opts):
    check_fused_equals_reference(opts, "eager")


@pytest.mark.parametrize("criteria", ["both", "activation", "impact"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_eager_fused_loss_follows_tau_per_layer_equal_to_the_definition(criteria, reduction):
    """τ per layer, one of them 0 (uniform) and one past the global τ; the global τ 0 too."""
    layer_taus = {"0": 0.0, "1": 2.5, "3": 17.0, "7": 5.0}
    for tau in (5.0, 0.0):
        opts = ImportanceOptions(tau=tau, criteria=criteria, loss_reduction=reduction)
        obj = check_fused_equals_reference(opts, "eager", layer_taus=layer_taus)
        assert obj.clone_loss.layer_options("3").tau == 17.0


@pytest.mark.parametrize("criteria", ["both", "activation", "impact"])
@pytest.mark.parametrize("zscore", ["abs", "signed"])
def test_eager_fused_loss_with_share_calibrated_taus_equals_the_definition(criteria, zscore):
    """τ per layer as a run with share= calibrates it (the default's way)."""
    cfg = MedicConfig(share=0.05, criteria=criteria, zscore=zscore, layers=None, device="cpu", calibration_images=16)
    taus = preview_layer_taus(_net(0).eval(), _data(), cfg)
    assert set(taus) == {"0", "1", "3", "7"} and all(t > 0 for t in taus.values())
    check_fused_equals_reference(ImportanceOptions(criteria=criteria, zscore=zscore), "eager", layer_taus=taus)


@pytest.mark.parametrize("opts", [ImportanceOptions(tau=5.0),
                                  ImportanceOptions(tau=5.0, criteria="impact", impact="abs", loss_reduction="mean"),
                                  ImportanceOptions(tau=0.0)], ids=_option_id)
def test_eager_fused_loss_under_bf16_autocast_equals_the_definition(opts):
    check_fused_equals_reference(opts, "eager", bf16=True)


def test_reference_mode_is_the_definition_and_a_medic_run_takes_it():
    assert "reference" in FUSED_MODES
    assert resolve_fused_mode("reference", "cpu", work=1e15) == "reference"
    MedicConfig(fused="reference").validate()
    t, g, s = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    stats = LayerStats(torch.zeros(3), torch.ones(3))
    for opts in (ImportanceOptions(), ImportanceOptions(tau=0.0), ImportanceOptions(criteria="impact", zscore="signed")):
        got = fused_layer_loss(s, t, g, stats, opts, mode="reference")
        assert torch.equal(got, layer_clone_loss(s, t, g, stats, opts))
    common: dict[str, Any] = dict(epochs=1, batch_size=16, progress=False, device="cpu", tau=5.0, amp=False)
    ref = Medic(**common, fused="reference").run(_net(0).eval(), _data())
    eager = Medic(**common, fused="eager").run(_net(0).eval(), _data())
    assert ref.config["fused"] == "reference"
    ref_loss, eager_loss = ({k: v for e in r.history for k, v in e.losses.items()} for r in (ref, eager))  # last epoch's
    assert ref_loss["clone"] > 0 and ref_loss == pytest.approx(eager_loss, rel=1e-3)


# The compiled kernels: one per (criteria, |z|, |g|) — τ and the per-channel factors are inputs, and
# the reduction only changes the gradient fed in — so these cases compile every kernel once.
COMPILED_OPTIONS = [
    ImportanceOptions(tau=5.0, criteria=c, zscore=z, impact=i)  # type: ignore[arg-type]  # the Literals
    for c, z, i in itertools.product(("both", "activation", "impact"), ("abs", "signed"), ("signed", "abs", "scaled"))
    if not (c == "activation" and i != "signed") and not (c == "impact" and z == "signed")
]


@pytest.mark.slow
@pytest.mark.skipif(not fused.compile_available("cpu"), reason="no C++ compiler for torch.compile")
@pytest.mark.parametrize("opts", COMPILED_OPTIONS, ids=_option_id)
def test_compiled_fused_loss_and_gradients_equal_the_definition(opts):
    """Every compiled kernel, on one layer (one graph each), with both reductions, a second τ
    (per layer) and bf16 autocast; τ = 0 takes the eager path (tested above)."""
    with _no_fallback_warning():
        for reduction in ("sum", "mean"):
            obj = check_fused_equals_reference(replace(opts, loss_reduction=reduction), "compile", layers=["1"])
            assert obj.clone_loss.mode == "compile"
        check_fused_equals_reference(opts, "compile", layers=["1"], layer_taus={"1": 23.0})
        check_fused_equals_reference(opts, "compile", layers=["1"], bf16=True)


@pytest.mark.slow
@pytest.mark.skipif(not fused.compile_available("cpu"), reason="no C++ compiler for torch.compile")
def test_compiled_path_takes_a_smaller_last_batch_and_channels_last():
    from torch._dynamo.utils import counters

    opts = ImportanceOptions(tau=5.0)
    with _no_fallback_warning():
        check_fused_equals_reference(opts, "compile", batch=9)
        graphs = counters["stats"]["unique_graphs"]
        check_fused_equals_reference(opts, "compile", batch=4)  # the last, smaller batch of an epoch
        assert counters["stats"]["unique_graphs"] == graphs  # batch size is dynamic: no recompiling
        check_fused_equals_reference(opts, "compile", batch=5, channels_last=True)


def test_eager_path_takes_channels_last():
    check_fused_equals_reference(ImportanceOptions(tau=5.0), "eager", channels_last=True)


class _no_fallback_warning:
    """Fail if the compiled path silently fell back to eager."""

    def __enter__(self):
        self._cm = warnings.catch_warnings(record=True)
        self._rec = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        fallbacks = [w for w in self._rec if "torch.compile of the fused MEDIC loss failed" in str(w.message)]
        assert not fallbacks, fallbacks[0].message


@pytest.mark.parametrize("mode", ["reference", "eager"])
def test_fused_term_matches_the_equations_by_hand(mode):
    """One layer, by hand from eqs.(2)-(4): w = sqrt(softmax(τ|z|)·softmax(τσg)), then
    mean_b Σ w·(t−s)²/σ²; and the gradient −2/B · w·(t−s)/σ²."""
    torch.manual_seed(3)
    t, g, s = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5) * 0.2, torch.randn(4, 3, 5, 5)
    stats = LayerStats(torch.tensor([0.1, -0.2, 0.3]), torch.tensor([0.5, 1.5, 2.0]))
    mu, sd = stats.mean.view(1, 3, 1, 1), stats.std.view(1, 3, 1, 1)
    tau = 3.0
    a = torch.softmax((tau * ((t - mu) / sd).abs()).reshape(4, -1).double(), 1)
    gw = torch.softmax((tau * sd * g).reshape(4, -1).double(), 1)
    w = torch.sqrt(a * gw).reshape(t.shape)
    want = (w * (t - s).double() ** 2 / sd.double() ** 2).reshape(4, -1).sum(1).mean()
    s_var = s.clone().requires_grad_(True)
    got = fused_layer_loss(s_var, t, g, stats, ImportanceOptions(tau=tau), mode=mode)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)
    (grad,) = torch.autograd.grad(got * 2.5, s_var)
    torch.testing.assert_close(grad.double(), 2.5 * (-2 / 4) * w * (t - s).double() / sd.double() ** 2, rtol=1e-5, atol=1e-9)


def test_one_call_helper_leaves_the_gradient_untouched():
    t, g, s = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    g0 = g.clone()
    fused_layer_loss(s, t, g, LayerStats(torch.zeros(3), torch.ones(3)), ImportanceOptions(), mode="eager")
    assert torch.equal(g, g0)


def test_a_second_backward_with_retained_graph_gives_the_same_gradient():
    t, g = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = FusedCloneLoss({"l": LayerStats(torch.zeros(3), torch.ones(3))}, ImportanceOptions(), "eager").term("l", s, t, g)
    (g1,) = torch.autograd.grad(loss, s, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, s)
    torch.testing.assert_close(g1, g2)


def test_fused_term_errors_name_the_layer():
    loss = FusedCloneLoss({"conv": LayerStats(torch.zeros(3), torch.ones(3))}, ImportanceOptions(), "eager")
    with pytest.raises(ValueError, match="'conv'.*student shape"):
        loss.term("conv", torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 5, 5), torch.zeros(2, 3, 5, 5))
    with pytest.raises(ValueError, match="needs the teacher's gradient"):
        loss.term("conv", torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), None)
    with pytest.raises(ValueError, match="fused must be"):
        FusedCloneLoss({}, ImportanceOptions(), "fast")
    with pytest.raises(ValueError, match="fused must be"):
        MedicConfig(fused="fast").validate()


# ---------------------------------------------------------------- choosing the implementation


def test_auto_falls_back_to_eager_when_compilation_is_unavailable(monkeypatch):
    monkeypatch.delenv("MEDIC_VIZ_FUSED", raising=False)
    monkeypatch.setattr(fused, "compile_available", lambda device: False)
    assert resolve_fused_mode("auto", "cpu") == "eager"
    assert resolve_fused_mode("auto", "cpu", work=1e15) == "eager"
    monkeypatch.setattr(fused, "compile_available", lambda device: True)
    assert resolve_fused_mode("auto", "cpu") == "compile"
    assert resolve_fused_mode("auto", "cpu", work=1e15) == "compile"
    assert resolve_fused_mode("auto", "cpu", work=fused.AUTO_COMPILE_MIN_WORK["cpu"] / 10) == "eager"  # too short to repay
    assert resolve_fused_mode("auto", "cuda", work=fused.AUTO_COMPILE_MIN_WORK["cpu"] * 2) == "eager"  # cheap eager on GPUs
    assert resolve_fused_mode("eager", "cpu", work=1e15) == "eager"
    monkeypatch.setenv("MEDIC_VIZ_FUSED", "eager")
    assert resolve_fused_mode("auto", "cpu", work=1e15) == "eager"
    monkeypatch.setenv("MEDIC_VIZ_FUSED", "turbo")
    with pytest.raises(ValueError, match="MEDIC_VIZ_FUSED"):
        resolve_fused_mode("auto", "cpu")


def test_compile_available_needs_a_compiler(monkeypatch):
    monkeypatch.setattr(fused.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert fused.compile_available("cpu") is False
    assert fused.compile_available("meta") is False


def test_a_failing_compiler_falls_back_to_eager_with_the_same_numbers(monkeypatch):
    def broken_compile(fn, **kwargs):
        def raiser(*a, **k):
            raise RuntimeError("InductorError: no working C++ compiler\nlong trace")

        return raiser

    monkeypatch.setattr(fused, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", broken_compile)
    teacher = _net(0).eval()
    data = _data()
    stats = compute_layer_stats(teacher, data, device="cpu")
    x, y = data.floats()[:6], data.labels[:6]
    obj = MedicObjective(teacher, _net(1), stats, ImportanceOptions(tau=5.0), lam=10.0, fused="compile")
    with pytest.warns(RuntimeWarning, match="torch.compile of the fused MEDIC loss failed.*no working C\\+\\+ compiler"):
        total, _, _ = obj.loss(x, y)
    assert obj.clone_loss.mode == "eager"
    ref_total = _reference_loss(teacher, stats, ImportanceOptions(tau=5.0), x, y)
    torch.testing.assert_close(total, ref_total, rtol=2e-5, atol=1e-6)
    total2, _, _ = obj.loss(x, y)  # no second warning, still eager
    torch.testing.assert_close(total2, ref_total, rtol=2e-5, atol=1e-6)


def test_medic_run_resolves_auto_from_the_run_length(monkeypatch):
    """A short run (like every test's) is computed eagerly even where a compiler exists."""
    monkeypatch.delenv("MEDIC_VIZ_FUSED", raising=False)
    monkeypatch.setattr(fused, "compile_available", lambda device: True)
    seen = {}
    real = MedicObjective.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        seen["obj"] = self

    monkeypatch.setattr(MedicObjective, "__init__", spy)
    Medic(epochs=1, batch_size=16, progress=False, device="cpu", tau=5.0).run(_net(0).eval(), _data())
    obj = seen["obj"]
    # 40 images, 1 epoch: 3 steps × 16 × (4·64 + 4·64 + 6·16 + 3) neurons = 29,328 ≪ the threshold
    assert 1e4 < obj.clone_loss.work < 1e5
    assert obj.clone_loss.mode == "eager"
