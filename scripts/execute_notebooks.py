"""Re-execute the tutorial notebooks in place, so that their committed outputs match the code.

Usage::

    python scripts/execute_notebooks.py [notebooks ...] [--fast] [--no-png] [--timeout SECONDS]

With no notebook given, every ``notebooks/*.ipynb`` is executed, in name order. Each notebook
runs top to bottom in a fresh ``python3`` kernel whose working directory is the notebook's
folder and whose environment is this process's, with these settings for committed outputs:

* ``MEDIC_VIZ_PNG=1`` (unless ``--no-png``): figures also carry a static PNG, so the notebook
  reads on GitHub, which draws no JavaScript (needs kaleido and Chromium; without them the
  notebooks warn and keep interactive figures only);
* ``MEDIC_VIZ_FAST`` removed (full settings), or set to 1 with ``--fast`` (a quick trial run,
  not for committing);
* ``PYTHONHASHSEED=0`` unless already set.

Other ``MEDIC_VIZ_*`` variables (``MEDIC_VIZ_EPOCHS``, ``MEDIC_VIZ_DEVICE`` …) pass through
unchanged, and are printed so that a reduced run is visible.

The outputs are made commit-friendly: widget views keep only their ``text/plain`` fallback and
no widget state is stored (a plotly ``FigureWidget``'s state embeds plotly.js, about 5 MB), and
no per-cell execution timestamps are recorded. A notebook whose execution fails is left
unchanged on disk; the script then exits with status 1 after trying the others.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def make_commit_friendly(nb: nbformat.NotebookNode) -> None:
    """Drop widget views and widget state (keep each output's text fallback) and timing metadata."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data and WIDGET_VIEW in data:
                del data[WIDGET_VIEW]
    nb.metadata.pop("widgets", None)


def execute(path: Path, timeout: int) -> float:
    """Execute the notebook at ``path`` in place; returns the seconds it took.

    Raises ``CellExecutionError``, ``CellTimeoutError`` or ``DeadKernelError`` (file untouched)
    if a cell fails, runs past ``timeout`` seconds or kills the kernel.
    """
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=False,
                            record_timing=False, resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    seconds = time.perf_counter() - start
    make_commit_friendly(nb)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to execute (default: notebooks/*.ipynb)")
    parser.add_argument("--fast", action="store_true", help="set MEDIC_VIZ_FAST=1 (quick trial; not for committing)")
    parser.add_argument("--no-png", action="store_true", help="do not embed static PNGs of the figures")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell (default 900)")
    args = parser.parse_args(argv)

    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file() or p.suffix != ".ipynb"]
    if missing:
        parser.error(f"not a notebook file: {', '.join(missing)}")
    if not paths:
        parser.error("no notebooks found")

    if args.fast:
        os.environ["MEDIC_VIZ_FAST"] = "1"
    else:
        os.environ.pop("MEDIC_VIZ_FAST", None)
    if args.no_png:
        os.environ.pop("MEDIC_VIZ_PNG", None)
    else:
        os.environ["MEDIC_VIZ_PNG"] = "1"
    os.environ.setdefault("PYTHONHASHSEED", "0")
    settings = {k: v for k, v in sorted(os.environ.items()) if k.startswith("MEDIC_VIZ_")}
    print("settings:", " ".join(f"{k}={v}" for k, v in settings.items()) or "(none)", flush=True)

    failed = []
    for path in paths:
        try:
            seconds = execute(path, args.timeout)
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
            failed.append(path)
            print(f"{path}: FAILED, left unchanged\n{str(exc)[-3000:]}", file=sys.stderr, flush=True)
            continue
        print(f"{path}: executed in {seconds:.1f} s ({path.stat().st_size / 1e6:.2f} MB)", flush=True)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
