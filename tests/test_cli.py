"""The command line end to end (quick settings): demo, attack, defend, and bad input."""

import json

import pytest

import medic_viz.defenses.tuning as tuning
import medic_viz.pipeline as pipeline
from medic_viz.cli import main
from medic_viz.pretrained import demo_model_dir
from medic_viz.viz.report import write_outputs


@pytest.mark.slow
def test_demo_quick_removes_the_backdoor(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "before (trojaned)" in printed and "after (MEDIC)" in printed
    result = json.loads((out / "result.json").read_text())
    assert set(result) >= {"before", "after", "history", "config", "seconds"}
    before, after = result["before"], result["after"]
    assert before["asr"] >= 0.9, "the shipped model must be trojaned to begin with"
    assert after["asr"] <= 0.10, f"backdoor not removed: ASR {after['asr']:.3f}"
    assert before["clean_acc"] - after["clean_acc"] <= 0.05, "clean accuracy dropped more than 5 points"
    assert after["n_clean"] == 3000 and after["n_asr"] > 2500
    epochs = [e for e in result["history"] if e["kind"] == "epoch"]
    assert len(epochs) == result["config"]["epochs"] and epochs[-1]["asr"] is not None
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_attack_then_defend(tmp_path, capsys):
    atk = tmp_path / "atk"
    assert main(["attack", "--attack", "badnet", "--epochs", "1", "--out", str(atk), "--device", "cpu", "--no-progress"]) == 0
    res = json.loads((atk / "result.json").read_text())
    assert set(res) >= {"clean_acc", "asr", "seconds", "peak_memory"} and 0 <= res["asr"] <= 1
    assert res["peak_memory"]["peak_rss_mb"] > 50
    card = json.loads((atk / "card.json").read_text())
    assert card["attack"]["name"] == "badnet" and card["architecture"] == "small_cnn" and card["target_class"] == 0
    dfd = tmp_path / "dfd"
    assert main(["defend", "--method", "medic", "--teacher", str(atk), "--out", str(dfd), "--epochs", "2",
                 "--fraction", "0.02", "--tau", "3", "--device", "cpu", "--no-progress"]) == 0
    out = json.loads((dfd / "result.json").read_text())
    assert out["config"]["tau"] == 3 and out["config"]["epochs"] == 2 and out["config"]["fraction"] == 0.02
    assert out["seconds"] > 0 and out["peak_memory"]["peak_rss_mb"] > 50
    assert len([e for e in out["history"] if e["kind"] == "epoch"]) == 2
    # the default layers leave small_cnn's conv4, bn4 and fc (61 % of it, 12 classes) to the labels: recorded and said
    assert out["config"]["label_only_modules"] == ["conv4", "bn4", "fc"]
    assert "note: 61 % of the parameters (37,772 of 61,468)" in capsys.readouterr().out


def test_defend_rejects_bad_tau_without_running(tmp_path, capsys):
    rc = main(["defend", "--teacher", str(demo_model_dir("badnet")), "--out", str(tmp_path / "x"), "--tau", "-1"])
    assert rc == 2
    assert "tau must be" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_defend_reports_a_missing_teacher(tmp_path, capsys):
    rc = main(["defend", "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "nope" in capsys.readouterr().err


def test_unknown_dataset_is_a_clear_error(tmp_path, capsys):
    rc = main(["attack", "--dataset", "imagenet", "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'imagenet'" in err and "signs" in err


def test_torchvision_dataset_without_root_says_what_to_pass(tmp_path, capsys):
    rc = main(["attack", "--dataset", "cifar10", "--out", str(tmp_path / "x")])
    assert rc == 2 and "--data-root" in capsys.readouterr().err


@pytest.mark.slow
def test_defend_with_a_baseline_method(tmp_path, capsys):
    out = tmp_path / "ft"
    rc = main(["defend", "--method", "finetune", "--teacher", str(demo_model_dir("badnet")), "--out", str(out),
               "--epochs", "1", "--fraction", "0.02", "--device", "cpu", "--no-progress"])
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "finetune" and result["config"]["epochs"] == 1
    assert "after (Fine-tuning)" in capsys.readouterr().out


def test_defend_rejects_an_unknown_method(tmp_path, capsys):
    rc = main(["defend", "--method", "magic", "--teacher", str(demo_model_dir("badnet")), "--out", str(tmp_path / "x")])
    assert rc == 2 and "magic" in capsys.readouterr().err


def test_tau_auto_with_another_method_is_an_error_before_any_search(tmp_path, capsys, monkeypatch):
    def no_search(*args, **kwargs):
        raise AssertionError("the τ search must not run for a method without τ")

    monkeypatch.setattr(tuning, "select_tau", no_search)
    rc = main(["defend", "--method", "finetune", "--teacher", str(demo_model_dir("badnet")), "--out", str(tmp_path / "x"),
               "--tau", "auto", "--epochs", "1", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--tau auto" in err and "--method medic" in err
    assert len(err.strip().splitlines()) == 1  # one line saying what is wrong and what to do
    assert not (tmp_path / "x").exists()


def test_tau_auto_searches_for_medic(tmp_path, capsys, monkeypatch):
    class Chosen:
        tau = 2.5

        def __str__(self):
            return "τ search (stub): 2.5"

    calls = []
    monkeypatch.setattr(tuning, "select_tau", lambda *a, **k: calls.append(k) or Chosen())  # type: ignore[func-returns-value]
    rc = main(["defend", "--method", "MEDIC", "--teacher", str(demo_model_dir("badnet")), "--out", str(tmp_path / "m"),
               "--tau", "auto", "--epochs", "1", "--fraction", "0.01", "--device", "cpu", "--no-progress"])
    assert rc == 0 and len(calls) == 1
    result = json.loads((tmp_path / "m" / "result.json").read_text())
    assert result["method"] == "medic" and result["config"]["tau"] == 2.5
    assert (tmp_path / "m" / "report.html").stat().st_size > 10_000 and (tmp_path / "m" / "model" / "card.json").is_file()


def test_report_writing_lives_in_the_view_layer():
    assert "write_outputs" not in pipeline.__all__ and "save_outcome" in pipeline.__all__
    with pytest.warns(DeprecationWarning, match="medic_viz.viz.report.write_outputs"):
        moved = pipeline.write_outputs  # the old name keeps working
    assert moved is write_outputs


@pytest.mark.slow
def test_defend_cpu_bf16_flag_reaches_the_training(tmp_path):
    out = tmp_path / "bf16"
    rc = main(["defend", "--teacher", str(demo_model_dir("badnet")), "--out", str(out), "--epochs", "1",
               "--fraction", "0.02", "--device", "cpu", "--no-progress", "--cpu-bf16"])
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["cpu_bf16"] is True and result["config"]["channels_last"] == "auto"
    assert 0 <= result["after"]["clean_acc"] <= 1
