"""The `optbench` command: pick a subcommand, hand the rest of argv to it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import optbench
from optbench.errors import UserError


@dataclass(frozen=True)
class Command:
    summary: str
    run: Callable[[list[str]], int]


def _train(args: list[str]) -> int:
    from optbench.commands.train import check_train_config, run_train
    from optbench.hydra_command import run_hydra_command

    return run_hydra_command("train", "train", args, run_train, check_train_config)


def _lr_find(args: list[str]) -> int:
    from optbench.commands.lr_find import check_lr_find_config, run_lr_find
    from optbench.hydra_command import run_hydra_command

    return run_hydra_command("lr-find", "lr_find", args, run_lr_find, check_lr_find_config)


def _lr_compare(args: list[str]) -> int:
    from optbench.lr_finder.compare import run_lr_compare

    return run_lr_compare(args)


def _schedule(args: list[str]) -> int:
    from optbench.commands.schedule import check_schedule_config, run_schedule
    from optbench.hydra_command import run_hydra_command

    return run_hydra_command("schedule", "schedule", args, run_schedule, check_schedule_config)


def _optimizers(args: list[str]) -> int:
    from optbench.commands.optimizers import run_optimizers

    return run_optimizers(args)


def _needs_optuna(command: str) -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError(f"{command} needs Optuna: pip install 'optbench[sweeps]'") from None


def _tune(args: list[str]) -> int:
    _needs_optuna("tune")
    from optbench.commands.tune import main

    return main(args)


def _search(args: list[str]) -> int:
    _needs_optuna("search")
    from optbench.commands.search import main

    return main(args)


def _report(args: list[str]) -> int:
    from optbench.commands.report import run_report

    return run_report(args)


def _toy(args: list[str]) -> int:
    from optbench.commands.toy import check_toy_config, run_toy
    from optbench.hydra_command import run_hydra_command

    return run_hydra_command("toy", "toy", args, run_toy, check_toy_config)


def _verify(args: list[str]) -> int:
    from optbench.commands.verify import run_verify

    return run_verify(args)


COMMANDS: dict[str, Command] = {
    "train": Command("train a model (Hydra overrides; -m for a sweep)", _train),
    "lr-find": Command(
        "LR range test on the training setup; suggestions, plot, CSV, JSON", _lr_find
    ),
    "lr-compare": Command("overlay several LR range tests (e.g. an lr-find -m sweep)", _lr_compare),
    "optimizers": Command(
        "every optimizer: implementation, state memory, CPU support, defaults", _optimizers
    ),
    "schedule": Command(
        "a run's LR and momentum schedule, before training: PNG, CSV, summary", _schedule
    ),
    "tune": Command(
        "equal tuning budget per optimizer in Optuna studies, picks rerun on fresh seeds", _tune
    ),
    "search": Command(
        "hyperparameter search with Optuna: pruning, resume, parallel workers", _search
    ),
    "report": Command("compare the runs of sweeps: tables, CSV, Markdown, plots", _report),
    "toy": Command("optimizer paths over a 2-D test function: picture, table, CSV", _toy),
    "verify": Command("check your optimizer class against a library one, step by step", _verify),
}


def version() -> str:
    """optbench's version and the libraries its results depend on (read without importing them)."""
    installed = []
    for package in ("torch", "torchvision", "hydra-core", "omegaconf", "optuna"):
        try:
            installed.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            installed.append(f"{package} not installed")
    return f"optbench {optbench.__version__} ({', '.join(installed)})"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: optbench <command> [args...] | --version", "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "`optbench <command> --help` describes each command and its config groups."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(usage(), file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(version())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(
            f"optbench: error: unknown command '{name}'; choose from {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        from optbench.optim.registry import store_entry_point_configs

        store_entry_point_configs()
        return COMMANDS[name].run(rest)
    except UserError as err:
        from optbench.distributed import launched

        if launched().main:  # under torchrun, every rank refuses; one says why
            print(f"optbench {name}: error: {err}", file=sys.stderr)
        return 2
