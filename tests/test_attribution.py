"""captum attributions reduced to (H, W) maps, the mass-in-region measure, and the BadNet demo
model's attributions moving into the trigger patch."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.attacks.registry import trigger_from_config
from medic_viz.attribution import (
    ATTRIBUTION_METHODS,
    attribute,
    attribution_mass_in_region,
    compare_attributions,
    default_gradcam_layer,
)
from medic_viz.data import load_dataset
from medic_viz.pretrained import load_demo_model


class Linear2(nn.Module):
    """logits = W · flatten(x): attributions of a linear model are known in closed form."""

    def __init__(self, c=2, h=3, w=3, k=2):
        super().__init__()
        self.fc = nn.Linear(c * h * w, k, bias=False)

    def forward(self, x):
        return self.fc(x.flatten(1))


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, stride=2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv2(self.relu(self.conv1(x))).mean((2, 3)))


def test_mass_in_region_by_hand():
    a = np.array([[1.0, 1.0], [2.0, 0.0]])
    assert attribution_mass_in_region(a, np.array([[1, 0], [0, 0]])) == pytest.approx(0.25)
    assert attribution_mass_in_region(-a, np.array([[0, 0], [1, 0]])) == pytest.approx(0.5)  # |·|
    assert attribution_mass_in_region(a, np.array([[0.5, 0], [0.5, 0]])) == pytest.approx(0.375)  # weighted
    assert attribution_mass_in_region(np.zeros((2, 2)), np.ones((2, 2))) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        attribution_mass_in_region(a, np.ones((3, 3)))
    with pytest.raises(ValueError, match="mask"):
        attribution_mass_in_region(a, np.full((2, 2), 2.0))


def test_saliency_and_integrated_gradients_of_a_linear_model():
    torch.manual_seed(0)
    model = Linear2().eval()
    x = torch.rand(2, 3, 3)
    w = model.fc.weight[1].detach().reshape(2, 3, 3)
    # saliency = |∂ logit_1 / ∂ x| = |w|, max over channels
    np.testing.assert_allclose(attribute(model, x, 1, "saliency"), w.abs().amax(0).double().numpy(), rtol=1e-5)
    # IG from a zero baseline of a linear function is exactly w · x (completeness), |·| summed over channels
    ig = attribute(model, x, 1, "integrated_gradients", n_steps=8)
    np.testing.assert_allclose(ig, (w * x).abs().sum(0).double().numpy(), rtol=1e-4, atol=1e-6)


def test_gradcam_is_upsampled_non_negative_and_uses_the_last_conv():
    torch.manual_seed(0)
    model = TinyConv().eval()
    assert default_gradcam_layer(model) == "conv2"
    x = torch.rand(3, 8, 8)
    cam = attribute(model, x, 0, "gradcam")
    assert cam.shape == (8, 8) and cam.min() >= 0
    cam1 = attribute(model, x, 0, "gradcam", layer="conv1")
    assert cam1.shape == (8, 8)
    with pytest.raises(ValueError, match="unknown layer"):
        attribute(model, x, 0, "gradcam", layer="nope")
    with pytest.raises(ValueError, match="method"):
        attribute(model, x, 0, "lime")
    assert model.training is False


def test_compare_attributions_structure():
    torch.manual_seed(0)
    model = TinyConv().eval()
    trigger = BadNetTrigger(size=2)
    cmp = compare_attributions(model, torch.rand(3, 8, 8), trigger, methods=("saliency", "ig"), n_steps=4,
                               targets={"clean": 1})
    assert cmp.methods == ["saliency", "integrated_gradients"]
    assert cmp.targets["clean"] == 1
    np.testing.assert_array_equal(cmp.mask, trigger.mask(8, 8).numpy())
    for m in cmp.methods:
        for which in ("clean", "triggered"):
            assert cmp.maps[m][which].shape == (8, 8)
            assert cmp.mass[m][which] == pytest.approx(attribution_mass_in_region(cmp.maps[m][which], cmp.mask))


def test_captum_is_imported_only_by_the_attribution_module():
    code = ("import sys, medic_viz.analysis, medic_viz.viz; "
            "print('captum' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_badnet_demo_attributions_move_into_the_patch():
    try:
        model, card = load_demo_model("badnet")
    except FileNotFoundError as exc:  # pragma: no cover - only before the demo models are built
        pytest.skip(str(exc))
    assert card.attack is not None
    trigger = trigger_from_config(card.attack)
    test = load_dataset("signs", n_train=24, n_test=96).test
    idx = (test.labels != card.target_class).nonzero()[:10, 0]  # type: ignore[attr-defined]  # a tensor
    masses: dict[str, list[tuple[float, float]]] = {m: [] for m in ATTRIBUTION_METHODS}
    for i in idx.tolist():
        image = test.floats(torch.tensor([i]))[0]
        cmp = compare_attributions(model, image, trigger, n_steps=16)  # type: ignore[arg-type]  # a one-image trigger
        if cmp.targets["triggered"] != card.target_class:
            continue  # the attack failed on this image
        for m in ATTRIBUTION_METHODS:
            masses[m].append((cmp.mass[m]["clean"], cmp.mass[m]["triggered"]))
    assert len(masses["gradcam"]) >= 8
    for m in ("integrated_gradients", "gradcam"):
        # median over images: a clean sign with a bright lower-right corner is an outlier for IG
        clean, trig = np.median(np.array(masses[m]), axis=0)
        # the 3x3 patch is 9/1024 of the image; triggered attributions concentrate there
        assert trig > 2 * clean, f"{m}: mass in patch {trig:.4f} (triggered) vs {clean:.4f} (clean)"
        assert trig > 0.02
