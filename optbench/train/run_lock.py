"""One process per run directory: a lock file that names its owner.

Two trainers writing one run directory interleave metrics.jsonl, TensorBoard files and
checkpoints into something that looks like one run and is not. The lock is an flock(2)
on `<run dir>/run.lock`, which also holds the owner's pid and host for the message: the
kernel releases an flock when its process dies, however it dies, so a lock file left by a
killed run is taken over (with a warning), and a pid reused by an unrelated process cannot
keep a dead run's lock alive.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from types import TracebackType

from optbench.errors import UserError

log = logging.getLogger("optbench")

LOCK_NAME = "run.lock"


def _owner(text: str) -> str:
    try:
        owner = json.loads(text)
        return f"pid {owner['pid']} on {owner['host']}"
    except (ValueError, TypeError, KeyError):
        return "an unknown process"  # it has the lock but has not written its name yet


class RunDirLock:
    """`with RunDirLock(run_dir):` the body owns `run_dir`; a live owner is a UserError.

    Released (the file deleted) on leaving the block, also on an exception.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = self._lock()
        except OSError as err:
            raise UserError(f"cannot lock {self.run_dir}: {err.strerror or err}") from None
        try:
            previous = os.read(fd, 4096).decode(errors="replace")
            if previous:
                log.warning("taking over %s: its owner, %s, is gone", self.path, _owner(previous))
            mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, mine.encode(), 0)
            os.fsync(fd)
        except OSError as err:
            os.close(fd)
            raise UserError(f"cannot lock {self.run_dir}: {err.strerror or err}") from None
        self._fd = fd
        return self

    def _lock(self) -> int:
        """An open, flocked descriptor of the lock file that is still at `self.path`."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(os.read(fd, 4096).decode(errors="replace"))
                os.close(fd)
                raise UserError(
                    f"{self.run_dir} is in use by {owner}: one run directory, one process"
                ) from None
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # its owner deleted it on release after we opened it: open the new one

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still locked: no one can take the old file
        os.close(self._fd)
        self._fd = None
