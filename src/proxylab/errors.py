"""The one exception type the CLI turns into a one-line message and exit code 2."""


class LabError(Exception):
    """A problem the user can fix: bad input, a busy port, a missing binary, a dead stack.

    The message is one line that says what is wrong and how to fix it.
    """
