"""Stopping on SIGINT (Ctrl-C) and SIGTERM (SLURM preemption, ``scancel``, ``docker stop``).

While a training iteration runs, a signal only requests a stop: the iteration finishes, a checkpoint is saved
and training stops (see :class:`~medrlvr.training.checkpointing.CheckpointCallback`). Anywhere else (loading,
the evaluations before and after training) and on a second signal it raises :class:`Stopped` at once. Either
way the MLflow run ends KILLED with the signal named and the process exits with ``128 + signal number``
(130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """Training stopped on a signal. A ``BaseException`` like ``KeyboardInterrupt``, so ``except Exception``
    blocks (Lightning's included) let it through."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


class StopSignals:
    """Handler of SIGINT and SIGTERM: :attr:`requested` holds the first signal received; while
    :attr:`deferring`, that signal waits for the end of the iteration, otherwise :class:`Stopped` is raised."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self.deferring = False

    def handle(self, signum: int, frame: Any = None) -> None:
        name = signal.Signals(signum).name
        if self.deferring and self.requested is None:
            self.requested = signum
            log.warning("received %s: stopping after this iteration and saving a checkpoint", name)
            return
        self.requested = self.requested or signum
        raise Stopped(signum, f"received {name}")

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Route SIGINT and SIGTERM to :meth:`handle` for the duration of the block."""
        previous = {s: signal.signal(s, self.handle) for s in HANDLED}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within the block (training iterations), a first signal only requests a stop."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
