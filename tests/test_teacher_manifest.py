"""The teacher cache's manifest (medic_viz.experiments.teacher_manifest): what it records, how a
model stands against it, and that the committed GTSRB teachers are the recorded ones."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import multiprocessing as mp
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from medic_viz.cards import ModelCard
from medic_viz.data_identity import file_sha256
from medic_viz.experiments import teacher_manifest as tm
from medic_viz.experiments.teachers import TeacherCache, TeacherRecipe
from medic_viz.models.zoo import build_model

ROOT = Path(__file__).resolve().parents[1]
GTSRB_TEACHERS = ROOT / "benchmarks" / "results" / "gtsrb_teachers"


def _recipe(data: Path, seed: int = 0) -> TeacherRecipe:
    return TeacherRecipe(dataset=str(data), architecture="small_cnn", epochs=2, seed=seed, attack="badnet",
                         options={"size": 3}, rate=0.1, target=1)


def measured_trainer(recipe, splits, *, surrogate=None, device="cpu", progress=False, checkpoint=None):
    """Training that reports clean accuracy 0.9 and ASR 0.75 in the card."""
    card = ModelCard(architecture="small_cnn", num_classes=3, input_size=32, in_channels=3, arch_kwargs={},
                     classes=["a", "b", "c"], normalize=None, dataset=Path(recipe.dataset).name,
                     attack={"name": recipe.attack}, target_class=recipe.target, poison_rate=recipe.rate,
                     metrics={"clean_acc": 0.9, "asr": 0.75}, history=[], notes="", role="evaluation")
    return build_model("small_cnn", 3, in_channels=3, input_size=32), card


@pytest.fixture
def cache(tmp_path: Path) -> tuple[TeacherCache, Path]:
    data = tmp_path / "data.npz"
    data.write_bytes(b"version 1")
    return TeacherCache(tmp_path / "teachers", trainer=measured_trainer), data


def test_a_stored_teacher_is_recorded_with_its_weights_digest_and_numbers(cache) -> None:
    teachers, data = cache
    recipe = _recipe(data)
    folder = teachers.train(recipe, splits=object(), log=None)
    entry = tm.read_manifest(teachers.root)[folder.name]
    assert entry == {
        "key_digest": recipe.digest(),
        "weights_sha256": file_sha256(folder / "model.safetensors"),
        "weights_bytes": (folder / "model.safetensors").stat().st_size,
        "architecture": "small_cnn",
        "role": "evaluation",
        "clean_acc": 0.9,
        "asr": 0.75,
    }
    assert [s.status for s in tm.check_manifest(teachers.root)] == ["same"]
    assert not [p for p in teachers.root.iterdir() if p.name.startswith(".")], "no temporary manifest left"


def test_changed_missing_and_unrecorded_teachers_are_told_apart(cache) -> None:
    teachers, data = cache
    first = teachers.train(_recipe(data, seed=0), splits=object(), log=None)
    second = teachers.train(_recipe(data, seed=1), splits=object(), log=None)
    third = teachers.train(_recipe(data, seed=2), splits=object(), log=None)
    weights = first / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1  # one bit of the last weight
    weights.write_bytes(bytes(raw))
    for path in second.iterdir():
        path.unlink()
    second.rmdir()
    manifest = tm.read_manifest(teachers.root)
    del manifest[third.name]
    (teachers.root / tm.MANIFEST_FILE).write_text(json.dumps(manifest))
    statuses = {s.name: s for s in tm.check_manifest(teachers.root)}
    assert {n: s.status for n, s in statuses.items()} == {
        first.name: "differs", second.name: "missing", third.name: "unrecorded"}
    assert "other weights" in statuses[first.name].detail and "clean 90.00 %" in statuses[first.name].detail
    tm.record_models(teachers.root)  # the changed one and the new one recorded; the missing one kept
    after = {s.name: s.status for s in tm.check_manifest(teachers.root)}
    assert after == {first.name: "same", second.name: "missing", third.name: "same"}


def test_another_recipe_under_a_recorded_name_differs(cache) -> None:
    teachers, data = cache
    folder = teachers.train(_recipe(data), splits=object(), log=None)
    key = json.loads((folder / tm.KEY_FILE).read_text())
    key["rate"] = 0.2
    (folder / tm.KEY_FILE).write_text(json.dumps(key))
    (status,) = tm.check_manifest(teachers.root)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert status.status == "differs" and digest in status.detail


def test_a_broken_or_oversized_manifest_is_refused_in_one_line(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / tm.MANIFEST_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match="maps folder names to entries") as info:
        tm.read_manifest(tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / tm.MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a readable teacher manifest"):
        tm.read_manifest(tmp_path)
    monkeypatch.setattr(tm, "MAX_MANIFEST_BYTES", 4)
    (tmp_path / tm.MANIFEST_FILE).write_text("{}   ")
    with pytest.raises(ValueError, match="more than the 4 allowed"):
        tm.read_manifest(tmp_path)
    assert tm.read_manifest(tmp_path / "nowhere") == {}


def test_a_folder_without_weights_is_not_recorded(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "card.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="only a whole model folder"):
        tm.folder_entry(tmp_path / "half")
    assert tm.record_models(tmp_path) == {} and tm.check_manifest(tmp_path) == []


def test_the_committed_gtsrb_teachers_are_the_recorded_ones() -> None:
    """Every teacher folder in the repository is in the manifest with these very weights; a
    recorded one may be absent only when its weights are not committed (git-ignored)."""
    statuses = tm.check_manifest(GTSRB_TEACHERS)
    assert statuses, "the committed cache has a manifest"
    wrong = [(s.name, s.status, s.detail) for s in statuses if s.status in ("differs", "unrecorded")]
    assert not wrong
    patterns = [line.strip().lstrip("/") for line in (ROOT / ".gitignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for s in statuses:
        if s.status == "missing":
            folder = f"{GTSRB_TEACHERS.relative_to(ROOT).as_posix()}/{s.name}/"
            assert any(fnmatch.fnmatch(folder, p) for p in patterns), f"{s.name} is recorded but neither present nor git-ignored"




def _record_each(root: Path, folders: list[Path], start: float) -> None:
    time.sleep(max(0.0, start - time.time()))
    for folder in folders:
        tm.record_model(root, folder)


def test_teachers_recorded_by_several_processes_at_once_are_all_kept(cache) -> None:
    """Processes that store teachers at once (the GPU script trains three in parallel) each add
    their entries: the read-modify-write is under a lock (without it, entries are lost here)."""

    teachers, data = cache
    first = teachers.train(_recipe(data), splits=object(), log=None)
    folders = [first] + [Path(shutil.copytree(first, teachers.root / f"copy_{i:02d}")) for i in range(39)]
    (teachers.root / tm.MANIFEST_FILE).unlink()
    start = time.time() + 0.5
    procs = [mp.get_context("fork").Process(target=_record_each, args=(teachers.root, folders[i::4], start))
             for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    assert sorted(tm.read_manifest(teachers.root)) == sorted(f.name for f in folders)


def test_a_manifest_from_elsewhere_is_merged_unless_it_contradicts_this_one(cache, tmp_path: Path) -> None:
    teachers, data = cache
    folder = teachers.train(_recipe(data), splits=object(), log=None)
    mine = tm.read_manifest(teachers.root)[folder.name]
    other = tmp_path / "gpu.json"
    gpu_entry = {**mine, "architecture": "vgg11_bn", "weights_sha256": "ab" * 32}
    other.write_text(json.dumps({folder.name: mine, "badnet_vgg11_bn_e30_s1": gpu_entry}))
    assert tm.merge_manifest(teachers.root, other) == ["badnet_vgg11_bn_e30_s1"]
    assert tm.read_manifest(teachers.root)["badnet_vgg11_bn_e30_s1"] == gpu_entry
    assert {s.name: s.status for s in tm.check_manifest(teachers.root)} == {
        folder.name: "same", "badnet_vgg11_bn_e30_s1": "missing"}
    other.write_text(json.dumps({folder.name: {**mine, "weights_sha256": "cd" * 32}, "new_one": gpu_entry}))
    before = (teachers.root / tm.MANIFEST_FILE).read_text()
    with pytest.raises(ValueError, match=f"{folder.name} recorded here with other weights or recipe; nothing merged"):
        tm.merge_manifest(teachers.root, other)
    assert (teachers.root / tm.MANIFEST_FILE).read_text() == before
    with pytest.raises(FileNotFoundError, match="no such manifest file"):
        tm.merge_manifest(teachers.root, tmp_path / "absent.json")


def test_no_grid_commits_its_teacher_copies() -> None:
    """A protocol grid copies its teachers into ``<grid>/teachers/`` (re-measured on resume): never
    committed (``plain_matched``'s were, until its .gitignore line)."""
    done = subprocess.run(["git", "ls-files", "benchmarks/results"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    copies = sorted({"/".join(p.split("/")[:4]) for p in done.stdout.splitlines()
                     if len(p.split("/")) > 4 and p.split("/")[3] == "teachers"})
    assert not copies, f"teacher copies committed: {copies}"
