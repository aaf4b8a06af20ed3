"""`optbench verify TARGET --against NAME`: check a hand-written optimizer against a library
one, step by step, and name the known mistake it makes when they part.

TARGET is the import path of the user's torch.optim.Optimizer subclass; NAME an optbench
optimizer, built through the factory from its documented defaults and the user's key=value
settings, which the user's class gets too.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf

from optbench.checks import is_number
from optbench.errors import ArgumentParser, UserError
from optbench.optim.factory import constructor_defaults, optimizer_config
from optbench.optim.registry import optimizer_info
from optbench.optim.variants import Settings, library_contender, matching_variants
from optbench.optim.verify import (
    Comparison,
    Contender,
    Groups,
    Setup,
    compare,
    dtype_name,
    first_line,
    make_network,
)
from optbench.schedules.factors import Constant, Cosine, Steps
from optbench.user_code import import_object

DTYPES = {"float64": torch.float64, "float32": torch.float32}
# Config keys that select an optimizer rather than set one of its hyperparameters.
SELECTION_KEYS = ("name", "impl", "target")
MAX_STEPS = 10_000
SHOWN_WHEN_ALL = 8  # up to this many steps every row is shown; beyond, the telling ones


def parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="optbench verify",
        description="Run your optimizer and a library one from the same weights on the same "
        "batches and compare weights and state after every step; when they part, name the "
        "known mistake that matches yours. Exit 0 equal, 1 different, 2 bad input.",
    )
    p.add_argument("target", metavar="TARGET", help="your optimizer class, e.g. mypkg.opt.MyAdam")
    p.add_argument(
        "settings", nargs="*", metavar="key=value",
        help="hyperparameters for both, YAML values: lr=0.01 betas=[0.9,0.99] nesterov=true",
    )  # fmt: skip
    p.add_argument("--against", required=True, metavar="NAME", help="an optbench optimizer")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps (default 20)")
    p.add_argument("--dtype", default="float64,float32", help="comma-separated dtypes")
    p.add_argument("--groups", type=int, choices=(1, 2), default=1, help="2: second at LR x 0.1")
    p.add_argument("--schedule", choices=("constant", "cosine", "step"), default="constant")
    p.add_argument(
        "--impl", choices=("library", "reference"), default="library",
        help="reference: optbench's own from-scratch rule (for rules the library lacks)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="weights and batches (default 0)")
    return p


@dataclass(frozen=True)
class Request:
    """Everything `verify` runs, checked before anything runs."""

    target: str
    name: str
    impl: str
    settings: Settings  # what the library gets, the registry's fixed arguments included
    user: Contender
    library: Contender
    library_class: str
    setup: Setup
    schedule: str
    dtypes: tuple[torch.dtype, ...]
    notes: tuple[str, ...]
    given: dict[str, Any]  # what the user's class gets


def parse_settings(items: list[str]) -> dict[str, Any]:
    """key=value pairs, each value a YAML scalar or list (as Hydra reads overrides)."""
    out = {}
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"settings are key=value with a plain key, got '{item}'")
        if key in SELECTION_KEYS:
            raise UserError(
                f"{key} is not a hyperparameter; give the optimizer as --against "
                "and the implementation as --impl"
            )
        try:
            value = OmegaConf.to_container(OmegaConf.from_dotlist([item]), resolve=True)[key]
        except Exception as err:
            raise UserError(f"cannot read '{item}': {first_line(err)}") from None
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def parse_dtypes(text: str) -> tuple[torch.dtype, ...]:
    names = [n.strip() for n in text.split(",")]
    unknown = [n for n in names if n not in DTYPES]
    if unknown or len(set(names)) != len(names):
        raise UserError(
            f"--dtype takes a comma-separated list of {', '.join(DTYPES)} "
            f"without repeats, got '{text}'"
        )
    return tuple(DTYPES[n] for n in names)


def user_class(target: str) -> type[torch.optim.Optimizer]:
    cls = import_object(target, "verify TARGET")
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        kind = (
            "a module" if inspect.ismodule(cls)
            else f"the class {cls.__name__}" if isinstance(cls, type)
            else f"the function {cls.__name__}" if inspect.isroutine(cls)
            else f"a {type(cls).__name__}"
        )  # fmt: skip
        raise UserError(
            f"verify TARGET={target} is not a torch.optim.Optimizer subclass (it is {kind})"
        )
    return cls


def user_keys(cls: type) -> dict[str, Any]:
    """The keyword arguments `cls` takes besides its parameters (its first argument)."""
    keys = constructor_defaults(cls)
    keys.pop(next(iter(inspect.signature(cls).parameters), ""), None)
    return keys


def lr_factor(schedule: str, steps: int) -> tuple[Any, str]:
    """The LR factor of step t (from 0) for `schedule`, and how to say it."""
    if schedule == "cosine":
        return Cosine(last=steps, floor=0.0), "cosine LR (x 1 -> 0)"
    if schedule == "step":
        drop = max(1, steps // 2)
        return Steps(milestones=(drop,), gamma=0.1), f"LR x 0.1 from step {drop + 1}"
    return Constant(), "constant LR"


def resolve_settings(
    name: str, cls_name: str, takes: dict[str, Any], overrides: dict[str, Any], library_class: str
) -> tuple[Settings, list[str]]:
    """What both optimizers get: `name`'s fixed arguments and documented defaults, then the
    user's overrides; and a note for each default the user's class has no argument for."""
    info = optimizer_info(name)
    documented = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in OmegaConf.to_container(optimizer_config(name), resolve=True).items()
        if k not in SELECTION_KEYS
    }
    notes = []
    # A documented key the user's class does not take is left out of both: the library falls
    # back to its constructor's default, the rule the user's class has no switch for.
    for key in [k for k in documented if k not in takes and k not in overrides and k != "lr"]:
        notes.append(
            f"{cls_name} takes no {key}: left out of both, so {library_class} uses its default"
        )
        del documented[key]
    # A fixed argument is what the optimizer is (nesterov=True for `nesterov`): it stays.
    for key in [k for k in info.defaults if k not in takes]:
        notes.append(
            f"{cls_name} takes no {key}: {library_class} keeps {key}={info.defaults[key]} "
            f"(what {name} is)"
        )
    return {**info.defaults, **documented, **overrides}, notes


def prepare(args: list[str]) -> Request:
    options = parser().parse_intermixed_args(args)
    if not 1 <= options.steps <= MAX_STEPS:
        raise UserError(f"--steps must be in 1..{MAX_STEPS}, got {options.steps}")
    dtypes = parse_dtypes(options.dtype)
    name, impl = options.against, options.impl
    info = optimizer_info(name)
    if (info.builder is not None and impl == "library") or info.hessian:
        raise UserError(
            f"{name} is not one optimizer class stepping on gradients alone "
            "(it is built from several, or needs Hessian estimates); compare against another"
        )
    cls = user_class(options.target)
    overrides = parse_settings(options.settings)
    takes = user_keys(cls)
    for key in overrides:
        if key not in takes:
            raise UserError(
                f"{cls.__name__} takes no '{key}' (it takes {', '.join(takes) or 'nothing'})"
            )
    library_class = (info.reference if impl == "reference" else info.backend) or name
    settings, notes = resolve_settings(name, cls.__name__, takes, overrides, library_class)
    if not (is_number(settings.get("lr")) and settings["lr"] > 0):
        raise UserError(f"lr must be a positive number, got {settings.get('lr')!r}")
    given = {k: v for k, v in settings.items() if k in takes}
    missing = [k for k, d in takes.items() if d is inspect.Parameter.empty and k not in given]
    if missing:
        raise UserError(
            f"{cls.__name__} needs {', '.join(missing)}, which {name}'s settings do not "
            "give: set it as key=value"
        )
    factor, schedule = lr_factor(options.schedule, options.steps)
    setup = Setup(options.steps, options.groups, factor, options.seed)
    library, _ = library_contender(name, impl, settings)
    user = Contender(
        options.target,
        user_builder(cls, options.target, settings["lr"], given),
        settings["lr"],
        True,
    )
    request = Request(
        options.target, name, impl, settings, user, library, library_class, setup, schedule,
        dtypes, tuple(notes), given,
    )  # fmt: skip
    check_construction(request)
    return request


def user_builder(
    cls: type, target: str, lr: float, given: dict[str, Any]
) -> Callable[[Groups], torch.optim.Optimizer]:
    def build(groups: Groups) -> torch.optim.Optimizer:
        dicts = [{"params": params, "lr": lr * scale} for params, scale in groups]
        try:
            return cls(dicts, **given)
        except Exception as err:
            raise UserError(
                f"{target}(...) raised {type(err).__name__}: {first_line(err)}"
            ) from None

    return build


def check_construction(request: Request) -> None:
    """Build both once, so a refused setting is one line before any step runs."""
    network = make_network(torch.float64, request.setup.seed)
    for contender in (request.library, request.user):
        contender.build([(list(network.parameters()), 1.0)])


def number(x: float | None) -> str:
    if x is None:
        return "-"
    return "0" if x == 0 else f"{x:.1e}"


def shown_steps(comparisons: list[Comparison], steps: int) -> list[int]:
    if steps <= SHOWN_WHEN_ALL:
        return list(range(1, steps + 1))
    telling = {1, 2, 3, steps} | {c.parting.step for c in comparisons if c.parting}
    telling |= {c.weights_part_at for c in comparisons if c.weights_part_at}
    return sorted(telling)


def table(comparisons: list[Comparison], steps: int) -> list[str]:
    header = f"{'step':>6}" + "".join(
        f"{dtype_name(c.dtype) + ' weights':>18}{dtype_name(c.dtype) + ' state':>16}"
        for c in comparisons
    )
    lines = [header]
    previous = 0
    for step in shown_steps(comparisons, steps):
        if step > previous + 1:
            lines.append(f"{'...':>6}")
        row = [c.steps[step - 1] for c in comparisons]
        lines.append(
            f"{step:>6}" + "".join(f"{number(r.weights):>18}{number(r.state):>16}" for r in row)
        )
        previous = step
    return lines


def settings_text(values: dict[str, Any]) -> str:
    shown = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    return " ".join(f"{k}={v}" for k, v in shown.items()) or "(none)"


def pairing_text(comparison: Comparison) -> str:
    if not comparison.pairs:
        return "state: the library keeps no tensor state shaped like the weights"
    parts = [
        f"{p.library} ~ {p.user} ({p.how})" if p.user else f"{p.library}: {p.how}"
        for p in comparison.pairs
    ]
    return textwrap.fill(
        ", ".join(parts), width=96, initial_indent="state (library ~ yours): ",
        subsequent_indent="  ",
    )  # fmt: skip


def outcome(c: Comparison) -> list[str]:
    head = f"{dtype_name(c.dtype)}:"
    if c.parting is None:
        return [f"{head} equal at every step"]
    p = c.parting
    parts = f"{head} parts at step {p.step} on {p.tensor}, |diff| {number(p.difference)}"
    if c.weights_part_at == p.step:
        return [parts]
    if c.weights_part_at is None:
        return [parts, "  (only the state parts: the weights agree at every step)"]
    return [parts, f"  (the state parts first: the weights part at step {c.weights_part_at})"]


def diagnosis(request: Request, comparisons: list[Comparison]) -> list[str]:
    """Which known variant the user's rule is, in the most precise dtype that parted."""
    parted = [c for c in comparisons if not c.equal]
    precise = {c.dtype: c for c in comparisons}.get(torch.float64, parted[0])
    if precise.equal:
        return [
            "diagnosis: equal in float64, so the same rule; the float32 difference is",
            "  rounding (the same operations in another order)",
        ]
    matches, tried = matching_variants(
        request.user, request.name, request.impl, request.settings, request.setup, precise.dtype
    )
    lines = [
        f"diagnosis ({dtype_name(precise.dtype)}, {tried} known variant{'s' * (tried != 1)} "
        f"of {request.name} tried):"
    ]
    for match in matches:
        text = f"  {match}"
        # Too long for one line: the library optimizer, then the mistake in parentheses.
        lines += [text] if len(text) < 100 else text.replace(" (", "\n    (", 1).split("\n")
        lines += [f"    ({match.variant.note})"] if match.variant.note else []
    return lines if matches else [*lines, "  no known variant matches"]


def report(request: Request, comparisons: list[Comparison]) -> list[str]:
    setup = request.setup
    groups = "1 parameter group" if setup.groups == 1 else "2 parameter groups (2nd at LR x 0.1)"
    network = make_network(torch.float64, setup.seed)
    shapes = textwrap.fill(
        ", ".join(f"{n} {'x'.join(map(str, p.shape))}" for n, p in network.named_parameters()),
        width=96, initial_indent="network: ", subsequent_indent="  ",
    )  # fmt: skip
    lines = [
        f"yours:    {request.target}",
        f"library:  {request.library_class} (optbench's {request.name}, impl={request.impl})",
        f"settings: {settings_text(request.given)}",
        *(f"note: {n}" for n in request.notes),
        f"setup: {setup.steps} steps, {groups}, {request.schedule}, seed {setup.seed}",
        shapes,
        pairing_text(comparisons[0]),
        "",
        "largest |yours - library| after each step",
        *table(comparisons, setup.steps),
        "",
        "tolerance, per tensor: max |diff| <= atol + rtol x max |library|, with",
        "  "
        + "; ".join(f"{dtype_name(c.dtype)} rtol {c.rtol:g} atol {c.atol:g}" for c in comparisons),
        *(line for c in comparisons for line in outcome(c)),
    ]
    equal = all(c.equal for c in comparisons)
    if not equal:
        lines += diagnosis(request, comparisons)
    dtypes = " and ".join(dtype_name(d) for d in request.dtypes)
    lines.append(f"verdict: {'EQUAL' if equal else 'DIFFERENT'} in {dtypes}")
    return lines


def run_verify(args: list[str]) -> int:
    request = prepare(args)
    comparisons = [compare(request.user, request.library, request.setup, d) for d in request.dtypes]
    lines = report(request, comparisons)  # computed whole first: a user error prints nothing
    print("\n".join(lines))
    return 0 if all(c.equal for c in comparisons) else 1
