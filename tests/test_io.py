"""Tests for safe model I/O (medic_viz.io, cards, checkpoints, weights, importer.import_checkpoint):
safe save/load, model cards, refusal of code-running checkpoints."""

from __future__ import annotations

import importlib
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import medic_viz.io
import medic_viz.limits
from medic_viz.cards import ModelCard
from medic_viz.checkpoints import UnsafeCheckpointError, load_state_dict_file
from medic_viz.finite import NonFiniteModelError
from medic_viz.importer import import_checkpoint
from medic_viz.io import CARD_FILENAME, MODEL_FILENAME, load_model, save_model
from medic_viz.weights import CheckpointMismatchError, load_weights_into

torch.set_num_threads(1)


class TinyNet(nn.Module):
    """conv → BN → ReLU → global pool → linear; small enough for instant tests."""

    def __init__(self, num_classes: int = 3, in_channels: int = 3, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.mean(dim=(2, 3)))


BUILDER_CALLS: list[dict] = []


def tiny_builder(name, num_classes, *, in_channels, input_size, normalize=None, **kwargs):
    """Stand-in for the zoo's build_model; records how it was called."""
    BUILDER_CALLS.append(
        dict(name=name, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
             normalize=normalize, **kwargs)
    )
    if name != "tiny":
        raise ValueError(f"unknown model {name!r}")
    return TinyNet(num_classes, in_channels, **kwargs)


class RunsCodeWhenUnpickled:
    """A pickle payload: unpickling it executes code that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def trained_tiny(num_classes: int = 3, width: int = 4, seed: int = 0) -> TinyNet:
    """A TinyNet whose BN running stats differ from their initial values (one train-mode pass)."""
    torch.manual_seed(seed)
    model = TinyNet(num_classes, width=width)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 8, 8) * 3 + 1)
    return model.eval()


def tiny_card(**overrides) -> ModelCard:
    fields: dict[str, Any] = dict(
        architecture="tiny",
        num_classes=3,
        input_size=8,
        arch_kwargs={"width": 4},
        classes=["cat", "dog", "stop sign"],
        dataset="synthetic",
        attack={"kind": "badnet", "size": 3},
        target_class=2,
        poison_rate=0.1,
        metrics={"clean_acc": 0.97, "asr": 0.99, "n_clean": 3000, "n_asr": 2700},
        history=[{"epoch": 1, "loss": 1.5}, {"epoch": 2, "loss": 0.7}],
        notes="unit test",
    )
    fields.update(overrides)
    return ModelCard(**fields)


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    current = model.state_dict()
    assert current.keys() == snapshot.keys()
    for key, value in snapshot.items():
        assert torch.equal(current[key], value), key


# ------------------------------------------------------------------ round trip


def test_round_trip_gives_identical_outputs_card_and_bn_buffers(tmp_path):
    model = trained_tiny()
    assert model.bn.running_mean.abs().sum() > 0.1  # the buffers really hold data
    card = tiny_card()
    out_dir = save_model(model, tmp_path / "m", card)
    assert (out_dir / MODEL_FILENAME).is_file() and (out_dir / CARD_FILENAME).is_file()

    BUILDER_CALLS.clear()
    loaded, loaded_card = load_model(out_dir, builder=tiny_builder)
    assert BUILDER_CALLS == [
        dict(name="tiny", num_classes=3, in_channels=3, input_size=8, normalize=None, width=4)
    ]
    assert loaded_card == card
    assert not loaded.training
    x = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(loaded.bn, name), getattr(model.bn, name)), name

    # The weights file is plain safetensors with every state_dict entry, BN buffers included.
    raw = load_file(str(out_dir / MODEL_FILENAME))
    assert set(raw) == set(model.state_dict())
    assert raw["bn.num_batches_tracked"].item() == 1
    # card.json is readable JSON carrying the fields.
    on_disk = json.loads((out_dir / CARD_FILENAME).read_text())
    assert on_disk["architecture"] == "tiny" and on_disk["metrics"]["n_asr"] == 2700


def test_load_model_accepts_card_path(tmp_path):
    model = trained_tiny()
    save_model(model, tmp_path, tiny_card())
    loaded, _ = load_model(tmp_path / CARD_FILENAME, builder=tiny_builder)
    assert torch.equal(loaded.fc.weight, model.fc.weight)  # type: ignore[arg-type]  # a parameter (torch types module attributes Tensor | Module)


def test_save_overwrites_its_two_files_and_keeps_others(tmp_path):
    (tmp_path / "README.txt").write_text("keep me")
    save_model(trained_tiny(seed=0), tmp_path, tiny_card(notes="first"))
    second = trained_tiny(seed=1)
    save_model(second, tmp_path, tiny_card(notes="second"))
    assert (tmp_path / "README.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["README.txt", CARD_FILENAME, MODEL_FILENAME])
    loaded, card = load_model(tmp_path, builder=tiny_builder)
    assert card.notes == "second"
    assert torch.equal(loaded.conv.weight, second.conv.weight)  # type: ignore[arg-type]  # a parameter (torch types module attributes Tensor | Module)


def test_save_refuses_a_file_path_and_bad_card(tmp_path):
    target = tmp_path / "not_a_dir"
    target.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        save_model(trained_tiny(), target, tiny_card())
    with pytest.raises(TypeError, match="ModelCard"):
        save_model(trained_tiny(), tmp_path / "m", {"architecture": "tiny"})  # type: ignore[arg-type]  # deliberately wrong
    bad = tiny_card(metrics={"obj": object()})
    with pytest.raises(ValueError, match="metrics.obj"):
        save_model(trained_tiny(), tmp_path / "m2", bad)
    assert not (tmp_path / "m2" / MODEL_FILENAME).exists()  # nothing half-written


# ------------------------------------------------------------------ torch checkpoints


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_plain_pt_state_dict_loads_with_weights_only(tmp_path, zipfile_format):
    model = trained_tiny()
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=zipfile_format)
    state = load_state_dict_file(path)
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())

    target = TinyNet()
    assert load_weights_into(target, path) is target
    assert_same_state(target, model.state_dict())


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "net"])
def test_wrapped_and_dataparallel_prefixed_checkpoints_load(tmp_path, wrapper):
    model = trained_tiny()
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({wrapper: prefixed, "epoch": 7, "best_acc": 0.93}, path)
    state = load_state_dict_file(path)
    assert set(state) == set(model.state_dict())

    target = load_weights_into(TinyNet(), path)
    assert_same_state(target, model.state_dict())


def test_prefixed_dict_passed_directly_is_stripped():
    model = trained_tiny()
    target = load_weights_into(TinyNet(), {f"module.{k}": v for k, v in model.state_dict().items()})
    assert_same_state(target, model.state_dict())


def test_checkpoint_without_state_dict_names_its_entries(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"epoch": 3, "weights_list": [torch.zeros(2)]}, path)
    with pytest.raises(ValueError, match="could not find a state_dict.*'epoch': int"):
        load_state_dict_file(path)


# ------------------------------------------------------------------ security


def test_payload_runs_code_under_plain_pickle(tmp_path):
    """Control: the payload used below really executes code when unpickled blindly."""
    marker = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(RunsCodeWhenUnpickled(marker)))
    assert marker.exists()


def _assert_unsafe_message(exc: UnsafeCheckpointError, path: Path) -> None:
    message = str(exc)
    assert str(path) in message
    assert "execute code" in message
    assert "plain tensors" in message
    assert "torch.save(model.state_dict()" in message
    assert "safetensors" in message
    assert "builtins.exec" in message  # the static scan names what the file would call
    assert isinstance(exc.__cause__, Exception)  # torch's own error is chained


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_malicious_raw_pickle_is_refused_and_runs_nothing(tmp_path, protocol):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"w": torch.zeros(2), "x": RunsCodeWhenUnpickled(marker)}, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError) as info:
        load_state_dict_file(path)
    assert not marker.exists()
    _assert_unsafe_message(info.value, path)


def test_malicious_object_inside_torch_save_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    payload = dict(trained_tiny().state_dict())
    payload["extra"] = RunsCodeWhenUnpickled(marker)
    torch.save(payload, path)
    assert not marker.exists()
    target = TinyNet()
    before = state_snapshot(target)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_weights_into(target, path)
    assert not marker.exists()
    _assert_unsafe_message(info.value, path)
    assert_same_state(target, before)
    with pytest.raises(UnsafeCheckpointError):
        import_checkpoint(path, "tiny", 3, builder=tiny_builder, input_size=8)
    assert not marker.exists()


@pytest.mark.parametrize(
    "make_model", [lambda: TinyNet(), lambda: nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2))]
)
def test_whole_pickled_module_is_refused(tmp_path, make_model):
    path = tmp_path / "whole_model.pt"
    torch.save(make_model(), path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_state_dict_file(path)
    message = str(info.value)
    assert "whole pickled nn.Module" in message
    assert "model.state_dict()" in message
    assert str(path) in message


def test_corrupt_files_raise_value_errors_naming_the_file(tmp_path):
    junk_pt = tmp_path / "junk.pt"
    junk_pt.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt") as info:
        load_state_dict_file(junk_pt)
    assert not isinstance(info.value, UnsafeCheckpointError)
    junk_st = tmp_path / "junk.safetensors"
    junk_st.write_bytes(b"\x00" * 32)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_state_dict_file(junk_st)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_state_dict_file(tmp_path / "nope.pt")


# ------------------------------------------------------------------ mismatches


def test_shape_mismatch_names_keys_and_leaves_model_untouched():
    source = trained_tiny(num_classes=5)
    target = TinyNet(num_classes=3)
    before = state_snapshot(target)
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights_into(target, source.state_dict())
    message = str(info.value)
    assert "2 shape mismatch(es)" in message
    assert "fc.weight: checkpoint [5, 4] vs model [3, 4]" in message
    assert "fc.bias: checkpoint [5] vs model [3]" in message
    assert "num_classes" in message and "architecture" in message
    assert "final layer has 5 outputs; the model has 3" in message
    assert "conv.weight" not in message  # matching keys are not listed
    assert_same_state(target, before)


def test_missing_and_unexpected_keys_are_listed_with_counts():
    class Deep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(12))

    target = Deep()
    before = state_snapshot(target)
    renamed = {k.replace("layers.", "blocks."): v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights_into(target, {k: v + 1 for k, v in renamed.items()})
    message = str(info.value)
    assert "24 missing key(s)" in message and "24 unexpected key(s)" in message
    assert "layers.0.weight" in message and "blocks.0.weight" in message
    assert "… and 14 more" in message  # only the first 10 of each are listed
    assert "layers.11.bias" not in message
    assert "No key is shared" in message
    assert_same_state(target, before)


def test_strict_false_allows_missing_keys_but_not_shapes():
    source = trained_tiny()
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    target = load_weights_into(TinyNet(), partial, strict=False)
    assert torch.equal(target.conv.weight, source.conv.weight)  # type: ignore[arg-type]  # a parameter (torch types module attributes Tensor | Module)
    with pytest.raises(CheckpointMismatchError, match="fc.weight"):
        load_weights_into(TinyNet(num_classes=4), source.state_dict(), strict=False)


def test_load_model_with_card_for_wrong_architecture_reports_card(tmp_path):
    save_model(trained_tiny(num_classes=3), tmp_path, tiny_card())
    card_path = tmp_path / CARD_FILENAME
    data = json.loads(card_path.read_text())
    data.update(num_classes=4, classes=None, attack=None, target_class=None)
    card_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointMismatchError) as info:
        load_model(tmp_path, builder=tiny_builder)
    message = str(info.value)
    assert "architecture='tiny'" in message and "num_classes=4" in message
    assert "fc.weight: checkpoint [3, 4] vs model [4, 4]" in message


# ------------------------------------------------------------------ cards and directories


def test_card_with_unknown_future_key_loads_and_survives_resave(tmp_path):
    model = trained_tiny()
    save_model(model, tmp_path / "a", tiny_card())
    card_path = tmp_path / "a" / CARD_FILENAME
    data = json.loads(card_path.read_text())
    data["calibration"] = {"temperature": 1.7}
    data["medic_viz_version"] = "9.9.9"
    card_path.write_text(json.dumps(data))

    loaded, card = load_model(tmp_path / "a", builder=tiny_builder)
    assert card.extra == {"calibration": {"temperature": 1.7}}
    assert card.medic_viz_version == "9.9.9"
    save_model(loaded, tmp_path / "b", card)
    assert json.loads((tmp_path / "b" / CARD_FILENAME).read_text())["calibration"] == {"temperature": 1.7}


def test_card_json_round_trip_and_numpy_values():
    card = tiny_card(metrics={"clean_acc": np.float32(0.5), "n_clean": np.int64(10), "asr": torch.tensor(0.25)},
                     normalize=([0.5, 0.5, 0.5], (0.25, 0.25, 0.25)))
    assert card.normalize == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert card.normalize_pair == ([0.5] * 3, [0.25] * 3)
    again = ModelCard.from_json(card.to_json())
    assert again.metrics == {"clean_acc": 0.5, "n_clean": 10, "asr": 0.25}
    assert type(again.metrics["n_clean"]) is int
    assert ModelCard.from_json(again.to_json()) == again


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_classes=0), "num_classes must be >= 1"),
        (dict(num_classes=2.5), "num_classes must be an integer"),
        (dict(classes=["a", "b"]), "2 class names given for num_classes=3"),
        (dict(target_class=3), "target_class=3 is not a class"),
        (dict(poison_rate=1.5), r"poison_rate must be in \[0, 1\]"),
        (dict(normalize={"mean": [0.5], "std": [0.2]}), "normalize mean has 1 values for in_channels=3"),
        (dict(normalize={"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}), "std must be positive"),
        (dict(arch_kwargs={"num_classes": 3}), "arch_kwargs must not contain"),
        (dict(architecture=""), "architecture must be a non-empty"),
    ],
)
def test_card_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_card(**overrides)


def test_bad_missing_and_incomplete_cards_name_the_file(tmp_path):
    save_model(trained_tiny(), tmp_path, tiny_card())
    card_path = tmp_path / CARD_FILENAME
    card_path.write_text("{not json")
    with pytest.raises(ValueError, match=r"malformed model card .*card\.json.*not valid JSON"):
        load_model(tmp_path, builder=tiny_builder)
    card_path.write_text(json.dumps({"architecture": "tiny"}))
    with pytest.raises(ValueError, match=r"card\.json.*missing required field\(s\) \['num_classes'\]"):
        load_model(tmp_path, builder=tiny_builder)
    card_path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_model(tmp_path, builder=tiny_builder)
    card_path.unlink()
    with pytest.raises(ValueError, match=r"model card not found: .*card\.json"):
        load_model(tmp_path, builder=tiny_builder)


def test_missing_directory_and_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found: .*nowhere"):
        load_model(tmp_path / "nowhere", builder=tiny_builder)
    save_model(trained_tiny(), tmp_path / "m", tiny_card())
    (tmp_path / "m" / MODEL_FILENAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"model weights not found: .*model\.safetensors"):
        load_model(tmp_path / "m", builder=tiny_builder)


def test_import_checkpoint_then_save_and_load(tmp_path):
    source = trained_tiny()
    path = tmp_path / "third_party.ckpt"
    torch.save({"model_state_dict": source.state_dict(), "epoch": 60}, path)
    model, card = import_checkpoint(
        path, "tiny", 3, builder=tiny_builder, input_size=8, arch_kwargs={"width": 4}, target_class=1,
        attack={"name": "badnet", "size": 3},
    )
    assert card.target_class == 1 and not model.training
    assert_same_state(model, source.state_dict())
    save_model(model, tmp_path / "imported", card)
    again, again_card = load_model(tmp_path / "imported", builder=tiny_builder)
    assert again_card == card
    assert_same_state(again, source.state_dict())
    with pytest.raises(TypeError, match="unknown card field"):
        import_checkpoint(path, "tiny", 3, builder=tiny_builder, num_layers=3)


# ------------------------------------------------------------------ with the real model zoo


def test_small_cnn_round_trip_with_zoo(tmp_path):
    zoo = pytest.importorskip("medic_viz.models.zoo")
    torch.manual_seed(0)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    model = zoo.build_model("small_cnn", 4, input_size=32, normalize=(mean, std))
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32))
    model.eval()
    card = ModelCard("small_cnn", 4, normalize={"mean": mean, "std": std}, classes=["a", "b", "c", "d"])
    save_model(model, tmp_path, card)
    loaded, loaded_card = load_model(tmp_path)  # default builder: the zoo
    assert loaded_card == card
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert_same_state(loaded, model.state_dict())


def test_zoo_card_errors(tmp_path):
    zoo = pytest.importorskip("medic_viz.models.zoo")
    torch.manual_seed(0)
    save_model(zoo.build_model("small_cnn", 4), tmp_path, ModelCard("small_cnn", 4))
    card_path = tmp_path / CARD_FILENAME
    data = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**data, "architecture": "resnet9000"}))
    with pytest.raises(ValueError, match="unknown architecture 'resnet9000'.*available models: .*small_cnn"):
        load_model(tmp_path)
    # A card that forgets the in-model normalisation: the Normalize buffers are reported.
    card_path.write_text(json.dumps(data))
    with_norm = zoo.build_model("small_cnn", 4, normalize=([0.5] * 3, [0.5] * 3))
    save_model(with_norm, tmp_path, ModelCard("small_cnn", 4))
    with pytest.raises(CheckpointMismatchError, match="(?s)normalize.mean.*card's `normalize`"):
        load_model(tmp_path)


# ------------------------------------------------------------------ hostile weights and cards (issue 13)


def test_zero_dim_tensors_in_safetensors_get_a_mismatch_report(tmp_path):
    # The old mismatch reporter indexed ckpt_shape[0] of a 0-d tensor: IndexError.
    model = trained_tiny()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    weights["fc.weight"] = torch.tensor(1.0)
    save_file(weights, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"fc\.weight: checkpoint \[\] vs model \[3, 4\]"):
        load_weights_into(TinyNet(), tmp_path / "w.safetensors")


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_or_bool_weights_are_refused_not_cast(tmp_path, dtype):
    model = trained_tiny()
    weights = {k: (v.to(dtype) if k == "conv.weight" else v) for k, v in model.state_dict().items()}
    target = TinyNet()
    snapshot = state_snapshot(target)
    with pytest.raises(CheckpointMismatchError, match=r"integers or booleans.*conv\.weight: checkpoint"):
        load_weights_into(target, weights)
    assert_same_state(target, snapshot)


def test_nan_weights_are_a_clear_error_at_load(tmp_path):
    model = trained_tiny()
    with torch.no_grad():
        model.fc.bias[1] = float("nan")
    save_model(model, tmp_path, tiny_card())
    with pytest.raises(NonFiniteModelError, match=r"1 weight tensor\(s\) hold NaN or infinite values \(fc\.bias\)"):
        load_model(tmp_path, builder=tiny_builder)


def _zoo_model_dir(tmp_path: Path) -> Path:
    zoo = pytest.importorskip("medic_viz.models.zoo")
    torch.manual_seed(0)
    save_model(zoo.build_model("small_cnn", 4), tmp_path, ModelCard("small_cnn", 4))
    return tmp_path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_size": 10**9}, "1000000000 pixels per side"),
        ({"num_classes": 10**9}, "1000000000 classes is more than medic_viz accepts"),
        ({"in_channels": 7}, "in_channels must be 1 .grey. or 3"),
        # 10^5-wide convolutions would need 9·10^10 weights: refused before anything is allocated
        ({"arch_kwargs": {"widths": [10**5] * 4}}, r"(?s)weights do not fit .*widths.*shape mismatch"),
        ({"arch_kwargs": {"widths": [10**9] * 4}}, r"cannot be built"),
    ],
)
def test_absurd_sizes_in_a_card_are_refused_before_allocating(tmp_path, change, message):
    folder = _zoo_model_dir(tmp_path)
    card_path = folder / CARD_FILENAME
    card_path.write_text(json.dumps({**json.loads(card_path.read_text()), **change}))
    with pytest.raises(ValueError, match=message):
        load_model(folder)


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_card_json_is_a_value_error(tmp_path, depth):
    folder = _zoo_model_dir(tmp_path)
    card_path = folder / CARD_FILENAME
    text = card_path.read_text().rstrip().rstrip("}")
    card_path.write_text(text + ', "nested": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(ValueError, match="deeper than 32 levels"):
        load_model(folder)


def test_oversized_card_is_refused(tmp_path, monkeypatch):
    folder = _zoo_model_dir(tmp_path)
    monkeypatch.setattr(medic_viz.limits, "MAX_CARD_BYTES", 100)
    with pytest.raises(ValueError, match="larger than a card may be"):
        load_model(folder)


@pytest.mark.parametrize("name, home", [
    ("ModelCard", "medic_viz.cards"),
    ("UnsafeCheckpointError", "medic_viz.checkpoints"),
    ("load_state_dict_file", "medic_viz.checkpoints"),
    ("CheckpointMismatchError", "medic_viz.weights"),
    ("load_weights_into", "medic_viz.weights"),
    ("import_checkpoint", "medic_viz.importer"),
])
def test_names_that_left_io_still_import_from_it_with_a_deprecation_warning(name, home):
    with pytest.warns(DeprecationWarning, match=rf"medic_viz\.io\.{name} is deprecated; use {home}\.{name}"):
        old = getattr(medic_viz.io, name)
    assert old is getattr(importlib.import_module(home), name)
    assert name not in vars(medic_viz.io)  # answered by the module __getattr__, not imported into io


def test_what_io_owns_imports_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in medic_viz.io.__all__:
            getattr(medic_viz.io, name)
    assert {"save_model", "load_model", "read_card", "model_from_state_dict"} <= set(medic_viz.io.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        medic_viz.io.no_such_name  # noqa: B018
