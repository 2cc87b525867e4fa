"""Clean subsets drawn from few tracks (issue 27 item 2: a harder clean fit on GTSRB): the track
ids by hand, the subset's counts and tracks, its refusals, and the grid cell that carries it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medic_viz.cli import main
from medic_viz.data.arrays import DatasetSplits, ImageArrays, clean_subset, split_holdout
from medic_viz.data.tracks import frame_tracks
from medic_viz.defenses.finetune import FineTuning
from medic_viz.defenses.medic import Medic
from medic_viz.experiments import read_runs
from medic_viz.experiments.grid import CellSpec, validate_cells
from medic_viz.models import build_model
from medic_viz.pipeline import remove_backdoor

GTSRB_NPZ = Path(__file__).resolve().parents[2] / "shared/data/gtsrb32.npz"


def _tracked(tracks_per_class=(3, 2), frames: int = 4) -> ImageArrays:
    """Classes sorted, each a run of ``frames``-image tracks; an image's pixels say its track."""
    labels: list[int] = []
    track: list[int] = []
    for c, n in enumerate(tracks_per_class):
        labels += [c] * (n * frames)
        track += [len(set(track)) + t for t in range(n) for _ in range(frames)]
    x = torch.tensor(track, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    return ImageArrays(x, torch.tensor(labels), classes=tuple("abcdef"[:len(tracks_per_class)]), name="tracked")


def test_frame_tracks_by_hand():
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2])
    assert frame_tracks(labels, frames=2).tolist() == [0, 0, 1, 1, 2, 3, 3, 4, 5]
    assert frame_tracks(labels, frames=30).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 2]
    assert frame_tracks(torch.tensor([], dtype=torch.int64)).tolist() == []


def test_frame_tracks_refuses_labels_not_sorted_by_class_and_bad_frames():
    with pytest.raises(ValueError, match="not sorted by class: use clean_from='images'"):
        frame_tracks(torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="frames must be a whole number"):
        frame_tracks(torch.tensor([0, 1]), frames=0)


def test_clean_subset_by_tracks_takes_whole_tracks_first_with_the_same_counts():
    """Class a: 3 tracks of 4 frames, class b: 2; half of each class → 6 and 4 images. By tracks:
    one whole track of a plus 2 frames of another (2 tracks), one whole track of b."""
    data = _tracked()
    tracks = frame_tracks(data.labels, frames=4)
    for seed in range(5):
        by_tracks, at_random = clean_subset(data, 0.5, seed, tracks=tracks), clean_subset(data, 0.5, seed)
        for sub in (by_tracks, at_random):
            assert torch.bincount(sub.labels).tolist() == [6, 4]
        seen = by_tracks.images[:, 0, 0, 0]
        a, b = seen[by_tracks.labels == 0], seen[by_tracks.labels == 1]
        counts_a = sorted(torch.bincount(a.long()).tolist(), reverse=True)
        assert counts_a[:2] == [4, 2] and sum(counts_a) == 6 and len(torch.unique(b)) == 1
        again = clean_subset(data, 0.5, seed, tracks=tracks)
        assert torch.equal(again.images, by_tracks.images) and "by tracks" in again.name
    subsets = [clean_subset(data, 0.5, s, tracks=tracks) for s in range(8)]
    firsts = {int(sub.images[sub.labels == 0][0, 0, 0, 0]) for sub in subsets}
    assert len(firsts) > 1  # the seed picks which tracks
    with pytest.raises(ValueError, match="one id per image"):
        clean_subset(data, 0.5, 0, tracks=tracks[:-1])


def test_remove_backdoor_refuses_an_unknown_source_and_unsorted_training_images():
    data = _tracked()
    splits = DatasetSplits(data, data)
    with pytest.raises(ValueError, match="clean_from must be one of images, tracks"):
        remove_backdoor(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2)), splits, FineTuning(epochs=1),
                        clean_from="frames")
    shuffled = data.subset(torch.tensor([1, 0] + list(range(2, len(data)))[::-1]))
    with pytest.raises(ValueError, match="not sorted by class"):
        remove_backdoor(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2)),
                        DatasetSplits(shuffled, data), FineTuning(epochs=1), clean_from="tracks")


def test_cells_keep_their_ids_without_tracks_and_get_new_ones_with_them():
    base = CellSpec(dataset="signs", model="small_cnn", attack="badnet", method="medic", seed=0)
    tracked = CellSpec(dataset="signs", model="small_cnn", attack="badnet", method="medic", seed=0, clean_from="tracks")
    assert "clean_from" not in base.identity() and tracked.identity()["clean_from"] == "tracks"
    assert base.cell_id == "badnet-medic-s0-" + base.cell_id.rsplit("-", 1)[1] and base.cell_id != tracked.cell_id
    with pytest.raises(ValueError, match="clean_from must be one of images, tracks or None"):
        validate_cells([CellSpec(dataset="signs", model="small_cnn", attack="badnet", method="medic", seed=0,
                                 clean_from="frames")])


@pytest.mark.skipif(not GTSRB_NPZ.is_file(), reason=f"real GTSRB arrays not found at {GTSRB_NPZ}")
def test_gtsrb_training_set_is_in_thirty_frame_tracks():
    """The layout frame_tracks assumes, checked on the real file: 1,307 tracks (class 33 has one of
    29 frames), and consecutive frames of a track far closer than images across a boundary."""
    with np.load(GTSRB_NPZ) as z:
        labels, x = torch.from_numpy(z["y_train"].astype(np.int64)), z["x_train"]
    tracks = frame_tracks(labels)
    assert int(tracks.max()) + 1 == 1307
    sizes = torch.bincount(tracks)
    assert sorted(set(sizes.tolist())) == [29, 30]
    step = np.abs(x[1:].astype(np.int16) - x[:-1]).mean(axis=(1, 2, 3))
    boundary = (tracks[1:] != tracks[:-1]).numpy()
    assert step[~boundary].mean() < 20 < 50 < step[boundary].mean()


def test_cli_compare_draws_the_clean_subset_from_tracks(tmp_path):
    """Four classes sorted by label: the grid's rows say where the clean subset came from (the
    same 40 images' count, another cell). On data not sorted by class the cell fails with the
    one-line reason and the fix."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tracked.npz"
    np.savez(path, x_train=rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8), y_train=np.repeat(np.arange(4), 40),
             x_test=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), y_test=np.arange(48) % 4)
    args = ["compare", "--dataset", str(path), "--attacks", "badnet", "--methods", "finetune", "--seeds", "1",
            "--epochs", "1", "--attack-epochs", "1", "--fraction", "0.25", "--device", "cpu"]
    assert main(args + ["--clean-from", "tracks", "--out", str(tmp_path / "t")]) == 0
    (row,) = read_runs(tmp_path / "t" / "runs.jsonl")
    assert row["clean_from"] == "tracks" and row["n_clean_subset"] == 40
    assert main(args + ["--out", str(tmp_path / "i")]) == 0
    (plain,) = read_runs(tmp_path / "i" / "runs.jsonl")
    assert plain["clean_from"] == "images" and plain["cell_id"] != row["cell_id"]
    unsorted = tmp_path / "unsorted.npz"
    np.savez(unsorted, x_train=rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8), y_train=np.arange(160) % 4,
             x_test=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), y_test=np.arange(48) % 4)
    bad = [a if a != str(path) else str(unsorted) for a in args]
    assert main(bad + ["--clean-from", "tracks", "--out", str(tmp_path / "u")]) != 0
    (error,) = [json.loads(line) for line in (tmp_path / "u" / "errors.jsonl").read_text().splitlines()]
    assert "not sorted by class: use clean_from='images'" in error["error"]


def test_a_clean_subset_by_tracks_keeps_its_tracks_as_groups_and_subsets_keep_them():
    data = _tracked()
    tracks = frame_tracks(data.labels, frames=4)
    sub = clean_subset(data, 0.5, 0, tracks=tracks)
    assert sub.groups is not None and torch.equal(sub.groups, sub.images[:, 0, 0, 0].long())  # pixel = track
    part = sub.subset([2, 0])
    assert part.groups is not None and part.groups.tolist() == [int(sub.groups[2]), int(sub.groups[0])]
    assert clean_subset(data, 0.5, 0).groups is None
    with pytest.raises(ValueError, match="20 images but 19 group ids"):
        ImageArrays(data.images, data.labels, classes=data.classes, name="x", groups=torch.zeros(19))


def test_split_holdout_with_groups_holds_out_whole_groups_never_a_class_s_last_by_hand():
    """Class a: tracks 0, 1, 2 (4 frames each); class b: tracks 3, 4; class c: one track (5).
    A 25 % hold-out: a needs 3 images → one whole track (4); b needs 2 → one track (4); c's only
    track stays to fit. No track is on both sides; the split is the same for the same seed."""
    data = _tracked((3, 2, 1))
    data.groups = frame_tracks(data.labels, frames=4)
    for seed in range(6):
        fit, hold = split_holdout(data, 0.25, seed)
        assert fit.groups is not None and hold.groups is not None
        assert set(fit.groups.tolist()).isdisjoint(hold.groups.tolist())
        assert torch.bincount(hold.labels, minlength=3).tolist() == [4, 4, 0]
        assert len(set(hold.groups.tolist())) == 2 and 5 in fit.groups.tolist()
        again = split_holdout(data, 0.25, seed)[1]
        assert torch.equal(again.groups, hold.groups)  # type: ignore[arg-type]
    held_a = {int(split_holdout(data, 0.25, s)[1].groups[0]) for s in range(12)}
    assert len(held_a) > 1  # the seed picks which track
    plain = ImageArrays(data.images, data.labels, classes=data.classes, name="plain")  # no groups: images
    assert torch.bincount(split_holdout(plain, 0.25, 0)[1].labels, minlength=3).tolist() == [3, 2, 1]
    one_each = ImageArrays(data.images[:8], torch.tensor([0] * 4 + [1] * 4), classes=("a", "b"), name="one",
                           groups=torch.tensor([0] * 4 + [1] * 4))
    with pytest.raises(ValueError, match="every class is one group: give groups=None"):
        split_holdout(one_each, 0.25, 0)


def test_a_medic_run_on_a_tracked_clean_set_holds_out_whole_tracks_and_says_so():
    data = _tracked((3, 2), frames=4)
    data.groups = frame_tracks(data.labels, frames=4)
    torch.manual_seed(0)
    teacher = build_model("small_cnn", 2).eval()
    result = Medic(epochs=1, batch_size=4, device="cpu", progress=False, holdout_fraction=0.25).run(teacher, data)
    record = result.config["holdout"]
    assert record["whole_groups"] is True and (record["images"], record["trained_on"]) == (8, 12)
