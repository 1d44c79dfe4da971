"""User errors: one clear line saying what was wrong, where, and what was expected (a URI's password hidden)."""

from mlray.redaction import redact_credentials


class UserError(Exception):
    """A mistake in the user's input; the CLI prints it in one line and exits with code 2."""

    exit_code = 2

    def __init__(self, message: object = "", *args):
        super().__init__(redact_credentials(str(message)), *args)
