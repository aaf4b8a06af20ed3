"""Run a hand-written optimizer and a library one in lockstep and say where they part.

Both start from the same weights of a small network (a conv kernel, a LayerNorm, two linear
layers with biases: 4-D, 2-D and 1-D tensors) and see the same fixed batches, so their
gradients are equal for as long as their weights are. Each step sets every group's LR from a
pure function of the step, identically for both. After each step the weights and the
optimizer state are compared within a tolerance fixed per dtype.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optbench.errors import UserError

# (rtol, atol) per dtype: max |user - library| <= atol + rtol * max |library|, per tensor. Equal rules
# written with other operations drift apart by rounding alone, ~1e-15 relative per step in
# float64 and ~1e-7 in float32; a different rule parts by far more at its first step.
TOLERANCES = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-5, 1e-6)}
BATCH, CLASSES, SIDE = 8, 4, 6

# Parameter groups as the optimizers get them: each group's parameters and its LR scale.
Groups = list[tuple[list[Tensor], float]]


class Network(nn.Module):
    """Conv -> LayerNorm -> hidden linear -> output linear, tanh between (smooth, so no
    coordinate's gradient sits exactly at a kink)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.norm = nn.LayerNorm(3 * (SIDE - 2) ** 2)
        self.hidden = nn.Linear(3 * (SIDE - 2) ** 2, 16)
        self.out = nn.Linear(16, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(torch.tanh(self.conv(x)).flatten(1))
        return self.out(torch.tanh(self.hidden(h)))


def make_network(dtype: torch.dtype, seed: int) -> Network:
    """The same weights for every call with `seed`; drawn in float64, then cast to `dtype`."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = Network().double()
        with torch.no_grad():  # LayerNorm starts at 1 and 0; move it off so its rule shows
            for p in network.norm.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return network.to(dtype)


def fixed_batches(steps: int, dtype: torch.dtype, seed: int) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed + 1)
    return [
        (
            torch.randn(BATCH, 2, SIDE, SIDE, generator=gen, dtype=torch.float64).to(dtype),
            torch.randint(0, CLASSES, (BATCH,), generator=gen),
        )
        for _ in range(steps)
    ]


def parameter_groups(network: Network, groups: int) -> Groups:
    """One group, or two: the linear layers at LR x 1 and the conv and norm at LR x 0.1."""
    if groups == 1:
        return [(list(network.parameters()), 1.0)]
    linear = [*network.hidden.parameters(), *network.out.parameters()]
    rest = [*network.conv.parameters(), *network.norm.parameters()]
    return [(linear, 1.0), (rest, 0.1)]


def constant(t: int) -> float:
    return 1.0


@dataclass(frozen=True)
class Setup:
    """What both optimizers run: steps, parameter groups, the LR factor of step t (from 0)."""

    steps: int = 20
    groups: int = 1
    lr_factor: Callable[[int], float] = constant
    seed: int = 0


@dataclass(frozen=True)
class Contender:
    """One optimizer to run: a name to print, how to build it over parameter groups, its
    base LR, and whether it is the user's code (whose failures are reported in one line)."""

    label: str
    build: Callable[[Groups], torch.optim.Optimizer]
    lr: float
    user_code: bool = False


def trajectory(
    contender: Contender, setup: Setup, dtype: torch.dtype
) -> Iterator[tuple[Network, torch.optim.Optimizer]]:
    """The network and optimizer after each of `setup.steps` steps."""
    network = make_network(dtype, setup.seed)
    groups = parameter_groups(network, setup.groups)
    optimizer = contender.build(groups)
    for t, (x, y) in enumerate(fixed_batches(setup.steps, dtype, setup.seed)):
        for group, (_, scale) in zip(optimizer.param_groups, groups, strict=True):
            group["lr"] = contender.lr * scale * setup.lr_factor(t)
        network.zero_grad(set_to_none=True)
        F.cross_entropy(network(x), y).backward()
        try:
            optimizer.step()
        except Exception as err:
            if not contender.user_code:
                raise
            raise UserError(
                f"{contender.label}.step() raised at step {t + 1} ({dtype_name(dtype)}): "
                f"{where(err, type(optimizer))}{type(err).__name__}: {first_line(err)}"
            ) from None
        yield network, optimizer


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def where(err: BaseException, cls: type) -> str:
    """`file:line: ` of the innermost frame in `cls`'s source file, or '' when none is."""
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:
        return ""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == source]
    return f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def max_abs(a: Tensor, b: Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def within(user: Tensor, library: Tensor, rtol: float, atol: float) -> bool:
    """max |user - library| <= atol + rtol * max |library|, over the tensor: relative to its
    scale, not to each element, whose cancellations (RMSprop's centered s - m^2) can leave
    small elements with only a few correct float32 digits."""
    gap = max_abs(user, library)
    return gap <= atol + rtol * library.double().abs().max().item()


def shaped_state(optimizer: torch.optim.Optimizer, p: Tensor) -> dict[str, Tensor]:
    """`p`'s state tensors of `p`'s own shape (a step count, scalar or int, is left out)."""
    return {
        key: value
        for key, value in optimizer.state.get(p, {}).items()
        if isinstance(value, Tensor) and value.shape == p.shape
    }


@dataclass(frozen=True)
class StatePair:
    library: str
    user: str | None  # None: the user's state holds no tensor of its shape
    how: str  # "by name", "closest at step 1", or why none


def pair_state(
    library: torch.optim.Optimizer,
    user: torch.optim.Optimizer,
    library_params: list[Tensor],
    user_params: list[Tensor],
) -> list[StatePair]:
    """Pair each library state key with one of the user's, after the first step: the same key
    where both have it, else the unused user key whose tensors are closest to it then."""
    lib_states = [shaped_state(library, p) for p in library_params]
    user_states = [shaped_state(user, p) for p in user_params]
    lib_keys = list(dict.fromkeys(k for s in lib_states for k in s))
    user_keys = list(dict.fromkeys(k for s in user_states for k in s))
    pairs, unused = [], [k for k in user_keys if k not in lib_keys]
    for key in lib_keys:
        if key in user_keys:
            pairs.append(StatePair(key, key, "by name"))
            continue

        def distance(user_key: str, key: str = key) -> float:
            gaps = [
                max_abs(u[user_key], s[key])
                for s, u in zip(lib_states, user_states, strict=True)
                if key in s and user_key in u
            ]
            return max(gaps) if gaps else float("inf")

        closest = min(unused, key=distance, default=None)
        if closest is None or distance(closest) == float("inf"):
            pairs.append(StatePair(key, None, "no unpaired tensor of its shape"))
            continue
        unused.remove(closest)
        pairs.append(StatePair(key, closest, "closest at step 1"))
    return pairs


@dataclass(frozen=True)
class StepDifference:
    step: int
    weights: float  # largest |user - library| over every parameter
    state: float | None  # over every paired state tensor; None when none is paired


@dataclass(frozen=True)
class Parting:
    """The first step where a tensor falls outside the tolerance, and the worst one then."""

    step: int
    tensor: str  # "hidden.weight", or with a state key "hidden.weight [exp_avg_sq ~ v]"
    difference: float


@dataclass
class Comparison:
    dtype: torch.dtype
    rtol: float
    atol: float
    pairs: list[StatePair] = field(default_factory=list)
    steps: list[StepDifference] = field(default_factory=list)
    parting: Parting | None = None
    weights_part_at: int | None = None  # the first step a weight leaves the tolerance

    @property
    def equal(self) -> bool:
        return self.parting is None


def worst(failures: list[tuple[float, str]]) -> tuple[float, str]:
    """The largest difference among (difference, tensor) pairs; NaN counts as the largest."""
    return max(failures, key=lambda f: float("inf") if f[0] != f[0] else f[0])


def compare(user: Contender, library: Contender, setup: Setup, dtype: torch.dtype) -> Comparison:
    """Step both in lockstep; per step the largest weight and state differences, and the first
    step and tensor where they part (a weight if one parts then, else a state tensor)."""
    rtol, atol = TOLERANCES[dtype]
    result = Comparison(dtype, rtol, atol)
    names = [name for name, _ in make_network(dtype, setup.seed).named_parameters()]
    runs = zip(trajectory(user, setup, dtype), trajectory(library, setup, dtype), strict=True)
    for step, ((user_net, user_opt), (lib_net, lib_opt)) in enumerate(runs, start=1):
        user_params, lib_params = list(user_net.parameters()), list(lib_net.parameters())
        if step == 1:
            result.pairs = pair_state(lib_opt, user_opt, lib_params, user_params)
        weight_failures: list[tuple[float, str]] = []
        state_failures: list[tuple[float, str]] = []
        weights, state = 0.0, None
        for name, u, p in zip(names, user_params, lib_params, strict=True):
            gap = max_abs(u, p)
            weights = max(weights, gap)
            if not within(u, p, rtol, atol):
                weight_failures.append((gap, name))
            u_state, p_state = shaped_state(user_opt, u), shaped_state(lib_opt, p)
            for pair in result.pairs:
                if pair.user is None or pair.library not in p_state:
                    continue
                same = pair.user == pair.library
                tensor = f"{name} [{pair.library}{'' if same else ' ~ ' + pair.user}]"
                if pair.user not in u_state:
                    state_failures.append((float("inf"), f"{tensor} (not in yours)"))
                    continue
                gap = max_abs(u_state[pair.user], p_state[pair.library])
                state = max(state or 0.0, gap)
                if not within(u_state[pair.user], p_state[pair.library], rtol, atol):
                    state_failures.append((gap, tensor))
        result.steps.append(StepDifference(step, weights, state))
        if weight_failures and result.weights_part_at is None:
            result.weights_part_at = step
        if (weight_failures or state_failures) and result.parting is None:
            gap, tensor = worst(weight_failures or state_failures)
            result.parting = Parting(step, tensor, gap)
    return result


def same_weights(a: Contender, b: Contender, setup: Setup, dtype: torch.dtype) -> bool:
    """Whether `a`'s weights stay within `b`'s tolerance at every step (state not compared:
    a variant may keep its state in another form)."""
    rtol, atol = TOLERANCES[dtype]
    for (a_net, _), (b_net, _) in zip(
        trajectory(a, setup, dtype), trajectory(b, setup, dtype), strict=True
    ):
        pairs = zip(a_net.parameters(), b_net.parameters(), strict=True)
        if not all(within(u, p, rtol, atol) for u, p in pairs):
            return False
    return True
