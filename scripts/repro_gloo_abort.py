"""Reproduce torch's gloo abort at interpreter exit, without optbench.

    python scripts/repro_gloo_abort.py                          # ranks abort
    python scripts/repro_gloo_abort.py --destroy                # none abort
    python scripts/repro_gloo_abort.py --destroy --import-late  # ranks abort again
    python scripts/repro_gloo_abort.py --destroy --import-late --import-first  # none abort

Each launch starts two gloo ranks on this host. Each does what an optbench rank does at the
end of a run: a few small all-reduces of tensors that Python drops at once (as `any_rank`
does), then lets the interpreter exit. A gloo worker thread (`ProcessGroupGloo::runLoop`)
drops its own reference to a finished work a moment *after* the rank's `wait()` returned;
when that is the last reference to a tensor whose Python object Python has let go of, the
thread must take the GIL to free it. If the main thread is by then in `Py_FinalizeEx`,
`take_gil` ends the thread with `pthread_exit`, whose forced unwinding meets the noexcept
`~AsyncWork`: std::terminate, "terminate called without an active exception", SIGABRT (the
rank exits -6 here, 250 under optbench's launcher).

`--destroy` calls `destroy_process_group()` before exit, which joins the worker threads.
`--import-late` imports torch.distributed.nn.functional after `init_process_group`, as
DistributedDataParallel does (it imports torch._dynamo, which imports it; `--ddp` uses DDP
itself, slower): that module's functions bind `group=group.WORLD` as default arguments at
import, ten references that keep the group alive after `destroy_process_group()`; its
threads are not joined and ranks abort as before. `--import-first` imports the module
before `init_process_group` (its defaults are then None), so destroying the group joins the
threads again: optbench's workaround (`optbench.distributed.init` and `leave`).

Prints one line per launch (exit codes; gloo worker threads alive when the rank returns)
and the count of launches where a rank did not exit 0.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def rank_main(rank: int, port: int, flags: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    if flags.import_first:
        import torch.distributed.nn.functional
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    if flags.import_late:  # what DDP's import of torch._dynamo does, without its 2 s
        import torch.distributed.nn.functional
    if flags.ddp:
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
        model(torch.randn(8, 4)).sum().backward()
        del model

    def any_rank(flag: bool) -> bool:  # optbench.distributed.any_rank
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    for _ in range(20):
        any_rank(False)
    if flags.destroy:
        dist.destroy_process_group()
    tasks = Path("/proc/self/task").iterdir()
    names = [(task / "comm").read_text().strip() for task in tasks]
    print(f"gloo worker threads alive at exit: {names.count('pt_gloo_runloop')}", file=sys.stderr)
    # then return, and let the interpreter exit


def torch_version() -> str:
    import torch

    return torch.__version__


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--launches", type=int, default=30)
    parser.add_argument("--destroy", action="store_true", help="destroy_process_group()")
    parser.add_argument("--ddp", action="store_true", help="use DDP first")
    parser.add_argument("--import-late", action="store_true", help="see above")
    parser.add_argument("--import-first", action="store_true", help="see above")
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank is not None:
        rank_main(args.rank, args.port, args)
        return 0
    failed = 0
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    for launch in range(1, args.launches + 1):
        port = free_port()
        start = time.perf_counter()
        flags = [
            f"--{f}"
            for f in ("destroy", "ddp", "import-late", "import-first")
            if getattr(args, f.replace("-", "_"))
        ]
        rank_args = [sys.executable, __file__, "--port", str(port), *flags]
        ranks = [
            subprocess.Popen(
                [*rank_args, "--rank", str(r)], stderr=subprocess.PIPE, text=True, env=env
            )
            for r in (0, 1)
        ]
        codes, errors = [], []
        for rank in ranks:
            _, err = rank.communicate(timeout=120)
            codes.append(rank.returncode)
            errors.append(
                [line for line in err.splitlines() if "gloo" in line or "terminate" in line]
            )
        failed += any(codes)
        note = "; ".join(line for lines in errors for line in lines)
        took = time.perf_counter() - start
        print(f"launch {launch}: exit codes {codes} ({took:.1f} s) {note}", flush=True)
    print(
        f"{failed} of {args.launches} launches had a rank that did not exit 0 "
        f"(flags: {' '.join(flags) or 'none'}; torch {torch_version()})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
