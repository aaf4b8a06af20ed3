"""The one exception type for user mistakes, and an argument parser that raises it."""

from __future__ import annotations

import argparse
from typing import NoReturn


class UserError(Exception):
    """A mistake in the user's input or environment.

    The CLI prints it as one line and exits with code 2; anything else is a bug and keeps
    its traceback.
    """


class ArgumentParser(argparse.ArgumentParser):
    """argparse for optbench's own subcommands: a usage mistake is a UserError (one line, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)
