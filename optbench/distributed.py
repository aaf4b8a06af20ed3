"""One run over several processes: which process this is, and the few collectives it needs.

torchrun (or Slurm, through submitit) starts every process with the same optbench command
and tells each its rank in the environment. Gradients are averaged by DDP; this module adds
what the trainer itself must agree on: summed metrics, a stop request, the run directory.
A single process is a world of one, and every collective here is then a no-op.
"""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the rank's index on its node: its GPU

    @property
    def main(self) -> bool:
        """The process that writes the run's files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> World:
    """The world the launcher described in the environment (torchrun's variables)."""
    env = os.environ
    if "WORLD_SIZE" not in env:
        return World()
    return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))


def from_slurm() -> None:
    """Under Slurm with several tasks (srun, or submitit's tasks_per_node) and no torchrun,
    export torchrun's variables from Slurm's: submitit computes the rendezvous (the job's
    first host, a port from the job id)."""
    if "WORLD_SIZE" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return
    from submitit.helpers import TorchDistributedEnvironment

    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")  # set by submitit; srun alone does not

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)  # rank r: cuda:r


def init() -> World:
    """Join the process group the launcher set up (once); a single process joins none.

    gloo carries CPU tensors and Python objects, NCCL the CUDA tensors.
    """
    from_slurm()
    world = launched()
    if world.distributed and not dist.is_initialized():
        # Before the group exists: this module's functions take `group=group.WORLD` as a
        # default argument, bound when it is imported. Imported later (DDP imports it, through
        # torch._dynamo) they would hold the group for good, and `leave` could not end it.
        importlib.import_module("torch.distributed.nn.functional")

        if torch.cuda.is_available() and dist.is_nccl_available():
            torch.cuda.set_device(world.local_rank)
            dist.init_process_group("cpu:gloo,cuda:nccl")
        else:
            dist.init_process_group("gloo")
        atexit.register(leave)
    return world


# How long `leave` may wait for the group's threads: a healthy rank needs milliseconds; one
# that exits with a collective still in flight (after an error) is then ended by SIGALRM.
LEAVE_TIMEOUT_S = 30


def leave() -> None:
    """End the process group and join its threads, while the interpreter is still whole.

    Run at exit (registered by `init`): atexit handlers run before Python starts finalizing.
    A gloo worker thread drops its own reference to a finished collective a moment after the
    rank's `wait()` returned; if that reference is the last one to a tensor Python has
    already let go of, the thread must take the GIL to free the tensor's Python object. Once
    the interpreter is finalizing, taking the GIL ends the thread (`pthread_exit`), whose
    unwinding through gloo's noexcept work destructor calls std::terminate: "terminate called
    without an active exception", SIGABRT, exit 250 under the launcher, after a completed run.
    Destroying the group joins those threads first (the GIL released, so a pending release
    completes). See scripts/repro_gloo_abort.py for the same abort without optbench.
    """
    if not dist.is_initialized():
        return
    alarm = hasattr(signal, "alarm") and threading.current_thread() is threading.main_thread()
    if alarm:  # default action: the process ends, 128 + SIGALRM
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(LEAVE_TIMEOUT_S)
    try:
        dist.destroy_process_group()
    finally:
        if alarm:
            signal.alarm(0)


def current() -> World:
    """This process's place in the world it joined (a world of one before `init`)."""
    if not dist.is_initialized():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), launched().local_rank)


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over all ranks, in place; queued on the device, no host wait."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any: a stop request that all must follow."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def from_main(value: Any) -> Any:
    """Rank 0's `value`, on every rank (a run directory, a time stamp)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
