"""Run one Hydra-configured subcommand, after checking every job it would launch.

Hydra cannot share argv with a subcommand parser, so `optbench.cli` takes the subcommand
off argv and hands the rest here. Before Hydra creates any run directory, every job of the
run or sweep is composed and checked, so a typo in the seventh job of a sweep fails at once,
with one line, and writes nothing.

Under torchrun every rank runs the command: they take rank 0's run directory, and only rank
0 writes Hydra's files and logs.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
import omegaconf
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from optbench import distributed
from optbench.errors import UserError

CONFIG_MODULE = "optbench.configs"
# Set by `trainer.devices` for the ranks it starts: the starting process checked the config.
CHECKED_ENV = "OPTBENCH_CONFIG_CHECKED"
# Hydra 1.3 wants its compatibility level named (without it, 1.1's defaults and a warning);
# 1.4 has only its own defaults and deprecates the argument, which 1.5 removes.
HYDRA_1_4 = tuple(int(part) for part in hydra.__version__.split(".")[:2]) >= (1, 4)
VERSION_BASE: dict[str, str] = {} if HYDRA_1_4 else {"version_base": "1.3"}
# What a config may name for Hydra to build (hydra.callbacks' `_target_`s, job logging's
# handler classes): from 1.4 Hydra warns about a target its caller does not list, and 1.5
# refuses it; with a list given, 1.4 refuses what is not on it (logging's own classes aside).
EXECUTION_WHITELIST = ("optbench.*",)
# OmegaConf 2.4 deprecates register_new_resolver for register_resolver, 2.3's legacy API.
OMEGACONF_2_4 = tuple(int(part) for part in omegaconf.__version__.split(".")[:2]) >= (2, 4)
register_resolver = (
    OmegaConf.register_resolver if OMEGACONF_2_4 else OmegaConf.register_new_resolver
)
# `${optbench.config_file:train.yaml}`: where a config file is installed (for --help).
register_resolver(
    "optbench.config_file",
    lambda name: str(resources.files(CONFIG_MODULE).joinpath(name)),
    replace=True,
)
# Hydra flags that print something instead of running jobs.
_INFO_FLAGS = ("help", "hydra_help", "info", "shell_completion")

Check = Callable[[DictConfig], None]
Task = Callable[[DictConfig, Path], Any]


def initialize_configs() -> initialize_config_module:
    """Hydra on optbench's configs, as `hydra.main` sees them: `compose` inside it."""
    return initialize_config_module(config_module=CONFIG_MODULE, **VERSION_BASE)


def _compose_only(cfg: DictConfig) -> None:
    """A check that accepts every config that composes."""


def one_line(err: BaseException) -> str:
    """The first line of a Hydra/OmegaConf error and of its cause, as one line."""
    if isinstance(err, MissingConfigException) and err.options is not None and err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        if group:
            return f"unknown {group} '{name}'; choose from {', '.join(sorted(err.options))}"
    parts = []
    for e in (err, err.__cause__):
        lines = [line.strip() for line in str(e or "").splitlines() if line.strip()]
        if lines and lines[0].rstrip(".") not in parts:
            parts.append(lines[0].rstrip("."))
    # Hydra's hint for a key the config lacks: "To append to your config use +key=value".
    hint = next((line.strip() for line in str(err).splitlines() if "To append" in line), None)
    message = ": ".join(parts) or type(err).__name__
    return f"{message} ({hint[0].lower()}{hint[1:]})" if hint else message


def _sweep_overrides(cfg: DictConfig) -> list[str]:
    """Sweeps a config declares itself (`hydra.sweeper.params`, as experiment presets do)."""
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    return [f"{key}={value}" for key, value in params.items()]


def job_overrides(config_name: str, overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job the command would run."""
    # With the config loader, sweeps that list a config group (glob(...)) can be expanded.
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    parsed = parser.parse_overrides(overrides)
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if sweeps and not multirun:
        raise UserError(
            f"'{sweeps[0].input_line}' lists several values; add -m (--multirun) to run each"
        )
    base = [o.input_line for o in parsed if not o.is_sweep_override()]
    if not multirun:
        return [base]
    cfg = compose(config_name, overrides=base, return_hydra_config=True)
    sweeper = OmegaConf.select(cfg, "hydra.sweeper._target_", default="")
    if not sweeper.endswith("BasicSweeper"):
        return [base]  # Optuna and friends choose their own values: check the base config
    declared = [
        o
        for o in _sweep_overrides(cfg)
        if o.split("=")[0] not in {s.get_key_element() for s in sweeps}
    ]
    combined = parser.parse_overrides(declared + overrides)
    return BasicSweeper.split_arguments(combined, max_batch_size=None)[0]


# Less free space than this where a run would be written is refused before it starts: Hydra's
# config save would otherwise fail half-way and leave a zero-byte .hydra/config.yaml.
MIN_FREE_BYTES = 16 * 2**20
NAME_MAX = 255  # bytes in one file or folder name, on Linux's file systems


def unwritable(folder: Path) -> str | None:
    """Why no file can be made in `folder`, or None. A real write, not os.access: root passes
    permission bits, not a read-only mount."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as err:
        return str(err.strerror or err)


def check_output_location(directory: Path) -> None:
    """`directory` can be created and written: its nearest existing ancestor is a writable
    folder with room. A one-line UserError naming the path otherwise."""
    ancestor = directory.absolute()
    too_long = [part for part in ancestor.parts if len(part.encode()) > NAME_MAX]
    if too_long:
        raise UserError(
            f"cannot write the run to {directory}: the folder name {too_long[0][:40]}... is "
            f"longer than {NAME_MAX} bytes"
        )
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot write the run to {directory}: {ancestor} is a file, not a folder")
    if (why := unwritable(ancestor)) is not None:
        raise UserError(f"cannot write the run to {directory}: {ancestor} is not writable ({why})")
    free = shutil.disk_usage(ancestor).free
    if free < MIN_FREE_BYTES:
        raise UserError(
            f"cannot write the run to {directory}: only {free / 2**20:.1f} MiB free on its disk"
        )


def _output_dir(config_name: str, job: list[str], multirun: bool) -> Path:
    cfg = compose(config_name, overrides=job, return_hydra_config=True)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    name = str(OmegaConf.select(cfg, key) or "")
    if not name.strip():
        raise UserError(f"{key} is empty; name the folder to write to")
    return Path(name)


# The file a running trainer holds an flock on (optbench/train/run_lock.py).
RUN_LOCK = "run.lock"


def check_new_output(directory: Path, resuming: bool) -> None:
    """A run or sweep goes into a new or empty folder, or (resuming) one no process is using:
    nothing of an earlier run is overwritten, not even Hydra's .hydra/ files."""
    if not directory.is_dir() or not any(directory.iterdir()):
        return
    lock = directory / RUN_LOCK
    if lock.is_file():
        with lock.open("rb") as held:
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another process is running in {directory}") from None
    if not resuming:
        raise UserError(
            f"{directory} already holds files; continue its run with trainer.resume=auto, "
            "or write to a new folder"
        )


def preflight(
    config_name: str, overrides: list[str], multirun: bool, check: Check, new_output: bool = True
) -> list[list[str]]:
    """Compose and check every job and where it would be written (with `new_output`, also
    that it overwrites nothing); returns each job's overrides and that folder."""
    try:
        with initialize_configs():
            jobs = job_overrides(config_name, overrides, multirun)
            resuming = True
            for job in jobs:
                cfg = compose(config_name, overrides=job)
                check(cfg)
                resuming &= OmegaConf.select(cfg, "trainer.resume", default=None) is not None
            directory = _output_dir(config_name, jobs[0], multirun)
            check_output_location(directory)
            naming = named_by_what_varies(config_name, jobs) if multirun else []
            if new_output:
                check_new_output(directory, resuming)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(one_line(err)) from None
    except ValueError as err:  # Hydra's parser on an override such as `=5`
        raise UserError(f"cannot read the overrides: {str(err).splitlines()[0]}") from None
    return jobs, directory, naming


def named_by_what_varies(config_name: str, jobs: list[list[str]]) -> list[str]:
    """A sweep's job folders named by what varies between its jobs (`3_optimizer=adamw`): the
    overrides every job shares join `override_dirname.exclude_keys` (a folder named by all of
    them can pass the file system's 255 bytes and fail the job)."""
    shared = set(jobs[0]).intersection(*map(set, jobs[1:])) if len(jobs) > 1 else set()
    keys = sorted({override.split("=", 1)[0] for override in shared})
    if not keys:
        return []
    cfg = compose(config_name, overrides=jobs[0], return_hydra_config=True)
    key = "hydra.job.config.override_dirname.exclude_keys"
    excluded = list(OmegaConf.select(cfg, key, default=None) or [])
    return [f"{key}=[{','.join(map(quoted, dict.fromkeys([*excluded, *keys])))}]"]


def quoted(value: object) -> str:
    """A value as a Hydra override's: quoted, since a path may hold `=`, `,` or spaces."""
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def _rank_overrides(config_name: str, overrides: list[str]) -> list[str]:
    """What each rank of a distributed command adds: rank 0's run and sweep directories (a
    time stamp may differ by a second between ranks), and, off rank 0, no files of Hydra's."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    keys = [k for k in ("hydra.run.dir", "hydra.sweep.dir") if k not in given]
    dirs = {}
    if distributed.current().main:
        with initialize_configs():
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
            dirs = {k: str(OmegaConf.select(cfg, k)) for k in keys}
    added = [f"{k}={quoted(v)}" for k, v in distributed.from_main(dirs).items()]
    if not distributed.current().main:
        added += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    return added


def remove_refused_job_dir(run_dir: Path, output_root: Path) -> None:
    """A job refused at its start leaves no folder behind: remove `run_dir` if it holds only
    what Hydra wrote (.hydra/ and the job's log), and the folders above it it leaves empty."""
    if not run_dir.is_dir():
        return
    ours = [p for p in run_dir.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
    if ours:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    root = output_root.absolute()
    parent = run_dir.absolute().parent
    while parent != root and root in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def run_hydra_command(
    name: str, config_name: str, args: list[str], task: Task, check: Check
) -> int:
    """`optbench <name> <args>`: check, then let Hydra run `task(cfg, run_dir)` for each job."""
    parser = get_args_parser()
    parser.prog = f"optbench {name}"
    try:
        flags = parser.parse_intermixed_args(args)
    except SystemExit as exit_:  # argparse has printed its message
        return int(exit_.code or 0)
    if flags.config_dir is not None:
        args = [*_without_config_dir(args), search_path_override(flags.config_dir, args)]
        flags = parser.parse_intermixed_args(args)
    overrides = flags.overrides
    world = distributed.init()
    if not any(getattr(flags, flag) for flag in _INFO_FLAGS):
        # `--cfg job` only composes: a GPU preset's config must print on a CPU machine too;
        # the ranks `trainer.devices` starts were checked by the process that started them.
        checked = flags.cfg or os.environ.get(CHECKED_ENV)
        # The ranks of a run join the folder their rank 0 (or starting process) made.
        jobs, directory, naming = preflight(
            config_name, overrides, flags.multirun, _compose_only if checked else check,
            new_output=not checked and world.main,
        )  # fmt: skip
        overrides = [*overrides, *naming]
        # Written where it was checked (a ${now:...} in the name resolves once, here); the
        # ranks of a distributed world take rank 0's folder (_rank_overrides).
        key = "hydra.sweep.dir" if flags.multirun else "hydra.run.dir"
        given = any(o.split("=", 1)[0].lstrip("+") == key for o in overrides)
        if not given and not world.distributed:
            overrides = [*overrides, f"{key}={quoted(directory)}"]
        if flags.cfg and flags.multirun:
            # Hydra prints one config, not a sweep's: show the first job's.
            args = [a for a in args if a not in ("-m", "--multirun")]
            print(f"# the first of {len(jobs)} jobs: {' '.join(jobs[0])}", file=sys.stderr)
            overrides = jobs[0]

    def hydra_task(cfg: DictConfig) -> Any:
        world = distributed.init()  # a Slurm task started by submitit joins its job's ranks here
        logging.getLogger("optbench").setLevel(logging.INFO if world.main else logging.ERROR)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            return task(cfg, run_dir)
        except UserError as err:
            if world.main:
                print(f"optbench {name}: error: {err}", file=sys.stderr)
                remove_refused_job_dir(run_dir, Path(str(cfg.paths.output_dir)))
            sys.exit(2)
        except (Exception, SystemExit) as err:
            # In a sweep, a job that crashes is recorded and the others go on; a signal
            # (exit 128 + N) still stops the sweep.
            interrupted = isinstance(err, SystemExit) and (err.code or 0) > 128
            if HydraConfig.get().mode != RunMode.MULTIRUN or interrupted:
                raise
            if world.main:
                record_failure(name, run_dir, err)
            return None

    if world.distributed:
        overrides = [*overrides, *_rank_overrides(config_name, overrides)]

    # Hydra's own parser wants its flags before the overrides (`-m` may come anywhere here).
    flag_args = [a for a in args if a not in flags.overrides]
    sys.argv = [f"optbench {name}", *flag_args, *overrides]
    whitelist = {"execution_whitelist": list(EXECUTION_WHITELIST)} if HYDRA_1_4 else {}
    main = hydra.main(
        config_path=f"pkg://{CONFIG_MODULE}", config_name=config_name, **VERSION_BASE, **whitelist
    )
    if flags.help:  # Hydra prints a config group's options on one line, however long
        with contextlib.redirect_stdout(io.StringIO()) as text:
            try:
                main(hydra_task)()
            except SystemExit as done:  # Hydra exits once it has printed the help
                if done.code:
                    raise
            except (HydraException, OmegaConfBaseException, ValueError) as err:  # its overrides
                raise UserError(one_line(err)) from None
        print(wrap_group_lines(text.getvalue(), shutil.get_terminal_size().columns), end="")
        return 0
    started = time.time()
    main(hydra_task)()
    if flags.multirun and world.main and not any(getattr(flags, f) for f in _INFO_FLAGS):
        if not flags.cfg:
            print(f"optbench {name}: the sweep's {len(jobs)} jobs are in {directory.absolute()}")
        failed = failed_jobs(directory, started)
        if failed:
            print(f"optbench {name}: {len(failed)} of {len(jobs)} jobs failed (status failed in "
                  f"their results.json): {', '.join(map(str, failed))}", file=sys.stderr)  # fmt: skip
            return FAILED_JOBS_EXIT_CODE
    return 0


def search_path_override(config_dir: str, args: list[str]) -> str:
    """`--config-dir DIR` as the override `hydra.searchpath=[file://DIR]`: the pre-flight check
    then composes the user's configs as the run will, and each job records where they came from."""
    folder = Path(config_dir).expanduser().absolute()
    if not folder.is_dir():
        raise UserError(f"--config-dir {config_dir}: no such folder")
    if any(a.lstrip("+").startswith("hydra.searchpath=") for a in args):
        raise UserError("give --config-dir or hydra.searchpath, not both")
    return f"hydra.searchpath=[{quoted('file://' + str(folder))}]"


def _without_config_dir(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--config-dir", "-cd"):
            skip = True
        elif not arg.startswith("--config-dir="):
            kept.append(arg)
    return kept


# A config group and its options in Hydra's help: `optimizer: adafactor, adagrad, ...`.
GROUP_LINE = re.compile(r"^[\w/]+: [\w.-]+(, [\w.-]+)+$")


def wrap_group_lines(text: str, width: int) -> str:
    """Hydra's help with each config group's list of options wrapped between names."""
    lines = []
    for line in text.splitlines(keepends=True):
        if len(line.rstrip("\n")) > width and GROUP_LINE.match(line.rstrip("\n")):
            wrapped = textwrap.wrap(line, width, subsequent_indent="    ", break_on_hyphens=False)
            lines.append("\n".join(wrapped) + "\n")
        else:
            lines.append(line)
    return "".join(lines)


# A sweep some of whose jobs failed (2 is bad input, 3 a diverged single run).
FAILED_JOBS_EXIT_CODE = 4
FAILED = "failed"  # results.json status of a crashed job: tracking.results.JOB_FAILED (a layer up)


def record_failure(name: str, run_dir: Path, err: BaseException) -> None:
    """A crashed sweep job: its traceback in the job's log, one line on stderr, and (unless
    the run wrote its own) a results.json with status `failed` and the error."""
    logging.getLogger("optbench").error("the job failed", exc_info=err)
    reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    print(
        f"optbench {name}: job in {run_dir} failed ({reason}); the sweep goes on", file=sys.stderr
    )
    results = run_dir / "results.json"
    if not results.exists():
        tmp = results.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"status": FAILED, "error": reason}, indent=2) + "\n")
        os.replace(tmp, results)


def failed_jobs(sweep_dir: Path, since: float) -> list[Path]:
    """The job folders of `sweep_dir` whose results.json, written since `since`, says failed."""
    failed = []
    for path in sorted(sweep_dir.glob("*/results.json")):
        try:
            if (
                path.stat().st_mtime >= since
                and json.loads(path.read_text()).get("status") == FAILED
            ):
                failed.append(path.parent)
        except (OSError, ValueError, AttributeError):
            continue
    return failed
