"""``medic-viz serve`` without a browser: the offer (models by name, seats, threads, runs at once),
the CLI's errors in one line, the pages' widgets (full page, unknown model, no host paths), the
launcher waiting in the run queue, and the workshop's checks. The two-visitor browser test is
tests/test_serve_browser.py."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from medic_viz.attacks.patch import BadNetTrigger
from medic_viz.cli import main
from medic_viz.data.arrays import DatasetSplits, ImageArrays
from medic_viz.metrics import BackdoorMetrics
from medic_viz.pretrained import demo_model_dir
from medic_viz.run_queue import RunQueue
from medic_viz.serve.config import ServeConfig, resolve_models, runs_at_once
from medic_viz.serve.server import WorkshopServer, check_port, page_notebook
from medic_viz.widgets.apps import served as served_module
from medic_viz.widgets.state.launcher import LauncherState
from medic_viz.workshop import DEFAULT_MODEL, WorkshopExercises


# ------------------------------------------------------------------------------------ the offer
def test_models_are_offered_by_name_and_unknown_ones_refused_in_one_line(tmp_path):
    folder = demo_model_dir("polygon")
    models = resolve_models(["badnet", str(folder), str(folder)])
    assert models == {"badnet": {"demo": "badnet"}, "polygon": {"folder": str(folder.resolve())}}
    # none named: Polygon first (the pages open on it: plain cloning keeps its backdoor), BadNet beside it
    assert list(resolve_models([])) == ["polygon", "badnet"] and resolve_models([])["polygon"] == {"demo": "polygon"}
    with pytest.raises(ValueError, match="not a demo model") as err:
        resolve_models(["nosuchmodel"])
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="not a folder"):
        resolve_models([str(tmp_path / "missing" / "model")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no card.json"):
        resolve_models([str(tmp_path / "empty")])


def test_config_seats_threads_and_the_model_a_url_asks_for(tmp_path):
    config = ServeConfig.create(tmp_path / "run", resolve_models(["badnet", "polygon"]), participants=2, device="cpu",
                                threads=None, runs=None)
    assert config.threads >= 1 and config.runs_at_once >= 1
    assert runs_at_once("cpu", threads=1, cpus=8) == 8 and runs_at_once("cpu", threads=3, cpus=8) == 2
    assert runs_at_once("cuda", threads=1, cpus=2) == 4
    loaded = ServeConfig.load(tmp_path / "run")
    assert loaded == config and loaded.queue.slots == config.runs_at_once
    assert loaded.model_name("") == "badnet" and loaded.model_name("model=polygon&x=1") == "polygon"
    with pytest.raises(ValueError, match="unknown model 'etc/passwd'.*offers badnet, polygon"):
        loaded.model_name("model=etc/passwd")
    a, b = loaded.take_seat(), loaded.take_seat()
    assert a is not None and b is not None and loaded.take_seat() is None  # 2 participants
    assert loaded.occupied() == 2
    a.release()
    assert loaded.occupied() == 1
    b.release()
    with pytest.raises(ValueError, match="medic-viz serve"):
        ServeConfig.load(tmp_path / "nothing")


def test_server_binds_localhost_by_default_and_a_room_gets_a_token(tmp_path):
    local = WorkshopServer({"badnet": {"demo": "badnet"}}, port=18001, run_dir=tmp_path / "a")
    assert "--Voila.ip=127.0.0.1" in local.command() and local.token == ""
    assert "--VoilaConfiguration.show_tracebacks=False" in local.command()
    assert "--MappingKernelManager.cull_idle_timeout=1800" in local.command()  # idle kernels are shut down
    assert not any("cull" in c for c in WorkshopServer({"badnet": {"demo": "badnet"}}, port=18003, idle_timeout=0,
                                                       run_dir=tmp_path / "c").command())
    assert (tmp_path / "a" / "config" / "voila.py").read_text().count("xsrf_token") == 1
    room = WorkshopServer({"badnet": {"demo": "badnet"}}, ip="0.0.0.0", port=18002, run_dir=tmp_path / "b")
    assert len(room.token) >= 16 and f"token={room.token}" in room.url("workshop")
    env = room.environment()
    assert env["OMP_NUM_THREADS"] == str(room.config.threads) and env["MEDIC_VIZ_SERVE_DIR"] == str(tmp_path / "b")
    pages = sorted(p.name for p in (tmp_path / "b" / "pages").iterdir())
    assert pages == ["workbench.ipynb", "workshop.ipynb"]  # the only files Voilà can reach
    nb = page_notebook("workbench")
    assert len(nb["cells"]) == 1 and "serve_page('workbench')" in nb["cells"][0]["source"]
    assert json.loads((tmp_path / "b" / "pages" / "workshop.ipynb").read_text())["nbformat"] == 4


# ------------------------------------------------------------------------------------ the CLI
def test_serve_help(capsys):
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--port", "--ip", "--token", "--model", "--device", "--participants", "--runs-at-once",
                   "--idle-timeout"):
        assert option in out


def test_a_port_in_use_is_one_line_and_exit_2(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match=f"port {port} is in use"):
            check_port("127.0.0.1", port)
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"port {port} is in use on 127.0.0.1: choose another with --port" in err


def test_an_unknown_model_or_device_is_one_line_and_exit_2(capsys):
    assert main(["serve", "--model", "nosuchmodel", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--model 'nosuchmodel': not a demo model" in err
    assert main(["serve", "--device", "tpu"]) == 2
    assert "--device 'tpu'" in capsys.readouterr().err
    assert main(["serve", "--participants", "0"]) == 2  # argparse: one usage line


# ------------------------------------------------------------------------------------ the launcher waits
def _tiny_launcher(queue: RunQueue | None) -> LauncherState:

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3))

    def data(n: int, seed: int) -> ImageArrays:
        g = torch.Generator().manual_seed(seed)
        return ImageArrays((torch.rand(n, 3, 8, 8, generator=g) * 255).to(torch.uint8), torch.arange(n) % 3,
                           classes=("a", "b", "c"), name="tiny")

    return LauncherState(net, DatasetSplits(data(96, 0), data(30, 1)), trigger=BadNetTrigger(size=2), target=0,
                         epochs=1, fraction=1.0, device="cpu", batch_size=16, eval_images=None, queue=queue)


def test_a_run_waits_for_a_place_shows_its_position_and_stop_withdraws_it(tmp_path):
    queue = RunQueue.create(tmp_path / "q", slots=1)
    state = _tiny_launcher(queue)
    changes: list = []
    state.add_listener(changes.append)
    other = queue.try_slot()  # another participant's run holds the only place
    run = state.launch()
    deadline = time.monotonic() + 10
    while not any(c.kind == "queue" for c in changes) and time.monotonic() < deadline:
        run.wait(0.05)  # until the queue told the launcher where the run stands
    assert run.waiting and run.queue_position == 1 and queue.waiting() == 1
    assert "waiting: position 1 in the queue" in run.summary()
    assert not run.events  # the curves start when the run starts
    state.stop()
    assert run.wait(10) and run.status == "stopped" and run.result is None
    assert queue.waiting() == 0 and not run.waiting
    other.release()
    second = state.launch()
    assert second.wait(60) and second.status == "done", second.summary()
    assert second.queued_seconds is not None and queue.running() == 0
    assert [c.value for c in changes if c.kind == "queue" and c.run is second] == [0]
    assert [c.value for c in changes if c.kind == "queue" and c.run is run][:1] == [1]


def test_without_a_queue_nothing_changes(tmp_path):
    state = _tiny_launcher(None)
    run = state.launch()
    assert run.wait(60) and run.status == "done" and run.queued_seconds is None and not run.waiting


# ------------------------------------------------------------------------------------ the pages
@pytest.fixture()
def served(tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")

    config = ServeConfig.create(tmp_path / "run", resolve_models(["badnet"]), participants=1, device="cpu",
                                threads=1, runs=1, epochs=1, fast=True)
    monkeypatch.setenv("MEDIC_VIZ_SERVE_DIR", config.run_dir)
    monkeypatch.setattr(served_module, "_SEAT", None)

    threads = torch.get_num_threads()
    yield served_module, config
    torch.set_num_threads(threads)  # a served page sets the kernel's (here: this process's) threads
    if served_module._SEAT is not None:
        served_module._SEAT.release()
    monkeypatch.setattr(served_module, "_SEAT", None)


def test_a_full_server_shows_a_full_page_and_builds_nothing(served):
    module, config = served
    seat = config.take_seat()  # the only seat is taken
    try:
        page = module.serve_page("workbench")
        assert "full" in page.value and "try again" in page.value and "Traceback" not in page.value
    finally:
        seat.release()


def test_an_unknown_model_in_the_url_is_a_message_and_a_menu(served, monkeypatch):
    module, _config = served
    monkeypatch.setenv("QUERY_STRING", "model=../../etc")
    page = module.serve_page("workbench")
    assert isinstance(page, module.ServedPage) and page.app is None
    assert "unknown model" in page.status.value and "offers badnet" in page.status.value
    assert list(page.models.options) == ["badnet"]
    assert page.show("nope") is False and "unknown model" in page.status.value


def test_the_served_workbench_offers_no_host_path(served, monkeypatch):
    module, config = served
    monkeypatch.delenv("QUERY_STRING", raising=False)
    page = module.serve_page("workbench")
    assert page.app is None and "opening badnet" in page.body.children[0].value  # built once the browser drew
    page._build_pending()  # what the first drawn figure (or the fallback timer) does
    deadline = time.monotonic() + 120
    while page.app is None and time.monotonic() < deadline:
        time.sleep(0.2)
    app = page.app
    assert app is not None and app.state.launcher.queue.directory == Path(config.run_dir) / "queue"
    assert not app.host_files and app.opener not in app.children
    assert not app.picker_view.host_files and app.picker_view.model_path.disabled
    with pytest.raises(PermissionError):
        app.open_folder("/")
    assert list(app.launcher_view.device.options) == ["cpu"] and app.launcher_view.device.disabled


def test_workshop_checks_accept_the_reference_answers():

    # the workshop opens on the Polygon model (its trigger sits on the sign, in the centre);
    # BadNet's patch is in the bottom-right corner
    assert DEFAULT_MODEL == "polygon"
    badnet = WorkshopExercises.from_demo("badnet", images=200)
    assert badnet.check_corner("bottom-right").ok is True and badnet.check_corner("centre").ok is False
    ex = WorkshopExercises.from_demo(images=200)
    assert ex.trigger.name == "polygon"
    n, counts = ex.triggered_counts()
    assert ex.check_asr(counts["stop"] / n).ok is True and ex.check_asr("12").ok is False
    assert ex.check_asr("").ok is None and ex.check_asr("abc").ok is False
    assert ex.check_corner("centre").ok is True and ex.check_corner("top-left").ok is False
    assert ex.check_corner("middle").ok is False and ex.check_corner(None).ok is None
    assert ex.check_tau(ex.smallest_concentrating_tau()).ok is True
    best = next(r for r in ex.ranking() if r["layer"].startswith("conv"))
    assert ex.check_channel(best["layer"], str(best["channel"])).ok is True
    assert ex.check_channel("conv1", "x").ok is False
    assert ex.check_removal([]).ok is None and ex.check_plain_cloning(True, []).ok is None


def test_exercise_6_reads_the_participants_own_tau_0_run():


    def run(mode, asr, tau=None):
        return SimpleNamespace(after=BackdoorMetrics(0.99, 3000, asr, 2750), label=mode,
                               params={"tau_mode": mode, **({} if tau is None else {"tau": tau})})

    check = WorkshopExercises.check_plain_cloning
    default, plain, sharp = run("share", 0.017), run("global", 0.80, 0.0), run("global", 0.01, 5.0)
    assert check(False, [default, sharp]).ok is None  # no τ = 0 run yet
    verdict = check(False, [default, plain, sharp])  # plain cloning kept the backdoor: "no" is right
    assert verdict.ok is True and "80.0%" in verdict.message and "the default): clean acc 99.0% of 3000, ASR 1.7%" \
        in verdict.message
    assert check(True, [default, plain]).ok is False
    assert check(True, [run("global", 0.05, 0.0)]).ok is True


def test_the_served_workshop_page_checks_answers_without_code(served):
    module, config = served
    page = module.ServedPage("workshop", config, "badnet")  # built at once (no browser to wait for)
    app = page.app
    assert app is not None and app.launcher.queue is not None
    assert list(app.launcher_view.device.options) == ["cpu"]
    assert "⏳" in app.check(2)
    app.answers[2].value = "bottom-right"
    assert "✅" in app.check(2)
    app.answers[1].value = "not a number"
    assert "❌" in app.check(1) and "Traceback" not in app.verdicts[1].value
