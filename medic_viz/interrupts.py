"""SIGINT / SIGTERM for the command line: stop training gracefully, abort anything else.

:class:`SignalStop` installs handlers (main thread only) for its ``with`` block. What a
signal does depends on the :attr:`SignalStop.phase` the command is in:

* ``"train"`` — the first signal sets :attr:`SignalStop.stop_event`, which the training loop
  checks before every batch: training ends within one batch and the command keeps the model
  as it is (the launcher's Stop button does the same); a second signal aborts;
* ``"prepare"`` and ``"write"`` — the signal raises :class:`Interrupted` at once, so nothing
  half-done is kept (output folders are only published whole; see :mod:`medic_viz.outdir`).

:class:`Interrupted` is a ``KeyboardInterrupt`` carrying the signal number; the CLI turns it
into exit status 128 + signal (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

__all__ = ["Interrupted", "SignalStop"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


class Interrupted(KeyboardInterrupt):
    """The process received SIGINT/SIGTERM outside a stoppable phase (or a second time)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class SignalStop:
    """Handlers for SIGINT and SIGTERM while the ``with`` block runs (see the module doc)."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.phase = "prepare"
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum
        if self.phase == "train" and not self.stop_event.is_set():
            self.stop_event.set()
            print(f"\nmedic-viz: {signal.Signals(signum).name} received: stopping training after this batch and "
                  "keeping the model as it is (send it again to abort without saving)", file=sys.stderr, flush=True)
            return
        raise Interrupted(signum)

    def __enter__(self) -> "SignalStop":
        if threading.current_thread() is threading.main_thread():
            for s in _SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    @property
    def stopped(self) -> bool:
        """Whether a signal asked training to stop."""
        return self.stop_event.is_set()
