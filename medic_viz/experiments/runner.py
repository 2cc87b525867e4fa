"""The resumable grid runner: teachers first, then the cells, on any executor; every finished
cell appended to ``DIR/runs.jsonl`` as it completes.

Each cell is a pure function of its :class:`~medic_viz.experiments.grid.CellSpec` and of its
trojaned *teacher* (trained once per attack, seed and architecture, cached under
``DIR/teachers/``; ``teacher.json`` is written last, so its presence means the teacher is
complete). Rows are keyed by :attr:`CellSpec.cell_id`, so running the same grid again skips
finished cells (resume after an interruption; a last line cut short by an interruption is
ignored, and the next record starts on a line of its own); failed cells go to
``DIR/errors.jsonl`` and are retried next time. ``DIR/grid.json`` lists every cell launched
into the folder, over all launches (:func:`merged_grid`).

On the local executor a cell of a resumable method (MEDIC) saves its run after every epoch under
``DIR/.training/<cell id>.pt`` (:mod:`medic_viz.train_checkpoint`): a cell cut short goes on
from its last whole epoch, and the file is removed once its row is in ``runs.jsonl``.

Before any teacher is trained, the whole grid is checked (:func:`check_grid`): every cell's
settings, the device, and — for the local executor — the data (target classes, non-empty
splits, attacks that need particular classes), so a bad grid fails in seconds, not after
hours of training.

No figures here: the reports are written by the function passed as ``report``
(:mod:`medic_viz.experiments.report`, a view).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, cast

import torch

from medic_viz.attacks.registry import attack_spec, build_attack, check_rate
from medic_viz.cards import ModelCard
from medic_viz.defenses.registry import defense_class
from medic_viz.device import resolve_device
from medic_viz.experiments.cells import cell_splits, run_cell, teacher_model, train_teacher
from medic_viz.experiments.executors import EXECUTORS, Executor, Task, import_ray
from medic_viz.experiments.folders import check_teacher_folder, file_sha256
from medic_viz.experiments.grid import CellSpec, validate_cells
from medic_viz.importer import load_model_folder
from medic_viz.io import save_model
from medic_viz.outdir import replace_file
from medic_viz.train_checkpoint import TRAINING_DIR

__all__ = ["GridResult", "Reporter", "read_runs", "run_grid", "check_grid", "merged_grid"]

#: Writes the reports of finished rows into a folder; returns ``{name: path}``.
Reporter = Callable[[Sequence[Mapping[str, Any]], Path], dict[str, Path]]


@dataclass
class GridResult:
    """What a grid run produced: the rows of its finished cells, failures, and file paths."""

    rows: list[dict]
    errors: dict[str, str]
    computed: int
    skipped: int
    paths: dict[str, Path]

    @property
    def ok(self) -> bool:
        return not self.errors


def read_runs(path: str | Path) -> list[dict]:
    """The rows of a ``runs.jsonl`` (a last line cut short by an interruption is ignored)."""
    rows: list[dict] = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "cell_id" in row:
            rows.append(row)
    return rows


def _append_jsonl(path: Path, row: Mapping[str, Any]) -> None:
    """Append one JSON line. If the file's last line was cut short (a run killed while
    writing), the record starts on a new line instead of being glued onto the torn one."""
    text = json.dumps(row, default=str) + "\n"
    with open(path, "ab") as f:
        if f.tell() > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    text = "\n" + text
        f.write(text.encode())
        f.flush()
        os.fsync(f.fileno())


def _write_atomic(path: Path, text: str) -> None:
    replace_file(path, lambda tmp: tmp.write_text(text))


GRID_FILE_LIMIT = 64 * 2**20
"""Bytes of an earlier ``grid.json`` read back to merge with a new launch (larger: replaced)."""


def merged_grid(path: Path, cells: Sequence[CellSpec]) -> list[dict]:
    """Every cell launched into a grid folder, for its ``grid.json``: the earlier file's cells in
    their order (one of this launch's cells with the same id takes its place), then this launch's
    other cells. A grid run in parts (``--seeds 0``, then ``--seeds 1``) is thus described whole,
    like its ``runs.jsonl``. An earlier file that is missing, too large or not a list is ignored;
    an entry this version cannot read as a cell is kept as it was."""
    new = {c.cell_id: c.to_dict() for c in cells}
    earlier: Any = []
    try:
        if path.is_file() and path.stat().st_size <= GRID_FILE_LIMIT:
            earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        earlier = []
    merged: list[dict] = []
    seen: set[str] = set()
    for entry in earlier if isinstance(earlier, list) else []:
        if not isinstance(entry, dict):
            continue
        try:
            cid = CellSpec.from_dict(entry).cell_id
        except (TypeError, ValueError):
            merged.append(entry)
            continue
        if cid not in seen:
            seen.add(cid)
            merged.append(new.get(cid, entry))
    merged += [d for cid, d in new.items() if cid not in seen]
    return merged


def check_grid(cells: Sequence[CellSpec], *, executor: str = "local") -> None:
    """Refuse a grid before anything is trained: every cell's settings
    (:func:`~medic_viz.experiments.grid.validate_cells`); with the local executor also each
    cell's device and data: the dataset loads, neither split is empty, the target is one of
    its classes, a clean-label attack has target-class images to poison, and each attack can
    be built for the data (e.g. a composite attack's classes) at its poison rate; a teacher folder's model loads
    and fits the data (:func:`~medic_viz.experiments.folders.check_teacher_folder`; with any
    executor, since a folder is read here anyway). Raises ValueError; a teacher folder's error
    names the folder."""
    validate_cells(cells)
    local = executor == "local"  # else the devices and the data are the cluster workers', a folder's aside
    if local:
        for device in sorted({c.device for c in cells}):
            resolve_device(device)
    checked: set[str] = set()
    for cell in cells:
        if not local and cell.teacher_dir is None:
            continue
        key = json.dumps([cell.dataset, cell.max_train, cell.max_test, cell.data_root, cell.attack,
                          cell.attack_options, cell.target, cell.teacher_dir], sort_keys=True, default=str)
        if key in checked:
            continue
        checked.add(key)
        where = f"grid cell {cell.attack} × {cell.method} seed {cell.seed}"
        try:
            splits = cell_splits(cell.dataset, cell.max_train, cell.max_test, cell.data_root, cell.test_part)
        except (ValueError, TypeError, OSError) as exc:
            if cell.teacher_dir is None:
                raise
            raise ValueError(f"--teacher {cell.teacher_dir}: its dataset {cell.dataset} cannot be read "
                             f"({' '.join(str(exc).split())}); give --dataset PATH to the data it was made on") from None
        if cell.teacher_dir is not None:
            where = f"--teacher {cell.teacher_dir}"
        for part in (splits.train, splits.test):
            if len(part) == 0:
                raise ValueError(f"{where}: {part.name} is empty (max_train/max_test or the data)")
        if cell.teacher_dir is not None:
            check_teacher_folder(cell, splits)
            continue
        target = cast(int, cell.target)  # a whole number: validate_cells checked it
        if not target < splits.num_classes:
            raise ValueError(f"{where}: target {cell.target} is not a class of {cell.dataset} "
                             f"(classes 0..{splits.num_classes - 1})")
        spec = attack_spec(cell.attack)
        if spec.clean_label and not bool((splits.train.labels == target).any()):
            raise ValueError(f"{where}: the training data has no image of class {cell.target}, so the clean-label "
                             f"attack {cell.attack} cannot poison it")
        params = {k: v for k, v in cell.attack_options.items() if k not in spec.train_options}
        try:
            attack = build_attack(cell.attack, splits.train, cell.target, **params)
            rate = spec.default_rate(splits.train, target) if cell.rate is None else float(cell.rate)
            check_rate(spec, splits.train, target, rate, getattr(attack, "clean_label", None))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None


def _save_teacher(directory: Path, payload: Mapping[str, Any], key: Mapping[str, Any]) -> None:
    model = teacher_model(payload)
    save_model(model, directory, ModelCard.from_dict(payload["card"]))
    meta = {k: payload[k] for k in ("metrics", "attack_config", "target", "rate", "seconds")}
    meta["key"] = dict(key)
    meta["torch"] = torch.__version__
    # written last, whole: its presence means the teacher is complete
    _write_atomic(directory / "teacher.json", json.dumps(meta, indent=2, default=str))


def _earlier_forms(cells: Sequence[CellSpec], paths: set[str]) -> dict[str, list[CellSpec]]:
    """Per cell id, the cell as stored now (first) and as earlier grids may have stored it: keyed
    by its dataset's path string (:meth:`CellSpec.legacy`), also under each of ``paths`` (the paths
    finished rows named the data by) that is a file with the same digest — the same data named
    another way, e.g. an absolute path where this grid has a relative one."""
    same: dict[str, str | None] = {}

    def digest(path: str) -> str | None:
        if path not in same:
            same[path] = file_sha256(path) if Path(path).is_file() else None
        return same[path]

    forms: dict[str, list[CellSpec]] = {}
    for c in cells:
        found = [c]
        if c.dataset_sha256 is not None:
            found.append(c.legacy())
            found += [replace(c, dataset=p, dataset_sha256=None) for p in sorted(paths)
                      if p != c.dataset and digest(p) == c.dataset_sha256]
        forms[c.cell_id] = found
    return forms


def _load_teacher(directory: Path, trust_arch_code: str | None = None) -> dict:
    model, card = load_model_folder(directory, trust_arch_code=trust_arch_code)
    meta = json.loads((directory / "teacher.json").read_text())
    return {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "card": card.to_dict(),
        "metrics": meta["metrics"],
        "attack_config": meta["attack_config"],
        "target": meta["target"],
        "rate": meta.get("rate"),
        "trust_arch_code": trust_arch_code,
    }


def run_grid(
    cells: Sequence[CellSpec],
    out_dir: str | Path,
    *,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    log: Callable[[str], None] | None = print,
    report: Reporter | None = None,
) -> GridResult:
    """Run every cell not already in ``out_dir/runs.jsonl``: teachers first (once per attack,
    seed and architecture; reused from ``out_dir/teachers/``), then the defences. Failed cells
    are listed in the result and in ``errors.jsonl``; they do not stop the others.

    ``report(rows, out_dir)``, when given and some cells are finished, writes the reports
    and returns their paths (:func:`medic_viz.experiments.run_grid` passes
    :func:`medic_viz.experiments.report.write_reports`: CSV, table and figure)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
    if executor == "ray":
        import_ray()
    check_grid(cells, executor=executor)  # the whole grid, before anything is trained
    say = log or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    teachers_dir = out / "teachers"
    teachers_dir.mkdir(exist_ok=True)
    runs_path = out / "runs.jsonl"
    errors_path = out / "errors.jsonl"
    _write_atomic(out / "grid.json", json.dumps(merged_grid(out / "grid.json", cells), indent=1, default=str))

    earlier_rows = read_runs(runs_path)
    done = {r["cell_id"] for r in earlier_rows}
    forms = _earlier_forms(cells, {str(r["dataset"]) for r in earlier_rows if r.get("dataset")})
    todo = [c for c in cells if not any(f.cell_id in done for f in forms[c.cell_id])]
    skipped = len(cells) - len(todo)
    if skipped:
        say(f"resume: {skipped} of {len(cells)} cells already in {runs_path}")
    errors: dict[str, str] = {}
    gpu = any(c.device != "cpu" for c in cells)

    # phase 1: teachers
    def teacher_folder(c: CellSpec) -> Path:
        """Where the cell's measured teacher is (or goes): under its id, or under its legacy id
        if an earlier grid stored it there."""
        for f in forms[c.cell_id]:
            if (teachers_dir / f.teacher_id / "teacher.json").exists():
                return teachers_dir / f.teacher_id
        return teachers_dir / c.teacher_id

    needed: dict[str, CellSpec] = {}
    for c in todo:
        if not (teacher_folder(c) / "teacher.json").exists():
            needed.setdefault(c.teacher_id, c)
    given = sum(1 for c in needed.values() if c.teacher_dir is not None)
    if len(needed) > given:
        say(f"training {len(needed) - given} trojaned teacher(s)")
    if given:
        say(f"measuring {given} teacher(s) from model folders")
    t_start = time.perf_counter()

    def teacher_done(tid: str, payload: Any) -> None:
        _save_teacher(teachers_dir / tid, payload, needed[tid].teacher_key())
        m = payload["metrics"]
        asr = "n/a" if m.get("asr") is None else f"{100 * m['asr']:.1f}%"
        say(f"  teacher {tid}: clean acc {100 * m['clean_acc']:.1f}%, ASR {asr} ({payload['seconds']:.0f} s)")

    def teacher_failed(tid: str, exc: BaseException, tb: str) -> None:
        errors[tid] = f"{type(exc).__name__}: {exc}"
        _append_jsonl(errors_path, {"id": tid, "kind": "teacher", "error": errors[tid], "traceback": tb})
        say(f"  teacher {tid} FAILED: {errors[tid]}")

    # phase 2: cells (their teachers are read back from disk, so every cell sees the same model)
    total = len(todo)
    finished = [0]
    rows_new: list[dict] = []

    def checkpoint_of(c: CellSpec) -> str | None:
        """Where a resumable local cell saves itself (None on Ray: its workers may not share this disk)."""
        return str(out / TRAINING_DIR / f"{c.cell_id}.pt") if executor == "local" and defense_class(c.method).resumable \
            else None

    labels = {c.cell_id: c.label for c in todo}

    def cell_done(cid: str, row: Any) -> None:
        _append_jsonl(runs_path, row)
        (out / TRAINING_DIR / f"{cid}.pt").unlink(missing_ok=True)
        try:
            (out / TRAINING_DIR).rmdir()
        except OSError:  # absent, or other cells still training
            pass
        rows_new.append(row)
        finished[0] += 1
        asr = "n/a" if row.get("asr") is None else f"{100 * row['asr']:.1f}%"
        say(f"[{finished[0]}/{total}] {row['attack']} × {labels.get(cid, row['variant'])} seed {row['seed']}: "
            f"clean acc {100 * row['clean_acc']:.1f}%, ASR {asr} ({row['seconds']:.0f} s)")

    def cell_failed(cid: str, exc: BaseException, tb: str) -> None:
        finished[0] += 1
        errors[cid] = f"{type(exc).__name__}: {exc}"
        _append_jsonl(errors_path, {"id": cid, "kind": "cell", "error": errors[cid], "traceback": tb})
        say(f"[{finished[0]}/{total}] {cid} FAILED: {errors[cid]}")

    def cell_tasks() -> list[Task]:
        payloads: dict[str, dict] = {}
        tasks: list[Task] = []
        for c in todo:
            folder = teacher_folder(c)
            if not (folder / "teacher.json").exists():
                cell_failed(c.cell_id, RuntimeError(f"its teacher {c.teacher_id} could not be trained"), "")
                continue
            if c.teacher_id not in payloads:
                payloads[c.teacher_id] = _load_teacher(folder, c.trust_arch_code)
            checkpoint = checkpoint_of(c)
            tasks.append((c.cell_id, run_cell, (c.to_dict(), payloads[c.teacher_id])
                          + ((checkpoint,) if checkpoint is not None else ())))
        return tasks

    if todo:
        with Executor(executor, workers, address, gpu) as pool:
            pool.run([(tid, train_teacher, (c.to_dict(),)) for tid, c in needed.items()], teacher_done, teacher_failed)
            pool.run(cell_tasks(), cell_done, cell_failed)
    order: dict[str, int] = {}
    for i, c in enumerate(cells):
        for f in forms[c.cell_id]:
            order.setdefault(f.cell_id, i)
    rows = sorted((r for r in read_runs(runs_path) if r["cell_id"] in order), key=lambda r: order[r["cell_id"]])
    paths = report(rows, out) if (report is not None and rows) else {}
    say(f"{len(rows_new)} cell(s) computed, {skipped} reused, {len(errors)} failed "
        f"in {time.perf_counter() - t_start:.0f} s")
    return GridResult(rows, errors, len(rows_new), skipped, paths)
