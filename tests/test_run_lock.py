"""The run-directory lock, against real second processes: one owner, dead owners replaced."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from optbench.errors import UserError
from optbench.train.run_lock import LOCK_NAME, RunDirLock

HOLDER = textwrap.dedent("""
    import sys
    from optbench.errors import UserError
    from optbench.train.run_lock import RunDirLock

    try:
        with RunDirLock(sys.argv[1]):
            print("locked", flush=True)
            sys.stdin.read()  # hold it until the test closes our stdin
    except UserError as err:
        print("refused", err, flush=True)
""")


def holder(run_dir) -> subprocess.Popen:
    """A second process that takes the lock and says whether it got it."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_live_owner_refuses_a_second_process_with_one_line(tmp_path):
    owner = holder(tmp_path)
    assert owner.stdout.readline() == "locked\n"
    with pytest.raises(UserError) as refused:
        RunDirLock(tmp_path).__enter__()
    message = str(refused.value)
    assert len(message.splitlines()) == 1
    assert f"pid {owner.pid} on {socket.gethostname()}" in message and str(tmp_path) in message
    owner.communicate("")  # the owner leaves its block: released
    with RunDirLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text()) == {
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_second_process_is_refused_while_this_one_holds_it(tmp_path):
    with RunDirLock(tmp_path):
        out, _ = holder(tmp_path).communicate("")
        assert out.startswith("refused") and f"pid {os.getpid()}" in out
    out, _ = holder(tmp_path).communicate("")
    assert out == "locked\n"


def test_the_lock_of_a_killed_owner_is_taken_over_with_a_warning(tmp_path, caplog):
    owner = holder(tmp_path)
    assert owner.stdout.readline() == "locked\n"
    owner.send_signal(signal.SIGKILL)
    assert owner.wait() == -signal.SIGKILL
    assert (tmp_path / LOCK_NAME).exists()  # left behind: nobody released it
    with caplog.at_level(logging.WARNING, logger="optbench"), RunDirLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"pid {owner.pid}" in warning and "gone" in warning


def test_the_lock_is_released_when_the_body_raises(tmp_path):
    with pytest.raises(RuntimeError), RunDirLock(tmp_path):
        raise RuntimeError("the run failed")
    assert not (tmp_path / LOCK_NAME).exists()
    out, _ = holder(tmp_path).communicate("")
    assert out == "locked\n"


def test_of_many_processes_starting_at_once_exactly_one_owns_the_directory(tmp_path):
    racers = [holder(tmp_path / "run") for _ in range(6)]
    first_lines = [p.stdout.readline() for p in racers]  # every racer has tried
    for p in racers:
        p.communicate("")
    assert first_lines.count("locked\n") == 1, first_lines
