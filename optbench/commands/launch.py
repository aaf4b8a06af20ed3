"""`trainer.devices=N`: one job run as N processes, started by torchrun's own launcher.

The job's process (the one Hydra started, which has checked the config and made the run
directory) starts N ranks of the same command through `elastic_launch`, the API behind
`torchrun --standalone`, each pointed at that run directory, then waits for them. A signal
it receives (Ctrl-C, Slurm's SIGTERM or SIGUSR2) reaches every rank, which stop at the same
step and checkpoint. Under a sweep, job N gets the N-th block of the node's GPUs.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from optbench import distributed
from optbench.hydra_command import CHECKED_ENV, quoted
from optbench.train.interrupts import SIGNALS

# Signals the launcher hands on to the ranks; SIGUSR2 is Slurm's warning before a time limit.
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2"


def ranks_to_start(cfg: DictConfig) -> int:
    """How many processes this job must start: `trainer.devices`, unless it is one already."""
    devices = int(cfg.trainer.devices)
    return 1 if distributed.launched().distributed else devices


def gpu_block(job_num: int | None, devices: int, gpu_count: int) -> str | None:
    """CUDA_VISIBLE_DEVICES for sweep job `job_num` with `devices` GPUs each: block
    `job_num mod (gpu_count // devices)`, so parallel jobs share out the node's GPUs."""
    if job_num is None or gpu_count < 2 * devices:
        return None
    block = job_num % (gpu_count // devices)
    return ",".join(str(block * devices + i) for i in range(devices))


def start_ranks(command: str, run_dir: Path, devices: int) -> int:
    """Run this Hydra job's `optbench <command> <overrides>` as `devices` ranks writing to
    `run_dir`; returns the exit code of the first rank that failed (0 when all succeed)."""
    hydra = HydraConfig.get()
    job_num = hydra.job.num if hydra.mode == RunMode.MULTIRUN else None
    overrides = list(hydra.overrides.task)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=devices, run_id=str(uuid.uuid4()),
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
        signals_to_handle=FORWARDED_SIGNALS,
    )  # fmt: skip
    args = ["-m", "optbench", command, *overrides, f"hydra.run.dir={quoted(run_dir)}",
            "hydra.output_subdir=null"]  # fmt: skip
    env = {CHECKED_ENV: "1"}
    if "OMP_NUM_THREADS" not in os.environ:  # share the CPU cores out, as torchrun does
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // devices))
    if (block := gpu_block(job_num, devices, torch.cuda.device_count())) is not None:
        env["CUDA_VISIBLE_DEVICES"] = block
    logging.getLogger("optbench").info("starting %d ranks of optbench %s", devices, command)
    handlers = {s: signal.getsignal(s) for s in SIGNALS}  # the launcher replaces them
    with _environment(env), _quiet_launcher():
        try:
            elastic_launch(config, sys.executable)(*args)
        except ChildFailedError as failed:
            return min((f.exitcode for f in failed.failures.values()), key=_first_failure)
        except SignalException as stopped:  # the ranks have stopped and checkpointed
            previous = handlers.get(stopped.sigval)
            if callable(previous) and previous is not signal.default_int_handler:
                previous(stopped.sigval, None)  # submitit's requeue on SIGUSR2
            return 128 + stopped.sigval
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    return 0


def _first_failure(code: int) -> tuple[bool, int]:
    """Order exit codes: a rank's own error (2, 3, 128 + signal) before a rank killed after it."""
    return (code < 0, abs(code))


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _quiet_launcher() -> Iterator[None]:
    """The ranks say what went wrong; the launcher's own report of it would only repeat it."""
    logger = logging.getLogger("torch.distributed.elastic")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
