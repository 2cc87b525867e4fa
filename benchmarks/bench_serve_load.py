"""Load on a ``medic-viz serve`` machine: N participants open the workbench and press Launch at once.

    python -m benchmarks.bench_serve_load [--participants 10] [--epochs 3] [--runs-at-once auto]
        [--device cpu] [--timeout 900] [--label NAME]

Each participant is a real Jupyter kernel (an ipykernel process started with jupyter_client, the
way Voilà starts one per visitor, with the server's environment: its run directory,
``OMP_NUM_THREADS``), running the served page's own cell (``serve_page("workbench")``: takes a
seat, sets torch threads, builds the workbench on the server's run queue) and then pressing Launch
(``app.state.launch()``) — all N within a second. One more visitor arrives when all seats are
taken and must get the "full" page. No browser: 10 Chromium pages would measure Chromium on a
2-core machine, not the server (the browser path is tests/test_serve_browser.py).

Recorded per participant: time to build the page, the run's wait in the queue, its training
time, its status, the kernel's resident memory after the page was built and its peak (VmHWM)
at the end. Written to ``benchmarks/results/serve_load[_LABEL].json`` and ``.md``. Bounded:
``--participants`` ≤ 32, every wait has a deadline (``--timeout`` in all), and every kernel is
killed in ``finally``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue as queue_module
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from medic_viz.resources import available_cpus
from medic_viz.serve.config import SERVE_ENV, ServeConfig, resolve_models

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def _proc_kib(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _run(kc, code: str, timeout: float) -> str:
    """Execute ``code`` in the kernel; its stdout (raises on an error or a timeout)."""
    msg_id = kc.execute(code, store_history=False)
    out, deadline = [], time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"kernel did not finish {code[:60]!r} within {timeout:.0f} s")
        try:
            msg = kc.get_iopub_msg(timeout=min(left, 5))
        except queue_module.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content.get("name") == "stdout":
            out.append(content["text"])
        elif kind == "error":
            raise RuntimeError(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out)


_OPEN = """
import time as _t
_t0 = _t.perf_counter()
from medic_viz.widgets.apps.served import serve_page
page = serve_page('workbench')
if hasattr(page, '_build_pending'):  # no browser here to draw the first plot: build now, as its timer would
    page._build_pending()
    while page.app is None and _t.perf_counter() - _t0 < 600 and 'error' not in page.status.value:
        _t.sleep(0.2)
shown = page.app if getattr(page, 'app', None) is not None else page
print(type(shown).__name__, round(_t.perf_counter() - _t0, 2), 'FULL' if 'workshop is full' in getattr(page, 'value', '') else '')
"""
_LAUNCH = "run = page.app.state.launch(); print(run.status)"
_POLL = """
import json as _j
print(_j.dumps({"status": run.status, "waiting": run.waiting, "position": run.queue_position,
                "queued_s": run.queued_seconds, "seconds": run.seconds, "error": run.error,
                "after": None if run.after is None else [run.after.clean_acc, run.after.asr]}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--runs-at-once", type=int, default=None, help="default: the server's (cores // threads)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole benchmark")
    ap.add_argument("--label", default="")
    args = ap.parse_args(argv)
    if not 1 <= args.participants <= 32:
        ap.error("--participants must be 1..32 (a bounded load test)")
    from jupyter_client import KernelManager

    deadline = time.monotonic() + args.timeout
    run_dir = Path(tempfile.mkdtemp(prefix="medic-viz-serve-load-"))
    config = ServeConfig.create(run_dir, resolve_models(["badnet"]), participants=args.participants,
                                device=args.device, runs=args.runs_at_once, epochs=args.epochs, fast=True)
    env = dict(os.environ, **{SERVE_ENV: str(run_dir), "OMP_NUM_THREADS": str(config.threads),
                              "MKL_NUM_THREADS": str(config.threads), "TQDM_DISABLE": "1",
                              "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)})
    env.pop("MEDIC_VIZ_FAST", None)
    kernels: list = []
    print(f"{args.participants} participants, {config.runs_at_once} run(s) at once, {config.threads} thread(s) per "
          f"kernel, {available_cpus()} core(s), {args.epochs} epoch(s) per run", flush=True)
    try:
        def start(_i):
            km = KernelManager(kernel_name="python3")
            km.start_kernel(env=env, cwd=str(run_dir))
            kc = km.client()
            kc.start_channels()
            kc.wait_for_ready(timeout=120)
            return km, kc

        t0 = time.monotonic()
        with ThreadPoolExecutor(args.participants) as pool:
            kernels = list(pool.map(start, range(args.participants)))
        print(f"kernels up in {time.monotonic() - t0:.1f} s", flush=True)

        def open_page(k):
            return _run(k[1], _OPEN, timeout=max(30, deadline - time.monotonic())).split(None, 2)

        t0 = time.monotonic()
        with ThreadPoolExecutor(args.participants) as pool:
            opened = list(pool.map(open_page, kernels))
        pages_s = time.monotonic() - t0
        print(f"pages built in {pages_s:.1f} s: {[o[0] for o in opened]}", flush=True)
        rss = [_proc_kib(km.provisioner.process.pid, "VmRSS") for km, _ in kernels]
        # One more visitor: every seat is taken.
        extra = start(None)
        kernels.append(extra)
        full = _run(extra[1], _OPEN, timeout=60)
        full_ok = full.startswith("HTML") and "FULL" in full
        print(f"participant {args.participants + 1}: {full.strip()[:120]}", flush=True)
        # Everyone presses Launch at once.
        t_launch = time.monotonic()
        for _km, kc in kernels[:-1]:
            kc.execute(_LAUNCH, store_history=False)
        polls: list[dict] = []
        while True:
            polls = [json.loads(_run(kc, _POLL, timeout=60).strip().splitlines()[-1]) for _km, kc in kernels[:-1]]
            waiting = sum(p["waiting"] for p in polls)
            running = sum(p["status"] == "running" and not p["waiting"] for p in polls)
            print(f"t={time.monotonic() - t_launch:6.1f} s: {running} training, {waiting} waiting, "
                  f"{sum(p['status'] != 'running' for p in polls)} ended; in the queue dir: "
                  f"{config.queue.running()} slot(s) held, {config.queue.waiting()} ticket(s)", flush=True)
            if all(p["status"] != "running" for p in polls) or time.monotonic() > deadline:
                break
            time.sleep(3)
        total_s = time.monotonic() - t_launch
        peak = [_proc_kib(km.provisioner.process.pid, "VmHWM") for km, _ in kernels[:-1]]
        rows = []
        for i, (o, p, r, h) in enumerate(zip(opened, polls, rss, peak), start=1):
            rows.append({"participant": i, "page": o[0], "page_s": float(o[1]), "status": p["status"],
                         "queued_s": p["queued_s"], "train_s": p["seconds"], "error": p["error"],
                         "rss_mib_after_page": r, "peak_rss_mib": h, "after": p["after"]})
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        for km, kc in kernels:
            try:
                kc.stop_channels()
                km.shutdown_kernel(now=True)
            except Exception:  # noqa: BLE001 - kill what is left
                try:
                    km.provisioner.process.kill()
                except Exception:  # noqa: BLE001
                    pass
    waits = [r["queued_s"] for r in rows if r["queued_s"] is not None]
    summary = {
        "participants": args.participants, "runs_at_once": config.runs_at_once, "threads_per_kernel": config.threads,
        "cores": available_cpus(), "epochs": args.epochs, "device": args.device,
        "pages_built_s": round(pages_s, 1), "all_runs_finished": all(r["status"] == "done" for r in rows),
        "runs_done": sum(r["status"] == "done" for r in rows), "extra_visitor_got_full_page": full_ok,
        "queue_wait_s": {"min": min(waits), "median": statistics.median(waits), "max": max(waits)} if waits else None,
        "train_s_median": statistics.median(r["train_s"] for r in rows),
        "rss_mib_after_page_median": statistics.median(r["rss_mib_after_page"] or 0 for r in rows),
        "peak_rss_mib_max": max(r["peak_rss_mib"] or 0 for r in rows),
        "launch_to_last_run_end_s": round(total_s, 1),
        "command": "python -m benchmarks.bench_serve_load " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    RESULTS.mkdir(exist_ok=True)
    name = "serve_load" + (f"_{args.label}" if args.label else "")
    (RESULTS / f"{name}.json").write_text(json.dumps({"summary": summary, "participants": rows}, indent=1))
    lines = [f"`{summary['command'].strip()}` — {args.participants} participants, {config.runs_at_once} run(s) at "
             f"once, {config.threads} torch thread(s) per kernel, {summary['cores']} cores, {args.epochs} epochs per "
             "run (fast settings)", "",
             "| participant | page built (s) | queue wait (s) | training (s) | status | RSS after page (MiB) | "
             "peak RSS (MiB) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['participant']} | {row['page_s']:.1f} | {row['queued_s'] or 0:.1f} | {row['train_s']:.1f} | "
                     f"{row['status']} | {row['rss_mib_after_page'] or 0:.0f} | {row['peak_rss_mib'] or 0:.0f} |")
    lines += ["", f"All runs finished: **{summary['all_runs_finished']}** ({summary['runs_done']}/{len(rows)} done); "
              f"visitor {args.participants + 1} got the full page: **{full_ok}**; from the simultaneous Launch to the "
              f"last run's end {summary['launch_to_last_run_end_s']} s."]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if summary["all_runs_finished"] and full_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
