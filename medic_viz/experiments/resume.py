"""Resumable experiments outside a grid: run these items, keep one JSON file per finished item,
skip the ones already done (a rerun after an interruption does only what is missing).

:class:`RowFolder` is the store (``FOLDER/<name>.json``, each written whole by a rename, so a
file present is a finished row); :func:`run_resumable` is the loop. The grid runner
(:mod:`medic_viz.experiments.runner`) resumes the same way with the rows of a ``runs.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from medic_viz.outdir import replace_file

__all__ = ["RowFolder", "run_resumable"]

T = TypeVar("T")


class RowFolder:
    """Finished rows of an experiment, one ``<name>.json`` per row under ``folder``."""

    def __init__(self, folder: str | Path, *, indent: int | None = 1) -> None:
        self.folder = Path(folder)
        self.indent = indent

    def path(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"a row name is a plain file name, got {name!r}")
        return self.folder / f"{name}.json"

    def done(self, name: str) -> bool:
        return self.path(name).is_file()

    def read(self, name: str) -> dict:
        return json.loads(self.path(name).read_text())

    def rows(self) -> list[dict]:
        """Every finished row, by file name."""
        return [json.loads(p.read_text()) for p in sorted(self.folder.glob("*.json"))]

    def write(self, name: str, row: dict) -> Path:
        """Store ``row`` whole (a temporary file renamed into place)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(row, indent=self.indent)
        return replace_file(self.path(name), lambda tmp: tmp.write_text(text))


def run_resumable(items: Iterable[T], store: RowFolder, name: Callable[[T], str], compute: Callable[[T], dict], *,
                  log: Callable[[str], None] | None = print) -> list[dict]:
    """For each item whose row ``name(item)`` is not in ``store`` yet: ``compute(item)`` and
    store it as soon as it is done. Returns the rows computed now."""
    computed: list[dict[str, Any]] = []
    for item in items:
        n = name(item)
        if store.done(n):
            if log:
                log(f"done before: {store.path(n).name}")
            continue
        row = compute(item)
        store.write(n, row)
        computed.append(row)
    return computed
