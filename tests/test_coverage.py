"""What the cloning loss reaches (medic_viz.coverage): counted by hand on a small net, the same
for a wrapped model, and recorded by every MEDIC run."""

import pytest
import torch
import torch.nn as nn

from medic_viz.capture import resolve_layers
from medic_viz.coverage import cloning_coverage
from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.medic import Medic
from medic_viz.models.zoo import build_model


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.Flatten(), nn.Linear(5 * 4 * 4, 2))


def test_parameters_after_the_last_hooked_layer_are_label_only_counted_by_hand():
    c = cloning_coverage(_net(), ["0"], (3, 8, 8))
    # conv0: 3·4·9 + 4 = 112 matched; conv2: 4·5·9 + 5 = 185 and linear: 80·2 + 2 = 162 label-only
    assert (c.matched, c.label_only, c.label_only_modules) == (112, 347, ("2", "4"))
    assert c.share_label_only == pytest.approx(347 / 459)
    deeper = cloning_coverage(_net(), ["0", "2"], (3, 8, 8))
    assert (deeper.matched, deeper.label_only, deeper.label_only_modules) == (297, 162, ("4",))
    assert "35 % of the parameters (162 of 459)" in deeper.summary()


def test_a_parameter_shared_with_a_hooked_path_is_matched_and_counted_once():
    shared = nn.Conv2d(3, 3, 3, padding=1)
    twice = nn.Sequential(shared, nn.ReLU(), shared, nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    c = cloning_coverage(twice, ["0"], (3, 8, 8))
    # the conv (3·3·9 + 3 = 84) is upstream of its own first output: matched, though it runs again after
    assert (c.matched, c.label_only) == (84, 3 * 64 * 2 + 2)


def test_the_model_is_left_as_it_was():
    net = _net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cloning_coverage(net, ["0"], (3, 8, 8))
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="no module named 'nope'"):
        cloning_coverage(net, ["nope"], (3, 8, 8))


@pytest.mark.parametrize("arch", ["small_cnn", "wrn16_1", "vgg11_bn"])
def test_wrapped_and_unwrapped_models_give_the_same_coverage(arch):
    model = build_model(arch, 10)
    wrapped = nn.Sequential(nn.Identity(), model)
    layers = resolve_layers(model, "auto", input_shape=(3, 32, 32))
    wrapped_layers = resolve_layers(wrapped, "auto", input_shape=(3, 32, 32))
    a = cloning_coverage(model, layers, (3, 32, 32))
    b = cloning_coverage(wrapped, wrapped_layers, (3, 32, 32))
    assert (a.matched, a.label_only) == (b.matched, b.label_only)
    assert b.label_only_modules == tuple(f"1.{n}" for n in a.label_only_modules)
    every = cloning_coverage(model, resolve_layers(model, "conv+bn", input_shape=(3, 32, 32)), (3, 32, 32))
    assert every.share_label_only < a.share_label_only  # cloning every conv/norm output reaches more


def test_wrn_default_cut_leaves_its_last_stage_to_the_labels():
    # the trade-off of issue 27, measured: WRN-16-1's "auto" layers leave block3, bn1 and fc to the labels
    model = build_model("wrn16_1", 43)
    c = cloning_coverage(model, resolve_layers(model, "auto", input_shape=(3, 32, 32)), (3, 32, 32))
    assert c.label_only_modules == ("block3", "bn1", "fc") and 0.7 < c.share_label_only < 0.8


def test_a_medic_run_records_its_coverage_and_notes_a_large_label_only_share():
    torch.manual_seed(0)
    clean = ImageArrays(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8), torch.arange(16) % 4,
                        classes=("a", "b", "c", "d"), name="toy")
    teacher = build_model("small_cnn", 4)
    result = Medic(epochs=1, device="cpu", progress=False, eval_every=0).run(teacher, clean)
    assert result.config["label_only_modules"] == ["conv4", "bn4", "fc"]
    assert 0.6 < result.config["label_only_share"] < 0.65
    assert "learn from the clean labels alone" in result.config["coverage_note"]
    every = Medic(epochs=1, device="cpu", progress=False, eval_every=0, layers="conv+bn").run(teacher, clean)
    assert every.config["label_only_modules"] == ["fc"] and "coverage_note" not in every.config
