"""One input followed through a run: predict_input and InputProbe against softmax computed by hand."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.probe import InputProbe, ProbeReading, predict_input


def _linear(weight, bias) -> nn.Module:
    """logits = W · flatten(x) + b, with dropout (so that train mode would change the output)."""
    lin = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        lin.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.9), lin)


def _softmax(z):
    e = np.exp(np.asarray(z, dtype=float) - np.max(z))
    return e / e.sum()


def test_predict_input_is_the_softmax_of_the_logits_in_eval_mode():
    # One 1x1x2 image; logits = [0, ln 2 + x0, 0]: at x0 = ln 1.5, probabilities 1/5, 3/5, 1/5.
    model = _linear([[0, 0], [1, 0], [0, 0]], [0, math.log(2), 0]).train()
    image = torch.tensor([[[math.log(1.5), 0.0]]])
    pred = predict_input(model, image)
    assert pred.label == 1
    assert pred.probability == pytest.approx(0.6, abs=1e-6)
    np.testing.assert_allclose(pred.probabilities, [0.2, 0.6, 0.2], atol=1e-6)
    assert model.training  # its mode is restored (and dropout was off: the result is exact)
    assert predict_input(model, image.unsqueeze(0)).label == 1  # a (1, C, H, W) batch is accepted


@pytest.mark.parametrize("bad, error", [(torch.zeros(2, 1, 1, 2), ValueError), (torch.zeros(1, 2, dtype=torch.long), ValueError),
                                        (np.zeros((1, 1, 2)), TypeError)])
def test_predict_input_refuses_what_is_not_one_float_image(bad, error):
    with pytest.raises(error, match="image"):
        predict_input(_linear([[1, 0]], [0]), bad)


def test_input_probe_reads_the_clean_and_the_triggered_copy():
    trigger = BadNetTrigger(size=2, margin=0)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 4, 4, generator=g)
    weight = torch.randn(3, 48, generator=g).tolist()
    model = _linear(weight, [0.1, -0.2, 0.3])
    probe = InputProbe(image, 2, trigger, class_names=("stop", "yield", "speed"), name="gallery image 5")
    triggered = trigger.apply(image.unsqueeze(0)).clamp(0, 1)[0]
    assert not torch.equal(triggered, image) and torch.equal(probe.triggered_image, triggered)
    reading = probe(model)
    w, b = np.asarray(weight), np.asarray([0.1, -0.2, 0.3])
    want_clean = _softmax(w @ image.flatten().numpy() + b)
    want_trig = _softmax(w @ triggered.flatten().numpy() + b)
    np.testing.assert_allclose(reading.clean.probabilities, want_clean, atol=1e-5)
    np.testing.assert_allclose(reading.triggered.probabilities, want_trig, atol=1e-5)
    assert reading.clean.label == int(want_clean.argmax()) and reading.triggered.label == int(want_trig.argmax())
    assert reading.probability("triggered", 2) == pytest.approx(want_trig[2], abs=1e-5)
    assert reading.prediction("clean") is reading.clean
    text = probe.describe(reading)
    names = ("stop", "yield", "speed")
    assert text.startswith(f"clean → {names[reading.clean.label]!r}")
    assert f"triggered → {names[reading.triggered.label]!r}" in text
    assert "gallery image 5" in repr(probe) and "'speed'" in repr(probe)


def test_input_probe_and_reading_refuse_bad_arguments():
    trigger = BadNetTrigger(size=1, margin=0)
    with pytest.raises(TypeError, match="trigger"):
        InputProbe(torch.zeros(1, 2, 2), 0, "badnet")  # type: ignore[arg-type]  # deliberately wrong
    with pytest.raises(ValueError, match="label"):
        InputProbe(torch.zeros(1, 2, 2), -1, trigger)
    reading = InputProbe(torch.zeros(1, 1, 2), 0, trigger)(_linear([[1, 0], [0, 1]], [0, 0]))
    assert isinstance(reading, ProbeReading)
    with pytest.raises(ValueError, match="which"):
        reading.prediction("both")
    with pytest.raises(ValueError, match="label"):
        reading.probability("clean", 2)
