"""Model folders from elsewhere in the widgets' states: launcher, picker and explorer open an
imported folder (with its dataset and trigger) as easily as a demo model."""

from typing import Any, cast

import numpy as np
import pytest
import torch

from medic_viz.attacks.spec import parse_trigger_spec
from medic_viz.importer import import_model, open_model_folder
from medic_viz.io import save_model
from medic_viz.models.zoo import build_model
from medic_viz.widgets.apps import launcher_app, workbench_app
from medic_viz.widgets.state import ExplorerState, LauncherState, PickerState, WorkbenchState


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two imported folders on a tiny 4-class npz: one with a trigger, one without."""
    root = tmp_path_factory.mktemp("folders")
    rng = np.random.default_rng(0)
    npz = root / "tiny.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), y_train=np.arange(40) % 4,
             x_test=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), y_test=np.arange(20) % 4)
    torch.manual_seed(0)
    ckpt = root / "net.pth"
    torch.save({"state_dict": build_model("small_cnn", 4).state_dict(), "epoch": 9}, ckpt)
    trigger = parse_trigger_spec("patch:pixels=0,0,1;0,1,0;1,0,1,margin=0")
    with_trigger, without = root / "with", root / "without"
    model, card = import_model(ckpt, "small_cnn", 4, dataset=str(npz), attack=trigger.to_config(), target_class=2)
    save_model(model, with_trigger, card)
    model, card = import_model(ckpt, "small_cnn", 4, dataset=str(npz))
    save_model(model, without, card)
    return with_trigger, without, npz


def test_open_model_folder_brings_the_cards_dataset_and_trigger(folders):
    with_trigger, without, npz = folders
    opened = open_model_folder(with_trigger)
    assert opened.splits.train.name == "tiny" and len(opened.splits.test) == 20
    assert opened.trigger.name == "patch" and opened.target == 2
    x = torch.full((1, 3, 32, 32), 0.5)
    assert opened.trigger(x)[0, 0, 29:, 29:].tolist() == [[0, 0, 1], [0, 1, 0], [1, 0, 1]]
    bare = open_model_folder(without)
    assert bare.trigger is None and bare.target is None


def test_open_model_folder_refuses_a_dataset_with_other_classes(folders, tmp_path):
    with_trigger, _, _ = folders
    other = tmp_path / "ten.npz"
    np.savez(other, x_train=np.zeros((10, 32, 32, 3), np.uint8), y_train=np.arange(10),
             x_test=np.zeros((10, 32, 32, 3), np.uint8), y_test=np.arange(10))
    with pytest.raises(ValueError, match="4 classes .* 10 classes"):
        open_model_folder(with_trigger, dataset=other)


def test_launcher_opens_a_folder_with_and_without_a_trigger(folders):
    with_trigger, without, _ = folders
    state = LauncherState.from_folder(with_trigger, epochs=1)
    # cast: the launcher's settings are attributes mypy may not see (issue 29's run settings)
    assert state.trigger.name == "patch" and state.target == 2 and cast(Any, state).epochs == 1
    clean_only = LauncherState.from_folder(without)
    assert clean_only.trigger is None and clean_only.target is None


def test_picker_and_explorer_open_a_folder(folders):
    with_trigger, without, _ = folders
    picker = PickerState.from_folder(with_trigger, stats_images=20, triggers={})
    assert list(picker.triggers) == ["model: patch"] and len(picker.data) == 20
    explorer = ExplorerState.from_folder(with_trigger, index=3, stats_images=20)
    assert explorer.analysis.label == 3 % 4 and len(explorer.layers) > 0
    x = explorer.analysis.image.unsqueeze(0)
    assert torch.equal(explorer.analysis.triggered_image.reshape(x.shape)[0, :, 29:, 29:],
                       torch.tensor([[0.0, 0, 1], [0, 1, 0], [1, 0, 1]]).expand(3, 3, 3))
    with pytest.raises(ValueError, match="records no trigger"):
        ExplorerState.from_folder(without)


def test_workbench_opens_a_folder(folders):
    with_trigger, _, _ = folders
    bench = WorkbenchState.from_folder(with_trigger, stats_images=20, triggers={}, epochs=1)
    assert bench.launcher.trigger.name == "patch" and bench.launcher.target == 2
    assert bench.card.architecture == "small_cnn" and len(bench.splits.test) == 20


def test_workbench_opens_another_folder_with_its_settings_and_refuses_bad_ones(folders, tmp_path):
    with_trigger, without, _ = folders
    bench = WorkbenchState.from_folder(without, stats_images=20, triggers={"blend": parse_trigger_spec("blend")},
                                       epochs=1, tau=3.0, lam=4.0, seed=2, fraction=0.5, device="cpu")
    assert bench.folder == without and bench.launcher.trigger is None
    bench.tau_mode, bench.share, bench.run_layers = "global", 0.05, "conv+bn"  # set after opening: carried too
    other = bench.open_folder(f"  {with_trigger}  ")  # pasted with spaces
    assert other is not bench and other.folder == with_trigger and bench.folder == without
    assert other.launcher.trigger.name == "patch" and other.launcher.target == 2
    launcher: Any = other.launcher
    assert (other.tau, other.lam, launcher.epochs, launcher.fraction) == (3.0, 4.0, 1, 0.5)
    assert other.picker.seed == 2 and other.picker.stats_images == 20
    assert (other.tau_mode, other.share, other.run_layers) == ("global", 0.05, "conv+bn")
    (tmp_path / "empty").mkdir()
    for path, message in (("", "give the path of a model folder"),
                          (tmp_path / "nowhere", "nowhere: not a folder"),
                          (tmp_path / "empty", "empty: no card.json in it")):
        with pytest.raises(ValueError, match=message) as info:
            bench.open_folder(path)
        assert "\n" not in str(info.value)


def test_workbench_view_opens_a_folder_and_shows_a_bad_one_in_one_line(folders, tmp_path):
    pytest.importorskip("ipywidgets")
    pytest.importorskip("anywidget")

    with_trigger, without, _ = folders
    state = WorkbenchState.from_folder(without, stats_images=20, epochs=1, device="cpu", tau=2.0)
    app = workbench_app(state)
    assert app.folder_path.value == str(without) and "from without/" in app.header.value
    app.folder_path.value = str(tmp_path / "nowhere")
    app.open_button.click()
    assert app.state is state and "#c62828" in app.folder_status.value and "not a folder" in app.folder_status.value
    assert "<br" not in app.folder_status.value and "\n" not in app.folder_status.value
    app.folder_path.value = str(with_trigger)
    app.open_button.click()
    new = app.state
    assert new is not state and new.folder == with_trigger and app.folder_status.value == ""
    assert "small_cnn trojaned with patch from with/" in app.header.value and new.tau == 2.0
    assert app.opener in app.children and app.picker_view.state is new.picker
    assert list(app.picker_view.trigger_name.options)[0] == "model: patch"
    app.tau.value = 6.0  # the rebuilt slider drives the new state, and the old one no longer drives the view
    assert new.tau == new.picker.tau == cast(Any, new.launcher).tau == 6.0 and state.tau == 2.0
    state.tau = 9.0
    assert app.tau.value == 6.0
    assert new.listener_errors == new.picker.listener_errors == new.launcher.listener_errors == []


def test_launcher_without_a_trigger_runs_and_says_asr_cannot_be_measured(folders):
    pytest.importorskip("ipywidgets")
    pytest.importorskip("anywidget")

    with_trigger, without, _ = folders
    assert LauncherState.from_folder(with_trigger).asr_note is None
    state = LauncherState.from_folder(without, epochs=1, fraction=1.0, device="cpu", batch_size=16, eval_images=None)
    app = launcher_app(state)
    assert "ASR cannot be measured" in state.asr_note and "ASR cannot be measured" in app.status.value
    run = state.launch()
    state.wait(60)
    app.redraw()
    assert run.status == "done" and run.after.asr is None and 0 <= run.after.clean_acc <= 1
    assert run.after.n_clean == 20 and "ASR cannot be measured" in app.status.value and app.error.value == ""
