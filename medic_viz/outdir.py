"""Output folders that are either the whole result or absent.

Every command that writes (``attack``, ``defend``, ``demo``) goes through
:class:`OutputFolder`:

1. *before any work*, :func:`check_output_folder` refuses an ``--out`` that is a file, a
   symbolic link, an existing folder with files in it (unless ``overwrite``), or that is,
   holds or lies inside one of the command's inputs (:func:`medic_viz.inputs.command_inputs`: the teacher
   being repaired, the checkpoint, the dataset, the code of the architecture …), with or
   without ``overwrite``;
2. a temporary folder is created beside the target (``.NAME.partial-XXXX``, made by this
   module, so nothing written into it can follow a link planted by someone else); its
   creation is also the check that the target's parent is writable;
3. the command writes everything into :attr:`OutputFolder.path`;
4. :meth:`OutputFolder.publish` renames it into place (an existing folder replaced with
   ``overwrite`` is first renamed aside, then deleted). A run interrupted at any moment
   leaves the target as it was: complete from an earlier run, or absent.

``compare`` adds to its folder over several runs (resume), so it uses
:func:`prepare_resumable_folder` instead: the same refusals, except that a folder already
holding a previous ``compare`` run is accepted; every file in it is written by a rename or
appended line by line.

A run stopped early (SIGINT/SIGTERM during training, like the launcher's Stop) is published
with a ``STOPPED`` file saying so, beside ``result.json``'s ``"stopped": true``. It never
replaces a folder that holds files (``overwrite`` replaces only once the run is complete): it
then goes beside it, to ``<out>.stopped`` (or ``<out>.stopped-2``, … — never a name in use).

:func:`pause_for_tests` is a test hook: with ``MEDIC_VIZ_TEST_PAUSE=<point>:<seconds>`` in
the environment, the named point (``train``, ``write``) announces itself on stderr and
sleeps, so a test can signal the process at exactly that moment.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

from medic_viz.deprecation import moved_names

__all__ = [
    "OutputFolderError",
    "STOPPED_MARKER",
    "check_output_folder",
    "OutputFolder",
    "prepare_resumable_folder",
    "replace_file",
    "pause_for_tests",
]

#: Name of the file that marks a published folder as holding a run stopped before its end.
STOPPED_MARKER = "STOPPED"
_PARTIAL = ".partial-"
_OLD = ".replaced-"
_STOPPED_SUFFIX = ".stopped"


class OutputFolderError(ValueError):
    """``--out`` cannot be used: it exists and is not an empty folder, is a link, or is an input."""


def _describe(path: Path) -> str:
    entries = sorted(p.name for p in path.iterdir())
    shown = ", ".join(entries[:3]) + (", …" if len(entries) > 3 else "")
    return f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}: {shown}"


def _contains(outer: Path, inner: Path) -> bool:
    return outer == inner or outer in inner.parents


def check_output_folder(
    target: str | Path,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
) -> Path:
    """Refuse an unusable output folder before any work is done; returns ``target`` as a Path.

    Raises :class:`OutputFolderError` when ``target`` is a symbolic link, a file, an existing
    folder holding files (unless ``overwrite``), or is, contains or lies inside one of
    ``inputs`` (paths the command reads, :func:`medic_viz.inputs.command_inputs`; None entries are skipped),
    with or without ``overwrite``.
    """
    target = Path(target).expanduser()
    if str(target).strip() in ("", "."):
        raise OutputFolderError("--out must name a folder for the results, not the current directory")
    if target.is_symlink():
        raise OutputFolderError(
            f"--out {target} is a symbolic link; medic-viz never writes through links: give the real folder path"
        )
    if target.exists() and not target.is_dir():
        raise OutputFolderError(f"--out {target} exists and is not a folder; choose a folder path for the results")
    real = Path(os.path.realpath(target))
    for item in inputs:
        if item is None or str(item) == "":
            continue
        source = Path(os.path.realpath(Path(item).expanduser()))
        if _contains(real, source) or _contains(source, real):
            what = "is" if real == source else "contains" if _contains(real, source) else "lies inside"
            raise OutputFolderError(
                f"--out {target} {what} the input {item}; the results would replace or mix with what is being "
                "read: choose another folder"
            )
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputFolderError(
            f"--out {target} already holds files ({_describe(target)}); choose a new folder, or pass "
            "--overwrite to replace it"
        )
    return target


class OutputFolder:
    """A command's output folder, written into a temporary folder and renamed into place.

    Use as a context manager: the temporary folder is created on entry (after the checks of
    :func:`check_output_folder`) and removed on exit unless :meth:`publish` was called::

        with OutputFolder(args.out, overwrite=args.overwrite, inputs=[args.teacher]) as out:
            ...                                    # long work
            (out.path / "result.json").write_text(...)
            out.publish()
    """

    def __init__(self, target: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()) -> None:
        self.overwrite = bool(overwrite)
        self.inputs = list(inputs)
        self.target = check_output_folder(target, overwrite=self.overwrite, inputs=self.inputs)
        self._tmp: Path | None = None
        self.published = False

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> Path:
        """Create the temporary folder beside the target (this is also the writability check)."""
        if self._tmp is None:
            parent = self.target.parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
                self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}{_PARTIAL}", dir=parent))
            except OSError as exc:
                raise OutputFolderError(
                    f"--out {self.target}: cannot create a folder in {parent} ({exc.strerror or exc}); "
                    "choose a folder you can write to"
                ) from None
        return self._tmp

    def __enter__(self) -> "OutputFolder":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    @property
    def path(self) -> Path:
        """The temporary folder to write into (created on first use)."""
        return self.open()

    def discard(self) -> None:
        """Delete the temporary folder (and what was written into it) unless published."""
        if self._tmp is not None and not self.published:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _publish_beside(self, tmp: Path) -> Path:
        """Rename ``tmp`` to the first free ``<target>.stopped[-N]`` beside the target: the name
        is claimed by creating it (``mkdir`` fails on any existing entry, link included), so
        nothing is ever replaced but that empty folder of ours."""
        for n in range(1, 10_000):
            place = self.target.with_name(f"{self.target.name}{_STOPPED_SUFFIX}{'' if n == 1 else f'-{n}'}")
            try:
                place.mkdir()
            except FileExistsError:
                continue
            os.replace(tmp, place)
            return place
        raise OutputFolderError(f"--out {self.target}: no free name for the stopped run beside it; remove old "
                                f"{self.target.name}{_STOPPED_SUFFIX}-N folders")

    def publish(self, *, stopped: bool = False, note: str = "") -> Path:
        """Rename the finished temporary folder to the target; returns where it went.

        ``stopped``: the run ended early; a :data:`STOPPED_MARKER` file (with ``note``) says so,
        and a target that holds files is never replaced by it: the stopped run goes beside it
        (``<target>.stopped``, ``<target>.stopped-2`` …; never a name in use). The checks are
        repeated first (the target may have appeared while the command ran).
        """
        tmp = self.open()
        if stopped:
            (tmp / STOPPED_MARKER).write_text(
                (note or "this run was stopped before its end; the model is kept as it was at the stop") + "\n"
            )
            check_output_folder(self.target, overwrite=True, inputs=self.inputs)
            if self.target.is_dir() and any(self.target.iterdir()):
                place = self._publish_beside(tmp)
                self.published = True
                self._tmp = None
                return place
        check_output_folder(self.target, overwrite=self.overwrite, inputs=self.inputs)
        old: Path | None = None
        if self.target.is_dir() and any(self.target.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}{_OLD}", dir=self.target.parent))
            os.replace(self.target, old / "previous")  # a rename: the old folder stays whole until deleted
        os.replace(tmp, self.target)  # an empty target folder is replaced atomically
        self.published = True
        self._tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # rmtree removes links, never follows them
        return self.target


def prepare_resumable_folder(
    target: str | Path,
    *,
    own: Iterable[str],
    inputs: Iterable[str | Path | None] = (),
    what: str = "a previous run",
) -> Path:
    """Check and create the folder of a resumable command before any work (``compare``).

    Refused with :class:`OutputFolderError`: a symbolic link, a file, a folder that is or holds
    one of ``inputs``, a non-empty folder holding none of the names in ``own`` (so not
    ``what``), a folder that cannot be created or written to. Returns ``target``."""
    own = set(own)
    check_output_folder(target, overwrite=True, inputs=inputs)
    target = Path(target).expanduser()
    if target.is_dir():
        names = {p.name for p in target.iterdir()}
        if names and not names & own:
            shown = ", ".join(sorted(names)[:3]) + (", …" if len(names) > 3 else "")
            raise OutputFolderError(
                f"--out {target} already holds files that are not {what} ({shown}); choose a new folder"
            )
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputFolderError(
            f"--out {target}: cannot write there ({exc.strerror or exc}); choose a folder you can write to"
        ) from None
    return target


def replace_file(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write a file whole: ``write(tmp)`` fills a temporary file created beside ``path`` (with
    ``O_EXCL`` and an unpredictable name, so no planted link is followed), which then gets the
    usual file mode and is renamed over ``path`` (a rename replaces a link at ``path`` instead
    of writing through it). On any error the temporary file is removed and ``path`` is as it was."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp (and safetensors) create 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def pause_for_tests(point: str) -> None:
    """Sleep at ``point`` when ``MEDIC_VIZ_TEST_PAUSE=<point>:<seconds>`` is set (a test hook)."""
    spec = os.environ.get("MEDIC_VIZ_TEST_PAUSE", "")
    name, _, seconds = spec.partition(":")
    if name != point:
        return
    print(f"medic-viz: test pause at {point}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + float(seconds or 30)
    while time.monotonic() < deadline:
        time.sleep(0.05)


#: ``command_inputs`` moved to :mod:`medic_viz.inputs` (it reads trigger specs and code names).
__getattr__ = moved_names(__name__)
