"""The pictures of `optbench toy`: paths over a contour plot (PNG) and their animation (GIF)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from optbench.toy.functions import ToyFunction
from optbench.toy.trajectories import Trajectory
from optbench.tracking.figures import new_figure, save_png
from optbench.tracking.files import atomic_write_bytes

GRID_POINTS = 400  # per axis of the contour grid
CONTOUR_LEVELS = 30
LOWEST_LEVEL = 1e-3  # every function's minimum is 0, which a log scale cannot show
LOSS_AXIS_DECADES = 6  # the loss axis stops at threshold / 10^6: fast runs would squash the rest


def _styles(trajectories: list[Trajectory]) -> list[dict[str, str]]:
    """Ten colours solid, then the same ten dashed, then dotted: no two optimizers look alike."""
    return [
        {"color": f"C{i % 10}", "ls": ("-", "--", ":")[i // 10 % 3]}
        for i in range(len(trajectories))
    ]


def _label(trajectory: Trajectory) -> str:
    grid = ", grid" if trajectory.lr_source == "grid" else ""
    label = f"{trajectory.optimizer} (lr {trajectory.lr:.3g}{grid})"
    if trajectory.diverged_at is not None:
        label += f", diverged at step {trajectory.diverged_at}"
    return label


def _draw_surface(ax: Axes, function: ToyFunction) -> list[Line2D]:
    """Log-spaced contours of `function` over its domain; returns the minima and start markers."""
    (x0, x1), (y0, y1) = function.domain
    x = torch.linspace(x0, x1, GRID_POINTS, dtype=torch.float64)
    y = torch.linspace(y0, y1, GRID_POINTS, dtype=torch.float64)
    xx, yy = torch.meshgrid(x, y, indexing="xy")
    zz = function(torch.stack([xx, yy], dim=-1)).numpy()
    low, high = max(float(zz.min()), LOWEST_LEVEL), float(zz.max())
    levels, norm = np.geomspace(low, high, CONTOUR_LEVELS), LogNorm(low, high)
    ax.contourf(xx, yy, zz.clip(min=low), levels=levels, norm=norm, cmap="Blues_r", alpha=0.35)
    ax.contour(xx, yy, zz, levels=levels, norm=norm, cmap="Blues_r", linewidths=0.6, alpha=0.8)
    minima = np.array(function.minima)
    (minimum,) = ax.plot(
        *minima.T, "*", ms=14, color="gold", mec="black", label="minimum", zorder=5
    )
    (start,) = ax.plot(*function.start, "o", ms=7, color="black", label="start", zorder=5)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{function.name}: {function.formula}", fontsize=10)
    return [minimum, start]


def _draw_paths(ax: Axes, trajectories: list[Trajectory]) -> list[tuple[Line2D, Line2D]]:
    """One line per optimizer and a marker where it stopped: a dot, or a cross if it diverged."""
    drawn = []
    for trajectory, style in zip(trajectories, _styles(trajectories), strict=True):
        (line,) = ax.plot(*trajectory.points.T, lw=1.6, label=_label(trajectory), **style)
        diverged = trajectory.diverged_at is not None
        (end,) = ax.plot(*trajectory.points[-1], "x" if diverged else "o", ms=7, mew=2, color=style["color"],
                         mec=style["color"] if diverged else "black", zorder=6)  # fmt: skip
        drawn.append((line, end))
    return drawn


def _draw_losses(ax: Axes, trajectories: list[Trajectory], threshold: float) -> Line2D:
    """Loss against step on a log axis; returns the threshold line, for the legend."""
    for trajectory, style in zip(trajectories, _styles(trajectories), strict=True):
        ax.plot(trajectory.losses, lw=1.4, **style)
    line = ax.axhline(threshold, color="grey", ls="-.", lw=1, label=f"threshold {threshold:g}")
    ax.set_yscale("log")
    shown = torch.cat([t.losses for t in trajectories]).clamp(min=threshold / 10**LOSS_AXIS_DECADES)
    ax.set_ylim(float(shown.min()) / 2, max(float(shown.max()), threshold) * 2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (0 at the minimum)")
    ax.grid(True, which="major", alpha=0.3)
    return line


def _legend(fig: Figure, handles: list[Line2D]) -> None:
    """Beside the axes, where it hides no path."""
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)


def plot_trajectories(
    function: ToyFunction,
    trajectories: list[Trajectory],
    path: Path,
    threshold: float,
    loss_panel: bool = True,
) -> None:
    """The paths over the contours and, with `loss_panel`, loss against step (log scale)."""
    if loss_panel:
        fig, (surface_ax, loss_ax) = new_figure(14.0, 5.5, ncols=2, layout="constrained")
    else:
        fig, surface_ax = new_figure(9.0, 5.5, layout="constrained")
    handles = _draw_surface(surface_ax, function)
    handles += [line for line, _ in _draw_paths(surface_ax, trajectories)]
    if loss_panel:
        handles.append(_draw_losses(loss_ax, trajectories, threshold))
    _legend(fig, handles)
    save_png(fig, path)


def animate_trajectories(
    function: ToyFunction, trajectories: list[Trajectory], path: Path, frames: int, fps: int
) -> None:
    """The paths drawn step by step, in at most `frames` frames, as a GIF."""
    fig, ax = new_figure(9.0, 5.5, layout="constrained")
    markers = _draw_surface(ax, function)
    drawn = _draw_paths(ax, trajectories)
    _legend(fig, markers + [line for line, _ in drawn])
    longest = max(len(t.points) for t in trajectories)
    # Spaced quadratically: denser early on, where the paths move most.
    steps = np.unique((np.linspace(0, 1, frames) ** 2 * (longest - 1)).round().astype(int))

    def draw(step: int) -> None:
        for (line, end), trajectory in zip(drawn, trajectories, strict=True):
            shown = trajectory.points[: step + 1]
            line.set_data(*shown.T)
            end.set_data(*shown[-1:].T)
            # A path that has stopped shows how: the cross of divergence appears when it does.
            if trajectory.diverged_at is None or step < len(trajectory.points) - 1:
                end.set_marker("o")
                end.set_markeredgecolor("black")
            else:
                end.set_marker("x")
                end.set_markeredgecolor(line.get_color())
        ax.set_title(f"{function.name}, step {step}", fontsize=10)

    animation = FuncAnimation(fig, draw, frames=steps)
    # PillowWriter wants a file name: write there, then move the bytes in atomically.
    with tempfile.TemporaryDirectory() as tmp:
        gif = Path(tmp) / "paths.gif"
        animation.save(gif, writer=PillowWriter(fps=fps), dpi=80)
        atomic_write_bytes(path, gif.read_bytes())
    plt.close(fig)
