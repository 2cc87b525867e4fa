"""The MEDIC engine and the training loop: loss by hand, stop, NaN, determinism, errors."""

import copy
import threading
from typing import Any

import pytest
import torch
import torch.nn as nn

from medic_viz.capture import StructureMismatchError
from medic_viz.data.arrays import Augmentation, ImageArrays
from medic_viz.defenses.base import fresh_copy
from medic_viz.defenses.medic import Medic, MedicObjective
from medic_viz.finite import NonFiniteModelError
from medic_viz.importance import ImportanceOptions, weighted_squared_error
from medic_viz.metrics import Evaluator
from medic_viz.stats import compute_layer_stats
from medic_viz.training import NonFiniteLossError, SupervisedObjective, TrainConfig, TrainEvent, train


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def _data(n: int = 48, seed: int = 0) -> ImageArrays:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, 8, 8, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 3, (n,), generator=g)
    return ImageArrays(x, y, classes=("a", "b", "c"), name="tiny")


FAST: dict[str, Any] = dict(epochs=2, batch_size=16, progress=False, device="cpu")


def test_clone_loss_with_tau_zero_matches_hand_formula():
    teacher, student = _net(0).eval(), _net(1)
    data = _data()
    stats = compute_layer_stats(teacher, data, device="cpu")
    obj = MedicObjective(teacher, student, stats, ImportanceOptions(tau=0.0), lam=10.0)
    x, y = data.floats()[:5], data.labels[:5]
    total, terms, per_layer = obj.loss(x, y)
    # By hand: Σ_layers mean_b Σ_neurons (1/m)·((t − s)/σ)², plus CE of the student.
    with torch.no_grad():
        t0 = teacher[0](x)
        t1 = teacher[1](t0)
        t5 = teacher(x)
        student.train()
        s0 = student[0](x)
        s1 = student[1](s0)
        s5 = student[5](student[4](student[3](torch.relu(s1))))
    expected = 0.0
    for name, t, s in (("0", t0, s0), ("1", t1, s1), ("5", t5, s5)):
        sigma = stats[name].std.reshape((1, -1) + (1,) * (t.ndim - 2))
        m = t[0].numel()
        layer = (((t - s) / sigma) ** 2 / m).reshape(5, -1).sum(1).mean()
        torch.testing.assert_close(per_layer[name], layer, rtol=1e-4, atol=1e-5)
        expected += layer
    torch.testing.assert_close(terms["clone"], expected, rtol=1e-4, atol=1e-5)
    ce = nn.functional.cross_entropy(s5, y)
    torch.testing.assert_close(total, ce + 10.0 * expected, rtol=1e-4, atol=1e-4)


def test_logit_distillation_adds_weight_times_t_squared_kl_by_hand():
    """kd_weight 0.5, T = 3: total = CE + λ·clone + 0.5 · 9 · mean_b Σ_c p_t (log p_t − log p_s)
    with p = softmax(logits / 3); off (the default) the loss has no "kd" part."""
    teacher, student = _net(0).eval(), _net(1)
    data = _data()
    stats = compute_layer_stats(teacher, data, layers=["1"], device="cpu")
    x, y = data.floats()[:6], data.labels[:6]
    plain = MedicObjective(teacher, student, stats, ImportanceOptions(tau=0.0), lam=2.0)
    with_kd = MedicObjective(teacher, student, stats, ImportanceOptions(tau=0.0), lam=2.0, kd_weight=0.5, kd_temperature=3.0)
    base, base_terms, _ = plain.loss(x, y)
    total, terms, _ = with_kd.loss(x, y)
    assert "kd" not in base_terms
    with torch.no_grad():
        p_t = torch.softmax(teacher(x) / 3.0, 1)
        student.train()
        log_p_s = torch.log_softmax(student(x) / 3.0, 1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(1).mean() * 9.0
    torch.testing.assert_close(terms["kd"], kl, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(total, base + 0.5 * kl, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [{"kd_weight": -0.1}, {"kd_temperature": 0.0}, {"kd_weight": float("nan")}])
def test_logit_distillation_settings_are_checked(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Medic(**FAST, **bad)


def test_a_run_with_logit_distillation_says_so_in_its_label() -> None:
    assert Medic(**FAST, kd_weight=1.0).config.describe().endswith("λ=3 KD=1 T=2")
    assert "KD" not in Medic(**FAST).config.describe()


def test_cutout_reaches_the_training_batches_and_the_label() -> None:
    seen: list[torch.Tensor] = []

    class Recording(SupervisedObjective):
        def loss(self, x, y):
            seen.append(x.detach().clone())
            return super().loss(x, y)

    data = _data()
    data.augmentation = Augmentation(crop_pad=0)  # only the Cutout changes pixels
    train(Recording(_net()), data, TrainConfig(**FAST, erase=0.5))
    assert len(seen) == 2 * 3

    def largest_patch_of_one_colour(img: torch.Tensor) -> int:  # (C, H, W) → pixels sharing a colour
        return int(torch.unique(img.flatten(1).T, dim=0, return_counts=True)[1].max())

    # every image has a square of 2..4 × 2..4 pixels of one colour (random images have none)
    assert all(largest_patch_of_one_colour(img) >= 4 for x in seen for img in x)
    seen.clear()
    train(Recording(_net()), data, TrainConfig(**FAST))
    assert all(largest_patch_of_one_colour(img) == 1 for x in seen for img in x)
    assert Medic(**FAST, erase=0.5).config.describe().endswith("λ=3 cutout=0.5")
    with pytest.raises(ValueError, match="erase"):
        TrainConfig(erase=1.0)


def test_importance_concentrates_the_loss_relative_to_uniform():
    teacher, student = _net(0).eval(), _net(1)
    data = _data()
    stats = compute_layer_stats(teacher, data, device="cpu")
    x, y = data.floats()[:8], data.labels[:8]
    _, w_uniform = MedicObjective(teacher, student, stats, ImportanceOptions(tau=0.0), 10.0).teacher_pass(x, y)
    _, w_sharp = MedicObjective(teacher, student, stats, ImportanceOptions(tau=5.0), 10.0).teacher_pass(x, y)
    for wu, ws in zip(w_uniform, w_sharp):
        assert ws.reshape(8, -1).max(1).values.min() > wu.reshape(8, -1).max(1).values.max()
        assert not ws.requires_grad


def test_medic_trains_student_and_leaves_teacher_untouched():
    teacher = _net(0).eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    events: list[TrainEvent] = []
    result = Medic(**FAST).run(teacher, _data(), evaluator=Evaluator(_data(30, 1), device="cpu"), callbacks=[events.append])
    assert [e.kind for e in events] == ["start", "epoch", "epoch", "end"]
    assert events[1].losses["clone"] > events[2].losses["clone"]  # cloning makes progress
    assert set(events[1].layer_losses) == {"0", "1"}  # default layers "auto": one conv → conv+bn (no logits)
    assert events[1].clean_acc is not None and events[1].n_clean == 30
    assert result.model is not teacher
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert teacher.training is False


def test_fresh_copy_reinitialises_weights_but_keeps_structure():
    teacher = _net(0)
    student = fresh_copy(teacher, seed=3)
    assert [n for n, _ in teacher.named_modules()] == [n for n, _ in student.named_modules()]
    assert not torch.equal(teacher[0].weight, student[0].weight)  # type: ignore[arg-type]  # a parameter (torch types module attributes Tensor | Module)
    torch.testing.assert_close(fresh_copy(teacher, seed=3)[0].weight, student[0].weight)


def test_stop_event_is_honoured_within_one_batch():
    stop = threading.Event()
    seen = []

    def on_event(ev):
        seen.append(ev)
        if ev.kind == "step" and ev.step == 2:
            stop.set()

    result = Medic(epochs=5, batch_size=8, eval_every_steps=1, progress=False, device="cpu").run(
        _net(), _data(), evaluator=Evaluator(_data(12, 2), device="cpu"), callbacks=[on_event], stop_event=stop
    )
    assert result.stopped
    assert max(e.step for e in result.history) == 2  # no batch ran after the request
    assert result.history[-1].kind == "end" and result.history[-1].stopped
    assert result.history[-1].clean_acc is not None  # the stopped model is evaluated


def test_stop_from_another_thread_returns_the_model_as_is():
    stop = threading.Event()
    started = threading.Event()
    out = {}

    def run():
        out["r"] = Medic(epochs=200, batch_size=8, progress=False, device="cpu", eval_every=0).run(
            _net(), _data(), callbacks=[lambda e: started.set()], stop_event=stop
        )

    th = threading.Thread(target=run)
    th.start()
    assert started.wait(10)
    stop.set()
    th.join(10)
    assert not th.is_alive()
    assert out["r"].stopped and out["r"].history[-1].epoch < 200


def test_nan_in_the_loss_stops_with_a_clear_message():
    teacher = _net(0)
    with torch.no_grad():
        teacher[0].weight[0, 0, 0, 0] = float("nan")  # a corrupted checkpoint
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 1, step 1.*lower learning rate"):
        Medic(**FAST).run(teacher, _data())


def test_cpu_runs_are_deterministic_for_a_seed():
    a = Medic(**FAST, seed=7).run(_net(), _data()).model.state_dict()
    b = Medic(**FAST, seed=7).run(_net(), _data()).model.state_dict()
    c = Medic(**FAST, seed=8).run(_net(), _data()).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_mismatched_student_is_refused():
    other = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(5, 3))
    with pytest.raises(StructureMismatchError, match="same structure"):
        Medic(**FAST).run(_net(), _data(), student=other)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tau": -1}, "tau"),
        ({"tau": float("inf")}, "tau"),
        ({"lam": -0.1}, "lam"),
        ({"lam": float("nan")}, "lam"),
        ({"epochs": 0}, "epochs"),
        ({"criteria": "both-ish"}, "criteria"),
        ({"taux": 1}, "unknown MEDIC option"),
        # issue 13: types checked at the public API, sizes that overflow float32 refused
        ({"tau": "5"}, r"tau must be a number >= 0, got '5' \(str\)"),
        ({"lam": "10"}, r"lam \(λ\) must be a number"),
        ({"epochs": 1.5}, r"epochs must be a whole number >= 1, got 1.5 \(float\)"),
        ({"batch_size": True}, "batch_size must be a whole number"),
        ({"seed": 2**70}, "seed must be a whole number in 0..9223372036854775807"),
        ({"lr": "0.01"}, "lr must be a number"),
        ({"tau": 1e38}, "tau must be at most 1000"),
        ({"lam": 1e38}, r"lam \(λ\) must be at most 1e\+06"),
    ],
)
def test_bad_options_are_rejected_with_the_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Medic(**kwargs)


def test_student_that_is_the_teacher_or_its_copy_is_refused():
    teacher = _net(0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with pytest.raises(ValueError, match="student is the teacher itself"):
        Medic(**FAST).run(teacher, _data(), student=teacher)
    with pytest.raises(ValueError, match="exactly the teacher's weights"):
        Medic(**FAST).run(teacher, _data(), student=copy.deepcopy(teacher))
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in before.items())  # the old code trained it in place
    Medic(**FAST).run(teacher, _data(), student=fresh_copy(teacher, seed=3))  # a fresh student is fine


def test_training_that_diverges_to_a_non_finite_model_is_an_error():
    class Explode:
        """A finite loss whose step sends a weight to inf (what lr=1e5 does in a few steps)."""

        def __init__(self, model):
            self.model = model

        def parameters(self):
            return self.model.parameters()

        def loss(self, x, y):
            out = self.model(x).float().mean() * 0.0 + self.model[5].bias.sum() * 1e30
            return out, {"x": out}, {}

    with pytest.raises(NonFiniteModelError, match=r"the trained model has NaN or infinite weights \(5\.bias\)"):
        train(Explode(_net()), _data(), TrainConfig(epochs=1, batch_size=48, lr=1e30, optimizer="sgd", momentum=0.0,
                                                     weight_decay=0.0, progress=False, device="cpu", eval_every=0))


def test_a_model_with_nan_outputs_is_not_scored():
    model = _net()
    with torch.no_grad():
        model[5].bias.fill_(float("nan"))  # argmax of NaN is class 0: the old evaluator scored it
    with pytest.raises(NonFiniteModelError, match="outputs NaN or infinite scores for 100% of the images"):
        Evaluator(_data(), device="cpu")(model)
    with pytest.raises(ValueError, match="the test set is empty"):
        Evaluator(_data(0), device="cpu")


def test_unknown_layer_names_are_rejected():
    with pytest.raises(ValueError, match="unknown layer name"):
        Medic(**FAST, layers=("conv9",)).run(_net(), _data())


def test_supervised_objective_learns_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (90,), generator=g)
    x = torch.zeros(90, 3, 8, 8)
    x[torch.arange(90), y] = 1.0  # class = which channel is lit
    data = ImageArrays((x * 255).to(torch.uint8), y, classes=("r", "g", "b"))
    result = train(SupervisedObjective(_net()), data,
                   TrainConfig(epochs=30, batch_size=30, augment=False, progress=False, device="cpu"),
                   evaluator=Evaluator(data, device="cpu"))
    assert result.history[0].clean_acc < 0.7
    assert result.history[-2].clean_acc == 1.0


def test_weighted_squared_error_value_and_gradient_match_autograd():
    torch.manual_seed(0)
    s = torch.randn(3, 2, 4, 4, requires_grad=True)
    t, w = torch.randn(3, 2, 4, 4), torch.rand(3, 2, 4, 4)
    loss = weighted_squared_error(s, t, w)
    s2 = s.detach().clone().requires_grad_(True)
    ref = (w * (t - s2) ** 2).reshape(3, -1).sum(1).mean()
    torch.testing.assert_close(loss, ref)
    (g,) = torch.autograd.grad(loss * 1.7, s)
    (g_ref,) = torch.autograd.grad(ref * 1.7, s2)
    torch.testing.assert_close(g, g_ref)
    with pytest.raises(ValueError, match="shapes differ"):
        weighted_squared_error(s, t[:2], w)
