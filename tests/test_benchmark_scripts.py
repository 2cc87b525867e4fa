"""The shell entry points under benchmarks/ reach the command line they mean to call.

A broken invocation in these scripts only shows after an hour of set-up on a real machine, so
the cheap paths run here against a file that is not a dataset: the command must get as far as
reading the dataset and refuse it in one line (not fail on its own arguments).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks import (
    architectures,
    calibrated_taus,
    clean_tracks,
    common,
    eps_development,
    figure4_tau,
    holdout_gap,
    protocol_report,
    scarce_data,
    table1_protocol,
    train_teachers,
    tune_methods,
)
from medic_viz.experiments import build_grid, read_runs
from medic_viz.experiments.selection import Selection
from medic_viz.experiments.summary import peak_late_asr

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("budget", [{"QUICK": "1"}, {"BUDGET": "cpu"}])
def test_run_table1_reaches_the_dataset_check(tmp_path: Path, budget: dict[str, str]) -> None:
    not_a_dataset = tmp_path / "gtsrb32.npz"
    not_a_dataset.write_bytes(b"not an npz")
    env = {**os.environ, "PYTHON": sys.executable, "DATA": str(not_a_dataset), "OUT": str(tmp_path / "out"),
           "DEVICE": "cpu", **budget}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "run_table1.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert "unrecognized arguments" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    assert "not an npz archive" in done.stderr, done.stderr
    assert not list(tmp_path.glob("out*")), "a refused grid leaves no output folder"


def test_run_table1_paper_budget_finds_the_cached_teachers_and_reaches_the_dataset_check(tmp_path: Path) -> None:
    """The paper budget trains nothing when the eight committed teachers are cached: the cache
    (medic_viz.experiments.teachers) finds them at their folders, and compare refuses the data."""
    not_a_dataset = tmp_path / "gtsrb32.npz"
    not_a_dataset.write_bytes(b"not an npz")
    env = {**os.environ, "PYTHON": sys.executable, "DATA": str(not_a_dataset), "OUT_PAPER": str(tmp_path / "out"),
           "DEVICE": "cpu"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "run_table1.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert "training" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert done.returncode == 2, done.stderr
    assert "not an npz archive" in done.stderr, done.stderr
    assert not list(tmp_path.glob("out*")), "a refused grid leaves no output folder"


def test_list_teachers_names_the_committed_teacher_folders(tmp_path: Path) -> None:
    data = tmp_path / "gtsrb32.npz"
    data.write_bytes(b"stand-in: the committed folders predate the key file and are matched by their cards")
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_medic_default", "--part", "table1-wrn16_1",
                           "--list-teachers", "--seeds", "0", "--npz", str(data), "--attacks", "badnet", "cleanlabel"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    teachers = ROOT / "benchmarks" / "results" / "gtsrb_teachers"
    assert done.stdout.split() == [str(teachers / "badnet_wrn16_1_e30_s0"), str(teachers / "cleanlabel_wrn16_1_e30_s0")]


#: Imports of one benchmark by another still allowed, with the reason.
SCRIPT_IMPORTS_PENDING: dict[tuple[str, str], str] = {}


#: Benchmarks still editing sys.path, with the reason.
SYS_PATH_PENDING: dict[str, str] = {}


def test_benchmarks_import_only_the_library_and_their_shared_helper() -> None:
    """No sys.path edits, no script importing another script: a benchmark imports medic_viz and
    benchmarks.common (run as python -m benchmarks.NAME)."""
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"__init__", "common"}
    found = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        if "sys.path" in text and path.stem not in SYS_PATH_PENDING:
            found.append(f"{path.name}: edits sys.path")
        for node in ast.walk(ast.parse(text)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                stem = name.removeprefix("benchmarks.").split(".")[0]
                if stem in scripts and (path.stem, f"benchmarks.{stem}") not in SCRIPT_IMPORTS_PENDING:
                    found.append(f"{path.name}: imports the script {stem}")
    assert not found, found


@pytest.mark.parametrize("script", ["table1_report", "protocol_report"])
def test_a_report_script_runs_as_a_file_from_another_folder(script: str, tmp_path: Path) -> None:
    """`python benchmarks/table1_report.py --check` (issue 28's literal command) finds the
    `benchmarks` package: scripts/bootstrap.sh puts the checkout on the environment's path."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, f"{done.stderr.strip().splitlines()[-1:]} (run bash scripts/bootstrap.sh)"
    assert done.stdout.startswith(f"usage: {script}.py")


def _row(attack: str, method: str, seed: int, acc: float, asr: float, **kw) -> dict:
    return {"attack": attack, "method": method, "seed": seed, "clean_acc": acc, "asr": asr,
            "before_clean_acc": 0.98, "before_asr": 1.0, **kw}


def test_holdout_gap_table_sets_the_holdout_gap_beside_the_test_drop_by_hand() -> None:
    """Teacher 98 % on the test half; clone 85 %: a 13-point drop. Hold-out: teacher 100 %,
    clone 88.5 % → gap 11.5 > 3, noted; a row without a hold-out record is left out."""
    held = {"images": 78, "trained_on": 314, "teacher_acc": 1.0, "clone_acc": 0.885, "gap_points": 11.5}
    rows = [_row("badnet_wrn16_1_e30_s0", "medic", 0, 0.85, 0.004, fraction=0.01, n_clean_subset=392,
                 method_options={"layers": "auto"}, extra={"holdout": held}),
            _row("sig_wrn16_1_e30_s0", "medic", 0, 0.9, 0.1, fraction=0.01, n_clean_subset=392,
                 method_options={"layers": "auto"}, extra={})]
    lines = holdout_gap.table(rows).splitlines()
    assert lines[2:] == ["| badnet_wrn16_1_e30_s0 | 1 % (392) | auto | 98.0 → 85.0 (13.0) | 0.4 | 78 | "
                         "100.0 → 88.5 (11.5) | yes |"]
    tracked = _row("badnet_wrn16_1_e30_s0", "medic", 0, 0.86, 0.01, fraction=0.05, n_clean_subset=1960,
                   method_options={"layers": "auto"}, clean_from="tracks",
                   extra={"holdout": {**held, "images": 420, "whole_groups": True}})
    assert holdout_gap.table([tracked]).splitlines()[2].startswith(
        "| badnet_wrn16_1_e30_s0 | 5 % (1,960) from few tracks | auto | 98.0 → 86.0 (12.0) | 1.0 | 420 whole tracks | ")
    folder = [str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "badnet_wrn16_1_e30_s0")]
    plain, = holdout_gap.grid(folder, [0], fractions=[0.05], layer_sets=["auto"])
    by_tracks, = holdout_gap.grid(folder, [0], fractions=[0.05], layer_sets=["auto"], clean_from="tracks")
    assert (plain.clean_from, by_tracks.clean_from) == (None, "tracks") and plain.cell_id != by_tracks.cell_id


def test_scarce_data_table_averages_seeds_and_checks_the_targets_by_hand() -> None:
    t = "badnet_wrn16_1_e30_s1"
    rows = [_row(t, "medic", 0, 0.96, 0.02, fraction=0.05), _row(t, "medic", 1, 0.94, 0.04, fraction=0.05),
            _row(t, "kd", 0, 0.90, 0.01, fraction=0.05),
            _row(t, "medic", 0, 0.92, 0.03, fraction=0.02)]
    text = scarce_data.table(rows)
    five = next(line for line in text.splitlines() if "| 5 % |" in line)
    # MEDIC: acc mean 95.0, sample std 1.414; ASR 3.0 ± 1.4; drop 98 - 95 = 3.0 ≤ 3 → met
    assert "95.0 ± 1.4 / 3.0 ± 1.4" in five and "90.0 / 1.0" in five and "met (drop 3.0 ≤ 3" in five
    two = next(line for line in text.splitlines() if "| 2 % |" in line)
    assert "92.0 / 3.0" in two and "missed (drop 6.0 ≤ 5" in two  # 6 points > 5 allowed at 2 %


def test_scarce_data_table_shows_the_earlier_eps_beside_the_default_and_judges_the_default_only() -> None:
    """Rows at ε = 1e-5 (``earlier_eps``) fill their own column; the target verdict and the seed
    count come from the default's rows alone, and a line with only earlier rows still shows."""
    t = "sig_wrn16_1_e30_s1"
    rows = [_row(t, "medic", 0, 0.96, 0.40, fraction=0.05), _row(t, "medic", 1, 0.96, 0.00, fraction=0.05),
            {**_row(t, "medic", 0, 0.97, 0.02, fraction=0.05), "earlier_eps": 1e-5},
            {**_row(t, "medic", 0, 0.90, 0.01, fraction=0.01), "earlier_eps": 1e-5}]
    lines = scarce_data.table(rows).splitlines()
    assert lines[0].split(" | ")[6] == scarce_data.EARLIER
    five = next(line for line in lines if "| 5 % |" in line)
    # default: ASR mean 20.0 > 10 → missed, though the earlier ε's 2.0 would have met it
    assert "| 96.0 ± 0.0 / 20.0 ± 28.3 | – | – | 97.0 / 2.0 | 2 | missed (drop 2.0 ≤ 3, ASR 20.0 ≤ 10) |" in five
    one = next(line for line in lines if "| 1 % |" in line)
    assert one.endswith("| – | – | – | 90.0 / 1.0 | 0 | – |")
    assert scarce_data.EARLIER not in scarce_data.table(rows[:2])


def test_figure4_table_puts_the_default_beside_each_tau() -> None:
    t = "sig_wrn16_1_e30_s1"
    rows = [_row(t, "medic", 0, 0.97, 0.01, ablation="none", x=None),
            _row(t, "medic", 0, 0.98, 0.80, ablation="tau", x=0.0),
            _row(t, "medic", 1, 0.96, 0.60, ablation="tau", x=0.0)]
    header, _, line = figure4_tau.table(rows).splitlines()
    assert header == f"| Attack | Teacher acc / ASR | {figure4_tau.DEFAULT} | τ = 0 |"
    assert "| sig | 98.0 / 100.0 | 97.0 / 1.0 (n=1) | 97.0 ± 1.4 / 70.0 ± 14.1 (n=2) |" == line



def test_tables_show_the_highest_live_asr_after_epoch_20() -> None:
    """A run can end low after the backdoor came back on the way (GTSRB SIG); epochs 0-20 do not count."""
    curve = [{"epoch": e, "asr": a} for e, a in ((0, 0.99), (20, 0.9), (21, 0.412), (40, 0.05), (60, 0.026))]
    t = "sig_wrn16_1_e30_s1"
    rows = [_row(t, "medic", 0, 0.95, 0.026, ablation="none", x=None, curve=curve)]
    assert figure4_tau.table(rows).splitlines()[2] == "| sig | 98.0 / 100.0 | 95.0 / 2.6 (n=1), live ≤ 41 % |"
    scarce = [_row(t, "medic", 0, 0.95, 0.026, fraction=0.02, curve=curve), _row(t, "kd", 0, 0.5, 0.04, fraction=0.02)]
    assert "| 95.0 / 2.6, live ≤ 41 % | 50.0 / 4.0 | – |" in scarce_data.table(scarce)
    assert peak_late_asr(curve) == 0.412 and peak_late_asr(curve[:2]) is None and peak_late_asr(None) is None


def test_figure4_layer_sets_are_separate_series_and_the_default_keeps_its_cells() -> None:
    t = "sig_wrn16_1_e30_s1"
    every = {"method_options": {"layers": "conv+bn"}}
    rows = [_row(t, "medic", 0, 0.97, 0.01, ablation="none", x=None, method_options={"layers": "auto"}),
            _row(t, "medic", 0, 0.95, 0.90, ablation="tau", x=0.0, **every)]
    lines = figure4_tau.table(rows).splitlines()[2:]
    assert lines == ["| sig | 98.0 / 100.0 | 97.0 / 1.0 (n=1) | – |",
                     "| sig, layers conv+bn | 98.0 / 100.0 | – | 95.0 / 90.0 (n=1) |"]
    folder = [str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "sig_wrn16_1_e30_s1")]
    library, paper = figure4_tau.grid(folder, [0], taus=[0.0]), figure4_tau.grid(folder, [0], taus=[0.0], layers="conv+bn")
    assert [c.method_options["layers"] for c in paper] == ["conv+bn", "conv+bn"]
    assert {c.cell_id for c in library}.isdisjoint(c.cell_id for c in paper)


def test_tuning_units_share_one_run_per_readout_group_and_have_stable_names() -> None:
    todo = tune_methods.units(["mcr", "finetune"], ["/x/badnet_wrn16_1_e30_s0", "/x/sig_wrn16_1_e30_s0"])
    mcr = [u for u in todo if u["method"] == "mcr"]
    assert len(mcr) == 2 * 2 and all(len(u["members"]) == 5 for u in mcr)  # t read out of one run per momentum
    assert len([u for u in todo if u["method"] == "finetune"]) == 4 * 2
    names = [tune_methods.unit_name(u) for u in todo]
    assert len(set(names)) == len(names) and names == [tune_methods.unit_name(u) for u in todo]
    assert names[0].startswith("mcr-badnet_wrn16_1_e30_s0-")


def test_tuning_report_chooses_by_the_rule_only_when_every_result_is_in() -> None:
    """Fine-tuning's four lr recipes on two teachers (teacher accuracy 0.97 and 0.95): drops
    0.5, 1.5, 2.5 and 4.5 points → the third (lr 0.05) is the strongest within B = 3."""
    rows = []
    for teacher, base in (("a", 0.97), ("b", 0.95)):
        for i, drop in enumerate((0.005, 0.015, 0.025, 0.045)):
            rows.append({"method": "finetune", "members": [i], "options": [{}], "teacher": teacher,
                         "holdout_acc": [base - drop], "teacher_acc": base, "n_holdout": 100})
    chosen, missing = tune_methods.selections(rows)
    assert missing == {} and chosen["finetune"].index == 2 and chosen["finetune"].options["lr"] == 0.05
    assert [round(c.drop_points, 6) for c in chosen["finetune"].candidates] == [0.5, 1.5, 2.5, 4.5]
    chosen, missing = tune_methods.selections(rows[:-1])
    assert chosen == {} and missing == {"finetune": "1 of 8 candidate × teacher results"}


def test_protocol_report_plans_every_cell_and_results_md_is_in_step_with_the_committed_runs(capsys) -> None:
    assert protocol_report.planned() == {"scarce_data": 3 * 4 * 3 * 2, "figure4_tau": 3 * 2 * 6,
                                         "figure4_default_cut": 3 * 2 * 2, "architectures": 4 * 3 * 2 * 2,
                                         "table1_protocol": 8 * (6 + 3) * 3}
    assert protocol_report.main(["--check"]) == 0, "run python -m benchmarks.protocol_report"
    assert "up to date" in capsys.readouterr().out


def test_table1_protocol_cells_csv_backs_every_cell_with_its_settings_and_tuning_record() -> None:
    """Issue 28: every cell of Table 1 under the protocol has a CSV row with the options it ran
    and, when tuned, the rule's record (`python -m benchmarks.table1_protocol --report` writes it)."""
    out = ROOT / "benchmarks" / "results" / "table1_protocol"
    runs = read_runs(out / "runs.jsonl")
    tuning = ROOT / "benchmarks" / "results" / "tuning"
    for eps, suffix in ((1e-5, ""), (0.1, "_eps0_1")):  # rule 9: MEDIC at the default ε, its own file
        if suffix and not (out / f"cells{suffix}.csv").is_file():
            continue
        with open(out / f"cells{suffix}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        again = f"run python -m benchmarks.table1_protocol{' --eps 0.1' if suffix else ''} --report"
        assert len(rows) == len(table1_protocol.rows_at(runs, eps)), again
        chosen = json.loads((tuning / "selections.json").read_text())
        chosen_medic = json.loads((tuning / f"selections{suffix}.json").read_text())["medic"]
        for r in rows:
            assert json.loads(r["method_options"]), r["cell_id"]
            if ", tuned" in r["variant"]:
                record = json.loads(r["tuning"])
                at_eps = common.eps_of({"method_options": json.loads(r["method_options"])})
                sel = chosen[r["method"]] if r["method"] != "medic" or at_eps == 1e-5 else chosen_medic
                assert record["chosen"] == sel["candidates"][sel["index"]]["label"], r["cell_id"]
                assert record["within_budget"] and record["budget_points"] == 3.0
            else:
                assert r["tuning"] == "", r["cell_id"]


def test_protocol_report_says_complete_only_when_every_grid_is_whole() -> None:
    plan = protocol_report.planned()
    assert protocol_report.progress_label(dict(plan), plan) == "**Complete**"
    short = {**plan, "architectures": 0, "table1_protocol": plan["table1_protocol"] - 1}
    assert protocol_report.progress_label(short, plan) == "**PARTIAL** (not whole yet: architectures, Table 1)"
    assert protocol_report.progress_label({}, plan).count(",") == len(plan) - 1


def test_architectures_table_puts_the_default_beside_plain_cloning_and_checks_the_target_by_hand() -> None:
    """Teacher 98.0 / 100.0; default 96.0 / 4.0 and 94.0 / 2.0 (mean 95.0 / 3.0: drop 3.0 ≤ 3 → met);
    a conv+bn row and a τ = 1 row belong to other series and are left out."""
    t = "sig_resnet18_e30_s1"
    auto = {"method_options": {"layers": "auto", "eps": 0.1}, "model": "resnet18"}
    rows = [_row(t, "medic", 0, 0.96, 0.04, ablation="none", x=None, **auto),
            _row(t, "medic", 1, 0.94, 0.02, ablation="none", x=None, **auto),
            _row(t, "medic", 0, 0.97, 0.80, ablation="tau", x=0.0, **auto),
            _row(t, "medic", 0, 0.10, 0.10, ablation="tau", x=1.0, **auto),
            _row(t, "medic", 0, 0.10, 0.10, ablation="tau", x=0.0, model="resnet18",
                 method_options={"layers": "conv+bn", "eps": 0.1})]
    lines = architectures.table(rows).splitlines()
    assert lines[2:] == ["| resnet18 | sig | 98.0 / 100.0 | 95.0 ± 1.4 / 3.0 ± 1.4 (n=2) | 97.0 / 80.0 (n=1) | "
                         "met (drop 3.0, ASR 3.0) |"]
    rows[1]["clean_acc"] = 0.93  # mean 94.5: drop 3.5
    assert architectures.table(rows).splitlines()[2].endswith("| missed (drop 3.5, ASR 3.0) |")


def test_architectures_cells_are_figure4s_default_and_plain_cells_but_at_the_librarys_eps() -> None:
    """The same cells as Figure 4's library cut but for ε: Figure 4 keeps the 1e-5 its rows ran with
    (their committed ids), the architectures run MEDIC's default ε = 0.1."""
    folder = [str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "sig_wrn16_1_e30_s1")]
    ours, fig4 = architectures.grid(folder, [0, 1]), figure4_tau.grid(folder, [0, 1], taus=[0.0])
    assert len(ours) == len(fig4) == 4 and not {c.cell_id for c in ours} & {c.cell_id for c in fig4}
    for mine, theirs in zip(ours, fig4):
        assert mine.method_options["eps"] == 0.1 and "eps" not in theirs.method_options
        assert {**theirs.method_options, "eps": 0.1} == mine.method_options
    ids = {r["cell_id"] for r in read_runs(common.FIGURE4_OUT / "runs.jsonl")}
    assert {c.cell_id for c in fig4} <= ids  # Figure 4's committed rows are still its cells


def test_architectures_table_keeps_rows_of_another_eps_on_lines_of_their_own() -> None:
    """A row without ε ran at 1e-5 (before ε was pinned): never averaged with the default's rows."""
    t = "badnet_mobilenet_v1_e30_s1"
    rows = [_row(t, "medic", 0, 0.96, 0.01, ablation="none", x=None, model="mobilenet_v1",
                 method_options={"layers": "auto", "eps": 0.1}),
            _row(t, "medic", 0, 0.12, 0.11, ablation="none", x=None, model="mobilenet_v1",
                 method_options={"layers": "auto"})]
    lines = architectures.table(rows).splitlines()
    assert lines[2].startswith("| mobilenet_v1 | badnet | 98.0 / 100.0 | 96.0 / 1.0 (n=1) |")
    assert common.eps_note({"method": "kd", "method_options": {}}) == ""  # ε is MEDIC's: no other method has one
    assert lines[3].startswith("| mobilenet_v1, ε = 1e-05 | badnet | 98.0 / 100.0 | 12.0 / 11.0 (n=1) |")


def test_gpu_architectures_refuses_parts_that_do_not_join_into_gtsrb_and_trains_nothing(tmp_path: Path) -> None:
    """The data travels to a GPU machine in parts; joined, they must be gtsrb32.npz byte for
    byte (the cells' ids are its digest): a wrong or missing part is one line, before any run."""
    fake = tmp_path / "gtsrb32.npz"
    fake.write_bytes(b"x" * 1000)
    env = {**os.environ, "DATA": str(fake), "GPU_DATA": str(tmp_path / "cut"), "GPU_PARTS": str(tmp_path / "parts"),
           "OUT": str(tmp_path / "out")}
    script = str(ROOT / "benchmarks" / "gpu_architectures.sh")
    for mode in ("split", "receive"):
        assert subprocess.run(["bash", script, mode], env=env, capture_output=True, timeout=60).returncode == 0
    assert [p.name for p in (tmp_path / "parts").iterdir()] == ["part-aa"]
    done = subprocess.run(["bash", script, "run"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"the parts in {tmp_path / 'parts'} do not join into gtsrb32.npz: send every part (receive) first"]
    assert not (tmp_path / "out").exists()


def test_gpu_architectures_slim_refuses_uncommitted_work_outside_what_it_keeps(tmp_path: Path) -> None:
    """`slim` commits deletions on a temporary branch: a modified file it would remove is one line
    and nothing moves (same branch, the change still there); with none, it slims and `unslim` undoes it."""
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "docs").mkdir()
    (repo / "benchmarks" / "gpu_architectures.sh").write_text((ROOT / "benchmarks" / "gpu_architectures.sh").read_text())
    (repo / "docs" / "notes.md").write_text("mine\n")
    cache = repo / "benchmarks" / "results" / "gtsrb_teachers"
    for name in ("badnet_wrn16_1_e30_s1", "badnet_mobilenet_v1_e30_s1", "sig_vgg11_bn_e30_s1"):
        (cache / name).mkdir(parents=True)
        (cache / name / "model.safetensors").write_text("weights\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "start"]):
        subprocess.run(git + cmd, check=True, capture_output=True)
    (repo / "docs" / "notes.md").write_text("mine, edited\n")
    script = ["bash", str(repo / "benchmarks" / "gpu_architectures.sh")]
    refused = subprocess.run(script + ["slim"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "uncommitted changes in docs/notes.md would leave the tree with it: commit or stash them, then slim"]
    branch = subprocess.run(git + ["rev-parse", "--abbrev-ref", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert branch == "main" and (repo / "docs" / "notes.md").read_text() == "mine, edited\n"
    subprocess.run(git + ["checkout", "-q", "--", "docs/notes.md"], check=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    assert subprocess.run(script + ["slim"], capture_output=True, env=env, timeout=60).returncode == 0
    assert not (repo / "docs" / "notes.md").exists()
    # WRN-16-1's teachers travel; the other architectures' (too big for one call) stay behind
    assert sorted(p.parent.name for p in cache.glob("*/model.safetensors")) == ["badnet_wrn16_1_e30_s1"]
    assert subprocess.run(script + ["unslim"], capture_output=True, timeout=60).returncode == 0
    assert (repo / "docs" / "notes.md").read_text() == "mine\n"
    assert len(list(cache.glob("*/model.safetensors"))) == 3


_FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for python on the GPU machine: a teacher folder per train_teachers call, a row per grid call
arch=""; attack=""; module="$2"
while [[ $# -gt 0 ]]; do case "$1" in --arch|--archs) arch=$2; shift;; --attacks) attack=$2; shift;; esac; shift; done
case "$module" in
  benchmarks.train_teachers)
    d=benchmarks/results/gtsrb_teachers/${attack}_${arch}_e30_s1; mkdir -p "$d"
    echo '{"architecture": "'$arch'"}' > "$d/card.json"; echo weights > "$d/model.safetensors"
    echo '{"'${attack}_${arch}_e30_s1'": {"architecture": "'$arch'"}}' > benchmarks/results/gtsrb_teachers/manifest.json
    echo "${attack}_${arch}_e30_s1: trained in 1 s" ;;
  benchmarks.architectures)
    mkdir -p benchmarks/results/architectures
    echo '{"model": "'$arch'", "cwd": "'$PWD'"}' >> benchmarks/results/architectures/runs.jsonl
    echo "[1/1] badnet × MEDIC seed 0: clean acc 90.0%, ASR 1.0% (1 s)" ;;
esac
"""


def test_gpu_architectures_run_trains_each_architecture_in_its_own_copy_and_packs_rows_and_cards(
        tmp_path: Path) -> None:
    """`run` on a GPU machine happens once per lease: every architecture's teachers and grid run
    in a copy of their own (one process per results folder), and what comes back holds every
    architecture's rows in one runs.jsonl and the teachers' cards — not their weights."""
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "medic_viz").mkdir()
    (repo / "pyproject.toml").write_text("")
    (repo / "benchmarks" / "__init__.py").write_text("")
    (repo / "benchmarks" / "gpu_architectures.sh").write_text((ROOT / "benchmarks" / "gpu_architectures.sh").read_text())
    data = tmp_path / "gtsrb32.npz"
    data.write_bytes(os.urandom(3000))
    fake = tmp_path / "python"
    fake.write_text(_FAKE_PYTHON)
    fake.chmod(0o755)
    env = {**os.environ, "DATA": str(data), "GPU_DATA": str(tmp_path / "cut"), "GPU_PARTS": str(tmp_path / "parts"),
           "OUT": str(tmp_path / "out"), "PY": str(fake), "PART_SIZE": "1K", "GPU_WORK": str(tmp_path / "work"),
           "GTSRB_SHA256": hashlib.sha256(data.read_bytes()).hexdigest()}
    script = str(repo / "benchmarks" / "gpu_architectures.sh")
    for mode in ("split", "receive"):
        assert subprocess.run(["bash", script, mode], env=env, capture_output=True, timeout=60).returncode == 0
    done = subprocess.run(["bash", script, "run", "mobilenet_v1", "vgg11_bn"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with tarfile.open(tmp_path / "out" / "architectures.tar.gz") as tar:
        names = set(tar.getnames())
        rows = [json.loads(line) for line in
                tar.extractfile("benchmarks/results/architectures/runs.jsonl").read().decode().splitlines()]
    assert sorted(r["model"] for r in rows) == ["mobilenet_v1", "vgg11_bn"]
    assert {r["cwd"] for r in rows} == {str(tmp_path / "work" / f"medic_viz_arch_{a}") for a in ("mobilenet_v1", "vgg11_bn")}
    cards = {n for n in names if "teacher_cards/" in n}
    assert cards == {f"benchmarks/results/architectures/teacher_cards/{t}_{a}_e30_s1.json"
                     for t in ("badnet", "sig", "polygon") for a in ("mobilenet_v1", "vgg11_bn")}
    assert {n for n in names if "teacher_manifest_" in n} == {
        f"benchmarks/results/architectures/teacher_manifest_{a}.json" for a in ("mobilenet_v1", "vgg11_bn")}
    assert not any(n.endswith(".safetensors") or "gtsrb_teachers" in n for n in names)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "architectures.tar.gz", "log_mobilenet_v1.txt", "log_vgg11_bn.txt"]
    assert "vgg11_bn: [1/1] badnet" in done.stdout


def test_train_teachers_trains_a_seed_of_the_role_only(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``--seed 2`` is the fresh evaluation set (rule 6's candidate goes to it); a development
    teacher cannot be trained from an evaluation seed, nor an evaluation one from seed 0."""
    with pytest.raises(SystemExit, match="seed 2 is not a development seed: use one of 0"):
        train_teachers.main(["--role", "development", "--seed", "2"])
    with pytest.raises(SystemExit, match="seed 0 is not an evaluation seed: use one of 1, 2"):
        train_teachers.main(["--role", "evaluation", "--seed", "0"])
    asked: list[str] = []

    class Cache:
        def find(self, recipe):
            asked.append(f"{recipe.name} {recipe.role}")
            return Path(recipe.name)

    monkeypatch.setattr(train_teachers, "TEACHERS", Cache())
    train_teachers.main(["--role", "evaluation", "--seed", "2", "--attacks", "sig", "polygon"])
    train_teachers.main(["--role", "evaluation", "--attacks", "sig"])
    assert asked == ["sig_wrn16_1_e30_s2 evaluation", "polygon_wrn16_1_e30_s2 evaluation",
                     "sig_wrn16_1_e30_s1 evaluation"]
    assert "sig_wrn16_1_e30_s2: cached" in capsys.readouterr().out


def test_calibrated_taus_table_summarises_each_layer_set_by_hand() -> None:
    text = calibrated_taus.table({("sig_wrn16_1_e30_s1", "auto"): {"a": 4.0, "b": 10.0, "c": 6.0}})
    assert text.splitlines()[2] == "| sig_wrn16_1_e30_s1 | auto | 3 | 4.0 | 6.0 | 10.0 | a 4.0, b 10.0, c 6.0 |"


def test_table1_protocol_grid_runs_the_tuning_rules_choices_beside_the_as_is_rows() -> None:
    """Fine-tuning and ANP chosen (lr 0.05; threshold 0.3): their tuned cells carry the choice and
    ", tuned"; ANP also runs at its own fixed settings, KD and Scratch as they are; methods not
    chosen yet have no cell. Everything on the evaluation half of the test set."""
    chosen = {"finetune": Selection("finetune", {"lr": 0.05, "schedule": "cosine"}, 2, 3.0, True, {}),
              "anp": Selection("anp", {"threshold": 0.3}, 3, 3.0, True, {})}
    folder = [str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "sig_wrn16_1_e30_s1")]
    cells = table1_protocol.grid(folder, [0, 1, 2], chosen)
    by_variant: dict[str, list] = {}
    for c in cells:
        by_variant.setdefault(c.variant, []).append(c)
    assert sorted(by_variant) == ["ANP", "ANP, tuned", "Fine-tuning, tuned", "KD", "Scratch"]
    assert all(len(v) == 3 for v in by_variant.values()) and {c.test_part for c in cells} == {"evaluation"}
    assert {c.method_options["lr"] for c in by_variant["Fine-tuning, tuned"]} == {0.05}
    assert {c.method_options["threshold"] for c in by_variant["ANP, tuned"]} == {0.3}
    assert {c.method_options["threshold"] for c in by_variant["ANP"]} == {0.05}
    assert len({c.cell_id for c in cells}) == len(cells)
    assert table1_protocol.grid(folder, [0], {}) == [c for c in cells if c.variant in ("ANP", "KD", "Scratch")
                                                      and c.seed == 0]


def test_table1_protocol_report_names_attacks_by_teacher_and_averages_with_intervals(tmp_path, monkeypatch) -> None:
    """Two seeds of KD on one evaluation teacher (97.0 → 95.0 and 93.0 %; ASR 100 → 1 and 3 %):
    the table's column is KD, the attack "sig", the drops 3.0 and 98.0 points with intervals."""
    out = tmp_path / "out"
    out.mkdir()
    rows = [_row("sig_wrn16_1_e30_s1", "kd", seed, acc, asr, variant="KD", before_clean_acc=0.97, before_asr=1.0,
                 cell_id=f"kd-{seed}", teacher_id="sig-s1")
            for seed, acc, asr in ((0, 0.95, 0.01), (1, 0.93, 0.03))]
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    drawn: list[str] = []
    monkeypatch.setattr(table1_protocol, "OUT", out)
    monkeypatch.setattr(table1_protocol, "export_figure", lambda fig, path: drawn.append(Path(path).name))
    table1_protocol.report()
    text = (out / "table.md").read_text()
    assert "| sig | ASR | 100.0 | 2.0 ± 1.4 |" in text and "| Avg. drop | ASR | - | 98.0 [" in text
    assert "|  | Accuracy | - | 3.0 [" in text and drawn == ["removal_vs_accuracy"]


def test_clean_tracks_sets_tracks_beside_random_images_by_hand() -> None:
    """BadNet, conv+bn, 5 %: at random 96.0 / 1.0, from tracks 90.5 / 2.0 → 5.5 points; a row
    without its counterpart shows "–". The grid's track cells are new cells, its random ones
    the ids a grid without tracks gives."""
    t = "badnet_wrn16_1_e30_s0"
    common = dict(fraction=0.05, n_clean_subset=1960, method_options={"layers": "conv+bn"})
    rows = [_row(t, "medic", 0, 0.96, 0.01, clean_from="images", **common),
            _row(t, "medic", 0, 0.905, 0.02, clean_from="tracks", **common),
            _row(t, "medic", 0, 0.93, 0.03, clean_from="tracks", **{**common, "method_options": {"layers": "auto"}})]
    lines = clean_tracks.table(rows).splitlines()[2:]
    assert lines == ["| badnet_wrn16_1_e30_s0 (98.00 / 100.00) | 5 % (1,960) | auto | – | 93.00 / 3.00 | – |",
                     "| badnet_wrn16_1_e30_s0 (98.00 / 100.00) | 5 % (1,960) | conv+bn | 96.00 / 1.00 | 90.50 / 2.00 | "
                     "5.5 points |"]
    folder = [str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "badnet_wrn16_1_e30_s0")]
    cells = clean_tracks.grid(folder, [0], layer_sets=["auto"])
    assert [c.clean_from for c in cells] == ["tracks", None]
    plain = build_grid(dataset=str(cells[1].dataset), teachers=folder, methods=["medic"], seeds=[0], fraction=0.05,
                       test_part="development", medic={"layers": "auto"})
    assert cells[1].cell_id == plain[0].cell_id != cells[0].cell_id


def test_clean_tracks_keeps_a_share_setting_apart_from_the_library_default() -> None:
    """A row whose share is the library's (1 %, as every grid row records it) stays "conv+bn";
    one at 0.2 % and one at a global τ get their own lines; the grid's default-share cells keep
    their old ids."""
    t = "sig_wrn16_1_e30_s0"
    common = dict(fraction=0.05, n_clean_subset=1960, clean_from="tracks")
    rows = [_row(t, "medic", 0, 0.95, 0.60, method_options={"layers": "conv+bn", "share": 0.01}, **common),
            _row(t, "medic", 0, 0.94, 0.05, method_options={"layers": "conv+bn", "share": 0.002}, **common),
            _row(t, "medic", 0, 0.93, 0.04, method_options={"layers": "conv+bn", "tau": 7.0, "share": None}, **common)]
    lines = clean_tracks.table(rows).splitlines()[2:]
    assert [line.split(" | ")[2] for line in lines] == ["conv+bn", "conv+bn, share 0.2 %", "conv+bn, τ = 7"]
    assert "94.00 / 5.00" in lines[1] and "95.00 / 60.00" in lines[0]
    folder = [str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "sig_wrn16_1_e30_s0")]
    default, = clean_tracks.grid(folder, [0], layer_sets=["conv+bn"], sources=["tracks"])
    three = clean_tracks.grid(folder, [0], layer_sets=["conv+bn"], sources=["tracks"],
                              sharpness=(None, {"share": 0.002}, {"tau": 7.0}))
    assert three[0].cell_id == default.cell_id != three[1].cell_id != three[2].cell_id
    assert three[1].method_options["share"] == 0.002 and three[2].method_options["tau"] == 7.0
    assert "share" not in three[2].method_options or three[2].method_options["share"] is None
    kd, = clean_tracks.grid(folder, [0], layer_sets=["auto"], sources=["tracks"], kd_weight=1.0)
    assert kd.method_options["kd_weight"] == 1.0
    row = _row(t, "medic", 0, 0.95, 0.02, method_options={"layers": "auto", "share": 0.01, "kd_weight": 1.0}, **common)
    assert clean_tracks.table([row]).splitlines()[2].split(" | ")[2] == "auto, KD 1"
    cut, = clean_tracks.grid(folder, [0], layer_sets=["auto"], sources=["tracks"], erase=0.5)
    plain, = clean_tracks.grid(folder, [0], layer_sets=["auto"], sources=["tracks"])
    assert cut.method_options["erase"] == 0.5 and "erase" not in plain.method_options and cut.cell_id != plain.cell_id
    row = _row(t, "medic", 0, 0.95, 0.02, method_options={"layers": "auto", "share": 0.01, "erase": 0.5}, **common)
    assert clean_tracks.table([row]).splitlines()[2].split(" | ")[2] == "auto, cutout 0.5"


def test_scarce_medic_5_percent_cells_are_the_architectures_default_cells_under_another_label() -> None:
    """What lets the scarce-data report read MEDIC's 5 % cells from the architectures grid (the
    library's defaults, ε = 0.1) instead of re-running them: the two cells differ in their labels
    only, and the rows read are marked, for the scarce attacks only, once per teacher and seed,
    at the scarce grid's ε only (Figure 4's default cells ran at 1e-5: not read)."""
    folder = [str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "sig_wrn16_1_e30_s1")]
    (ours,) = scarce_data.grid(folder, [0], fractions=[0.05], methods=["medic"])
    (theirs,) = [c for c in architectures.grid(folder, [0]) if c.ablation == "none"]
    differ = {k for k, v in asdict(ours).items() if asdict(theirs)[k] != v}
    assert differ == set(common.LABEL_FIELDS)
    (at_paper_eps,) = [c for c in figure4_tau.grid(folder, [0], taus=[0.0]) if c.ablation == "none"]
    assert at_paper_eps.method_options != ours.method_options
    rows = common.scarce_rows()
    read = [r for r in rows if r.get("read_from")]
    assert read and all(r["method"] == "medic" and r["fraction"] == 0.05 for r in read)
    assert {r["attack"].split("_", 1)[0] for r in read} <= set(common.SCARCE_ATTACKS)
    assert all(common.eps_of(r) == 0.1 and r["model"] == "wrn16_1" for r in read)
    assert len({(r["attack"], r["seed"]) for r in read}) == len(read)
    own = {(r["attack"], r["seed"]) for r in rows if not r.get("read_from") and r["method"] == "medic"
           and r["fraction"] == 0.05}
    assert own.isdisjoint((r["attack"], r["seed"]) for r in read)


def test_protocol_and_development_parts_pass_workers_to_the_grid(monkeypatch) -> None:
    """``--workers 2`` reaches the runner for both kinds of part; without it, one process."""
    seen: list[int] = []

    class _Result:
        computed, skipped = 0, 0
        errors: list[str] = []

    def fake_run_grid(cells, out, workers=1, log=None):
        seen.append(workers)
        return _Result()

    monkeypatch.setattr(common, "run_grid", fake_run_grid)
    teacher_seeds: list[int | None] = []

    def fake_evaluation_teachers(attacks, arch, seed=None):
        teacher_seeds.append(seed)
        return ["t"], []

    monkeypatch.setattr(common, "evaluation_teachers", fake_evaluation_teachers)
    monkeypatch.setattr(common, "teachers_of_role", lambda attacks, role: (["t"], []))
    parser = common.protocol_parser("doc", ("badnet",))
    for argv in (["--workers", "2"], []):
        common.run_protocol_part(parser.parse_args(argv), lambda teachers: [], Path("unused"), lambda: None)
    dev = common.development_parser("doc", ("badnet",), (0.05,), ("auto",))
    common.run_development_part(dev.parse_args(["--workers", "2"]), dev, lambda teachers: [], Path("unused"), lambda: None)
    assert seen == [2, 1, 2]
    # a part's --teacher-seed (rule 6 C's fresh evaluation teachers) reaches the teacher lookup
    parser.add_argument("--teacher-seed", type=int, default=None)
    common.run_protocol_part(parser.parse_args(["--teacher-seed", "2"]), lambda teachers: [], Path("unused"), lambda: None)
    assert teacher_seeds == [None, None, 2]


def test_eps_development_names_each_cell_by_its_eps_and_lambda_and_tabulates_by_hand() -> None:
    """Every variant's cell maps back to its name (ε, λ at the library's defaults otherwise); a
    floor or another layer set is another series (None). Teacher 98 %, clone 61 %: a 37-point
    drop; live accuracy shown at the epochs the table names, "–" where the curve has none; the
    larger clean-data share first; a 2 % cell is another cell than the 5 % one."""
    folder = [str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "badnet_mobilenet_v1_e30_s0")]
    cells = eps_development.grid(folder, list(eps_development.VARIANTS))
    assert [eps_development.variant_of({"method_options": c.method_options}) for c in cells] == \
        list(eps_development.VARIANTS)
    assert len({c.cell_id for c in cells}) == len(cells)
    assert eps_development.variant_of({"method_options": {"eps": 0.3, "sigma_floor": 0.1}}) is None
    assert eps_development.variant_of({"method_options": {"eps": 0.3, "layers": "conv+bn"}}) is None
    assert eps_development.variant_of({"method_options": {"eps": 0.2}}) is None
    curve = [{"epoch": 5, "clean_acc": 0.2}, {"epoch": 10, "clean_acc": 0.305}, {"epoch": 60, "clean_acc": 0.6}]
    rows = [_row("badnet_mobilenet_v1_e30_s0", "medic", 0, 0.61, 0.034, method_options={"eps": 1.0, "lam": 3.0},
                 curve=curve, seconds=2100.4, fraction=0.02),
            _row("badnet_mobilenet_v1_e30_s0", "medic", 0, 0.4, 0.05, method_options={"lam": 0.0}, seconds=10.0,
                 fraction=0.05)]
    lines = eps_development.table(rows).splitlines()
    teacher = "| badnet_mobilenet_v1_e30_s0"
    assert lines[2:] == [f"{teacher} | 5 % | lam 0 | 0 | – | – | – | – | – | – | 98.0 → 40.0 (58.0) | 5.0 | 10 |",
                         f"{teacher} | 2 % | eps 1 | 0 | 20 | 30 | – | – | – | 60 | 98.0 → 61.0 (37.0) | 3.4 | 2100 |"]
    two, = eps_development.grid(folder, ["eps 0.1"], fraction=0.02)
    assert two.fraction == 0.02 and two.cell_id not in {c.cell_id for c in cells}


def test_rule5_pools_5_and_10_percent_runs_and_decides_only_when_all_32_are_in() -> None:
    """16 runs per ε (2 teachers × 4 seeds × 5 % and 10 %), each with a flat live-ASR curve over
    its last 10 epochs: 0.2 (above 10 %) or 0.05. ε = 1e-5 with 3 fewer runs above → try the
    per-model ε; with 2 fewer → ε stays 0.1; a missing run → undecided; a run whose student
    starts from another seed does not count."""
    def run(teacher: str, seed: int, eps: float, fraction: float, late: float, **options) -> dict:
        curve = [{"epoch": e, "asr": late if e > 50 else 0.0} for e in range(61)]
        opts = {} if eps == 1e-5 else {"eps": eps}
        return _row(teacher, "medic", seed, 0.97, late, fraction=fraction, curve=curve,
                    method_options={**opts, **options})

    def rows(above_new: int, above_old: int) -> list[dict]:
        out = []
        for eps, above in ((0.1, above_new), (1e-5, above_old)):
            slots = [(t, s, f) for f in (0.05, 0.1) for t in eps_development.RULE3_TEACHERS for s in range(4)]
            out += [run(t, s, eps, f, 0.2 if i < above else 0.05) for i, (t, s, f) in enumerate(slots)]
        return out

    verdict = eps_development.rule5_verdict(rows(4, 1))
    assert "ε = 1e-5: 1 of 16 above 10 %; ε = 0.1: 4 of 16 above 10 %" in verdict
    assert verdict.endswith("has 3 fewer (needed: 3) — try rule 3's per-model ε on fresh (seed-2) evaluation teachers.")
    assert eps_development.rule5_verdict(rows(3, 1)).endswith("has 2 fewer (needed: 3) — ε stays 0.1.")
    assert "not decided yet" in eps_development.rule5_verdict(rows(4, 1)[1:])
    other_init = rows(4, 1)
    other_init[0] = run(eps_development.RULE3_TEACHERS[0], 0, 0.1, 0.05, 0.2, student_seed=1)
    assert "not decided yet" in eps_development.rule5_verdict(other_init)
    lines = eps_development.rule3_table(rows(4, 1), 0.1).splitlines()
    assert lines[2].endswith("| 0 of 8 |") and lines[3].endswith("| 0 of 8 |")  # the above-runs are the 5 % slots
    assert lines[3].split(" | ")[1] == "5.0 / 5.0"


def test_eps_development_cells_keep_the_ids_of_the_committed_rows_across_the_default_change() -> None:
    """ε's default moved from 1e-5 to 0.1 after these rows ran: each committed row is still a cell
    of the grid its variant names (a variant at ε = 1e-5 names it; MEDIC drops a pinned ε of
    1e-5 from the options, so the old rows keep their ids), and the library's default cell now is
    the "eps 0.1" cell — the same run, not a new one."""
    rows = [json.loads(line) for line in (ROOT / "benchmarks" / "results" / "eps_development" / "runs.jsonl")
            .read_text().splitlines() if line.strip()]
    assert len(rows) >= 16
    teachers = ROOT / "benchmarks" / "results" / "gtsrb_teachers"
    for row in rows:
        name = eps_development.variant_of(row)
        assert name is not None, row["cell_id"]
        init = row["method_options"].get("student_seed", row["seed"])  # rule 3 A: some rows start from another seed's init
        cell, = eps_development.grid([str(teachers / row["attack"])], [name], seeds=[row["seed"]], fraction=row["fraction"],
                                     student_seeds=[init])
        assert cell.cell_id == row["cell_id"], (name, row["attack"], row["fraction"])
    folder = [str(teachers / "sig_wrn16_1_e30_s0")]
    default, = build_grid(dataset=str(common.GTSRB), teachers=folder, methods=["medic"], seeds=[0], test_part="development")
    assert default.cell_id == eps_development.grid(folder, ["eps 0.1"])[0].cell_id
    assert default.cell_id != eps_development.grid(folder, ["eps 1e-5"])[0].cell_id


def test_eps_development_crosses_student_seeds_with_seeds_and_keeps_the_plain_cells() -> None:
    """Rule 3 A: (seed, student init) pairs; where they agree the cell is the plain one, same id."""
    folder = [str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "sig_wrn16_1_e30_s0")]
    cells = eps_development.grid(folder, ["eps 0.1"], seeds=[0, 1], student_seeds=[0, 1])
    assert [(c.seed, c.method_options["student_seed"]) for c in cells] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    plain = eps_development.grid(folder, ["eps 0.1"], seeds=[0, 1])
    assert [cells[0].cell_id, cells[3].cell_id] == [c.cell_id for c in plain]
    assert len({c.cell_id for c in cells}) == 4
    row = _row("sig_wrn16_1_e30_s0", "medic", 0, 0.97, 0.2, method_options={"eps": 0.1, "student_seed": 1},
               seconds=600.0, fraction=0.05)
    assert "| eps 0.1 | 0 (init 1) |" in eps_development.table([row])


def test_protocol_rows_report_medic_at_the_grids_eps_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The WRN protocol grids ran at ε = 1e-5 (a row naming no ε): their tables keep those rows and
    the other methods', never a MEDIC row of the new default beside them; once the grids move to
    the default (PROTOCOL_MEDIC = {}), the other way round."""
    old = {"method": "medic", "method_options": {"layers": "auto"}}
    new = {"method": "medic", "method_options": {"layers": "auto", "eps": 0.1}}
    kd = {"method": "kd", "method_options": {}}
    assert common.protocol_rows([old, new, kd]) == [old, kd]
    monkeypatch.setattr(common, "PROTOCOL_MEDIC", {})
    assert common.protocol_rows([old, new, kd]) == [new, kd]
    assert common.protocol_rows([old, new, kd], {"eps": 1e-5}) == [old, kd]
    assert common.protocol_rows([old, new, kd], common.SCARCE_MEDIC) == [new, kd]


def test_figure4_at_the_new_eps_runs_the_architectures_cells_and_reads_their_rows(tmp_path, monkeypatch) -> None:
    """``figure4_tau --eps 0.1``: the library cut's cells at ε = 0.1 are the architectures grid's (the
    same ids, so their WRN-16-1 rows count once); its table never takes a 1e-5 row, a row of another
    architecture, attack or τ; and the committed grid at 1e-5 keeps its cells."""
    folder = [str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "sig_wrn16_1_e30_s1")]
    new = figure4_tau.grid(folder, [0, 1], taus=[0.0], eps=0.1)
    assert [c.cell_id for c in new] == [c.cell_id for c in architectures.grid(folder, [0, 1])]
    assert [c.cell_id for c in figure4_tau.grid(folder, [0, 1], taus=[0.0])] == \
        [c.cell_id for c in figure4_tau.grid(folder, [0, 1], taus=[0.0], eps=1e-5)]
    at_new = {"method_options": {"layers": "auto", "eps": 0.1}}
    fig4 = [_row("cleanlabel_wrn16_1_e30_s1", "medic", 0, 0.97, 0.02, ablation="none", x=None, cell_id="c0", **at_new),
            _row("cleanlabel_wrn16_1_e30_s1", "medic", 0, 0.90, 0.90, ablation="none", x=None, cell_id="old",
                 method_options={"layers": "auto"})]  # ε = 1e-5 (no ε recorded)
    arch = [_row("sig_wrn16_1_e30_s1", "medic", 0, 0.96, 0.03, ablation="none", x=None, cell_id="s0",
                 model="wrn16_1", **at_new),
            _row("sig_wrn16_1_e30_s1", "medic", 0, 0.96, 0.03, ablation="none", x=None, cell_id="s0",
                 model="wrn16_1", **at_new),  # a cell once, even if read twice
            _row("polygon_wrn16_1_e30_s1", "medic", 0, 0.5, 0.5, ablation="none", x=None, cell_id="p0",
                 model="wrn16_1", **at_new),
            _row("sig_mobilenet_v1_e30_s1", "medic", 0, 0.5, 0.5, ablation="none", x=None, cell_id="m0",
                 model="mobilenet_v1", **at_new),
            _row("sig_wrn16_1_e30_s1", "medic", 1, 0.5, 0.5, ablation="tau", x=3.0, cell_id="t3",
                 model="wrn16_1", **at_new)]
    for path, rows in ((tmp_path / "fig4", fig4), (tmp_path / "arch", arch)):
        path.mkdir()
        (path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(figure4_tau, "OUT", tmp_path / "fig4")
    monkeypatch.setattr(figure4_tau, "ARCH_OUT", tmp_path / "arch")
    assert [r["cell_id"] for r in figure4_tau.rows_at(0.1)] == ["c0", "s0"]
    assert [r["cell_id"] for r in figure4_tau.rows_at(1e-5)] == ["old"]
    lines = figure4_tau.table(figure4_tau.rows_at(0.1)).splitlines()[2:]
    assert lines == ["| cleanlabel | 98.0 / 100.0 | 97.0 / 2.0 (n=1) |", "| sig | 98.0 / 100.0 | 96.0 / 3.0 (n=1) |"]


def test_figure4_at_the_new_eps_holds_back_the_paper_layers_until_their_series_is_whole(tmp_path, monkeypatch) -> None:
    """Rule 10 (3): at ε = 0.1 the conv+bn series is left out of the table until all its cells have
    run (here 2, patched); its 1e-5 rows never enter the 0.1 table; the library cut is always shown."""
    cut = _row("cleanlabel_wrn16_1_e30_s1", "medic", 0, 0.97, 0.02, ablation="none", x=None, cell_id="cut",
               method_options={"layers": "auto", "eps": 0.1})

    def paper(cell_id: str, eps: float | None) -> dict:
        options = {"layers": "conv+bn", **({"eps": eps} if eps else {})}
        return _row("sig_wrn16_1_e30_s1", "medic", 0, 0.97, 0.5, ablation="tau", x=5.0, cell_id=cell_id,
                    method_options=options)

    monkeypatch.setattr(figure4_tau, "OUT", tmp_path)
    monkeypatch.setattr(figure4_tau, "ARCH_OUT", tmp_path / "no_arch")
    monkeypatch.setattr(figure4_tau, "FIGURE4_CELLS", 2)
    monkeypatch.setattr(protocol_report, "FIGURE4_OUT", tmp_path)
    monkeypatch.setattr(protocol_report, "TABLE1_PROTOCOL_OUT", tmp_path / "no_table1")

    def write(rows: list[dict]) -> None:
        (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    (tmp_path / protocol_report.FIGURE4_NEW_EPS_TABLE).write_text("| cleanlabel | at 0.1 |\n")
    write([cut, paper("old1", None), paper("old2", None), paper("new1", 0.1)])
    assert [r["cell_id"] for r in figure4_tau.rows_at(0.1)] == ["cut"]
    assert {r["cell_id"] for r in figure4_tau.rows_at(1e-5)} == {"old1", "old2"}
    assert f"the paper's layers at ε = 0.1: 1 of {protocol_report.FIGURE4_CELLS} cells have run" in protocol_report.block()
    write([cut, paper("old1", None), paper("new1", 0.1), paper("new2", 0.1)])
    assert [r["cell_id"] for r in figure4_tau.rows_at(0.1)] == ["cut", "new1", "new2"]


def test_results_block_shows_figure4_at_the_new_eps_once_its_table_is_written(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(protocol_report, "FIGURE4_OUT", tmp_path)
    monkeypatch.setattr(protocol_report, "TABLE1_PROTOCOL_OUT", tmp_path / "no_table1")  # no Table 1 cell at 0.1
    (tmp_path / "table.md").write_text("| at 1e-5 |\n")
    before = protocol_report.block()
    assert "their re-run at the new one is open" in before and "at MEDIC's default ε = 0.1" not in before
    (tmp_path / protocol_report.FIGURE4_NEW_EPS_TABLE).write_text("| cleanlabel | at 0.1 |\n")
    after = protocol_report.block()
    assert protocol_report.REDONE in after and "| at 1e-5 |" in after
    assert after.index("| at 1e-5 |") < after.index("at MEDIC's default ε = 0.1") < after.index("| cleanlabel | at 0.1 |")


def test_table1_protocol_at_either_eps_keeps_the_committed_cells_and_tunes_medic_at_its_own(tmp_path) -> None:
    """Rule 9: at the paper's ε the grid is the committed one (every id; before the fix to
    ``tuned_cells`` its 24 MEDIC cells got new ids at ε = 0.1); at ε = 0.1 the other methods' cells
    are the same and MEDIC's run at 0.1 with the share of its own pass at 0.1, never 1e-5's."""
    teachers, missing = common.teachers_of_role(common.TABLE1_ATTACKS, "evaluation")
    assert not missing
    runs = read_runs(ROOT / "benchmarks" / "results" / "table1_protocol" / "runs.jsonl")
    done = {r["cell_id"] for r in runs}
    committed = table1_protocol.grid(teachers, [0, 1, 2], table1_protocol.load_selections())
    assert len(committed) == 216 and {c.cell_id for c in committed} == {r["cell_id"] for r in table1_protocol.rows_at(runs)}
    cells01 = [c for c in table1_protocol.grid(teachers, [0, 1, 2], table1_protocol.load_selections(eps=0.1), eps=0.1)
            if c.method == "medic"]
    ran01 = {r["cell_id"] for r in runs if r["method"] == "medic" and common.eps_of(r) == 0.1}
    assert len(cells01) == 24 and ran01 and ran01 <= {c.cell_id for c in cells01}  # the committed 0.1 rows are its cells
    sel_path = tmp_path / "selections.json"
    sel_path.write_text((ROOT / "benchmarks" / "results" / "tuning" / "selections.json").read_text())
    assert "medic" not in table1_protocol.load_selections(sel_path, eps=0.1)  # no pass at 0.1 yet: left out
    medic01 = Selection.from_dict({**json.loads(sel_path.read_text())["medic"], "options": {"share": 0.02}})
    (tmp_path / "selections_eps0_1.json").write_text(json.dumps({"medic": medic01.as_dict()}))
    chosen = table1_protocol.load_selections(sel_path, eps=0.1)
    assert chosen["medic"].options == {"share": 0.02} and chosen["finetune"] == table1_protocol.load_selections()["finetune"]
    new = table1_protocol.grid(teachers[:1], [0], chosen, eps=0.1)
    medic = [c for c in new if c.method == "medic"]
    assert {c.cell_id for c in new if c.method != "medic"} <= done
    assert len(medic) == 1 and medic[0].cell_id not in done
    assert medic[0].method_options["eps"] == 0.1 and medic[0].method_options["share"] == 0.02
    old = {"method": "medic", "variant": "MEDIC, tuned", "method_options": {"share": 0.005}}
    at01 = {"method": "medic", "variant": "MEDIC, tuned", "method_options": {"share": 0.02, "eps": 0.1}}
    kd = {"method": "kd", "variant": "KD", "method_options": {}}
    assert table1_protocol.rows_at([old, at01, kd]) == [old, kd]
    assert table1_protocol.rows_at([old, at01, kd], 0.1) == [at01, kd, {**old, "variant": "MEDIC, tuned, ε = 1e-05"}]


def test_tuning_pass_names_medic_units_at_another_eps_apart_and_chooses_from_them_alone() -> None:
    folder = str(ROOT / "benchmarks" / "results" / "gtsrb_teachers" / "sig_wrn16_1_e30_s0")
    paper, = [u for u in tune_methods.units(["medic"], [folder]) if u["options"] == [{"share": 0.01}]]
    new, = [u for u in tune_methods.units(["medic"], [folder], 0.1) if u["options"] == [{"share": 0.01}]]
    assert (ROOT / "benchmarks" / "results" / "tuning" / "units" / f"{tune_methods.unit_name(paper)}.json").is_file()
    assert tune_methods.unit_name(new) == tune_methods.unit_name(paper).replace("_s0-", "_s0-eps0_1-")
    ft: dict = {"method": "finetune", "teacher": "t"}
    rows: list[dict] = [{"method": "medic", "teacher": "t"}, {"method": "medic", "teacher": "t", "eps": 0.1}, ft]
    assert tune_methods.rows_at(rows) == [rows[0], ft] and tune_methods.rows_at(rows, 0.1) == [rows[1]]


def test_results_show_table1_at_the_default_eps_only_once_its_medic_cells_are_whole(tmp_path, monkeypatch) -> None:
    """Rule 9 (3): until MEDIC's 24 cells at ε = 0.1 have run, RESULTS keeps the 1e-5 table and says
    how many have; once whole, the ε = 0.1 table (and its figure) replaces it. A 1e-5 MEDIC row or
    another method's row never counts."""
    out = tmp_path / "table1_protocol"
    out.mkdir()
    (out / "table.md").write_text("OLD TABLE")
    (out / "table_eps0_1.md").write_text("NEW TABLE")
    monkeypatch.setattr(protocol_report, "TABLE1_PROTOCOL_OUT", out)

    def write(n_new: int) -> None:
        rows = [{"cell_id": f"m{i}", "method": "medic", "seed": i % 3, "method_options": {"eps": 0.1, "share": 0.005}}
                for i in range(n_new)]
        rows += [{"cell_id": "old", "method": "medic", "seed": 0, "method_options": {"share": 0.005}},
                 {"cell_id": "kd", "method": "kd", "seed": 0}]
        (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    write(0)
    assert "Table 1 ran at ε = 1e-5 too, and its re-run at the new one is open" in protocol_report.block()
    write(23)
    assert protocol_report.table1_medic_at_default_eps() == (23, 24)
    text = protocol_report.block()
    assert "OLD TABLE" in text and "NEW TABLE" not in text and "23 of 24 cells have run" in text
    assert "its MEDIC's re-run at the new one is running (23 of 24 cells" in text
    write(24)
    text = protocol_report.block()
    assert "NEW TABLE" in text and "OLD TABLE" not in text and "removal_vs_accuracy_eps0_1.png" in text
    assert "Table 1's MEDIC ran again at ε = 0.1 (rule 9" in text and "is running" not in text
