"""User-facing errors: bad input that the CLI reports as one line and exit code 2, never a traceback."""


class UserError(Exception):
    """A problem with the user's input (file, flag, config) that names the file, the problem and the fix."""


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
