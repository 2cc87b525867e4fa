"""What a ``medic-viz serve`` server offers its participants, written once by the server into its
run directory (``serve.json``) and read by every participant's kernel.

- the models, by name only: a shipped demo model (``badnet`` …) or a model folder the host named
  (shown by its folder name; its path stays on the server);
- the device, torch threads per kernel, runs at once (the :class:`~medic_viz.run_queue.RunQueue`
  in ``<run dir>/queue``) and the number of participants: seats are ``flock``-ed files in
  ``<run dir>/seats`` — a kernel takes one when its page opens and the operating system frees it
  when the kernel ends (tab closed, culled when idle), so the server never counts a participant
  who left;
- the training settings the pages start with (epochs, evaluation interval).

No Jupyter: the command line imports it at module level (like every command's imports).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from medic_viz.importer import check_model_folder
from medic_viz.pretrained import DEMO_MODELS
from medic_viz.resources import available_cpus, threads_per_worker
from medic_viz.run_queue import RunQueue, Slot

__all__ = ["ServeConfig", "resolve_models", "runs_at_once", "PAGES", "CONFIG_FILE", "SERVE_ENV", "DEFAULT_MODELS"]

CONFIG_FILE = "serve.json"
#: Environment variable naming the run directory (set by the server for its kernels).
SERVE_ENV = "MEDIC_VIZ_SERVE_DIR"
#: The pages a server offers: name → what it shows.
PAGES: dict[str, str] = {
    "workbench": "pick an input, look inside it, remove the backdoor and watch it heal",
    "workshop": "the workshop's exercises, answered with buttons and menus",
}
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


#: The models offered when the host names none: the pages open on the first, Polygon (plain
#: cloning keeps its backdoor, MEDIC removes it); BadNet is the easy case beside it.
DEFAULT_MODELS: tuple[str, ...] = ("polygon", "badnet")


def resolve_models(specs: list[str] | tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``{name: {"demo": name} | {"folder": absolute path}}`` for ``--model`` values: a demo
    model's name, or the path of a model folder (named after the folder; a name used twice gets
    ``-2`` …); none: :data:`DEFAULT_MODELS`. ValueError (one line) for anything else."""
    out: dict[str, dict[str, str]] = {}
    for spec in specs or DEFAULT_MODELS:
        text = str(spec).strip()
        if text in DEMO_MODELS:
            name, entry = text, {"demo": text}
        elif os.sep in text or text.startswith(".") or Path(text).expanduser().is_dir():
            folder = check_model_folder(text).resolve()
            name, entry = _NAME.sub("-", folder.name).strip("-") or "model", {"folder": str(folder)}
        else:
            raise ValueError(f"--model {text!r}: not a demo model ({', '.join(DEMO_MODELS)}) and not a model folder; "
                             "give one of those names or the path of a folder from `medic-viz import` or `attack`")
        base, k = name, 2
        while name in out:
            if out[name] == entry:
                break
            name, k = f"{base}-{k}", k + 1
        out[name] = entry
    return out


def runs_at_once(device: str, threads: int, cpus: int | None = None) -> int:
    """How many runs train at once by default: on a GPU 4 (small models share it well); on the
    CPU as many as fit on the cores with ``threads`` each (at least 1)."""
    if device.startswith("cuda"):
        return 4
    cpus = available_cpus() if cpus is None else int(cpus)
    return max(1, cpus // max(1, int(threads)))


@dataclass
class ServeConfig:
    """The server's offer (see the module's docstring); saved as ``<run_dir>/serve.json``."""

    run_dir: str
    models: dict[str, dict[str, str]]
    participants: int = 10
    device: str = "cpu"
    threads: int = 1
    runs_at_once: int = 1
    epochs: int = 20
    eval_every_steps: int = 0
    fast: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, run_dir: str | Path, models: dict[str, dict[str, str]], *, participants: int, device: str,
               threads: int | None = None, runs: int | None = None, epochs: int = 20, eval_every_steps: int = 0,
               fast: bool = False) -> "ServeConfig":
        """Write the offer, the run queue and the seats into ``run_dir`` (made if needed)."""
        if not models:
            raise ValueError("offer at least one model")
        if int(participants) < 1:
            raise ValueError(f"participants must be >= 1, got {participants}")
        threads = threads_per_worker(int(participants)) if threads is None else max(1, int(threads))
        runs = runs_at_once(device, threads) if runs is None else int(runs)
        if runs < 1:
            raise ValueError(f"runs at once must be >= 1, got {runs}")
        d = Path(run_dir)
        d.mkdir(parents=True, exist_ok=True)
        config = cls(run_dir=str(d.resolve()), models=dict(models), participants=int(participants), device=device,
                     threads=threads, runs_at_once=runs, epochs=int(epochs), eval_every_steps=int(eval_every_steps),
                     fast=bool(fast))
        RunQueue.create(d / "queue", slots=runs)
        RunQueue.create(d / "seats", slots=int(participants))
        (d / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=1))
        return config

    @classmethod
    def load(cls, run_dir: str | Path | None = None) -> "ServeConfig":
        """The offer in ``run_dir`` (default: ``$MEDIC_VIZ_SERVE_DIR``)."""
        where = run_dir or os.environ.get(SERVE_ENV)
        if not where:
            raise ValueError(f"no server run directory: start the app with `medic-viz serve` (sets ${SERVE_ENV})")
        try:
            data = json.loads((Path(where) / CONFIG_FILE).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{where}: not a medic-viz serve run directory ({exc})") from None

    @property
    def queue(self) -> RunQueue:
        return RunQueue(Path(self.run_dir) / "queue")

    @property
    def seats(self) -> RunQueue:
        return RunQueue(Path(self.run_dir) / "seats")

    def take_seat(self) -> Slot | None:
        """A participant's seat, held for the life of this process; None when all are taken."""
        return self.seats.try_slot()

    def occupied(self) -> int:
        """Participants connected now (seats held)."""
        return self.seats.running()

    def model_name(self, query: str | None) -> str:
        """The model a page's query string asks for (``?model=name``), else the first offered;
        ValueError naming the offered ones for a name the host did not offer."""
        asked = (parse_qs(query or "").get("model") or [""])[0].strip()
        if not asked:
            return next(iter(self.models))
        if asked not in self.models:
            raise ValueError(f"unknown model {asked[:60]!r}: this workshop offers {', '.join(self.models)}")
        return asked
