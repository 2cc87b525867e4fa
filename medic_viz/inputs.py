"""Everything a command reads — the paths its ``--out`` may not be, hold, or lie inside
(:func:`medic_viz.outdir.check_output_folder`): model folders and checkpoints, dataset files,
the data root, the code of an architecture of one's own and the image files a trigger spec
names."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from medic_viz.attacks.spec import split_params
from medic_viz.importer import code_location

__all__ = ["command_inputs"]


def _trigger_files(spec: object) -> list[str]:
    """The image files a trigger spec names (``patch:file=…``, ``blend-image:file=…``), read
    from the text alone; none for a spec that does not parse (its own error comes later)."""
    if not isinstance(spec, str) or ":" not in spec:
        return []
    name, _, body = spec.strip().partition(":")
    try:
        params = split_params(name.strip().lower(), body)
    except ValueError:
        return []
    return [params["file"]] if params.get("file", "").strip() else []


def command_inputs(
    *paths: str | Path | None,
    datasets: Iterable[str | Path | None] = (),
    data_root: str | Path | None = None,
    code: str | None = None,
    trigger: str | None = None,
) -> list[Path]:
    """Everything a command reads, which its ``--out`` may not be, hold, or lie inside: ``paths``
    (checkpoint, card, teacher folders), the ``datasets`` that are files or folders (a name
    such as ``signs`` is not), the ``data_root``, the file or package folder of ``code``
    (``package.module:callable`` or a trusted ``package.module``, found without importing it),
    and the image files of a ``trigger`` spec. None entries are skipped."""
    found = [Path(str(p)).expanduser() for p in paths if p is not None and str(p) != ""]
    found += [Path(str(d)).expanduser() for d in datasets if d and Path(str(d)).expanduser().exists()]
    if data_root:
        found.append(Path(str(data_root)).expanduser())
    location = code_location(code) if code else None
    if location is not None:
        found.append(location)
    found += [Path(f.strip()).expanduser() for f in _trigger_files(trigger)]
    return found
