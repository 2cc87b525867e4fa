"""MEDIC's hooked layer set (presets, names, predicates) and the per-layer τ calibration in the
engine (the anti-relapse default)."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn as nn

import medic_viz.defenses.medic as medic_mod
from medic_viz.calibration import matched_share
from medic_viz.capture import LAYER_PRESETS, hookable_layers, resolve_layers
from medic_viz.cli import DEMO_SETTINGS
from medic_viz.data.arrays import ImageArrays
from medic_viz.defenses.medic import (
    DEFAULT_LAM,
    DEFAULT_LAYERS,
    DEFAULT_SHARE,
    PAPER_LAM,
    Medic,
    MedicConfig,
    MedicObjective,
    preview_layer_taus,
)
from medic_viz.importance import ImportanceOptions
from medic_viz.models import available_models, build_model
from medic_viz.stats import compute_layer_stats
from medic_viz.widgets.state import LauncherState, WorkbenchState


@pytest.mark.parametrize("arch", available_models())
def test_presets_resolve_to_the_right_modules_on_every_zoo_model(arch):
    model = build_model(arch, num_classes=10)
    modules = dict(model.named_modules())
    convbn = resolve_layers(model, "conv+bn")
    full = resolve_layers(model, "conv+bn+linear")
    assert resolve_layers(model, "all") == full == hookable_layers(model)
    linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    assert linear, "every zoo model ends in a linear layer"
    assert not set(linear) & set(convbn), "conv+bn must not hook dense layers (logits included)"
    assert set(full) - set(convbn) == set(linear)
    expected = [n for n, m in modules.items()
                if n and (isinstance(m, nn.Conv2d) or isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)))]
    assert convbn == expected
    # the logits layer is the last module of the full set and absent from conv+bn
    assert full[-1] in linear and full[-1] not in convbn


#: The last stage each zoo model loses in "conv+bn-last" / "conv+bn-inner" (module-name prefix),
#: or None where the cut is the last convolution itself (a plain stack, or a top-level child that
#: holds the whole body).
LAST_STAGE = {"small_cnn": None, "wrn16_1": "block3", "preact_resnet18": "layer4", "resnet18": "layer4",
              "resnet34": "layer4", "vgg11_bn": None, "mobilenet_v1": None}


def test_every_zoo_model_has_its_last_stage_listed():
    assert set(LAST_STAGE) == set(available_models())


@pytest.mark.parametrize("arch", available_models())
def test_conv_bn_last_stops_before_the_last_stage_on_every_zoo_model(arch):
    """"conv+bn-last" = "conv+bn" cut before the model's last stage (the top-level block holding
    the last convolution: WRN's block3, a ResNet's layer4) or, in a plain stack, before the last
    convolution: no logits, nothing the classifier reads directly."""
    model = build_model(arch, num_classes=10)
    modules = dict(model.named_modules())
    convbn = resolve_layers(model, "conv+bn")
    cut = resolve_layers(model, "conv+bn-last")
    last_conv = [n for n in convbn if isinstance(modules[n], nn.Conv2d)][-1]
    stage = LAST_STAGE[arch]
    if stage is None:
        assert cut == convbn[: convbn.index(last_conv)]
    else:
        first_in_stage = next(n for n in convbn if n.startswith(stage + "."))
        assert cut == convbn[: convbn.index(first_in_stage)]
        assert not any(n.startswith(stage + ".") for n in cut)
    assert last_conv not in cut and not any(isinstance(modules[n], nn.Linear) for n in cut)
    assert len([n for n in cut if isinstance(modules[n], nn.Conv2d)]) >= 3  # the body stays


def test_wrn16_1_default_layers_by_hand():
    """WRN-16-1: the default clones blocks 1 and 2 without the stem convolution and its norm —
    the 16 layers measured on GTSRB (BENCHMARKS.md §3b; with block3's first unit and part of the
    second, SIG seed 0 ended at 89 % ASR)."""
    model = build_model("wrn16_1", num_classes=10)
    expected = [f"block{b}.layer.{u}.{m}" for b in (1, 2) for u in (0, 1)
                for m in ("bn1", "conv1", "bn2", "conv2", "convShortcut")
                if (b, u, m) != (1, 0, "bn1") and (m != "convShortcut" or (b, u) == (2, 0))]
    assert resolve_layers(model, "auto") == resolve_layers(model, "conv+bn-inner") == expected
    assert len(expected) == 16


@pytest.mark.parametrize("arch", available_models())
def test_conv_bn_inner_also_drops_the_first_convolution_and_its_norm(arch):
    model = build_model(arch, num_classes=10)
    modules = dict(model.named_modules())
    last = resolve_layers(model, "conv+bn-last")
    inner = resolve_layers(model, "conv+bn-inner")
    convs = [n for n in last if isinstance(modules[n], nn.Conv2d)]
    assert inner == last[last.index(convs[1]):]
    dropped = last[: last.index(convs[1])]
    assert [n for n in dropped if isinstance(modules[n], nn.Conv2d)] == [convs[0]]
    assert len(dropped) <= 2  # the first convolution and at most its norm


def test_conv_bn_last_on_small_cnn_by_hand():
    model = build_model("small_cnn", num_classes=10)
    assert resolve_layers(model, "conv+bn-last") == ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]
    assert resolve_layers(model, "conv+bn-inner") == ["conv2", "bn2", "conv3", "bn3"]
    one_conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match="selects no module"):
        resolve_layers(one_conv, "conv+bn-last")
    # "auto" (the default): conv+bn-inner where it selects anything, else the next preset that does
    assert resolve_layers(model, "auto") == resolve_layers(model, "conv+bn-inner")
    assert resolve_layers(one_conv, "auto") == ["0", "1"]  # conv+bn
    two_conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    assert resolve_layers(two_conv, "auto") == ["0", "1"]  # conv+bn-last
    dense = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Linear(5, 2))
    assert resolve_layers(dense, "auto") == ["1", "2"]  # every hookable layer


def test_wrong_layer_name_lists_every_valid_layer_and_the_presets():
    model = build_model("small_cnn", num_classes=10)
    with pytest.raises(ValueError) as info:
        resolve_layers(model, ["conv1", "conv9"])
    msg = str(info.value)
    assert "conv9" in msg and "\n" not in msg
    for name in hookable_layers(model):
        assert name in msg
    for preset in LAYER_PRESETS:
        assert repr(preset) in msg
    with pytest.raises(ValueError, match="preset"):
        MedicConfig(layers="conv+bnn")
    with pytest.raises(ValueError, match="selected none"):
        resolve_layers(model, lambda name, module: False)
    assert resolve_layers(model, lambda name, module: isinstance(module, nn.Conv2d)) == ["conv1", "conv2", "conv3", "conv4"]


def test_defaults_are_the_measured_ones_and_the_paper_is_one_argument_away():
    cfg = MedicConfig()
    assert cfg.layers == DEFAULT_LAYERS == "auto"
    assert cfg.calibrated and cfg.effective_share == DEFAULT_SHARE == 0.01 and cfg.effective_tau is None
    assert cfg.describe() == "share=1% λ=3"
    assert MedicConfig(share=0.05).calibrated and MedicConfig(share=0.05).effective_tau is None
    assert cfg.lam == DEFAULT_LAM == 3.0 and PAPER_LAM == 10.0
    paper = MedicConfig(tau=5, lam=PAPER_LAM, layers="all")
    assert paper.describe() == "τ=5 λ=10" and not paper.calibrated and paper.effective_share is None
    # the CLI's demo (which does not import torch to start) and the widgets use the same λ
    assert {s["lam"] for s in DEMO_SETTINGS.values()} == {DEFAULT_LAM}
    for state in (LauncherState, WorkbenchState):
        assert inspect.signature(state).parameters["lam"].default == DEFAULT_LAM
    assert MedicConfig(share=0.02).describe() == "share=2% λ=3"
    with pytest.raises(ValueError, match="not both"):
        MedicConfig(tau=5, share=0.05)
    with pytest.raises(ValueError, match="share"):
        MedicConfig(share=0)


def _tiny_data(n: int = 96, classes: int = 4, seed: int = 0) -> ImageArrays:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = (torch.rand(n, 3, 16, 16, generator=g) * 80).to(torch.uint8)
    for c in range(classes):  # a class-dependent bright square so the teacher has something to learn
        images[labels == c, c % 3, 2 + 3 * c: 5 + 3 * c, 2:6] = 250
    return ImageArrays(images=images, labels=labels, classes=tuple(f"c{i}" for i in range(classes)), name="tiny")


def _capture_objective(monkeypatch) -> dict:
    """Make MEDIC's training loop record the objective it is given (``seen["objective"]``)."""
    seen: dict = {}
    real_train = medic_mod.train

    def spy(objective, *args, **kwargs):
        seen["objective"] = objective
        return real_train(objective, *args, **kwargs)

    monkeypatch.setattr(medic_mod, "train", spy)
    return seen


def test_engine_trains_with_the_calibrated_per_layer_tau(monkeypatch):
    """The anti-relapse default: the objective the loop trains with uses τ per layer such that
    each layer's weights match the target share — fails if the calibration is switched off."""
    data = _tiny_data()
    teacher = build_model("small_cnn", num_classes=4, widths=(4, 8, 8, 8)).eval()
    seen = _capture_objective(monkeypatch)
    share = 0.1
    result = Medic(share=share, layers="conv+bn", epochs=1, device="cpu", progress=False, batch_size=32, calibration_images=96,
                   augment=False).run(teacher, data)
    obj = seen["objective"]
    taus = result.config["layer_taus"]
    assert set(taus) == set(obj.layers) == set(resolve_layers(teacher, "conv+bn"))
    assert "fc" not in obj.layers and result.config["layers"] == obj.layers
    assert result.config["share"] == share
    x, y = data.floats(torch.arange(96)), data.labels
    acts, grads = obj.teacher_activations(x, y)
    for n, a, g in zip(obj.layers, acts, grads):
        assert obj.layer_options[n].tau == pytest.approx(taus[n])
        assert matched_share(a, g, obj.stats[n], obj.layer_options[n]) == pytest.approx(share, rel=0.15)
    # a global τ: no calibration, every layer the same τ
    result = Medic(tau=5, layers="conv+bn", epochs=1, device="cpu", progress=False, batch_size=32).run(teacher, data)
    assert "layer_taus" not in result.config and result.config["tau"] == 5.0
    assert {o.tau for o in seen["objective"].layer_options.values()} == {5.0}


def test_all_preset_hooks_the_logits_in_the_engine(monkeypatch):
    data = _tiny_data()
    teacher = build_model("small_cnn", num_classes=4, widths=(4, 8, 8, 8)).eval()
    result = Medic(tau=5, layers="conv+bn+linear", epochs=1, device="cpu", progress=False, batch_size=32).run(teacher, data)
    assert result.config["layers"][-1] == "fc"


def test_fused_loss_uses_the_per_layer_tau():
    """The fused per-layer term follows set_layer_taus (τ folded into its constants), as the
    definition (fused="reference") does."""
    data = _tiny_data()
    torch.manual_seed(1)
    teacher = build_model("small_cnn", num_classes=4, widths=(4, 8, 8, 8)).eval()
    layers = resolve_layers(teacher, "conv+bn")
    stats = compute_layer_stats(teacher, data, layers, device="cpu")
    taus = {n: 1.0 + i for i, n in enumerate(layers)}
    x, y = data.floats(torch.arange(32)), data.labels[:32]
    per_layer = {}
    for mode in ("eager", "reference"):
        torch.manual_seed(0)
        student = build_model("small_cnn", num_classes=4, widths=(4, 8, 8, 8))
        obj = MedicObjective(teacher, student, stats, ImportanceOptions(tau=5.0), 10.0, fused=mode)
        obj.set_layer_taus(taus)
        per_layer[mode] = obj.loss(x, y)[2]
    untuned = MedicObjective(teacher, student, stats, ImportanceOptions(tau=5.0), 10.0, fused="reference").loss(x, y)[2]
    for n in layers:
        torch.testing.assert_close(per_layer["eager"][n], per_layer["reference"][n], rtol=1e-4, atol=1e-7)
        if taus[n] != 5.0 and float(untuned[n].detach()) > 0:  # the τ per layer reached it
            assert not torch.allclose(per_layer["reference"][n], untuned[n], rtol=1e-3)
    assert sum(float(v.detach()) > 0 for v in untuned.values()) >= 2


@pytest.mark.parametrize("layers, cloned_tail", [(None, False), ("conv+bn", True)])
def test_default_cloning_term_leaves_the_classifiers_features_free(monkeypatch, layers, cloned_tail):
    """The anti-relapse default: the cloning term has no term for the first convolution and its
    norm, and pulls nothing in the last convolution, its norm or the classifier (they are trained
    by the label loss alone); with "conv+bn" it does — the same checks fail if the default is
    switched back."""
    data = _tiny_data()
    teacher = build_model("small_cnn", num_classes=4, widths=(4, 8, 8, 8)).eval()
    seen = _capture_objective(monkeypatch)
    kwargs = {} if layers is None else {"layers": layers}
    Medic(epochs=1, device="cpu", progress=False, batch_size=32, calibration_images=96, **kwargs).run(teacher, data)
    obj = seen["objective"]
    student = obj.model
    student.zero_grad(set_to_none=True)
    x, y = data.floats(torch.arange(32)), data.labels[:32]
    _, parts, per_layer = obj.loss(x, y)
    assert ("conv1" in per_layer and "bn1" in per_layer) is cloned_tail
    parts["clone"].backward()

    def pulled(module: nn.Module) -> bool:
        return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())

    assert pulled(student.conv1) and pulled(student.conv3)
    assert pulled(student.conv4) is cloned_tail and pulled(student.bn4) is cloned_tail
    assert not pulled(student.fc)


def test_preview_layer_taus_is_what_the_run_calibrates():
    """``preview_layer_taus`` (the widgets' hint) gives the τ per layer a run calibrates, without
    training; for any hookable layer (a layer's τ depends on that layer alone)."""
    data = _tiny_data()
    teacher = build_model("small_cnn", num_classes=4, widths=(4, 8, 8, 8)).eval()
    config = MedicConfig(share=0.1, layers="conv+bn", epochs=1, device="cpu", progress=False, batch_size=32,
                         calibration_images=96)
    taus = Medic(config).run(teacher, data).config["layer_taus"]
    preview = preview_layer_taus(teacher, data, config)
    assert preview.keys() == taus.keys()
    for n in taus:
        assert preview[n] == pytest.approx(taus[n], rel=1e-3)
    every = preview_layer_taus(teacher, data, config, layers="all")
    assert set(every) == set(hookable_layers(teacher)) and every["conv2"] == pytest.approx(taus["conv2"], rel=1e-3)
    assert preview_layer_taus(teacher, data, config, share=0.5)["conv2"] < preview["conv2"]  # wider share, smaller τ
    with pytest.raises(ValueError, match="give share="):
        preview_layer_taus(teacher, data, MedicConfig(tau=5.0, device="cpu"))
