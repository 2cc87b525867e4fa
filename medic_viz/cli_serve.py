"""``medic-viz serve``: the workbench and the workshop's exercises as web apps (Voilà), one kernel
per participant, sharing one machine fairly. See README "Run a workshop" and :mod:`medic_viz.serve`."""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
from typing import Any

import torch

from medic_viz.cli_args import whole
from medic_viz.serve.config import resolve_models
from medic_viz.serve.server import LOCALHOST, WorkshopServer, check_port

__all__ = ["add_serve_parser", "cmd_serve"]


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    srv = subparsers.add_parser(
        "serve", help="serve the workbench and the workshop as web apps (Voilà), one kernel per participant",
        description=textwrap.fill("Serve the workbench and the workshop's exercises as web apps without code (Voilà). Every "
        "visitor gets their own kernel and state; Launch waits in a run queue the server owns (at most "
        "--runs-at-once runs train at once), torch threads per kernel are the cores divided by --participants, "
        "a visitor beyond --participants gets a 'full, try later' page, and kernels idle for --idle-timeout "
        "seconds are shut down. Participants can open only the models named here, by name.", 100),
        epilog="examples:  medic-viz serve                      (the Polygon and BadNet demos, http://127.0.0.1:8866)\n"
        "           medic-viz serve --model badnet --model polygon --model ./my_model --participants 20\n"
        "           medic-viz serve --ip 0.0.0.0 --token room42   (a room: participants need the token)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    srv.add_argument("--port", type=whole(1, 65535), default=8866, help="port to listen on (default 8866)")
    srv.add_argument("--ip", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for a room, which "
                     "needs a token)")
    srv.add_argument("--token", default=None,
                     help="the token participants add to the URL (?token=…); with --ip other than localhost one is "
                     "generated and printed when not given")
    srv.add_argument("--model", action="append", default=None, metavar="NAME_OR_FOLDER",
                     help="a model participants may open: a demo model (badnet, blend, sig, polygon, clean) or a "
                     "model folder from `medic-viz import`/`attack` (shown by its folder name); repeat for more "
                     "(default: polygon and badnet; the pages open on the first)")
    srv.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: where the runs train")
    srv.add_argument("--participants", type=whole(1, 1000), default=10,
                     help="most participants at once (default 10); more get a 'full, try later' page")
    srv.add_argument("--runs-at-once", type=whole(1, 1000), default=None,
                     help="runs that train at once (default: on the CPU cores // threads per kernel; on a GPU 4)")
    srv.add_argument("--threads", type=whole(1, 1024), default=None,
                     help="torch threads per kernel (default: cores // participants, at least 1)")
    srv.add_argument("--epochs", type=whole(1, 1000), default=20, help="epochs a run starts with (default 20)")
    srv.add_argument("--eval-every-steps", type=whole(0, 100_000), default=0,
                     help="also evaluate every k steps, for smoother curves (default 0: once per epoch)")
    srv.add_argument("--fast", action="store_true",
                     help="tiny settings for trying the server out (fewer images; exercise 5 not checked)")
    srv.add_argument("--idle-timeout", type=whole(0, 7 * 24 * 3600), default=1800,
                     help="shut down kernels idle this many seconds (default 1800; 0 = never)")
    srv.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return srv


def _check_device(device: str) -> str:
    text = device.strip().lower()
    if text == "cpu":
        return text
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
        return text
    raise ValueError(f"--device {device!r}: give cpu, cuda or cuda:N")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import voila  # noqa: F401
    except ImportError:
        raise ValueError("medic-viz serve needs Voilà: pip install 'medic-viz[serve]' (or pip install voila)") \
            from None
    models = resolve_models(args.model or [])  # none named: the default offer (polygon, badnet)
    device = _check_device(args.device)
    check_port(args.ip, args.port)
    server = WorkshopServer(models, ip=args.ip, port=args.port, token=args.token, participants=args.participants,
                            device=device, threads=args.threads, runs=args.runs_at_once, epochs=args.epochs,
                            eval_every_steps=args.eval_every_steps, fast=args.fast, idle_timeout=args.idle_timeout)
    stopping: dict[str, Any] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["signal"] = signum
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}  # Ctrl-C, kill
    try:
        server.start()
        c = server.config
        where = "this machine only" if args.ip in (LOCALHOST, "localhost", "::1") else f"the network ({args.ip})"
        print(f"medic-viz serve: {', '.join(models)} on {c.device}; up to {c.participants} participants, "
              f"{c.runs_at_once} run(s) at once, {c.threads} torch thread(s) per kernel; listening on {where}")
        print(f"  workbench: {server.url('workbench')}")
        print(f"  workshop:  {server.url('workshop')}")
        if server.token and not args.token:
            print(f"  token (generated): {server.token}")
        print("  Ctrl-C stops the server and every participant's kernel.", flush=True)
        rc = server.wait()
        print(f"medic-viz serve: voila exited with status {rc}", file=sys.stderr)
        return 1 if rc else 0
    except KeyboardInterrupt:
        print("medic-viz serve: stopping (participants' kernels are shut down)", file=sys.stderr)
        return 0
    finally:
        server.stop()
        for sig, handler in old.items():
            signal.signal(sig, handler)
