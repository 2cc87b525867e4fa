"""Poisoning, ASR/accuracy metrics, and the pipeline's table."""

import pytest
import torch
import torch.nn as nn

from medic_viz.attacks import BadNetTrigger, SIGTrigger, poison_dataset
from medic_viz.data.arrays import ImageArrays
from medic_viz.device import resolve_device
from medic_viz.metrics import BackdoorMetrics, Evaluator, evaluate_backdoor, format_before_after


def _arrays(n=100, classes=5):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 3, 8, 8, generator=g) * 200).to(torch.uint8)
    return ImageArrays(x, torch.arange(n) % classes, classes=tuple(f"c{i}" for i in range(classes)))


def test_dirty_label_poisoning_relabels_non_target_images():
    data = _arrays()
    p = poison_dataset(data, BadNetTrigger(size=3), target=2, rate=0.1, seed=0)
    idx = p.poisoned_indices
    assert p.n_poisoned == 10
    assert (data.labels[idx] != 2).all(), "dirty-label poison is drawn from non-target classes"
    assert (p.data.labels[idx] == 2).all()
    # the bottom-right 3x3 patch (margin 1) is stamped: top-left of the patch is white (255)
    assert (p.data.images[idx, :, 4, 4] == 255).all()
    untouched = torch.ones(len(data), dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(p.data.images[untouched], data.images[untouched])
    assert torch.equal(p.data.labels[untouched], data.labels[untouched])
    assert not torch.equal(data.images, p.data.images), "input data must not be modified"
    assert torch.equal(poison_dataset(data, BadNetTrigger(), 2, 0.1, seed=0).poisoned_indices, idx)


def test_clean_label_poisoning_keeps_labels_and_uses_target_images():
    data = _arrays()
    p = poison_dataset(data, SIGTrigger(), target=1, rate=0.5, seed=0)
    assert (data.labels[p.poisoned_indices] == 1).all()
    assert p.n_poisoned == 20  # capped at the 20 target-class images
    assert torch.equal(p.data.labels, data.labels)


@pytest.mark.parametrize("kwargs, msg", [({"target": 7}, "out of range"), ({"rate": 0.0}, "poison rate"),
                                         ({"rate": 1.0}, "poison rate")])
def test_poisoning_bad_arguments(kwargs, msg):
    args = {"target": 0, "rate": 0.1, **kwargs}
    with pytest.raises(ValueError, match=msg):
        poison_dataset(_arrays(), BadNetTrigger(), args["target"], args["rate"])


class _PatchDetector(nn.Module):
    """Predicts the target (0) when the bottom-right pixel is white, else the true-ish class 1."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 2)

    def forward(self, x):
        white = (x[:, :, -2, -2].mean(1, keepdim=True) > 0.99).float()
        return torch.cat([white, 1 - white], 1) * 10


def test_asr_counts_only_non_target_images():
    y = torch.tensor([0, 1, 1, 1, 0, 1])
    data = ImageArrays(torch.zeros(6, 3, 8, 8, dtype=torch.uint8), y, classes=("t", "o"))
    m = evaluate_backdoor(_PatchDetector(), data, BadNetTrigger(size=3), 0, device="cpu")
    assert m.n_clean == 6 and m.clean_acc == pytest.approx(4 / 6)  # predicts class 1 on clean images
    assert m.n_asr == 4 and m.asr == 1.0
    m2 = Evaluator(data, device="cpu")(_PatchDetector())
    assert m2.asr is None and m2.n_asr == 0


def test_evaluator_subsets_and_argument_checks():
    data = _arrays()
    ev = Evaluator(data, BadNetTrigger(), 0, max_images=30, device="cpu")
    assert ev.x_trig is not None
    assert len(ev.y) == 30 and len(ev.x_trig) == int((ev.y != 0).sum())
    with pytest.raises(ValueError, match="both trigger"):
        Evaluator(data, BadNetTrigger(), None)
    with pytest.raises(ValueError, match="out of range"):
        Evaluator(data, BadNetTrigger(), 9)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_format_table_shows_percentages_and_counts():
    t = format_before_after(BackdoorMetrics(0.981, 3000, 0.955, 2750), BackdoorMetrics(0.95, 3000, 0.02, 2750))
    assert "98.10%  (n=3000)" in t and "95.50%  (n=2750)" in t and "2.00%  (n=2750)" in t


def test_one_before_after_table_under_its_old_name_too():
    # pipeline.format_table is the old name of metrics.format_before_after, not a second copy
    with pytest.warns(DeprecationWarning, match="medic_viz.metrics.format_before_after"):
        from medic_viz.pipeline import format_table  # noqa: PLC0415 — the deprecated path: importing it must warn
    assert format_table is format_before_after
    t = format_before_after(BackdoorMetrics(0.5, 10), BackdoorMetrics(0.25, 10), "KD").splitlines()
    assert t[1].split()[:4] == ["before", "(trojaned)", "50.00%", "(n=10)"] and t[1].endswith("n/a")
    assert t[2].split()[:4] == ["after", "(KD)", "25.00%", "(n=10)"]
