"""User errors: one clear line saying what was wrong, where, and what was expected."""


class UserError(Exception):
    """A mistake in the user's input; the CLI prints it in one line and exits with code 2."""

    exit_code = 2
