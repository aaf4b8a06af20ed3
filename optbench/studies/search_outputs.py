"""The files a search or the tuning protocol writes in its sweep dir, and how `optbench report`
shows them.

Apart from the search itself so that the report reads them without importing Optuna.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

SUMMARY_NAME = "search.json"
TUNING_NAME = "tuning.json"
HISTORY_PNG = "optimization_history.png"
IMPORTANCE_PNG = "param_importances.png"
PNG_NAMES = (HISTORY_PNG, IMPORTANCE_PNG)


def report_section(roots: list[Path], out: Path) -> str:
    """Markdown for `optbench report`: searches' best trials and plots, tuning studies' picks."""
    return _search_section(roots, out) + _tuning_section(roots)


def _search_section(roots: list[Path], out: Path) -> str:
    parts = []
    for root in roots:
        summary_file = root / SUMMARY_NAME
        if not summary_file.is_file():
            continue
        summary, why = read_summary(summary_file)
        line = None if summary is None else _render(_search_line, summary, root)
        if line is None:
            parts.append(f"`{summary_file}`: {why or 'not a search summary'}, not shown.\n")
            continue
        parts.append(line)
        parts += [
            f"![{name}]({os.path.relpath(root / name, out)})\n"
            for name in PNG_NAMES
            if (root / name).is_file()
        ]
    return "\n## Optuna search\n\n" + "\n".join(parts) if parts else ""


def _search_line(summary: dict[str, Any], root: Path) -> str:
    best = summary.get("best")
    line = f"`{root}`: {summary.get('n_finished')} trials finished"
    if best is not None:
        line += f"; best trial {best['number']}, value {best['value']}, with {best['params']}"
    return line + f" ({SUMMARY_NAME}).\n"


def _tuning_section(roots: list[Path]) -> str:
    """Each tuning study's table, found at a root or (for `report <root>/eval`) above it."""
    found = {p.resolve() for r in roots for p in (r / TUNING_NAME, r.parent / TUNING_NAME)}
    parts = []
    for path in sorted(p for p in found if p.is_file()):
        summary, why = read_summary(path)
        if summary is None:
            parts.append(f"`{path}`: {why}, not shown.\n\n")
        elif "studies" not in summary:  # written before the protocol ran as Optuna studies
            parts.append(f"`{path}`: an older tuning summary, not shown.\n\n")
        else:
            table = _render(_tuning_table, summary, path)
            parts.append(table or f"`{path}`: not a tuning summary, not shown.\n\n")
    return "\n## Equal-budget tuning\n\n" + "".join(parts) if parts else ""


def _tuning_table(summary: dict[str, Any], path: Path) -> str:
    parts = [
        f"`{path}`: {summary['studies']} studies x {summary['trials_per_study']} trials per "
        f"optimizer ({summary['direction']} the objective); score = median over studies of "
        "each study's best; the median study's best rerun on seeds "
        f"{summary['eval_seeds']}.\n\n"
        "| optimizer | median of study bests | study bests | pick | reruns mean | std | n |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
    ]
    for name, entry in summary["optimizers"].items():
        if "pick" not in entry:
            parts.append(f"| {name} | no completed trial | | | | | |\n")
            continue
        bests = ", ".join("-" if b is None else f"{b:.4g}" for b in entry["study_bests"])
        params = ", ".join(f"{k}={_value(v)}" for k, v in entry["pick"]["params"].items())
        if entry["self_tuning"]:
            params = f"defaults, {entry['epochs']} epochs (self-tuning)"
        ev = entry.get("eval_objective") or {"mean": None, "std": None, "n": "not yet rerun"}
        parts.append(
            f"| {name} | {entry['median_of_bests']:.4g} | {bests} | {params} | "
            f"{_num(ev['mean'])} | {_num(ev['std'])} | {ev['n']} |\n"
        )
    return "".join(parts)


def read_summary(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A search.json or tuning.json as a mapping, or None and why it cannot be read."""
    try:
        summary = json.loads(path.read_text())
    except OSError as err:
        return None, f"cannot read it ({err.strerror or err})"
    except ValueError as err:  # also a file that is not UTF-8
        return None, f"not valid JSON ({(str(err).splitlines() or [type(err).__name__])[0]})"
    if not isinstance(summary, dict):
        return None, "not a JSON object"
    return summary, None


def _render(
    render: Callable[[dict[str, Any], Path], str], summary: dict[str, Any], path: Path
) -> str | None:
    """`render(summary, path)`, or None for a summary that lacks what it reads or holds the
    wrong kind of value there: a file cut or edited by hand is named in the report, not
    shown, and the runs' comparison is still written."""
    try:
        return render(summary, path)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _value(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
