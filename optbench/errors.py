"""The one exception type for user mistakes."""


class UserError(Exception):
    """A mistake in the user's input or environment.

    The CLI prints it as one line and exits with code 2; anything else is a bug and keeps
    its traceback.
    """
