"""Matplotlib figures written as PNG files, headless and atomically."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed, on CI or over SSH

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from optbench.tracking.files import atomic_write_bytes


def new_figure(width: float = 7.0, height: float = 4.5, **subplots) -> tuple[Figure, object]:
    """A figure and its axes (`plt.subplots` arguments pass through)."""
    return plt.subplots(figsize=(width, height), **subplots)


def save_png(fig: Figure, path: Path, dpi: int = 120) -> None:
    """Render `fig` to `path` as PNG in one atomic write, then free it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
