"""`optbench optimizers`: every optimizer with what backs it, its state memory and its defaults."""

from __future__ import annotations

from rich.table import Table

from optbench.errors import ArgumentParser
from optbench.optim.factory import optimizer_config
from optbench.optim.registry import OPTIMIZERS
from optbench.tracking.console import console

COLUMNS = (
    "name",
    "implementation",
    "state per parameter",
    "reference",
    "default lr",
    "what it does",
)


def rows() -> list[tuple[str, ...]]:
    out = []
    for name, info in OPTIMIZERS.items():
        lr = optimizer_config(name).get("lr")
        out.append((
            name,
            info.backend,
            info.state,
            "yes" if info.reference else "-",
            "base's" if lr is None else f"{lr:g}" + (" (self-tuning)" if info.self_tuning else ""),
            info.description,
        ))  # fmt: skip
    return out


def markdown() -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows()]
    return "\n".join(lines)


def run_optimizers(args: list[str]) -> int:
    parser = ArgumentParser(
        prog="optbench optimizers", description="List every optimizer optimizer=<name> accepts."
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    options = parser.parse_args(args)
    if options.markdown:
        print(markdown())
        return 0
    table = Table(title="optimizer=<name>", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows():
        table.add_row(*row)
    console.print(table)
    console.print(
        "state: optimizer memory per parameter element; reference: optimizer.impl=reference exists"
    )
    return 0
