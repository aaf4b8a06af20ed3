"""The 2-D test functions of `optbench toy`, described once as data.

Every function is shifted so that its minimum value is 0: then the loss is the distance
to optimal in value, one threshold means the same on all of them, and contour levels
can be log-spaced. Adding a function is adding one `ToyFunction` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from optbench.errors import UserError

Point = tuple[float, float]


@dataclass(frozen=True)
class ToyFunction:
    name: str
    formula: str  # as the plot title shows it
    expression: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # elementwise in x and y
    start: Point
    domain: tuple[Point, Point]  # ((x_min, x_max), (y_min, y_max)) of the plot
    minima: tuple[Point, ...]  # every global minimum; distances are to the nearest
    # LR per optimizer: the documented defaults suit networks and are mostly far too small
    # here. Each was picked on a 1-3-10 grid at 500 steps, fast but short of unstable; an
    # optimizer left out runs at its documented default.
    lrs: dict[str, float] = field(default_factory=dict)

    def __call__(self, point: torch.Tensor) -> torch.Tensor:
        """The value at `point`, a tensor whose last dimension is (x, y)."""
        return self.expression(point[..., 0], point[..., 1])

    def distance_to_minimum(self, point: torch.Tensor) -> float:
        minima = torch.tensor(self.minima, dtype=point.dtype)
        return float(torch.linalg.vector_norm(minima - point, dim=-1).min())


def _rosenbrock(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _beale(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _himmelblau(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def _ravine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x**2 + 50 * y**2)


def _saddle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # The quartic bounds it below: minima at (0, +-1), a saddle point at the origin.
    return x**2 - y**2 + 0.5 * y**4 + 0.5


def _bowl(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r2 = x**2 + y**2
    return torch.sin(r2) / (r2 + 1) + 0.1 * r2


FUNCTIONS: dict[str, ToyFunction] = {
    f.name: f
    for f in [
        ToyFunction(
            "rosenbrock", "(1-x)² + 100(y-x²)²: a curved, flat-bottomed valley", _rosenbrock,
            start=(-1.5, 2.0), domain=((-2.0, 2.0), (-1.0, 3.0)), minima=((1.0, 1.0),),
            lrs=dict(sgd=1e-3, momentum=1e-3, nesterov=1e-3, adagrad=1.0, rmsprop=0.01, adam=0.1, adamw=0.1,
                     nadam=0.03, radam=0.01, lion=0.01, sophia=1.0, schedule_free=0.1, lookahead=0.3),
        ),
        ToyFunction(
            "beale", "(1.5-x+xy)² + (2.25-x+xy²)² + (2.625-x+xy³)²: flat plateaus, steep walls", _beale,
            start=(1.0, 1.5), domain=((-1.0, 4.5), (-1.5, 2.5)), minima=((3.0, 0.5),),
            lrs=dict(sgd=0.01, momentum=1e-3, nesterov=1e-3, adagrad=1.0, rmsprop=0.03, adam=0.1, adamw=0.1,
                     nadam=0.1, radam=0.01, lion=0.03, sophia=3.0, schedule_free=0.3, lookahead=0.3),
        ),
        ToyFunction(
            "himmelblau", "(x²+y-11)² + (x+y²-7)²: four minima", _himmelblau,
            start=(-0.3, -0.9), domain=((-5.0, 5.0), (-5.0, 5.0)),
            minima=(
                (3.0, 2.0),
                (-2.80511808695274, 3.13131251825057),
                (-3.77931025337775, -3.28318599128617),
                (3.58442834033049, -1.8481265269644),
            ),
            lrs=dict(sgd=0.01, momentum=1e-3, nesterov=1e-3, adagrad=0.3, rmsprop=0.03, adam=0.1, adamw=0.1,
                     nadam=0.1, radam=0.03, lion=0.01, sophia=3.0, schedule_free=0.3, lookahead=0.3),
        ),
        ToyFunction(
            "ravine", "(x² + 50y²)/2: a quadratic with condition number 50", _ravine,
            start=(-8.0, 1.5), domain=((-10.0, 10.0), (-3.0, 3.0)), minima=((0.0, 0.0),),
            lrs=dict(sgd=0.03, momentum=0.01, nesterov=0.01, adagrad=1.0, rmsprop=0.1, adam=0.3, adamw=0.3,
                     nadam=0.3, radam=0.1, lion=0.1, sophia=3.0, schedule_free=1.0, lookahead=1.0),
        ),
        ToyFunction(
            "saddle", "x² - y² + y⁴/2 + 1/2: a saddle at the origin between two minima", _saddle,
            start=(-1.5, 1e-3), domain=((-2.0, 2.0), (-2.0, 2.0)),
            minima=((0.0, -1.0), (0.0, 1.0)),
            lrs=dict(sgd=0.1, momentum=0.01, nesterov=0.01, adagrad=0.3, rmsprop=0.01, adam=0.1, adamw=0.1,
                     nadam=0.1, radam=0.1, lion=0.01, sophia=1.0, schedule_free=0.1, lookahead=0.1),
        ),
        ToyFunction(
            "bowl", "sin(r²)/(r²+1) + 0.1r²: a ring of local minima around the global one", _bowl,
            start=(2.5, 2.0), domain=((-3.0, 3.0), (-3.0, 3.0)), minima=((0.0, 0.0),),
            lrs=dict(sgd=0.1, momentum=0.1, nesterov=0.1, adagrad=0.3, rmsprop=0.03, adam=0.1, adamw=0.1,
                     nadam=0.1, radam=0.1, lion=0.01, sophia=1.0, schedule_free=0.1, lookahead=0.1),
        ),
    ]
}  # fmt: skip


def toy_function(name: str) -> ToyFunction:
    if name not in FUNCTIONS:
        raise UserError(f"unknown function '{name}'; choose from {', '.join(FUNCTIONS)}")
    return FUNCTIONS[name]
