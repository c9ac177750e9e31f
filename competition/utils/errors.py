"""User-facing errors: bad input that the CLI reports as one line and exit code 2, never a traceback."""


class UserError(Exception):
    """A problem with the user's input (file, flag, config) that names the file, the problem and the fix."""


def plain(value: object) -> object:
    """A numpy scalar as the Python value it holds (7, not np.int64(7)) for a message; anything else unchanged."""
    return value.item() if hasattr(value, "dtype") and hasattr(value, "item") else value


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
