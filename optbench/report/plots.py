"""The report's figures: one panel per workload, one colour per method, seeds as bands."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optbench.report.profiles import SECONDS, TAU_MAX, performance_profiles
from optbench.report.runs import Run
from optbench.report.sensitivity import Sensitivity
from optbench.report.summary import Summary
from optbench.tracking.figures import new_figure, save_png

LINESTYLES = ("-", "--", ":", "-.")


def method_styles(summaries: list[Summary]) -> dict[str, dict]:
    """The same colour (and, past ten methods, line style) for a method in every figure."""
    methods = dict.fromkeys(s.group.method for s in summaries)
    return {
        m: {"color": f"C{i % 10}", "linestyle": LINESTYLES[i // 10 % len(LINESTYLES)]}
        for i, m in enumerate(methods)
    }


def _panels(summaries: list[Summary], title: str):
    """A figure with one axes per workload: (figure, {workload: axes})."""
    return _workload_panels(list(dict.fromkeys(s.group.workload for s in summaries)), title)


def _workload_panels(workloads: list[str], title: str):
    ncols = min(len(workloads), 3)
    nrows = math.ceil(len(workloads) / ncols)
    fig, axes = new_figure(
        5.5 * ncols + 2.5,
        4.0 * nrows,
        nrows=nrows,
        ncols=ncols,
        squeeze=False,
        layout="constrained",
    )
    flat = list(axes.ravel())
    for ax in flat[len(workloads) :]:
        ax.remove()
    for ax, workload in zip(flat, workloads, strict=False):
        ax.set_title(workload, fontsize="medium")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig, dict(zip(workloads, flat, strict=False))


def _legend(fig, axes: dict) -> None:
    handles = {}
    for ax in axes.values():
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="outside lower center",
            ncols=min(len(handles), 2),
            fontsize="small",
            frameon=False,
        )


def plot_epoch_curves(
    summaries: list[Summary], key: str, ylabel: str, path: Path, scale: float = 1.0
) -> None:
    """`key` of metrics.jsonl per epoch: the mean over completed seeds, a band of ± one std."""
    styles = method_styles(summaries)
    fig, axes = _panels(summaries, f"{ylabel}: mean ± std over seeds (completed runs)")
    for s in summaries:
        per_epoch: dict[int, list[float]] = {}
        for run in s.group.completed:
            for record in run.metrics:
                if record.get(key) is not None:
                    per_epoch.setdefault(record["epoch"], []).append(record[key] * scale)
        if not per_epoch:
            continue
        epochs = sorted(per_epoch)
        mean = np.array([statistics.fmean(per_epoch[e]) for e in epochs])
        std = np.array(
            [statistics.stdev(v) if len(v) > 1 else 0.0 for v in map(per_epoch.get, epochs)]
        )
        ax = axes[s.group.workload]
        style = styles[s.group.method]
        ax.plot(
            epochs, mean, marker="o" if len(epochs) <= 30 else None, label=s.group.method, **style
        )
        ax.fill_between(
            epochs, mean - std, mean + std, color=style["color"], alpha=0.2, linewidth=0
        )
    for ax in axes.values():
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
    _legend(fig, axes)
    save_png(fig, path)


def _lr_curve(run: Run) -> tuple[str, list[int], list[float]] | None:
    """The first parameter group's LR at every logged step, from the run's TensorBoard events."""
    if not run.metrics or not run.metrics[0].get("lr"):
        return None
    group = next(iter(run.metrics[0]["lr"]))
    events = EventAccumulator(str(run.path), size_guidance={"scalars": 0})
    events.Reload()
    if f"lr/{group}" not in events.Tags()["scalars"]:
        return None
    scalars = events.Scalars(f"lr/{group}")
    return group, [e.step for e in scalars], [e.value for e in scalars]


def _seed_order(run: Run) -> tuple[bool, float, str]:
    """The first seed: the lowest integer one; a hand-edited config's odd seed after them."""
    seed = run.seed
    if isinstance(seed, int | float) and not isinstance(seed, bool):
        return False, float(seed), ""
    return True, 0.0, str(seed)


def plot_lr(summaries: list[Summary], path: Path) -> None:
    """The LR schedule each group ran, from its first completed seed."""
    styles = method_styles(summaries)
    fig, axes = _panels(summaries, "learning rate per optimizer step (first seed)")
    param_groups, peaks = set(), []
    for s in summaries:
        completed = s.group.completed
        curve = _lr_curve(min(completed, key=_seed_order)) if completed else None
        if curve is None:
            continue
        group, steps, lrs = curve
        param_groups.add(group)
        peaks.append(max(lrs))
        axes[s.group.workload].plot(steps, lrs, label=s.group.method, **styles[s.group.method])
    # Methods' LRs can differ by orders of magnitude (SGD 0.1, Adam 1e-3).
    log = bool(peaks) and min(peaks) > 0 and max(peaks) / min(peaks) > 20
    for ax in axes.values():
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"LR (param group {', '.join(sorted(param_groups))})")
        if log:
            ax.set_yscale("log", nonpositive="clip")  # an LR of 0 drops off the bottom
    _legend(fig, axes)
    save_png(fig, path)


def plot_final(summaries: list[Summary], path: Path, title: str) -> None:
    """The main metric's final value per group: mean with ± one std error bars, and each seed
    as a dot; each workload's panel in its own metric (a loss, an accuracy in %)."""
    styles = method_styles(summaries)
    fig, axes = _panels(summaries, f"{title}: mean ± std over seeds (completed runs)")
    positions: dict[str, list[tuple[int, str]]] = {}
    labels: dict[str, dict[str, None]] = {}
    for s in summaries:
        labels.setdefault(s.group.workload, {})[s.headline.label("final")] = None
        scale = s.headline.shown[1]
        finals = [r.result(s.headline.final) for r in s.group.completed]
        finals = [scale * a for a in finals if a is not None]
        if not finals:
            continue
        ticks = positions.setdefault(s.group.workload, [])
        x = len(ticks)
        ticks.append((x, s.group.method.replace(", ", "\n")))
        ax = axes[s.group.workload]
        color = styles[s.group.method]["color"]
        std = statistics.stdev(finals) if len(finals) > 1 else 0.0
        ax.bar(x, statistics.fmean(finals), yerr=std, capsize=5, color=color, alpha=0.7)
        ax.scatter([x] * len(finals), finals, color="black", s=12, zorder=3)
    for workload, ax in axes.items():
        ticks = positions.get(workload, [])
        ax.set_xticks([x for x, _ in ticks], [label for _, label in ticks], fontsize="small")
        ax.set_ylabel(" / ".join(labels.get(workload, {})))
        ax.grid(axis="x", visible=False)
    save_png(fig, path)


def plot_profiles(
    times: dict[str, dict[str, float]], summaries: list[Summary], path: Path, unit: str = SECONDS
) -> None:
    """rho(tau) for tau in [1, TAU_MAX], one step line per method."""
    styles = method_styles(summaries)
    taus = np.linspace(1.0, TAU_MAX, 601)
    fig, ax = new_figure()
    for i, (method, fractions) in enumerate(performance_profiles(times, taus).items()):
        # Equal profiles would hide each other: thinner lines on top.
        ax.step(
            taus,
            fractions,
            where="post",
            label=method,
            linewidth=3.0 - 0.3 * (i % 6),
            **styles[method],
        )
    ax.set_xlim(1.0, TAU_MAX)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("τ (time to target within τ × the fastest method's)")
    ax.set_ylabel(f"fraction of the {len(times)} workloads")
    ax.set_title(f"performance profiles: time to target in {unit} (a miss never counts)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    save_png(fig, path)


BEST_MARKER = {"marker": "*", "markersize": 14, "markeredgecolor": "black", "linestyle": "none"}
DIVERGED_MARKER = {
    "marker": "x", "color": "red", "markersize": 9, "markeredgewidth": 2, "linestyle": "none",
}  # fmt: skip


def plot_sensitivity(s: Sensitivity, path: Path) -> None:
    """The final main metric against the key, one panel per workload and one line per curve:
    the mean over completed seeds, a band for its 95% t-interval, the best value starred, a red
    x at the foot of the panel where seeds diverged."""
    scale = s.headline.shown[1]
    label = s.headline.label("final")
    title = f"{label} vs {s.key}: mean over completed seeds, 95% t-interval"
    if s.others:
        title += f"\nat each {s.key}, the best mean over {', '.join(s.others)}"
    workloads = list(dict.fromkeys(c.workload for c in s.curves))
    fig, axes = _workload_panels(workloads, title)
    colours = {
        label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(c.label for c in s.curves))
    }
    marked = {"best": False, "diverged": False}
    for c in s.curves:
        ax, colour = axes[c.workload], colours[c.label]
        xs = [p.value for p in c.points]
        means = [np.nan if p.mean is None else p.mean * scale for p in c.points]
        bands = [_band(p.mean, p.interval, scale, s.headline.percent) for p in c.points]
        ax.plot(xs, means, marker="o", color=colour, label=c.label)
        ax.fill_between(
            xs, [low for low, _ in bands], [high for _, high in bands], color=colour, alpha=0.2,
            linewidth=0,
        )  # fmt: skip
        if c.best is not None and c.best.mean is not None:
            ax.plot(c.best.value, c.best.mean * scale, color=colour, **BEST_MARKER)
            marked["best"] = True
        diverged = [p.value for p in c.points if p.diverged]
        if diverged:
            # x in data units, y in axes units: the foot of the panel whatever the metric's
            # range, one row per curve so that curves diverging at one value do not hide each other.
            height = 0.04 + 0.05 * list(colours).index(c.label)
            ax.plot(
                diverged, [height] * len(diverged), transform=ax.get_xaxis_transform(),
                clip_on=False, **DIVERGED_MARKER,
            )  # fmt: skip
            marked["diverged"] = True
    for workload, ax in axes.items():
        if s.log:
            ax.set_xscale("log")
        ax.set_xlabel(s.key + (" (log scale)" if s.log else ""))
        ax.set_ylabel(label)
        # Scaled to the means: with two seeds a t-interval is 12.7 standard errors wide, and
        # its band would flatten every curve into a line.
        means = [p.mean * scale for c in s.curves if c.workload == workload
                 for p in c.points if p.mean is not None]  # fmt: skip
        if means:
            pad = 0.1 * (max(means) - min(means)) or 0.05 * abs(max(means)) or 1.0
            ax.set_ylim(min(means) - pad, max(means) + pad)
    # The markers' legend entries after the curves', in black and white: they mark every curve.
    first = next(iter(axes.values()))
    if marked["best"]:
        first.plot([], [], color="white", label="best mean", **BEST_MARKER)
    if marked["diverged"]:
        first.plot([], [], label="diverged (one or more seeds)", **DIVERGED_MARKER)
    _legend(fig, axes)
    save_png(fig, path)


def _band(
    mean: float | None, interval: tuple[float, float] | None, scale: float, fraction: bool
) -> tuple[float, float]:
    """The band around a point: its t-interval (an accuracy's within [0, 1]), the mean itself
    for one seed, nothing (NaN, which breaks the band) without a mean."""
    if mean is None:
        return np.nan, np.nan
    low, high = interval or (mean, mean)
    if fraction:
        low, high = max(low, 0.0), min(high, 1.0)
    return low * scale, high * scale
