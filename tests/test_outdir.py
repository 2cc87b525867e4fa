"""--out folders: refused before any work when unusable, published whole or not at all, and a
run stopped by SIGTERM keeps its model in a folder marked STOPPED (issue 13, classes 2 and 3)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import medic_viz.cli as cli
from medic_viz.cli import main
from medic_viz.data import load_dataset
from medic_viz.data.arrays import DatasetSplits
from medic_viz.data.npz import save_npz
from medic_viz.io import MODEL_FILENAME, load_model, save_model
from medic_viz.outdir import STOPPED_MARKER, OutputFolder, OutputFolderError, check_output_folder, replace_file
from medic_viz.pretrained import demo_model_dir, load_demo_model

REPO = Path(__file__).resolve().parents[1]


# -- the helper itself ---------------------------------------------------------------------------


def test_refusals(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "full")
    teacher = tmp_path / "chain" / "model"
    teacher.mkdir(parents=True)
    cases: list[tuple[Path, dict[str, Any], str]] = [
        (tmp_path / "full", {}, "already holds files .1 entry: notes.txt.*--overwrite"),
        (tmp_path / "file", {}, "exists and is not a folder"),
        (tmp_path / "link", {"overwrite": True}, "symbolic link"),
        (teacher, {"overwrite": True, "inputs": [teacher]}, "is the input"),
        (tmp_path / "chain", {"overwrite": True, "inputs": [teacher]}, "contains the input"),
    ]
    for target, kwargs, message in cases:
        with pytest.raises(OutputFolderError, match=message):
            check_output_folder(target, **kwargs)
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    check_output_folder(tmp_path / "new")  # absent: fine
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty")  # empty: fine
    with pytest.raises(OutputFolderError, match="lies inside the input"):  # results mixed into what is read
        check_output_folder(teacher / "repaired", inputs=[teacher])


def test_unwritable_parent_is_found_before_any_work(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        parent = tmp_path / "a-file"
        parent.write_text("x")  # root can write anywhere; a file as parent fails for everyone
    else:
        parent = tmp_path / "locked"
        parent.mkdir(mode=0o500)
    with pytest.raises(OutputFolderError, match="cannot create a folder in"):
        OutputFolder(parent / "out").open()


def test_publish_is_whole_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with OutputFolder(target) as out:
        (out.path / "result.json").write_text("{}")
        assert not target.exists() and out.path.parent == tmp_path and out.path.name.startswith(".out.partial-")
    assert not target.exists() and list(tmp_path.iterdir()) == []  # not published: temp folder gone

    with OutputFolder(target) as out:
        (out.path / "result.json").write_text("1")
        assert out.publish() == target
    assert (target / "result.json").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_stopped_run_never_replaces_a_result(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "result.json").write_text("complete")
    (tmp_path / "out.stopped").mkdir()  # an earlier stopped run (even empty) is never overwritten either
    before = _tree(tmp_path)
    places = []
    for n in range(2):
        with OutputFolder(target, overwrite=True) as out:
            (out.path / "result.json").write_text(f"stopped {n}")
            places.append(out.publish(stopped=True, note="stopped"))
    assert places == [tmp_path / "out.stopped-2", tmp_path / "out.stopped-3"]
    assert {k: v for k, v in _tree(tmp_path).items() if not k.startswith("out.stopped-")} == before
    for n, place in enumerate(places):
        assert (place / "result.json").read_text() == f"stopped {n}" and (place / STOPPED_MARKER).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    with OutputFolder(empty, overwrite=True) as out:  # nothing to keep: the stopped run goes to the target
        assert out.publish(stopped=True) == empty and (empty / STOPPED_MARKER).is_file()
    with OutputFolder(target, overwrite=True) as out:  # a complete run replaces the result
        (out.path / "result.json").write_text("new")
        assert out.publish() == target and (target / "result.json").read_text() == "new"


def test_overwrite_replaces_the_folder_and_never_follows_its_links(tmp_path: Path) -> None:
    # A result.json that is a link to a file elsewhere: the old `--out` wrote through it.
    outside = tmp_path / "precious.txt"
    outside.write_text("do not touch")
    target = tmp_path / "out"
    target.mkdir()
    (target / "result.json").symlink_to(outside)
    (target / "stale.html").write_text("old")
    with pytest.raises(OutputFolderError, match="already holds files"):
        OutputFolder(target)
    with OutputFolder(target, overwrite=True) as out:
        (out.path / "result.json").write_text("new")
        out.publish()  # complete: replaces (a stopped run would go beside, see below)
    assert outside.read_text() == "do not touch"
    assert not (target / "result.json").is_symlink() and (target / "result.json").read_text() == "new"
    assert not (target / "stale.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "precious.txt"]


# -- the CLI refuses before training ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240/60 synthetic-sign images (12 classes, 32 px) as npz: what the demo teacher takes."""
    signs = load_dataset("signs", n_train=240, n_test=60)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    save_npz(DatasetSplits(signs.train, signs.test), path)
    return path


@pytest.fixture()
def teacher(tmp_path: Path) -> Path:
    folder = tmp_path / "chain" / "model"
    shutil.copytree(demo_model_dir("badnet"), folder)
    return folder


def _tree(root: Path) -> dict[str, bytes | str]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else "dir/link")
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(
    ("out", "extra", "message"),
    [
        ("chain/model", [], "is the input"),             # the old code replaced the teacher it read
        ("chain", [], "contains the input"),
        ("full", [], "already holds files"),             # the old code wrote into it
        ("full/notes.txt", [], "exists and is not a folder"),  # found after the run, with a traceback
        ("link", [], "symbolic link"),                   # the old code wrote through it
    ],
)
def test_defend_refuses_its_out_before_training(tmp_path, teacher, tiny_npz, capsys, out, extra, message) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "full")
    before = _tree(tmp_path)
    start = time.perf_counter()
    rc = main(["defend", "--teacher", str(teacher), "--dataset", str(tiny_npz), "--out", str(tmp_path / out),
               "--epochs", "1", "--device", "cpu", "--no-progress", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert time.perf_counter() - start < 10, "refused only after work was done"
    assert _tree(tmp_path) == before


def test_attack_refuses_an_existing_model_folder(tmp_path, teacher, capsys) -> None:
    before = _tree(tmp_path)
    rc = main(["attack", "--out", str(teacher), "--epochs", "1", "--device", "cpu"])
    assert rc == 2 and "already holds files" in capsys.readouterr().err
    assert _tree(tmp_path) == before


# -- interruptions (subprocesses signalled at the moment they write or train) --------------------


def _run_until(args: list[str], pause: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "MEDIC_VIZ_TEST_PAUSE": pause, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "medic_viz.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    point = pause.split(":")[0]
    deadline = time.monotonic() + 120
    assert proc.stderr is not None
    for line in proc.stderr:  # wait for the process to reach the pause point
        if f"test pause at {point}" in line:
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"never reached the pause point {point}: {proc.communicate()}")


def test_sigterm_while_writing_leaves_no_mixed_folder(tmp_path, teacher, tiny_npz) -> None:
    # An earlier complete run in --out; a new run with --overwrite is killed after writing its
    # result.json and before report.html and model/: the old code left one run's result.json
    # beside another's report. Now the earlier folder stays exactly as it was.
    out = tmp_path / "out"
    out.mkdir()
    for name, text in {"result.json": '{"run": "earlier"}', "report.html": "earlier"}.items():
        (out / name).write_text(text)
    before = _tree(tmp_path)
    proc = _run_until(["defend", "--teacher", str(teacher), "--dataset", str(tiny_npz), "--out", str(out),
                       "--overwrite", "--epochs", "1", "--device", "cpu", "--no-progress"], "write:60", tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "interrupted (SIGTERM)" in err and "Traceback" not in err
    assert _tree(tmp_path) == before, "the interrupted run changed --out or left its temporary folder"


@pytest.mark.slow
def test_sigterm_during_training_keeps_the_model_marked_stopped(tmp_path, teacher, tiny_npz) -> None:
    out = tmp_path / "out"
    proc = _run_until(["defend", "--teacher", str(teacher), "--dataset", str(tiny_npz), "--out", str(out),
                       "--epochs", "40", "--device", "cpu", "--no-progress"], "train:1", tmp_path)
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "stopped after 1 of 40 epochs" in stdout
    assert sorted(p.name for p in out.iterdir()) == [STOPPED_MARKER, "model", "report.html", "result.json"]
    result = json.loads((out / "result.json").read_text())
    assert result["stopped"] is True
    assert len([e for e in result["history"] if e["kind"] == "epoch"]) == 1

    model, _ = load_model(out / "model")  # a whole, loadable model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain", "out"]
    assert np.isfinite(result["after"]["clean_acc"])


@pytest.mark.slow
def test_sigterm_during_an_overwrite_keeps_the_complete_result(tmp_path, teacher, tiny_npz) -> None:
    # SIGTERM while an --overwrite rerun trains: the old code replaced the complete result by a
    # 1-epoch model marked STOPPED. Now the result stays; the stopped run is published beside it.
    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    for name, text in {"result.json": '{"run": "complete"}', "report.html": "complete",
                       "model/card.json": "{}"}.items():
        (out / name).write_text(text)
    before = _tree(out)
    proc = _run_until(["defend", "--teacher", str(teacher), "--dataset", str(tiny_npz), "--out", str(out),
                       "--overwrite", "--epochs", "40", "--device", "cpu", "--no-progress"], "train:1", tmp_path)
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert _tree(out) == before, "the stopped rerun replaced the complete result"
    beside = tmp_path / "out.stopped"
    assert sorted(p.name for p in beside.iterdir()) == [STOPPED_MARKER, "model", "report.html", "result.json"]
    assert json.loads((beside / "result.json").read_text())["stopped"] is True
    assert str(beside) in stdout and f"{out} still holds the complete result" in stdout, stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain", "out", "out.stopped"]


def test_demo_replaces_only_a_previous_demo_result_in_its_default_folder(tmp_path, monkeypatch, capsys) -> None:
    def fake_run(teacher, card, splits, args, signals, out, settings, **options):
        (out.path / "result.json").write_text("new")
        out.publish()
        return 0

    monkeypatch.setattr(cli, "_run_removal", fake_run)
    monkeypatch.setattr(cli, "DEMO_OUT", str(tmp_path / "runs" / "demo"))
    demo = tmp_path / "runs" / "demo"
    demo.mkdir(parents=True)
    (demo / "result.json").write_text("old")
    (demo / "model").mkdir()
    assert cli.main(["demo", "--device", "cpu"]) == 0
    assert sorted(p.name for p in demo.iterdir()) == ["result.json"] and (demo / "result.json").read_text() == "new"
    (demo / "thesis.tex").write_text("mine")  # not a demo result: refused
    assert cli.main(["demo", "--device", "cpu"]) == 2
    assert "already holds files" in capsys.readouterr().err and (demo / "thesis.tex").read_text() == "mine"


def test_replace_file_never_writes_through_a_link_and_is_whole_or_absent(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    target = tmp_path / "out" / "result.json"
    target.parent.mkdir()
    target.symlink_to(outside)
    replace_file(target, lambda tmp: tmp.write_text("new"))
    assert outside.read_text() == "keep" and not target.is_symlink() and target.read_text() == "new"
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # the usual mode, not mkstemp's

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_file(target, broken)
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_save_model_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    model, card = load_demo_model("badnet")
    outside = tmp_path / "victim.pth"
    outside.write_text("import os  # a .pth file Python runs at start-up")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / MODEL_FILENAME).symlink_to(outside)
    # the old writer's temporary names were predictable (".card.json.tmp-<pid>"): a link planted
    # there made it write the card through the link
    for name in (MODEL_FILENAME, "card.json"):
        (folder / f".{name}.tmp-{os.getpid()}").symlink_to(outside)
    save_model(model, folder, card)
    assert outside.read_text().startswith("import os")
    assert not (folder / MODEL_FILENAME).is_symlink() and not (folder / "card.json").is_symlink()
    load_model(folder)
