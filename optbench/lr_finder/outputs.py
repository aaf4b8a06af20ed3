"""What a range test leaves behind: lr_find.csv, lr_find.json, lr_find.png, TensorBoard
scalars and the figure, and a rich table of the suggestions."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from rich.table import Table
from torch.utils.tensorboard import SummaryWriter

from optbench.lr_finder.finder import FinderResult
from optbench.lr_finder.suggestions import RULES, trend, usable_points
from optbench.tracking.figures import new_figure, save_png
from optbench.tracking.files import atomic_write_json, atomic_write_text

CSV_NAME, JSON_NAME, PNG_NAME = "lr_find.csv", "lr_find.json", "lr_find.png"
RULE_COLOURS = {
    "steepest": "tab:red",
    "valley": "tab:green",
    "min/10": "tab:purple",
    "cycle": "tab:orange",
}


def summary(result: FinderResult, label: str) -> dict[str, Any]:
    """The JSON record: every suggestion with its reason, the chosen one, how the test ended."""
    curve = result.curve
    return {
        "label": label,
        "rule": result.rule,
        "lr": result.chosen.lr,
        "reason": result.chosen.reason,
        "suggestions": {rule: s.as_dict() for rule, s in result.suggestions.items()},
        "stop_reason": curve.stop_reason,
        "diverged_at_lr": curve.diverged_lr,
        "points": len(curve.losses),
        "seeds": len(result.seed_curves),
        "settings": vars(result.settings),
    }


def curve_csv(result: FinderResult) -> str:
    curve = result.curve
    out = io.StringIO()
    writer = csv.writer(out)
    columns = ["step", "lr", "loss", "smoothed_loss", "trend"] + (
        ["loss_low", "loss_high"] if result.band else []
    )
    writer.writerow(columns)
    smoothed_trend = trend(curve, result.settings.smoothing)
    for i, (lr, loss, smoothed) in enumerate(
        zip(curve.lrs, curve.losses, curve.smoothed, strict=True)
    ):
        row = [
            i,
            f"{lr:.6g}",
            f"{loss:.6g}",
            f"{smoothed:.6g}",
            f"{smoothed_trend[i]:.6g}" if i < len(smoothed_trend) else "",
        ]
        if result.band:
            row += [f"{result.band[0][i]:.6g}", f"{result.band[1][i]:.6g}"]
        writer.writerow(row)
    return out.getvalue()


def plot(result: FinderResult, title: str):
    """Loss against LR on a log axis: raw, smoothed, the seeds' band, every suggestion."""
    curve = result.curve
    fig, ax = new_figure()
    if result.band:
        ax.fill_between(
            curve.lrs,
            *result.band,
            color="tab:blue",
            alpha=0.15,
            label=f"{len(result.seed_curves)} seeds",
        )
    smoothed_trend = trend(curve, result.settings.smoothing)
    ax.plot(curve.lrs, curve.losses, color="tab:blue", alpha=0.35, lw=1, label="loss")
    ax.plot(
        curve.lrs[: len(smoothed_trend)],
        smoothed_trend,
        color="tab:blue",
        lw=2,
        label="trend (median of 5, zero-lag)",
    )
    for rule, suggestion in result.suggestions.items():
        if suggestion.lr is not None:
            style = "-" if rule == result.rule else ":"
            ax.axvline(
                suggestion.lr,
                color=RULE_COLOURS[rule],
                ls=style,
                lw=1.5,
                label=f"{rule}: {suggestion.lr:.2g}",
            )
    if curve.diverged_lr is not None:
        ax.axvline(
            curve.diverged_lr,
            color="black",
            ls="--",
            lw=1,
            label=f"divergence: {curve.diverged_lr:.2g}",
        )
    # Scale the y axis to every loss up to where the divergence climbs from, raw ones too:
    # the raw loss dips below its trend, and the explosion after would flatten the rest.
    usable = usable_points(curve)
    band = [v for side in result.band or () for v in side[:usable]]
    before = [v for v in (*curve.losses[:usable], *smoothed_trend, *band) if math.isfinite(v)]
    if before:
        low, high = min(before), max(before)
        ax.set_ylim(low - 0.1 * (high - low) - 1e-12, high + 0.3 * (high - low) + 1e-12)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    if result.chosen.lr is None:
        title += f"\nno suggestion: {result.chosen.reason}"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, which="both", alpha=0.2)
    return fig


def suggestions_table(result: FinderResult, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("rule")
    table.add_column("lr", justify="right")
    table.add_column("why")
    for rule in RULES:
        s = result.suggestions[rule]
        value = (
            "-"
            if s.lr is None
            else f"{s.lr:.3g}" + (f" (base {s.base_lr:.3g})" if s.base_lr else "")
        )
        marker = " *" if rule == result.rule else ""
        table.add_row(rule + marker, value, s.reason)
    table.caption = f"{result.curve.stop_reason}; * the rule in use (lr_find.rule)"
    return table


def write_outputs(result: FinderResult, out_dir: Path, label: str) -> dict[str, Any]:
    """Write the CSV, JSON, PNG and TensorBoard records of a test into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = summary(result, label)
    atomic_write_text(out_dir / CSV_NAME, curve_csv(result))
    atomic_write_json(out_dir / JSON_NAME, record)
    writer = SummaryWriter(str(out_dir))
    for i, (lr, loss, smoothed) in enumerate(
        zip(result.curve.lrs, result.curve.losses, result.curve.smoothed, strict=True)
    ):
        writer.add_scalar("lr_find/lr", lr, i)
        if math.isfinite(loss):
            writer.add_scalar("lr_find/loss", loss, i)
            writer.add_scalar("lr_find/smoothed_loss", smoothed, i)
    writer.add_figure("lr_find/curve", plot(result, f"LR range test: {label}"), close=True)
    writer.close()
    save_png(plot(result, f"LR range test: {label}"), out_dir / PNG_NAME)
    return record
