"""The packages import one way: the layers the README states, checked on every import."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "optbench"
BASE_MODULES = {
    "errors",
    "checks",
    "config",
    "distributed",
    "hydra_command",
    "user_code",
    "__init__",
    "__main__",
}


def stated_layers() -> list[list[str]]:
    """The README's `Layers:` line, bottom first: each layer a list of packages."""
    line = re.search(r"^Layers: `(.+)`$", (ROOT / "README.md").read_text(), re.MULTILINE)
    assert line, "README.md must state the layers on a line 'Layers: `a -> b | c -> ...`'"
    return [[name.strip() for name in layer.split("|")] for layer in line.group(1).split("->")]


def unit(module: str) -> str:
    """The layer unit of `optbench.x.y`: its package `x`, or `base` for top-level modules."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE_MODULES:
        return "cli" if parts[-1] in ("cli", "__main__") and len(parts) == 2 else "base"
    return parts[1]


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("optbench")]
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("optbench")
        ):
            found.append((node.lineno, node.module))
    return found


def module_name(path: Path) -> str:
    return ".".join(("optbench", *path.relative_to(PACKAGE).with_suffix("").parts))


def test_every_package_is_in_exactly_one_stated_layer():
    names = [name for layer in stated_layers() for name in layer]
    assert len(names) == len(set(names))
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} - {"configs"}
    assert packages | {"base", "cli"} == set(names)


def violations(path: Path, module: str) -> list[str]:
    """The imports of `path` (module `module`) that run up or sideways across the layers."""
    rank = {name: i for i, layer in enumerate(stated_layers()) for name in layer}
    here, wrong = unit(module), []
    for line, target in imports(path):
        there = unit(target)
        if there != here and rank[there] >= rank[here]:
            wrong.append(f"{module}:{line} ({here}) imports {target} ({there})")
    return wrong


def test_no_import_runs_back_up_or_sideways():
    wrong = [
        v for path in sorted(PACKAGE.rglob("*.py")) for v in violations(path, module_name(path))
    ]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_check_catches_upward_sideways_and_lazy_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from optbench.run.plan import plan_run\n"  # down: fine
        "import optbench.toy.functions\n"  # sideways (report | toy)
        "def later():\n    from optbench.commands import train\n"  # up, inside a function
    )
    found = violations(bad, "optbench.report.fake")
    assert len(found) == 2 and "toy" in found[0] and "commands" in found[1]
