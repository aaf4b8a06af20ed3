"""Import a user's own class or function by dotted path (`mypkg.opt.MyAdam`), with no edit to
optbench: from the current folder, as `python -m` would, or from any installed package."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from optbench.errors import UserError


def import_object(path: str, what: str) -> Any:
    """The object `path` names; any failure to import it is one line naming `what` was asked."""
    if not isinstance(path, str) or not path:
        raise UserError(f"{what} must be a dotted import path such as mypkg.module.Name")
    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise UserError(f"{what}={path}: give the module too, as in mypkg.module.{path}")
    # The `optbench` console script, unlike `python -m`, does not put the working folder on
    # sys.path; a user's `./mypkg` is found as they expect.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and f"{module_name}.".startswith(f"{err.name}."):
            raise UserError(
                f"{what}={path}: no module named '{err.name}' (run from the folder that holds "
                f"it, or pip install it)"
            ) from None
        raise UserError(f"{what}={path}: importing {module_name} failed: {err}") from None
    except Exception as err:  # the user's module raised while importing
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserError(
            f"{what}={path}: importing {module_name} raised {type(err).__name__}: {message}"
        ) from None
    if not hasattr(module, attr):
        raise UserError(f"{what}={path}: module {module_name} has no attribute '{attr}'")
    return getattr(module, attr)


def keyword_parameters(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The parameters a class or function takes by name, with their defaults
    (`inspect.Parameter.empty` where none); `*args` and `**kwargs` are left out, since
    they would swallow a misspelt key."""
    return {
        name: p.default
        for name, p in inspect.signature(obj).parameters.items()
        if name not in skip and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
