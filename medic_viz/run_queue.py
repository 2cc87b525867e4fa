"""A run queue shared by separate processes: at most ``slots`` training runs at once, the others
wait their turn in arrival order.

``medic-viz serve`` gives every participant their own Jupyter kernel (a process); each kernel's
Launch asks this queue for a place before it trains, so that one machine is shared fairly
(:mod:`medic_viz.serve`). Everything lives in one directory that the server creates:

- ``queue.json``: ``{"slots": K}``;
- ``slots/slot-<i>.lock`` (i < K): a run holds one with ``fcntl.flock`` while it trains;
- ``tickets/<time>-<pid>-<n>.ticket``: one per waiting run, held with ``flock`` by its process.

Both kinds of lock belong to an open file: when a process ends — normally, killed, or because
its kernel was shut down when the participant closed the tab — the operating system releases
them, so a dead process never keeps a place. A ticket nobody holds is stale and is removed by
the next process that looks. A waiting run's position is ``1 +`` the live tickets older than
its own; only the oldest ticket (position 1) takes a free slot, so runs start in arrival order.

POSIX only (``fcntl``); no Jupyter, no torch.

>>> queue = RunQueue.create(tmp, slots=1)                 # doctest: +SKIP
>>> place = queue.wait(stop_event, on_position=print)     # doctest: +SKIP
>>> try: train() finally: place.release()                 # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

__all__ = ["RunQueue", "Ticket", "Slot", "QUEUE_ENV"]

#: Environment variable naming a queue directory (set by ``medic-viz serve`` for its kernels).
QUEUE_ENV = "MEDIC_VIZ_RUN_QUEUE"
_CONFIG = "queue.json"
_counter = itertools.count()
_counter_lock = threading.Lock()


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class Slot:
    """A place to train, held (with ``flock``) until :meth:`release` or the process ends."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the place back (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> "Slot":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Slot({self.path.name}, {'held' if self.held else 'released'})"


class Ticket:
    """A waiting run's place in line (a locked ticket file); :meth:`position` is 1 for the next run."""

    def __init__(self, queue: "RunQueue", path: Path, fd: int) -> None:
        self.queue = queue
        self.path = path
        self._fd: int | None = fd

    @property
    def live(self) -> bool:
        return self._fd is not None

    def position(self) -> int:
        """1 + the live tickets older than this one (stale ones are removed on the way)."""
        if self._fd is None:
            raise RuntimeError("this ticket was withdrawn")
        return 1 + sum(1 for p in self.queue._live_tickets() if p.name < self.path.name)

    def try_take(self) -> Slot | None:
        """A free slot if this ticket is first in line and one is free (the ticket is then
        withdrawn); else None."""
        if self.position() != 1:
            return None
        slot = self.queue.try_slot()
        if slot is not None:
            self.withdraw()
        return slot

    def withdraw(self) -> None:
        """Leave the line (idempotent): remove the ticket file and unlock it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __repr__(self) -> str:
        return f"Ticket({self.path.name}, {'live' if self.live else 'withdrawn'})"


class RunQueue:
    """The queue in ``directory`` (made by :meth:`create`); ``slots`` runs train at once."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        config = self.directory / _CONFIG
        try:
            slots = json.loads(config.read_text())["slots"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.directory} is not a run queue (no readable {_CONFIG}: {exc}); "
                             "create it with RunQueue.create") from None
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f"{config}: slots must be a whole number >= 1, got {slots!r}")
        self.slots = slots

    @classmethod
    def create(cls, directory: str | os.PathLike, slots: int) -> "RunQueue":
        """Make (or reuse) a queue in ``directory`` with ``slots`` runs at once."""
        if isinstance(slots, bool) or int(slots) != slots or slots < 1:
            raise ValueError(f"slots must be a whole number >= 1, got {slots!r}")
        d = Path(directory)
        (d / "slots").mkdir(parents=True, exist_ok=True)
        (d / "tickets").mkdir(exist_ok=True)
        for i in range(int(slots)):
            (d / "slots" / f"slot-{i}.lock").touch()
        (d / _CONFIG).write_text(json.dumps({"slots": int(slots)}))
        return cls(d)

    @classmethod
    def from_env(cls) -> "RunQueue | None":
        """The queue named by ``$MEDIC_VIZ_RUN_QUEUE``, or None when it is unset."""
        where = os.environ.get(QUEUE_ENV)
        return cls(where) if where else None

    # -- places -------------------------------------------------------------------------------
    def try_slot(self) -> Slot | None:
        """A free slot now (whoever is in line), or None."""
        for i in range(self.slots):
            path = self.directory / "slots" / f"slot-{i}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if _try_lock(fd):
                return Slot(path, fd)
            os.close(fd)
        return None

    def running(self) -> int:
        """How many slots are held now."""
        free = []
        try:
            while (slot := self.try_slot()) is not None:
                free.append(slot)
            return self.slots - len(free)
        finally:
            for slot in free:
                slot.release()

    def enqueue(self) -> Ticket:
        """A new ticket at the end of the line."""
        with _counter_lock:
            n = next(_counter)
        name = f"{time.time_ns():020d}-{os.getpid():08d}-{n:06d}.ticket"
        tickets = self.directory / "tickets"
        tmp = tickets / f".new-{name}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # locked before it has a name others read
        os.rename(tmp, tickets / name)
        return Ticket(self, tickets / name, fd)

    def waiting(self) -> int:
        """How many runs wait in line now."""
        return len(self._live_tickets())

    def _live_tickets(self) -> list[Path]:
        """Ticket files someone holds, oldest first; stale ones (no holder) are removed."""
        live = []
        for path in sorted((self.directory / "tickets").glob("*.ticket")):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # withdrawn meanwhile
            try:
                if _try_lock(fd):  # nobody holds it: its process ended without withdrawing
                    path.unlink(missing_ok=True)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                else:
                    live.append(path)
            finally:
                os.close(fd)
        return live

    def wait(self, stop: threading.Event | None = None, on_position: Callable[[int], None] | None = None,
             poll: float = 0.2, timeout: float | None = None, heartbeat: float = 60.0) -> Slot | None:
        """Wait in line for a slot; returns it (the caller must :meth:`Slot.release` it), or None
        when ``stop`` was set (or ``timeout`` seconds passed) first — the ticket is then withdrawn.
        ``on_position(n)`` is called with the position (1 = next) whenever it changes, and
        ``on_position(0)`` once the slot is taken; and again every ``heartbeat`` seconds while it
        does not change (a page redraws, so its kernel is not culled as idle while it waits)."""
        slot = self.try_slot() if self.waiting() == 0 else None
        if slot is not None:
            if on_position is not None:
                on_position(0)
            return slot
        ticket = self.enqueue()
        deadline = None if timeout is None else time.monotonic() + timeout
        shown, told = None, time.monotonic()
        try:
            while True:
                slot = ticket.try_take()
                if slot is not None:
                    if on_position is not None:
                        on_position(0)
                    return slot
                position = ticket.position()
                if on_position is not None and (position != shown or time.monotonic() - told >= heartbeat):
                    on_position(position)
                    told = time.monotonic()
                shown = position
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                if stop is not None:
                    if stop.wait(poll):
                        return None
                else:
                    time.sleep(poll)
        finally:
            ticket.withdraw()

    def __repr__(self) -> str:
        return f"RunQueue({str(self.directory)!r}, slots={self.slots})"
