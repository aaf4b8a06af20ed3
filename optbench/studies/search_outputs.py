"""The files a search writes in its sweep dir, and how `optbench report` shows them.

Apart from the search itself so that the report reads them without importing Optuna.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SUMMARY_NAME = "search.json"
HISTORY_PNG = "optimization_history.png"
IMPORTANCE_PNG = "param_importances.png"
PNG_NAMES = (HISTORY_PNG, IMPORTANCE_PNG)


def report_section(roots: list[Path], out: Path) -> str:
    """Markdown for `optbench report`: each searched root's best trial and plots, or ""."""
    parts = []
    for root in roots:
        summary_file = root / SUMMARY_NAME
        if not summary_file.is_file():
            continue
        summary = json.loads(summary_file.read_text())
        best = summary.get("best")
        line = f"`{root}`: {summary.get('n_finished')} trials finished"
        if best is not None:
            line += f"; best trial {best['number']}, value {best['value']}, with {best['params']}"
        parts.append(line + f" ({SUMMARY_NAME}).\n")
        parts += [
            f"![{name}]({os.path.relpath(root / name, out)})\n"
            for name in PNG_NAMES
            if (root / name).is_file()
        ]
    return "\n## Optuna search\n\n" + "\n".join(parts) if parts else ""
