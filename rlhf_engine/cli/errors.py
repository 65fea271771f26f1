"""The CLI's user errors: a mistake in a command's input prints one line on stderr and exits 2, no traceback."""

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the command's input: one line, exit 2."""
