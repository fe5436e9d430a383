"""The one error type the CLI turns into a clear one-line message and exit code 2."""


class RRError(Exception):
    """A user-facing error: bad input or an environment problem, with what to do about it."""

    exit_code = 2
