"""The experiment runner: grids, a tiny run with its CSV/table/figure, resume without
recomputation, failures, the table's arithmetic, the CLI, and the Ray executor."""

import argparse
import ast
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import medic_viz as mv
import medic_viz.experiments as ex
import medic_viz.experiments.runner as runner
from medic_viz.cli_compare import add_compare_parser, parse_list
from medic_viz.defenses.medic import DEFAULT_LAYERS, DEFAULT_SHARE, MedicConfig
from medic_viz.defenses.registry import make_defense
from medic_viz.experiments import CellSpec, build_grid, format_table, read_runs, run_grid
from medic_viz.experiments.cells import defense_for_cell
from medic_viz.experiments.runner import merged_grid
from medic_viz.intervals import t_quantile
from medic_viz.metrics import mean_std
from medic_viz.pipeline import trigger_of
from medic_viz.resources import threads_per_worker
from medic_viz.train_checkpoint import TRAINING_DIR, TrainCheckpoint
from medic_viz.viz import aggregate_rows

FAST = dict(epochs=1, attack_epochs=1, device="cpu")


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> str:
    """A small random dataset (4 classes, 32x32 RGB) in the npz layout of ../shared/data."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8), y_train=np.arange(160) % 4,
             x_test=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), y_test=np.arange(48) % 4)
    return str(path)


def _grid(npz, methods=("finetune", "medic"), **kw):
    opts = dict(dataset=npz, attacks=["badnet"], methods=list(methods), seeds=1, fraction=0.25, **FAST)
    opts.update(kw)
    return build_grid(**opts)


# --------------------------------------------------------------------------------------- grids


def test_grid_sizes_ids_and_shared_teachers(npz):
    cells = build_grid(dataset=npz, attacks=["badnet", "sig"], methods=["finetune", "nad", "medic"], seeds=3)
    assert len(cells) == 2 * 3 * 3
    assert len({c.cell_id for c in cells}) == len(cells)
    assert len({c.teacher_id for c in cells}) == 2 * 3  # one teacher per attack and seed
    again = build_grid(dataset=npz, attacks=["badnet", "sig"], methods=["finetune", "nad", "medic"], seeds=3, device="cpu")
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]  # the device is not part of a cell's identity
    assert CellSpec.from_dict(cells[0].to_dict()) == cells[0]
    nad = next(c for c in cells if c.method == "nad")
    assert nad.method_options["seed"] == nad.seed and "epochs" not in nad.method_options  # paper defaults


def test_medic_cells_carry_the_engine_defaults_so_a_changed_default_is_a_new_cell(npz, monkeypatch):
    def medic_cell(**medic):
        return next(c for c in build_grid(dataset=npz, attacks=["badnet"], methods=["finetune", "medic"], seeds=1,
                                          medic=medic) if c.method == "medic")

    cell = medic_cell()
    opts = cell.method_options
    assert (opts["lam"], opts["layers"], opts["share"]) == (MedicConfig.lam, DEFAULT_LAYERS, DEFAULT_SHARE)
    assert "tau" not in opts
    paper = medic_cell(tau=5.0, layers="all").method_options
    assert paper["tau"] == 5.0 and "share" not in paper and paper["layers"] == "all" and paper["lam"] == MedicConfig.lam
    tau = build_grid(dataset=npz, attacks=["badnet"], seeds=1, ablation="tau", values={"tau": [2]})[0].method_options
    assert tau["tau"] == 2.0 and "share" not in tau and tau["layers"] == DEFAULT_LAYERS
    finetune = build_grid(dataset=npz, attacks=["badnet"], methods=["finetune"], seeds=1)[0]
    # a run made under other defaults is not reused: the MEDIC cell's id follows the defaults
    monkeypatch.setattr(MedicConfig, "lam", MedicConfig.lam + 1.0)
    assert medic_cell().cell_id != cell.cell_id
    assert build_grid(dataset=npz, attacks=["badnet"], methods=["finetune"], seeds=1)[0].cell_id == finetune.cell_id


def test_ablation_grids(npz):
    tau = build_grid(dataset=npz, attacks=["badnet"], seeds=2, ablation="tau", values={"tau": [0, 2, 5]})
    assert len(tau) == 6 and {c.method for c in tau} == {"medic"}
    assert sorted({c.method_options["tau"] for c in tau}) == [0.0, 2.0, 5.0]
    lt = build_grid(dataset=npz, attacks=["badnet"], seeds=1, ablation="lambda_tau")
    assert len(lt) == 3 * 4 and {c.series for c in lt} == {"badnet λ=1", "badnet λ=10", "badnet λ=100"}
    frac = build_grid(dataset=npz, attacks=["badnet"], methods=["finetune", "medic"], seeds=1, ablation="fraction")
    assert sorted({c.fraction for c in frac}) == [0.05, 0.1] and len(frac) == 4
    crit = build_grid(dataset=npz, attacks=["badnet"], seeds=1, ablation="criteria", values={"tau": [1, 3]})
    assert {c.method_options["criteria"] for c in crit} == {"activation", "impact", "both"} and len(crit) == 6
    arch = build_grid(dataset=npz, attacks=["badnet"], seeds=1, ablation="arch",
                      values={"arch": ["small_cnn", "wrn16_1"], "tau": [1]})
    assert {c.model for c in arch} == {"small_cnn", "wrn16_1"} and all(c.method_options["lr"] == 1e-3 for c in arch)
    assert len({c.teacher_id for c in arch}) == 2
    layers = build_grid(dataset=npz, attacks=["badnet"], seeds=2, ablation="layers")
    assert len(layers) == 4 and {c.method for c in layers} == {"medic"}
    assert {c.method_options["layers"] for c in layers} == {"conv+bn", "conv+bn+linear"}
    assert len({c.cell_id for c in layers}) == 4  # each layer set is its own resumable cell
    with pytest.raises(ValueError, match="sweeps"):
        build_grid(dataset=npz, attacks=["badnet"], ablation="tau", values={"lam": [1]})
    with pytest.raises(ValueError, match="unknown attack"):
        build_grid(dataset=npz, attacks=["trojannn"])
    with pytest.raises(ValueError, match="unknown defence"):
        build_grid(dataset=npz, attacks=["badnet"], methods=["moth"])


def test_epoch_budget_maps_onto_each_method():
    assert ex.method_options("nad", epochs=6, seed=1)["teacher_epochs"] == 3
    mcr = ex.method_options("mcr", epochs=6, seed=1)
    assert mcr["epochs"] == mcr["endpoint_epochs"] == 6
    anp = ex.method_options("anp", epochs=6, seed=1)
    assert anp["iterations"] is None and anp["epochs"] == 6
    assert "epochs" not in ex.method_options("medic", epochs=None, seed=0)


# ------------------------------------------------------------------------------- run and resume


def _count_computations(monkeypatch) -> dict:
    """Patch the runner to count the cells it computes and the teachers it trains."""
    calls = {"cell": 0, "teacher": 0}
    real_cell, real_teacher = ex.run_cell, ex.train_teacher

    def counted_cell(*a):
        calls["cell"] += 1
        return real_cell(*a)

    def counted_teacher(*a):
        calls["teacher"] += 1
        return real_teacher(*a)

    monkeypatch.setattr(runner, "run_cell", counted_cell)
    monkeypatch.setattr(runner, "train_teacher", counted_teacher)
    return calls


def test_tiny_grid_runs_writes_outputs_and_resumes(npz, tmp_path, monkeypatch):
    cells = _grid(npz)
    out = tmp_path / "run"
    first = run_grid(cells, out, log=None)
    assert first.ok and first.computed == 2 and first.skipped == 0
    rows = read_runs(out / "runs.jsonl")
    assert [r["method"] for r in rows] == ["finetune", "medic"]
    for r in rows:
        assert 0 <= r["clean_acc"] <= 1 and 0 <= r["asr"] <= 1 and r["n_clean"] == 48 and r["n_asr"] == 36
        assert r["n_clean_subset"] == 40  # 25% of 160, class-balanced
    # a MEDIC row carries its per-epoch curve (epoch 0 = before training, then each of the 1 epochs) on
    # the whole tiny test set (fewer than CURVE_IMAGES); other methods record none
    assert "curve" not in rows[0]
    curve = rows[1]["curve"]
    assert [p["epoch"] for p in curve] == [0, 1]
    assert all(p["n_clean"] == 48 and p["n_asr"] == 36 and 0 <= p["clean_acc"] <= 1 and 0 <= p["asr"] <= 1 for p in curve)
    csv_lines = (out / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("cell_id,teacher_id")
    table = (out / "table.md").read_text()
    assert "| Attack | Metric | Original | Fine-tuning | MEDIC |" in table and "Avg. drop" in table
    assert "plotly" in (out / "comparison.html").read_text()[:5000].lower()
    assert (out / "teachers" / cells[0].teacher_id / "model.safetensors").exists()

    calls = _count_computations(monkeypatch)
    second = run_grid(cells, out, log=None)
    assert calls == {"cell": 0, "teacher": 0} and second.skipped == 2 and len(second.rows) == 2
    # a grid with one more method computes only the new cell, reusing the cached teacher
    third = run_grid(_grid(npz, methods=("finetune", "medic", "scratch")), out, log=None)
    assert calls == {"cell": 1, "teacher": 0} and third.computed == 1 and len(third.rows) == 3
    assert "Scratch" in (out / "table.md").read_text()
    # a later part of the grid (one method) keeps grid.json whole: every cell launched here, once
    run_grid(_grid(npz, methods=("finetune",)), out, log=None)
    listed = json.loads((out / "grid.json").read_text())
    assert [CellSpec.from_dict(d).method for d in listed] == ["finetune", "medic", "scratch"]
    assert {CellSpec.from_dict(d).cell_id for d in listed} == {r["cell_id"] for r in read_runs(out / "runs.jsonl")}


def test_merged_grid_keeps_earlier_cells_replaces_same_ids_and_ignores_a_broken_file(npz, tmp_path):
    a, b = _grid(npz)
    path = tmp_path / "grid.json"
    assert merged_grid(path, [a]) == [a.to_dict()]  # no earlier file
    unknown = {"format": "a later version's cell"}
    path.write_text(json.dumps([b.to_dict(), unknown, b.to_dict(), 7]))
    merged = merged_grid(path, [a, b])
    assert merged == [b.to_dict(), unknown, a.to_dict()]  # b once, in its earlier place; the unknown kept
    path.write_text("{not json")
    assert merged_grid(path, [b]) == [b.to_dict()]
    path.write_text(json.dumps({"cells": []}))
    assert merged_grid(path, [a]) == [a.to_dict()]


def test_cells_without_a_dataset_digest_keep_the_ids_grids_had_before():
    # ids computed by the code before datasets were identified by their digest (commit 0a474d4):
    # committed runs.jsonl files are keyed by them
    folder = CellSpec(dataset="../shared/data/gtsrb32.npz", model="wrn16_1", attack="badnet", method="finetune", seed=0,
                      method_options={"epochs": 30}, teacher_sha256="ab" * 32, teacher_dir="x")
    trained = CellSpec(dataset="signs", model="small_cnn", attack="sig", method="medic", seed=1)
    assert (folder.cell_id, folder.teacher_id) == ("badnet-finetune-s0-5743189f14", "badnet-wrn16_1-a3b3a7355a")
    assert (trained.cell_id, trained.teacher_id) == ("sig-medic-s1-3884fdf790", "sig-small_cnn-s1-f79ec7823b")
    digested = CellSpec(**{**trained.to_dict(), "dataset_sha256": "cd" * 32})
    assert digested.cell_id != trained.cell_id and digested.legacy() == trained


def test_the_same_dataset_file_under_another_path_is_the_same_grid(npz, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = shutil.copy(npz, elsewhere / "renamed.npz")
    cells, moved = _grid(npz), _grid(str(copy))
    assert cells[0].dataset != moved[0].dataset
    assert [c.cell_id for c in moved] == [c.cell_id for c in cells]
    assert [c.teacher_id for c in moved] == [c.teacher_id for c in cells]
    # a different file is different data
    rng = np.random.default_rng(1)
    other = tmp_path / "other.npz"
    np.savez(other, x_train=rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8), y_train=np.arange(160) % 4,
             x_test=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), y_test=np.arange(48) % 4)
    assert _grid(str(other))[0].cell_id != cells[0].cell_id

    # runs and teachers stored under the ids of path-keyed grids (made before the digest) are
    # reused, not recomputed — under the same path, and under another path to the same file
    out = tmp_path / "run"
    old = run_grid([c.legacy() for c in cells], out, log=None)
    assert old.ok and old.computed == 2
    assert {r["cell_id"] for r in read_runs(out / "runs.jsonl")} == {c.legacy().cell_id for c in cells}
    calls = _count_computations(monkeypatch)
    for same_data in (cells, moved):
        again = run_grid(same_data, out, log=None)
        assert calls == {"cell": 0, "teacher": 0} and again.skipped == 2 and len(again.rows) == 2
    # the same ids of a different file are not taken for it
    (tmp_path / "elsewhere" / "renamed.npz").write_bytes(other.read_bytes())
    assert not any(f.cell_id in {c.legacy().cell_id for c in cells}
                   for f in runner._earlier_forms(_grid(str(copy)), {npz})[_grid(str(copy))[0].cell_id][1:])
    shutil.copy(npz, elsewhere / "renamed.npz")
    # one more method: only its cell runs, on the teacher stored under the legacy id
    more = run_grid(_grid(str(copy), methods=("finetune", "medic", "scratch")), out, log=None)
    assert calls == {"cell": 1, "teacher": 0} and more.computed == 1 and len(more.rows) == 3


def test_an_interrupted_line_is_recomputed_and_failures_are_retried(npz, tmp_path, monkeypatch):
    cells = _grid(npz, methods=("finetune", "scratch"))
    out = tmp_path / "run"
    real_cell = ex.run_cell

    def flaky(spec, teacher):
        if spec["method"] == "scratch":
            raise RuntimeError("simulated crash")
        return real_cell(spec, teacher)

    monkeypatch.setattr(runner, "run_cell", flaky)
    result = run_grid(cells, out, log=None)
    assert list(result.errors) == [cells[1].cell_id] and result.computed == 1
    assert "simulated crash" in (out / "errors.jsonl").read_text()
    # simulate a write cut short: half a JSON line at the end of runs.jsonl
    with open(out / "runs.jsonl", "a") as f:
        f.write('{"cell_id": "' + cells[1].cell_id + '", "clean_')
    assert len(read_runs(out / "runs.jsonl")) == 1
    monkeypatch.setattr(runner, "run_cell", real_cell)
    retried = run_grid(cells, out, log=None)
    assert retried.ok and retried.computed == 1 and retried.skipped == 1


def test_local_process_pool_gives_the_same_rows(npz, tmp_path, monkeypatch):
    # Same rows need the same float arithmetic: the pool gives each worker cores ÷ workers
    # threads, so the sequential run uses one thread too (torch's sums differ by thread count,
    # and a one-epoch toy teacher can tip either way on that).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cells = _grid(npz)
        seq = run_grid(cells, tmp_path / "seq", log=None)
        pool = run_grid(cells, tmp_path / "pool", workers=2, log=None)
    finally:
        torch.set_num_threads(before)
    assert pool.ok
    for a, b in zip(seq.rows, pool.rows):
        assert a["cell_id"] == b["cell_id"]
        assert a["clean_acc"] == b["clean_acc"] and a["asr"] == b["asr"]
        # each row says how many torch threads computed it (the CPU results depend on it)
        assert a["torch_threads"] == 1 and b["torch_threads"] == threads_per_worker(2)


# ----------------------------------------------------------------------------------- the table


def _row(attack, variant, seed, before_acc, before_asr, acc, asr):
    return {"cell_id": f"{attack}-{variant}-{seed}", "teacher_id": f"{attack}-{seed}", "attack": attack,
            "variant": variant, "method": variant.lower(), "seed": seed, "before_clean_acc": before_acc,
            "before_asr": before_asr, "clean_acc": acc, "asr": asr, "dataset": "d", "model": "m", "fraction": 0.05,
            "epochs": None, "attack_epochs": 20, "ablation": "none", "series": "", "x": None}


def test_table_means_stds_and_average_drops_by_hand():
    rows = [
        _row("badnet", "A", 0, 0.90, 1.00, 0.88, 0.10),
        _row("badnet", "A", 1, 0.92, 0.98, 0.86, 0.20),
        _row("sig", "A", 0, 0.80, 0.90, 0.80, 0.50),
        _row("sig", "A", 1, 0.82, 0.94, 0.78, 0.30),
    ]
    table = format_table(rows)
    # badnet ASR: mean(10, 20) = 15.0, sample std = 7.07…; original mean(100, 98) = 99.0 ± 1.4
    assert "| badnet | ASR | 99.0 ± 1.4 | 15.0 ± 7.1 |" in table
    assert "|  | Accuracy | 91.0 ± 1.4 | 87.0 ± 1.4 |" in table
    # avg drop ASR: badnet mean(90, 78) = 84, sig mean(40, 64) = 52 → 68.0; accuracy: (4 + 2) / 2 = 3.0.
    # Seed-only 95 % intervals: ASR variances of the means 72/2 = 36 and 288/2 = 144, se = sqrt(180)/2,
    # Welch df = 180² / (36² + 144²); accuracy 8/2 = 4 and 4, se = sqrt(8)/2, df = 8² / (4² + 4²) = 2.
    half = t_quantile(0.975, 180 ** 2 / (36 ** 2 + 144 ** 2)) * math.sqrt(180) / 2
    assert f"| Avg. drop | ASR | - | 68.0 [{68 - half:.1f}, {68 + half:.1f}] |" in table
    assert "|  | Accuracy | - | 3.0 [-3.1, 9.1] |" in table  # 3.0 ± 4.3027 · 1.4142
    agg = ex.aggregate(rows)
    assert math.isclose(agg["cells"][("badnet", "A")]["asr"][1], math.sqrt(50))


def test_table_keeps_two_settings_of_one_variant_apart_instead_of_averaging_them_as_seeds():
    """Two ``compare`` runs into one folder (``--layers auto`` and ``--layers conv+bn``, seeds 0
    and 1 each) were one "MEDIC" column averaging four runs (n=4); now two columns of n=2.
    The per-seed seeds and where a run reports do not split a column."""
    rows = []
    for layers, accs in (("auto", (0.90, 0.92)), ("conv+bn", (0.96, 0.98))):
        for seed, acc in enumerate(accs):
            rows.append({**_row("badnet", "MEDIC", seed, 0.97, 1.0, acc, 0.01),
                         "method_options": {"layers": layers, "lam": 3.0, "seed": seed, "student_seed": seed,
                                            "device": "cpu" if seed else "cuda", "progress": False}})
    assert ex.column_labels(rows) == ["MEDIC (layers=auto)"] * 2 + ["MEDIC (layers=conv+bn)"] * 2
    agg = ex.aggregate(rows)
    assert agg["variants"] == ["MEDIC (layers=auto)", "MEDIC (layers=conv+bn)"]
    assert agg["cells"][("badnet", "MEDIC (layers=conv+bn)")]["acc"].n == 2
    assert math.isclose(agg["cells"][("badnet", "MEDIC (layers=auto)")]["acc"].mean, 91.0)
    assert "|  | Accuracy | 97.0 ± 0.0 | 91.0 ± 1.4 | 97.0 ± 1.4 |" in format_table(rows)
    one_setting = [r for r in rows if r["method_options"]["layers"] == "auto"]
    assert ex.column_labels(one_setting) == ["MEDIC", "MEDIC"]  # nothing to tell apart: the label is unchanged
    fractions = [{**r, "fraction": f} for r, f in zip(one_setting, (0.01, 0.02))]
    assert ex.column_labels(fractions) == ["MEDIC (fraction=0.01)", "MEDIC (fraction=0.02)"]
    assert "clean data 1%, 2% of the training set" in format_table(fractions)  # the header said 1% for both
    per_attack = [fractions[0], {**fractions[1], "attack": "sig"}]  # one setting per attack (a τ aligned per attack)
    assert ex.column_labels(per_attack) == ["MEDIC", "MEDIC"]


# ----------------------------------------------------------------------------------------- CLI


def test_cli_compare_runs_an_ablation_and_reports_errors(npz, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_compare_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", "--dataset", npz, "--attacks", "badnet", "--seeds", "1", "--epochs", "1",
                              "--attack-epochs", "1", "--fraction", "0.25", "--ablation", "tau", "--taus", "0,3",
                              "--device", "cpu", "--out", str(tmp_path / "tau")])
    assert args.func(args) == 0
    assert len(read_runs(tmp_path / "tau" / "runs.jsonl")) == 2
    assert "MEDIC τ=3" in (tmp_path / "tau" / "table.md").read_text()
    bad = parser.parse_args(["compare", "--dataset", npz, "--attacks", "nope", "--out", str(tmp_path / "x")])
    assert bad.func(bad) == 2
    assert "unknown attack" in capsys.readouterr().err
    assert parse_list("1, 2,3", float) == [1.0, 2.0, 3.0] and parse_list("") is None


def test_missing_ray_says_how_to_install(npz, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"medic-viz\[ray\]"):
        run_grid(_grid(npz), tmp_path / "r", executor="ray", log=None)


# ----------------------------------------------------------------------------------------- Ray


def test_ray_executor_on_a_local_instance(npz, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        result = run_grid(_grid(npz, methods=("finetune",)), tmp_path / "ray", executor="ray", log=None)
    finally:
        ray.shutdown()
    assert result.ok and result.computed == 1
    row = result.rows[0]
    assert row["method"] == "finetune" and 0 <= row["asr"] <= 1
    local = run_grid(_grid(npz, methods=("finetune",)), tmp_path / "local", log=None)
    assert local.rows[0]["clean_acc"] == row["clean_acc"] and local.rows[0]["asr"] == row["asr"]


def test_teacher_seed_shares_one_teacher_across_seeds():
    shared = build_grid(dataset="signs", attacks=["badnet"], methods=["medic", "finetune"], seeds=3, teacher_seed=0)
    assert len({c.teacher_id for c in shared}) == 1
    assert len({c.cell_id for c in shared}) == 6  # the cells themselves still differ by seed
    separate = build_grid(dataset="signs", attacks=["badnet"], methods=["medic"], seeds=3)
    assert len({c.teacher_id for c in separate}) == 3


# --------------------------------------------------------------------- one standard deviation


def test_one_std_definition_sample_std_by_hand():
    # [1, 2, 4]: mean 7/3 = 2.333; squared deviations 16/9 + 1/9 + 25/9 = 42/9; / (n - 1) = 7/3;
    # sample std sqrt(7/3) = 1.528 (the population std, sqrt(14/9) = 1.247, is not used anywhere)
    stat = mean_std([1, 2, 4])
    assert stat.n == 3 and stat.mean == pytest.approx(2.3333333) and stat.std == pytest.approx(1.5275252)
    assert mean_std([5.0]) == (5.0, 0.0, 1) and mean_std([None, float("nan")]).n == 0
    # the table and the figures use this one definition
    rows = [_row("badnet", "A", s, 0.9, 1.0, 0.9, asr) for s, asr in enumerate([0.01, 0.02, 0.04])]
    assert ex.aggregate(rows)["cells"][("badnet", "A")]["asr"][1] == pytest.approx(152.75252 / 100)
    assert "| badnet | ASR | 100.0 ± 0.0 | 2.3 ± 1.5 |" in format_table(rows)
    assert "sample standard deviation, ddof=1" in format_table(rows)
    agg = aggregate_rows(rows, ["attack"])
    assert agg[0]["asr_std"] == pytest.approx(0.015275252)


# ------------------------------------------------------------------------- side by side (notebook 04)


@pytest.mark.slow
def test_compare_defenses_runs_each_method_under_equal_conditions():
    teacher, card = mv.load_demo_model("badnet")
    trigger, target = trigger_of(card)
    splits = mv.load_dataset("signs", size=card.input_size)
    lines: list[str] = []
    outcomes = ex.compare_defenses(teacher, splits, ["finetune", "MEDIC"], trigger=trigger, target=target, epochs=1,
                                   fraction=0.01, device="cpu", live_eval_images=200, log=lines.append)
    assert list(outcomes) == ["Fine-tuning", "MEDIC"] and len(lines) == 2 and lines[1].startswith("MEDIC ")
    ft, med = outcomes.values()
    assert ft.before is med.before and ft.before.asr >= 0.9  # the trojaned model, measured once
    assert ft.n_clean_subset == med.n_clean_subset == 120  # 1% of 12000, the same images for both
    assert ft.result.config["epochs"] == med.result.config["epochs"] == 1
    epochs = [e for e in med.result.history if e.kind == "epoch"]
    assert len(epochs) == 1 and epochs[0].asr is not None  # live curve every epoch, on 200 test images
    assert med.after.n_clean == 3000  # before/after on the whole test set
    with pytest.raises(ValueError, match="unknown defence"):
        ex.compare_defenses(teacher, splits, ["finetune", "moth"], trigger=trigger, target=target)


# --------------------------------------------------------------------------------- layering


def test_grid_cells_runner_and_pipeline_do_not_import_views():
    root = Path(mv.__file__).parent
    core = ["pipeline.py", "experiments/grid.py", "experiments/cells.py", "experiments/executors.py",
            "experiments/runner.py", "experiments/summary.py", "experiments/side_by_side.py"]
    for rel in core:
        tree = ast.parse((root / rel).read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        views = [m for m in names if m.startswith(("medic_viz.viz", "medic_viz.widgets", "medic_viz.cli", "plotly"))
                 or m.endswith("experiments.report")]
        assert not views, f"{rel} imports views {views}"


def test_table_counts_one_teacher_folder_once_and_flags_partial_averages():
    """Two grids naming the dataset by different paths give the same teacher folder two teacher
    ids; the Original column must still be one teacher (no "± 0.0"), and a method run on fewer
    attacks than the others says so in the average-drop rows (these failed before)."""
    rows = [
        _row("badnet", "A", 0, 0.90, 1.00, 0.88, 0.10),
        _row("sig", "A", 0, 0.80, 0.90, 0.80, 0.50),
        _row("badnet", "B", 0, 0.90, 1.00, 0.86, 0.00),
    ]
    for r in rows:
        r["teacher_folder"] = f"teachers/{r['attack']}"
    rows[2]["teacher_id"] = "badnet-other-path"
    table = format_table(rows)
    assert "| badnet | ASR | 100.0 | 10.0 | 0.0 |" in table
    assert "| Avg. drop | ASR | - | 65.0 | 100.0 (1 of 2 attacks) |" in table
    assert "|  | Accuracy | - | 1.0 | 4.0 (1 of 2 attacks) |" in table


def test_a_medic_cell_with_a_holdout_records_it_in_its_row_and_curve(npz, tmp_path):
    """``compare --holdout-fraction``: the row keeps the clone against the teacher on clean images
    it did not train on, and the curve the per-epoch hold-out accuracy (issue 27 item 3)."""
    cells = _grid(npz, methods=("medic",), medic={"holdout_fraction": 0.25})
    said: list[str] = []
    run_grid(cells, tmp_path / "run", log=said.append)
    assert any("× MEDIC (holdout_fraction=0.25) seed 0:" in line for line in said), said
    row = read_runs(tmp_path / "run" / "runs.jsonl")[0]
    held = row["extra"]["holdout"]
    assert held["images"] + held["trained_on"] == row["n_clean_subset"] == 40 and held["images"] == 8  # 25 % per class
    assert [p["n_holdout"] for p in row["curve"]] == [8, 8] and row["curve"][-1]["holdout_acc"] == held["clone_acc"]
    plain = _grid(npz, methods=("medic",))
    assert plain[0].cell_id != cells[0].cell_id  # a hold-out is another computation: its own cell


def test_a_medic_cell_cut_after_an_epoch_goes_on_from_its_checkpoint(npz, tmp_path, monkeypatch):
    cells = _grid(npz, methods=("medic",), epochs=2)
    whole = run_grid(cells, tmp_path / "whole", log=None).rows[0]
    real_save = TrainCheckpoint.save

    def save_then_die(self, state, fingerprint):
        real_save(self, state, fingerprint)
        raise RuntimeError("killed after the first epoch")

    monkeypatch.setattr(TrainCheckpoint, "save", save_then_die)
    out = tmp_path / "cut"
    cut = run_grid(cells, out, log=None)
    assert not cut.ok and cut.computed == 0 and list((out / TRAINING_DIR).glob("*.pt"))
    saved_epochs: list[int] = []

    def save_and_count(self, state, fingerprint):
        saved_epochs.append(state["epoch"])
        real_save(self, state, fingerprint)

    monkeypatch.setattr(TrainCheckpoint, "save", save_and_count)
    row = run_grid(cells, out, log=None).rows[0]
    assert saved_epochs == [2], "only the second epoch ran again"
    assert row["resumed"] is True and "resumed" not in whole
    assert (row["clean_acc"], row["asr"]) == (whole["clean_acc"], whole["asr"])
    assert [(p["epoch"], p["clean_acc"], p["asr"]) for p in row["curve"]] == \
        [(p["epoch"], p["clean_acc"], p["asr"]) for p in whole["curve"]]
    assert not (out / TRAINING_DIR).exists(), "the checkpoint goes once the row is stored"


def test_a_grid_cell_pinned_at_the_papers_eps_runs_at_it_not_at_the_new_default() -> None:
    """Regression (2026-12-06): a cell asking for ε = 1e-5 records no ε (old rows keep their ids),
    and the runner built its MEDIC with the config's default — 0.1 since 2026-12-05 — so the
    "eps 1e-5" cells of rule 3 B ran the "eps 0.1" run to the bit. The runner now runs the
    recorded meaning: 1e-5 without ε, the pinned value with it."""
    paper, = build_grid(attacks=["badnet"], methods=["medic"], seeds=[0], medic={"eps": 1e-5})
    default, = build_grid(attacks=["badnet"], methods=["medic"], seeds=[0])
    assert "eps" not in paper.method_options and default.method_options["eps"] == 0.1
    for cell, eps in ((paper, 1e-5), (default, 0.1)):
        config = defense_for_cell("medic", cell.method_options).config
        assert isinstance(config, MedicConfig) and config.eps == eps
    assert defense_for_cell("kd", {}).config == make_defense("kd").config


def test_a_cells_label_names_the_options_its_grid_set_and_not_the_defaults() -> None:
    """Regression (2026-12-07): rule 6 C's progress lines labelled both settings "MEDIC"
    (``[2/8] sig_wrn16_1_e30_s2 × MEDIC seed 0``) because a grid's ``medic=`` options do not reach
    ``variant``, which is part of a cell's id. ``label`` names them without changing the id."""
    plain, = build_grid(attacks=["badnet"], methods=["medic"], seeds=[0], epochs=60)
    scaled, = build_grid(attacks=["badnet"], methods=["medic"], seeds=[0], epochs=60, medic={"impact": "scaled"})
    assert plain.label == "MEDIC" and scaled.label == "MEDIC (impact=scaled)"
    assert scaled.variant == plain.variant == "MEDIC" and scaled.cell_id != plain.cell_id
    kd, = build_grid(attacks=["badnet"], methods=["kd"], seeds=[1], epochs=60, medic={"impact": "scaled"})
    assert kd.label == kd.variant, "medic= options do not reach other methods"
    swept = build_grid(attacks=["badnet"], methods=["medic"], seeds=[0], ablation="tau", values={"tau": [3.0]},
                       medic={"lam": 1.0})
    assert [c.label for c in swept] == ["MEDIC τ=3 (lam=1.0)"], "the swept τ is in the variant, not repeated"
