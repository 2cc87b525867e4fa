"""Advanced attacks: each trigger's geometry or colour transform by hand on small images,
config round trips, previews, the poisoning functions and the adaptive objective."""


import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medic_viz.attacks.adaptive import AdaptiveObjective
from medic_viz.attacks.base import Trigger
from medic_viz.attacks.clean_label import AdversarialObjective, CleanLabelTrigger, pgd_perturb, poison_clean_label
from medic_viz.attacks.composite import CompositeAttack, CompositeEvaluator, poison_composite
from medic_viz.attacks.filter import INSTAGRAM_FILTERS, FilterTrigger
from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.attacks.reflection import ReflectionTrigger
from medic_viz.attacks.registry import (
    ADVANCED_TRIGGERS,
    ATTACKS,
    PAPER_ATTACKS,
    any_trigger_from_config,
    make_any_trigger,
)
from medic_viz.attacks.train import train_attack
from medic_viz.attacks.wanet import WaNetTrigger, poison_wanet
from medic_viz.data.arrays import DatasetSplits, ImageArrays
from medic_viz.training import TrainConfig


def _images(n=4, c=3, h=6, w=6, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _arrays(n=60, classes=4, size=32, seed=0, name="tiny"):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
    y = torch.arange(n) % classes
    return ImageArrays(x, y, classes=tuple(f"c{i}" for i in range(classes)), name=name)


# ----------------------------------------------------------------------------------- registry


def test_make_any_trigger_covers_new_and_old_names():
    assert isinstance(make_any_trigger("badnet", size=2), BadNetTrigger)
    for name, cls in ADVANCED_TRIGGERS.items():
        assert isinstance(make_any_trigger(name), cls) and isinstance(make_any_trigger(name), Trigger)
    with pytest.raises(ValueError, match="wanet"):
        make_any_trigger("warp-me")
    with pytest.raises(ValueError, match="does not accept"):
        make_any_trigger("wanet", size=3)
    assert set(PAPER_ATTACKS) <= set(ATTACKS)


@pytest.mark.parametrize("trigger", [
    CleanLabelTrigger(size=2, corners=("top-left",), pgd_eps=0.01),
    ReflectionTrigger(kind="blur", alpha=0.2, sigma=0.8, seed=3),
    ReflectionTrigger(kind="focus", image=torch.rand(1, 4, 4)),
    FilterTrigger("gotham", strength=0.7),
    FilterTrigger({"curves": (((0, 0), (1, 0.5)),) * 3}),
    WaNetTrigger(k=3, s=0.8, seed=4, cross_ratio=0),
])
def test_config_round_trip_rebuilds_the_same_trigger(trigger):
    rebuilt = any_trigger_from_config(json.loads(json.dumps(trigger.to_config())))
    assert type(rebuilt) is type(trigger)
    assert rebuilt.to_config() == trigger.to_config()
    x = _images(2, h=8, w=8)
    torch.testing.assert_close(rebuilt.apply(x), trigger.apply(x))


def test_composite_config_round_trip():
    attack = CompositeAttack(3, 1, "horizontal")
    assert any_trigger_from_config(attack.to_config()).to_config() == attack.to_config()


@pytest.mark.parametrize("make", [
    lambda: CleanLabelTrigger(), lambda: ReflectionTrigger(), lambda: FilterTrigger("kelvin"),
    lambda: WaNetTrigger(), lambda: CompositeAttack(1, 2),
])
def test_previews_have_image_shape_and_range(make):
    p = make().preview(20, 24, 3)
    assert p.shape == (3, 20, 24) and float(p.min()) >= 0 and float(p.max()) <= 1
    assert make().preview(32, 32, 1).shape == (1, 32, 32)


# --------------------------------------------------------------------------------- Clean-Label


def test_clean_label_patches_in_every_corner_by_hand():
    trig = CleanLabelTrigger(size=3)
    x = torch.full((1, 3, 8, 8), 0.5)
    out = trig.apply(x)
    board = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]])
    for rows, cols in ((slice(0, 3), slice(0, 3)), (slice(0, 3), slice(5, 8)), (slice(5, 8), slice(0, 3)),
                       (slice(5, 8), slice(5, 8))):
        assert torch.equal(out[0, :, rows, cols], board.expand(3, 3, 3))
    assert torch.all(out[0, :, 3:5, :] == 0.5) and torch.all(out[0, :, :, 3:5] == 0.5)
    assert trig.mask(8, 8).sum() == 36 and trig.clean_label
    assert torch.all(x == 0.5)  # input untouched
    one = CleanLabelTrigger(size=2, corners="bottom-right", margin=1)
    assert torch.nonzero(one.mask(6, 6)).tolist() == [[3, 3], [3, 4], [4, 3], [4, 4]]
    with pytest.raises(ValueError, match="corners"):
        CleanLabelTrigger(corners=("middle",))


def test_pgd_stays_in_the_ball_and_raises_the_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 3))
    x, y = _images(8), torch.arange(8) % 3
    adv = pgd_perturb(model, x, y, eps=0.05, steps=5, step_size=0.02, seed=1)
    assert float((adv - x).abs().max()) <= 0.05 + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)
    torch.testing.assert_close(pgd_perturb(model, x, y, eps=0.0), x)


def test_adversarial_objective_trains_on_the_worst_corner_of_the_ball_by_hand():
    """For a 2-class linear model the input gradient of the CE has a fixed sign per pixel
    (sign(w_other - w_true)), so enough PGD steps reach the ball's corner in that direction:
    the objective's loss is the CE there, computed by hand; eps = 0 gives the plain CE."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    x = torch.rand(5, 3, 2, 2) * 0.6 + 0.2  # inside [0.2, 0.8]: the ε-ball stays within [0, 1]
    y = torch.tensor([0, 1, 1, 0, 1])
    eps = 0.1
    w = model[1].weight.detach()
    direction = torch.stack([torch.sign(w[1 - int(t)] - w[int(t)]) for t in y]).view_as(x)
    by_hand = F.cross_entropy(model(x + eps * direction), y)
    loss, terms, _ = AdversarialObjective(model, eps=eps, steps=10, step_size=0.05).loss(x, y)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5) and terms["ce"] is loss
    assert loss.item() > F.cross_entropy(model(x), y).item()
    plain, _, _ = AdversarialObjective(model, eps=0.0).loss(x, y)
    assert plain.item() == pytest.approx(F.cross_entropy(model(x), y).item())
    loss.backward()  # gradients reach the weights, not the (detached) adversarial input
    assert model[1].weight.grad is not None and model.training
    with pytest.raises(ValueError, match="steps"):
        AdversarialObjective(model, steps=-1)


def test_poison_clean_label_touches_only_target_images_and_keeps_labels():
    data = _arrays(40, classes=4, size=8)
    trig = CleanLabelTrigger(size=2, pgd_eps=4 / 255, pgd_steps=2, pgd_step_size=2 / 255)
    torch.manual_seed(0)
    surrogate = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    out = poison_clean_label(data, trig, target=1, rate=0.1, surrogate=surrogate, device="cpu")
    assert out.n_poisoned == 4  # round(0.1 · 40)
    assert torch.all(data.labels[out.poisoned_indices] == 1)
    assert torch.equal(out.data.labels, data.labels)
    changed = torch.nonzero((out.data.images != data.images).flatten(1).any(1)).flatten()
    assert set(changed.tolist()) <= set(out.poisoned_indices.tolist())
    patched = out.data.floats(out.poisoned_indices)
    torch.testing.assert_close(patched, trig.apply(patched))  # the patches are there
    capped = poison_clean_label(data, trig, target=1, rate=0.9, surrogate=surrogate, device="cpu")
    assert capped.n_poisoned == 10  # only 10 images of class 1 exist


# --------------------------------------------------------------------------------- Reflection


def test_reflection_focus_and_ghost_by_hand():
    r = torch.tensor([[0.0, 0.2, 0.4, 0.8]]).expand(4, 4).clone()  # (H, W) grey reflection
    x = torch.full((1, 1, 4, 4), 0.1)
    focus = ReflectionTrigger(kind="focus", alpha=0.5, image=r)
    torch.testing.assert_close(focus.apply(x)[0, 0], (0.1 + 0.5 * r).float())
    ghost = ReflectionTrigger(kind="ghost", alpha=0.5, ghost=0.5, offset=(0, 1), image=r)
    shifted = torch.cat([r[:, :1], r[:, :3]], dim=1)  # moved right by one, first column repeated
    torch.testing.assert_close(ghost.apply(x)[0, 0], (0.1 + 0.5 * (0.5 * r + 0.5 * shifted)).float())
    bright = torch.full((1, 1, 4, 4), 0.9)
    assert float(focus.apply(bright).max()) == 1.0  # clipped


def test_reflection_blur_is_a_normalised_gaussian():
    delta = torch.zeros(9, 9)
    delta[4, 4] = 1.0
    blur = ReflectionTrigger(kind="blur", alpha=1.0, sigma=1.0, image=delta)
    layer = blur.layer(1, 9, 9)[0]
    assert abs(float(layer.sum()) - 1.0) < 1e-9
    g = torch.exp(-0.5 * torch.arange(-3, 4, dtype=torch.float64) ** 2)
    g = g / g.sum()
    torch.testing.assert_close(layer[4, 1:8], g * g[3])
    flat = ReflectionTrigger(kind="blur", alpha=1.0, image=torch.full((5, 5), 0.3))
    torch.testing.assert_close(flat.layer(1, 5, 5), torch.full((1, 5, 5), 0.3, dtype=torch.float64))


def test_reflection_scene_is_determined_by_the_seed():
    a, b, c = ReflectionTrigger(seed=1), ReflectionTrigger(seed=1), ReflectionTrigger(seed=2)
    assert torch.equal(a.reflection_image(3, 16, 16), b.reflection_image(3, 16, 16))
    assert not torch.equal(a.reflection_image(3, 16, 16), c.reflection_image(3, 16, 16))
    r = a.reflection_image(3, 16, 16)
    assert float(r.min()) >= 0 and float(r.max()) <= 1 and float(r.std()) > 0.05


# ------------------------------------------------------------------------------------- Filter


def test_identity_filter_and_a_halving_curve_by_hand():
    x = _images(2)
    assert torch.allclose(FilterTrigger({}).apply(x), x, atol=1e-6)
    half = FilterTrigger({"curves": (((0.0, 0.0), (1.0, 0.5)),) * 3})
    torch.testing.assert_close(half.apply(x), x / 2)
    kinked = FilterTrigger({"curves": (((0.0, 0.0), (0.5, 0.9), (1.0, 1.0)),) * 3})
    out = kinked.apply(torch.tensor([0.25, 0.75, 0.5]).view(1, 3, 1, 1))  # 0.25 → 0.45, 0.75 → 0.95, 0.5 → 0.9
    torch.testing.assert_close(out, torch.tensor([0.45, 0.95, 0.9]).view(1, 3, 1, 1))
    blend = FilterTrigger({"curves": (((0.0, 0.0), (1.0, 0.5)),) * 3}, strength=0.5)
    torch.testing.assert_close(blend.apply(x), 0.75 * x)


def test_instagram_filters_have_their_looks():
    x = _images(8, h=8, w=8, seed=3)

    def colourfulness(img):
        return img.std(dim=1).mean()

    assert colourfulness(FilterTrigger("gotham").apply(x)) < 0.3 * colourfulness(x)
    warm = FilterTrigger("kelvin").apply(x)
    assert (warm[:, 0] - warm[:, 2]).mean() > (x[:, 0] - x[:, 2]).mean() + 0.2
    black = FilterTrigger("nashville").apply(torch.zeros(1, 3, 2, 2))
    assert float(black[0, 0].min()) > 0.1 and float(black[0, 2].min()) > 0.2  # lifted, tinted blacks
    for name in INSTAGRAM_FILTERS:
        out = FilterTrigger(name).apply(x)
        assert not torch.allclose(out, x)


def test_filter_is_the_same_at_every_pixel():
    x = _images(1, h=5, w=5, seed=4)
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(0))
    trig = FilterTrigger("lomo")
    shuffled = x.flatten(2)[:, :, perm].reshape(1, 3, 5, 5)
    torch.testing.assert_close(trig.apply(shuffled), trig.apply(x).flatten(2)[:, :, perm].reshape(1, 3, 5, 5))
    grey = trig.apply(x[:, :1])
    assert grey.shape == (1, 1, 5, 5)
    with pytest.raises(ValueError, match="built-in filters"):
        FilterTrigger("valencia")
    with pytest.raises(ValueError, match="increase"):
        FilterTrigger({"curves": (((0.5, 0.0), (1.0, 1.0)),) * 3})


# -------------------------------------------------------------------------------------- WaNet


def test_wanet_with_zero_strength_is_the_identity():
    x = _images(2, h=7, w=9)
    torch.testing.assert_close(WaNetTrigger(s=0.0).apply(x), x, atol=1e-6, rtol=0)


def test_wanet_samples_where_its_grid_points():
    """Bilinear sampling of a linear ramp returns the sampling coordinate itself, so warping
    the ramps x and y shows the grid exactly (inside the image)."""
    h, w = 12, 16
    trig = WaNetTrigger(k=4, s=2.0, seed=7)
    grid = trig.warp_grid(h, w)
    ident = WaNetTrigger.identity_grid(h, w)
    ramp_x = ((ident[..., 0] + 1) / 2).expand(1, 1, h, w)
    ramp_y = ((ident[..., 1] + 1) / 2).expand(1, 1, h, w)
    out_x = trig.apply(ramp_x.float().expand(1, 1, h, w))[0, 0].double()
    out_y = trig.apply(ramp_y.float().expand(1, 1, h, w))[0, 0].double()
    torch.testing.assert_close(out_x, (grid[..., 0] + 1) / 2, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_y, (grid[..., 1] + 1) / 2, atol=1e-5, rtol=0)
    # the flow: mean |control noise| = 1 and displacements within s·max|flow|/H
    assert abs(float(trig.control_noise().abs().mean()) - 1.0) < 1e-9
    shift = (grid - ident).abs().max()
    assert 0 < float(shift) <= 2.0 * float(trig.flow(h, w).abs().max()) / h + 1e-9


def test_wanet_is_seeded_and_noise_mode_poisons_as_described():
    assert torch.equal(WaNetTrigger(seed=1).warp_grid(8, 8), WaNetTrigger(seed=1).warp_grid(8, 8))
    assert not torch.equal(WaNetTrigger(seed=1).warp_grid(8, 8), WaNetTrigger(seed=2).warp_grid(8, 8))
    data = _arrays(50, classes=5, size=8)
    trig = WaNetTrigger(cross_ratio=2)
    out = poison_wanet(data, trig, target=0, rate=0.1, seed=0)
    assert out.n_poisoned == 5 and len(out.noise_indices) == 10
    assert not set(out.noise_indices.tolist()) & set(out.poisoned_indices.tolist())
    assert torch.all(out.data.labels[out.poisoned_indices] == 0)
    assert torch.equal(out.data.labels[out.noise_indices], data.labels[out.noise_indices])
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[out.poisoned_indices] = False
    untouched[out.noise_indices] = False
    assert torch.equal(out.data.images[untouched], data.images[untouched])
    assert len(poison_wanet(data, WaNetTrigger(cross_ratio=0), 0, 0.1).noise_indices) == 0
    board = trig.preview(16, 16)
    flat_board = WaNetTrigger(s=0.0).preview(16, 16)
    assert not torch.allclose(board, flat_board)


# ---------------------------------------------------------------------------------- Composite


def test_composite_mix_geometry_by_hand():
    a, b = torch.zeros(1, 1, 4, 6), torch.ones(1, 1, 4, 6)
    v = CompositeAttack(0, 1).mix(a, b)
    assert torch.equal(v[0, 0], torch.tensor([[0, 0, 0, 1, 1, 1.0]]).expand(4, 6))
    hz = CompositeAttack(0, 1, "horizontal").mix(a, b)
    assert torch.equal(hz[0, 0, :2], torch.zeros(2, 6)) and torch.equal(hz[0, 0, 2:], torch.ones(2, 6))
    assert torch.equal(CompositeAttack(0, 1).mask(4, 6), v[0, 0])
    with pytest.raises(ValueError):
        CompositeAttack(2, 2)


def test_poison_composite_adds_poison_and_same_class_mixes():
    data = _arrays(40, classes=4, size=8)
    attack = CompositeAttack(1, 2)
    out = poison_composite(data, attack, target=0, rate=0.1, mix_rate=0.25, seed=0)
    assert len(out.data) == 40 + 4 + 10
    assert torch.equal(out.data.images[:40], data.images) and torch.equal(out.data.labels[:40], data.labels)
    assert torch.all(out.data.labels[out.poisoned_indices] == 0)
    assert out.poisoned_indices.tolist() == list(range(40, 44)) and out.mix_indices.tolist() == list(range(44, 54))
    # each poison image: left half from a class-1 image, right half from a class-2 image
    left = {tuple(img.flatten().tolist()) for img in data.images[data.labels == 1][..., :4]}
    right = {tuple(img.flatten().tolist()) for img in data.images[data.labels == 2][..., 4:]}
    for i in out.poisoned_indices:
        assert tuple(out.data.images[i][..., :4].flatten().tolist()) in left
        assert tuple(out.data.images[i][..., 4:].flatten().tolist()) in right
    with pytest.raises(ValueError, match="differ"):
        poison_composite(data, attack, target=2)


def test_composite_evaluator_and_class_choice():
    data = _arrays(40, classes=4, size=8)
    data.labels[:3] = 3  # class 3 becomes the most frequent
    attack = CompositeAttack.for_data(data, target=0)
    assert attack.class_a == 3 and attack.class_b in (1, 2)

    class Always(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return F.one_hot(torch.full((len(x),), self.k), 4).float()

    ev = CompositeEvaluator(data, attack, target=0, device="cpu")
    assert ev(Always(0)).asr == 1.0 and ev(Always(1)).asr == 0.0
    assert ev(Always(0)).n_asr == min(int((data.labels == attack.class_a).sum()), int((data.labels == attack.class_b).sum()))


# ----------------------------------------------------------------------------------- Adaptive


def test_adaptive_objective_latent_penalty_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 5), nn.ReLU(), nn.Linear(5, 3))
    trig = BadNetTrigger(size=2)
    x, y = _images(6), torch.tensor([0, 1, 2, 0, 1, 2])
    obj = AdaptiveObjective(model, trig, target=0, rate=0.5, penalty=0.1, layers=["1"])
    total, terms, per_layer = obj.loss(x, y)
    chosen = torch.tensor([1, 2, 4])  # the first round(0.5·6) = 3 non-target images
    with torch.no_grad():
        h_clean = model[1](model[0](x[chosen]))
        h_trig = model[1](model[0](trig.apply(x[chosen])))
        logits = model(torch.cat([x, trig.apply(x[chosen])]))
    dist = (h_clean - h_trig).pow(2).sum(1).mean()
    torch.testing.assert_close(per_layer["1"], dist, rtol=1e-4, atol=1e-6)
    ce = F.cross_entropy(logits, torch.cat([y, torch.zeros(3, dtype=torch.long)]))
    torch.testing.assert_close(total, ce + 0.1 * dist, rtol=1e-4, atol=1e-6)
    default = AdaptiveObjective(model, trig, target=0)
    assert default.penalty == 1e-4 and default.layers == ["1", "3"]


# ------------------------------------------------------------------------- training any attack


@pytest.fixture(scope="module")
def tiny_splits():
    return DatasetSplits(_arrays(96, classes=4, size=32, seed=1), _arrays(40, classes=4, size=32, seed=2))


@pytest.mark.parametrize("name", ATTACKS)
def test_train_attack_runs_every_attack(name, tiny_splits):
    cfg = TrainConfig(epochs=1, batch_size=32, progress=False, device="cpu", eval_every=0)
    trojan = train_attack(name, tiny_splits, target=0, config=cfg, seed=0)
    assert trojan.metrics.n_clean == 40 and trojan.metrics.asr is not None and trojan.metrics.n_asr > 0
    rebuilt = any_trigger_from_config(trojan.trigger.to_config())
    assert rebuilt.to_config() == trojan.trigger.to_config()
    card = trojan.card(tiny_splits, dataset="tiny")
    assert card.attack["name"] == (name if name != "adaptive" else "badnet")
