"""The base of errors that are the user's to fix: the CLI prints them as one line, no traceback."""


class UserError(Exception):
    """Something the operator can fix (a config key, a missing file, an unreachable daemon)."""
