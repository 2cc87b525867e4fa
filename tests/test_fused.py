"""The fused MEDIC loss (medic_viz.fused): the same loss and student gradients as the reference
path (layer_importance + weighted_squared_error) for every importance option, by the eager and
the compiled implementation; the choice between them; the fallback when compiling fails."""

import itertools

import pytest
import torch
import torch.nn as nn

import medic_viz.fused as fused
from medic_viz.capture import LayerRecorder
from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.base import fresh_copy
from medic_viz.defenses.medic import Medic, MedicConfig, MedicObjective, compute_layer_stats, weighted_squared_error
from medic_viz.fused import FusedCloneLoss, fused_layer_loss, resolve_fused_mode
from medic_viz.importance import ImportanceOptions, LayerStats, layer_importance


def _net(seed: int = 0) -> nn.Module:
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


def _reference_loss(obj: MedicObjective, x: torch.Tensor, y: torch.Tensor):
    """The unfused path as it was: weights from teacher_pass, then weighted_squared_error."""
    t_acts, weights = obj.teacher_pass(x, y, divide_by_variance=True)
    with LayerRecorder(obj.model, obj.layers) as rec:
        logits = obj.model(x)
        s_acts = rec.tensors()
    ce = nn.functional.cross_entropy(logits.float(), y)
    per_layer = {n: weighted_squared_error(s, t, w) for n, t, s, w in zip(obj.layers, t_acts, s_acts, weights)}
    return ce + obj.lam * sum(per_layer.values()), per_layer


OPTIONS = [
    ImportanceOptions(tau=tau, criteria=c, zscore=z, impact=i, loss_reduction=r)
    for tau, c, z, i, r in itertools.product(
        (5.0,), ("both", "activation", "impact"), ("abs", "signed"), ("signed", "abs"), ("sum", "mean")
    )
    if not (c == "activation" and (i, r) != ("signed", "sum")) and not (c == "impact" and z != "abs")
] + [ImportanceOptions(tau=0.0), ImportanceOptions(tau=0.0, criteria="activation"), ImportanceOptions(tau=40.0)]


def _check_same_as_reference(opts: ImportanceOptions, mode: str, batch: int = 7, channels_last: bool = False) -> MedicObjective:
    teacher = _net(0).eval()
    data = _data()
    stats = compute_layer_stats(teacher, data, device="cpu")
    x, y = data.floats()[:batch], data.labels[:batch]
    student_a, student_b = _net(1), _net(1)
    fused_obj = MedicObjective(teacher, student_a, stats, opts, lam=10.0, fused=mode)
    ref_obj = MedicObjective(teacher, student_b, stats, opts, lam=10.0, fused="eager")
    if channels_last:  # only the fused path runs channels-last
        fused_obj.teacher = _net(0).eval().to(memory_format=torch.channels_last)
        student_a.to(memory_format=torch.channels_last)
        total, _, per_layer = fused_obj.loss(x.contiguous(memory_format=torch.channels_last), y)
    else:
        total, _, per_layer = fused_obj.loss(x, y)
    ref_total, ref_layers = _reference_loss(ref_obj, x, y)
    assert set(per_layer) == set(ref_layers) == {"0", "1", "3", "7"}
    for n in ref_layers:
        torch.testing.assert_close(per_layer[n], ref_layers[n], rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(total, ref_total, rtol=2e-5, atol=1e-6)
    total.backward()
    ref_total.backward()
    # float32 sums over batch and positions: both paths are ~1e-6·max|grad| from a float64 run
    # (the conv bias before a train-mode BN has a true gradient of 0: only that noise is left)
    scale = max(float(q.grad.abs().max()) for q in student_b.parameters())
    for (name, p), q in zip(student_a.named_parameters(), student_b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=2e-6 * scale, msg=lambda m: f"{name}: {m}")
    # Not vacuous: the cloning term carries real gradient (and importance changes it).
    assert sum(float(v.detach()) for v in per_layer.values()) > 0
    return fused_obj


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: f"tau{o.tau:g}-{o.criteria}-{o.zscore}-{o.impact}-{o.loss_reduction}")
def test_eager_fused_loss_and_gradients_equal_the_reference_path(opts):
    _check_same_as_reference(opts, "eager")


@pytest.mark.slow
@pytest.mark.skipif(not fused.compile_available("cpu"), reason="no C++ compiler for torch.compile")
@pytest.mark.parametrize("opts", [ImportanceOptions(tau=5.0), ImportanceOptions(tau=5.0, criteria="activation", zscore="signed"),
                                  ImportanceOptions(tau=5.0, criteria="impact", impact="abs", loss_reduction="mean")],
                         ids=("both", "activation-signed", "impact-abs-mean"))
def test_compiled_fused_loss_and_gradients_equal_the_reference_path(opts):
    with _no_fallback_warning():
        obj = _check_same_as_reference(opts, "compile")
    assert obj.clone_loss.mode == "compile"


@pytest.mark.slow
@pytest.mark.skipif(not fused.compile_available("cpu"), reason="no C++ compiler for torch.compile")
def test_compiled_path_takes_a_smaller_last_batch_and_channels_last():
    from torch._dynamo.utils import counters

    opts = ImportanceOptions(tau=5.0)
    with _no_fallback_warning():
        _check_same_as_reference(opts, "compile", batch=9)
        graphs = counters["stats"]["unique_graphs"]
        _check_same_as_reference(opts, "compile", batch=4)  # the last, smaller batch of an epoch
        assert counters["stats"]["unique_graphs"] == graphs  # batch size is dynamic: no recompiling
        _check_same_as_reference(opts, "compile", batch=5, channels_last=True)


def test_eager_path_takes_channels_last():
    _check_same_as_reference(ImportanceOptions(tau=5.0), "eager", channels_last=True)


class _no_fallback_warning:
    """Fail if the compiled path silently fell back to eager."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self._rec = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        fallbacks = [w for w in self._rec if "torch.compile of the fused MEDIC loss failed" in str(w.message)]
        assert not fallbacks, fallbacks[0].message


def test_fused_term_matches_the_equations_by_hand():
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
    got = fused_layer_loss(s_var, t, g, stats, ImportanceOptions(tau=tau), mode="eager")
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
    ref_total, _ = _reference_loss(MedicObjective(teacher, _net(1), stats, ImportanceOptions(tau=5.0), lam=10.0), x, y)
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
