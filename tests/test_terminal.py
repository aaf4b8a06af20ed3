"""What a person sees: a run rendered in a pseudo-terminal and read back by a terminal emulator
(pyte), `optbench optimizers` at 80 columns, and the commands' --help."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import re
import select
import shlex
import struct
import subprocess
import termios
from pathlib import Path

import pyte
import pytest
from conftest import FAST

from optbench.commands.optimizers import COLUMNS, rows
from optbench.hydra_command import preflight
from optbench.optim import OPTIMIZERS
from optbench.tracking.console import shares_terminal

ROOT = Path(__file__).resolve().parents[1]
LOG_PREFIX = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\]\[optbench\]\[INFO\] - ")
BAR = "━"  # rich's bar glyph
# The FAST problem: 512 images in batches of 64, 8 optimizer steps an epoch.
TINY = [o for o in FAST if o != "trainer.progress=false"] + ["trainer.epochs=2"]


def in_terminal(args: list[str], columns: int, rows_: int = 60) -> tuple[int, bytes]:
    """Run `args` with a pseudo-terminal of `columns` x `rows_` as stdin, stdout and stderr;
    its exit code and every byte it wrote."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows_, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    proc = subprocess.Popen(
        args, stdin=follower, stdout=follower, stderr=follower, env=env | {"TERM": "xterm"}
    )
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            proc.kill()
            raise TimeoutError(out.decode(errors="replace")[-2000:])
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # the follower's last holder closed it: the process is done
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    return proc.wait(timeout=60), out


def screen_lines(raw: bytes, columns: int, rows_: int = 60) -> list[str]:
    """What the terminal shows once the command is done: the scrolled-off lines, then the
    screen, without trailing blanks."""
    screen = pyte.HistoryScreen(columns, rows_, history=10_000)
    pyte.ByteStream(screen).feed(raw)
    scrolled = [
        "".join(line[x].data for x in range(columns)).rstrip() for line in screen.history.top
    ]
    lines = scrolled + [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def unwrapped(lines: list[str], columns: int) -> list[str]:
    """The lines as written: a line that fills the terminal's width went on in the next."""
    out: list[str] = []
    for line in lines:
        if out and len(out[-1]) % columns == 0 and out[-1]:
            out[-1] += line
        else:
            out.append(line)
    return out


@pytest.mark.parametrize(("columns", "log_interval"), [(80, 50), (120, 3)])
def test_a_run_in_a_terminal_logs_above_its_bar_and_leaves_no_bar(tmp_path, columns, log_interval):
    run_dir = tmp_path / "a-run-folder-long-enough-to-wrap-on-an-eighty-column-terminal"
    code, raw = in_terminal(
        ["optbench", "train", *TINY, f"trainer.log_interval={log_interval}",
         f"hydra.run.dir={run_dir}"],
        columns,
    )  # fmt: skip
    lines = screen_lines(raw, columns)
    print(f"--- the terminal at {columns} columns after the run ---", *lines, sep="\n")
    assert code == 0
    # The bar was live: drawn at each epoch's end even when log_interval (50) is longer than
    # the epoch (8 steps), so it never sits at 0 while the epoch's line is logged.
    assert BAR.encode() in raw and b" 8/16" in raw
    logged = [line for line in lines if LOG_PREFIX.search(line)]
    assert any("epoch 1/2" in line for line in logged)
    assert any("epoch 2/2" in line for line in logged)
    for line in lines:
        if (found := LOG_PREFIX.search(line)) is not None:
            assert found.start() == 0, f"a log line glued onto another: {line!r}"
        assert BAR not in line, f"a bar left behind: {line!r}"
    whole = unwrapped(lines, columns)
    assert f"run folder: {run_dir}" in whole
    assert any(line.startswith("│ final_val_acc ") for line in lines)


def test_off_a_terminal_a_run_prints_no_bar_and_whole_lines(tmp_path):
    run_dir = tmp_path / "-".join(["a-run-folder-longer-than-eighty-columns"] * 3)
    out = subprocess.run(
        ["optbench", "train", *TINY, f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert BAR not in out.stdout and "\x1b[" not in out.stdout
    lines = out.stdout.splitlines()
    # The log file's format, one record a line, the path whole.
    assert any(LOG_PREFIX.match(line) and f"writing to {run_dir}" in line for line in lines)
    assert f"run folder: {run_dir}" in lines
    logged = (run_dir / "train.log").read_text().splitlines()
    assert [line for line in lines if LOG_PREFIX.match(line)] == logged


def test_a_pool_worker_draws_no_bar():
    # The joblib launcher runs a parallel sweep's jobs in pool workers, on the terminal of the
    # sweep: their bars would overwrite each other's lines.
    assert not shares_terminal()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(shares_terminal)


def test_optimizers_at_80_columns_fit_and_split_no_word():
    out = subprocess.run(
        ["optbench", "optimizers"], capture_output=True, text=True, env=os.environ | {"COLUMNS": "80"}
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    lines = out.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    words = set(out.stdout.split())
    for name, _, state, _, lr, what in rows():
        assert any(line.startswith(f"{name} ") for line in lines)
        for cell in (state, lr, what):
            assert set(cell.split()) <= words, f"{name}: a word of {cell!r} was split"


def test_the_markdown_table_lists_every_optimizer_and_is_the_readmes():
    out = subprocess.run(["optbench", "optimizers", "--markdown"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    header, rule, *body = out.stdout.strip().splitlines()
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body]
    assert [c.strip() for c in header.strip("|").split("|")] == list(COLUMNS)
    assert set(rule.strip("|").split("|")) == {"---"}
    assert all(len(row) == len(COLUMNS) for row in cells)
    names = [row[0] for row in cells]
    assert set(OPTIMIZERS) <= set(names) and len(set(names)) == len(names)
    assert out.stdout.strip() in (ROOT / "README.md").read_text()  # the README's table is this


@pytest.mark.parametrize(
    ("command", "config_name"),
    [("train", "train"), ("lr-find", "lr_find"), ("schedule", "schedule"), ("toy", "toy")],
)
def test_help_starts_with_usage_and_examples_that_compose(
    tmp_path, monkeypatch, command, config_name
):
    out = subprocess.run(
        ["optbench", command, "--help"], capture_output=True, text=True, cwd=tmp_path,
        env=os.environ | {"COLUMNS": "80"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: optbench {command} [OVERRIDE ...]")
    guide, config = out.stdout.split("\n== The composed config")
    print(guide)
    assert max(map(len, guide.splitlines())) <= 80
    assert "dataset:" in config or "function:" in config  # Hydra's dump follows
    documented = re.search(r"documented next to it in (\S+)", guide)
    assert documented and Path(documented.group(1)).is_file()
    examples = guide.split("\nExamples:\n")[1].split("\n\n")[0].splitlines()
    assert 3 <= len(examples) <= 5
    monkeypatch.chdir(tmp_path)  # where the examples' output folders would be
    for example in examples:
        _, name, *args = shlex.split(example, comments=True)
        if name != command:  # e.g. lr-find's pointer to lr-compare
            continue
        # Every job of the example composes (an unknown option or key would not).
        preflight(config_name, [a for a in args if a != "-m"], "-m" in args, lambda cfg: None,
                  new_output=False)  # fmt: skip
    assert not list(tmp_path.iterdir())  # composing the examples wrote nothing
