"""What the ``medic-viz`` commands share, in one place the command modules (``cli``,
``cli_compare``, ``cli_import``) import from: the ``--out`` / ``--trust-arch-code`` options, the
paths a command reads, the preparation of a writing command (device, ``--out``, signals) and the
one-line reporting of expected errors."""

from __future__ import annotations

import argparse
import pickle
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from medic_viz.device import resolve_device
from medic_viz.importer import check_trusted_code
from medic_viz.inputs import command_inputs
from medic_viz.interrupts import SignalStop
from medic_viz.outdir import OutputFolder

__all__ = ["MIN_IMAGE_SIZE", "EXPECTED_ERRORS", "add_out", "add_trust_arch_code", "trusted_code",
           "command_inputs_of", "prepare", "one_line", "report_error"]

#: Smallest image side the zoo's models take (five stride-2 stages in VGG-11).
MIN_IMAGE_SIZE = 32


def add_out(p: argparse.ArgumentParser, help_text: str, required: bool = True, default: str | None = None) -> None:
    p.add_argument("--out", required=required, default=default, help=help_text + "; must not exist or be empty")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out folder (only once the run is complete: a run stopped early goes "
                        "beside it, to OUT.stopped); never a folder that is, holds or lies inside an input")


def add_trust_arch_code(p: argparse.ArgumentParser, whose: str) -> None:
    """``--trust-arch-code MODULE[:CALLABLE]``: the code of your own a model card may name."""
    p.add_argument("--trust-arch-code", nargs="?", const=True, default=None, metavar="MODULE[:CALLABLE]",
                   help=f"{whose} architecture is your own code (package.module:callable, from `import`): name that "
                        "code (mynets.wrn:build, or the module mynets.wrn) to import and run it to rebuild the model; "
                        "a card naming any other code is refused. Only for code you trust")


def trusted_code(args: argparse.Namespace) -> str | None:
    """``--trust-arch-code`` checked (:func:`medic_viz.importer.check_trusted_code`): the code the
    user names, or None; a bare ``--trust-arch-code`` is refused in one line."""
    value = getattr(args, "trust_arch_code", None)
    if value is True:
        raise ValueError("--trust-arch-code needs the code you trust: name it, e.g. --trust-arch-code mynets.wrn:build "
                         "(the architecture in the card.json) or --trust-arch-code mynets.wrn (that module)")
    return check_trusted_code(value)


def command_inputs_of(args: argparse.Namespace, *paths: str | Path | None, datasets: Sequence[str | Path | None] = (),
                      code: str | None = None, trigger: str | None = None) -> list[Path]:
    """Paths a command reads, which its --out may not be, hold or lie inside
    (:func:`medic_viz.inputs.command_inputs`): ``paths``, ``--dataset`` and ``datasets``,
    ``--data-root``, the file of ``code`` and the images of ``trigger``."""
    return command_inputs(*paths, datasets=[getattr(args, "dataset", None), *datasets],
                          data_root=getattr(args, "data_root", None), code=code, trigger=trigger)


def prepare(args: argparse.Namespace, *inputs: str | Path | None, **more: Any) -> tuple[SignalStop, OutputFolder]:
    """What every writing command does first: check the device and --out (against ``inputs``
    and ``more``, see :func:`command_inputs_of`), install the signal handlers. Returns ``(signals, out)``
    to be entered as context managers."""
    resolve_device(args.device)
    out = OutputFolder(args.out, overwrite=args.overwrite, inputs=command_inputs_of(args, *inputs, **more))
    return SignalStop(), out


#: What a user's input or environment can cause: one line on stderr, exit status 2.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # bad values, files that are not what they claim (incl. unsafe pickles, mismatched weights)
    TypeError,
    OSError,  # missing, unreadable or unwritable files and folders
    pickle.UnpicklingError,
    FloatingPointError,  # a diverged run (NaN loss, non-finite model)
    ImportError,  # an optional extra (ray, plotly…) not installed
    MemoryError,
)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text += f": {exc.filename}"
    if isinstance(exc, MemoryError):
        text = (f"out of memory{': ' + text if text != 'MemoryError' else ''}; use less data (--max-train, a smaller "
                "--fraction) or a smaller model")
    return text


def report_error(prefix: str, exc: BaseException, *, debug: bool = False) -> int:
    """Print an expected error as one line on stderr (after its traceback with ``debug``);
    returns the exit status 2."""
    if debug:
        traceback.print_exception(exc)
    print(f"{prefix}: error: {one_line(exc)}", file=sys.stderr)
    return 2
