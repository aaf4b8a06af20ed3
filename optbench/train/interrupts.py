"""SIGINT/SIGTERM as a request to stop cleanly (Ctrl-C, Slurm preemption).

The first signal lets the current optimizer step finish so the trainer can write a
checkpoint and results marked "interrupted"; a second one exits at once.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        # Signal handlers can only be installed from the main thread (not in joblib workers).
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
