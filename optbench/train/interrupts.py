"""SIGINT, SIGTERM and SIGUSR2 as a request to stop cleanly (Ctrl-C, preemption, Slurm's
warning before a time limit).

The first signal lets the current optimizer step finish so the trainer can write a
checkpoint and results marked "interrupted"; a second one exits at once. Afterwards the
signal is handed to whatever handler was there before (under submitit, the one that
requeues the job), so a requeued run resumes from the step it stopped at.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

SIGNALS = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR2", None)) if s is not None
)


class StopSignals:
    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + (self.received or 0)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            os._exit(128 + signum)  # the second signal: the user means it
        self.received = signum

    def __enter__(self) -> StopSignals:
        # Signal handlers can only be installed from a main thread; loky's joblib workers run
        # each job in their main thread, thread-pool workers do not get them.
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def forward(self) -> None:
        """Call the handler that was installed before ours for the signal received, if it was
        a Python one (submitit's requeue on USR2); Python's own Ctrl-C handler is left out."""
        previous = self._previous.get(self.received)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.received, None)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
