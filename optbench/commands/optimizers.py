"""`optbench optimizers`: every optimizer with what backs it, its state memory and its defaults.

Three views of one list: a compact table that reads at 80 columns, `--wide` with every
column, and `--markdown`, the README's table.
"""

from __future__ import annotations

import textwrap

from rich.table import Table
from rich.text import Text

from optbench.errors import ArgumentParser
from optbench.optim.factory import optimizer_config
from optbench.optim.registry import all_optimizers
from optbench.tracking.console import console

COLUMNS = (
    "name",
    "implementation",
    "state per parameter",
    "reference",
    "default lr",
    "what it does",
)
LEGEND = (
    "state: optimizer memory per parameter element. --wide adds the implementation and whether "
    "optimizer.impl=reference exists; --markdown prints every column as a GitHub table. "
    "Your own class: optimizer=custom optimizer.target=mypkg.opt.MyAdam (README: Your own "
    "optimizer)."
)


def rows() -> list[tuple[str, ...]]:
    out = []
    for name, info in all_optimizers().items():  # optbench's, then installed packages'
        lr = optimizer_config(name).get("lr")
        origin = "" if info.origin == "optbench" else f" (from the package {info.origin})"
        out.append((
            name,
            info.backend,
            info.state,
            "yes" if info.reference else "-",
            "base's" if lr is None else f"{lr:g}" + (" (self-tuning)" if info.self_tuning else ""),
            info.description + origin,
        ))  # fmt: skip
    return out


def markdown() -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows()]
    return "\n".join(lines)


def wide_table() -> Table:
    """Every column, one row per optimizer (a narrow terminal folds its cells)."""
    out = Table(title="optimizer=<name>", title_justify="left")
    for column in COLUMNS:
        out.add_column(column, overflow="fold")
    for row in rows():
        out.add_row(*row)
    return out


def compact(width: int) -> Text:
    """Name, default LR and state on one line, what it does indented below, each wrapped
    between words to `width`: readable on an 80-column terminal."""
    table = [(row[0], row[4], row[2], row[5]) for row in rows()]
    name_w = max(len(r[0]) for r in [*table, ("optimizer=",)]) + 2
    lr_w = max(len(r[1]) for r in [*table, ("", "default lr")]) + 2
    state = textwrap.TextWrapper(
        max(width - name_w - lr_w, 12), break_long_words=False, break_on_hyphens=False
    )
    described = textwrap.TextWrapper(
        width, initial_indent="    ", subsequent_indent="    ",
        break_long_words=False, break_on_hyphens=False,
    )  # fmt: skip
    out = Text()
    out.append(f"{'optimizer=':<{name_w}}{'default lr':<{lr_w}}state per parameter\n", "bold")
    for name, lr, memory, what in table:
        first, *more = state.wrap(memory)
        out.append(f"{name:<{name_w}}", "bold cyan")
        out.append(f"{lr:<{lr_w}}{first}\n")
        out.append("".join(f"{'':<{name_w + lr_w}}{line}\n" for line in more))
        out.append("\n".join(described.wrap(what)) + "\n", "dim")
    return out


def run_optimizers(args: list[str]) -> int:
    parser = ArgumentParser(
        prog="optbench optimizers", description="List every optimizer optimizer=<name> accepts."
    )
    view = parser.add_mutually_exclusive_group()
    view.add_argument(
        "--wide", action="store_true", help="every column: also the implementation and reference"
    )
    view.add_argument(
        "--markdown", action="store_true", help="a GitHub Markdown table of every column"
    )
    options = parser.parse_args(args)
    if options.markdown:
        print(markdown())
        return 0
    if options.wide:
        console.print(wide_table())
    else:
        console.print(compact(console.width), soft_wrap=True, end="")
    console.print(LEGEND, highlight=False)
    return 0
