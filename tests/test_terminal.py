"""What a person sees: a run rendered in a pseudo-terminal and read back by a terminal emulator
(pyte), `optbench optimizers` and the schedule summary at 80 columns, folders wider than the
terminal, search workers without bars, and the commands' --help."""

from __future__ import annotations

import csv
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
from omegaconf import OmegaConf

from optbench.commands.optimizers import COLUMNS, rows
from optbench.commands.search import prepare, worker_command
from optbench.hydra_command import preflight
from optbench.optim import OPTIMIZERS
from optbench.schedules.registry import SCHEDULERS
from optbench.studies.search_trial import compose_trial
from optbench.tracking.console import shares_terminal
from optbench.train.resume import check_resumable

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


# A folder wider than 80 columns, with brackets that rich would take for markup.
LONG_FOLDER = "a-folder-long-enough-to-wrap-on-an-eighty-column-terminal-[adam,lr=0.1]"


def whole_values_of(csv_path: Path, name: str, steps_per_epoch: int) -> list[str]:
    """What the schedule summary shows of one schedule, read back from its CSV."""
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    lrs = [float(row[next(k for k in table[0] if k.startswith("lr/"))]) for row in table]
    peak = lrs.index(max(lrs))
    values = [name, SCHEDULERS[name].oracle, f"{len(lrs)} ({steps_per_epoch}/epoch)",
              f"{lrs[peak]:.3g} at step {peak}", f"{lrs[-1]:.3g}"]  # fmt: skip
    if momentum := [k for k in table[0] if k.startswith("momentum/")]:
        momenta = [float(row[momentum[0]]) for row in table]
        values.append(f"{min(momenta):.3g}-{max(momenta):.3g}")
    return values


@pytest.mark.parametrize("columns", [80, 120])
def test_the_schedule_summary_splits_no_value(tmp_path, columns):
    run_dir = tmp_path / LONG_FOLDER
    code, raw = in_terminal(
        ["optbench", "schedule", *FAST, "scheduler=onecycle",
         "schedule.compare=[cosine,warmup_cosine]", f"hydra.run.dir='{run_dir}'"],
        columns,
    )  # fmt: skip
    lines = screen_lines(raw, columns)
    print(f"--- the terminal at {columns} columns ---", *lines, sep="\n")
    assert code == 0
    shown = [
        (run_dir / "schedule.csv", "onecycle"),
        (run_dir / "schedule-cosine.csv", "cosine"),
        (run_dir / "schedule-warmup_cosine.csv", "warmup_cosine"),
    ]
    values = [v for path, name in shown for v in whole_values_of(path, name, 8)]
    assert "0.85-0.95" in values  # onecycle's momentum, the widest row
    for value in values:
        assert any(f" {value} " in line for line in lines), f"{value!r} was split"
    png, csv_ = run_dir / "schedule.png", run_dir / "schedule.csv"
    assert f"wrote {png} and {csv_}" in unwrapped(lines, columns)


@pytest.mark.parametrize(
    ("command", "line"),
    [
        (["toy", "steps=20", "optimizers=[sgd,adam]"], "run folder: {}"),
        (
            ["lr-find", *FAST, "lr_find.num_iter=20"],
            "wrote {}/lr_find.png, lr_find.csv, lr_find.json",
        ),
    ],
)
def test_a_folder_wider_than_the_terminal_is_printed_whole_on_its_own_line(tmp_path, command, line):
    run_dir = tmp_path / LONG_FOLDER
    code, raw = in_terminal(["optbench", *command, f"hydra.run.dir='{run_dir}'"], 80)
    lines = screen_lines(raw, 80)
    print(*lines, sep="\n")
    assert code == 0
    # Right below the table: no caption centred under it, the path written as one line.
    below_the_table = unwrapped(
        lines[max(i for i, s in enumerate(lines) if s.startswith("└")) + 1 :], 80
    )
    assert below_the_table[-1] == line.format(run_dir)


def test_search_workers_draw_no_bar_and_train_what_the_command_would(tmp_path):
    # The workers are programs of their own on this terminal: each would draw its bar there.
    sweep = tmp_path / "search"
    plan = prepare(["+experiment=lr_wd_search", *FAST, "trainer.progress=true",
                    "search.workers=2", f"hydra.sweep.dir={sweep}"])  # fmt: skip
    own_trial = compose_trial(plan.overrides, {})
    assert own_trial.trainer.progress is True
    for i in range(plan.settings.workers):
        command = worker_command(plan, i)
        assert command[1:4] == ["-m", "optbench", "search"]
        worker = prepare(command[4:])  # what the worker composes from its command line
        assert (worker.settings.workers, worker.settings.worker) == (1, i)
        trial = compose_trial(worker.overrides, {})
        assert trial.trainer.progress is False
        # Nothing else changed: a trial a worker began resumes under the command itself.
        check_resumable(own_trial, {"config": OmegaConf.to_container(trial)}, sweep)
    assert not sweep.exists()  # composed and checked only
