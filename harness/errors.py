"""The one exception a user sees as a single line: a bad setting or a bad input file."""


class ConfigError(ValueError):
    """A bad setting or input; its message is the one line the user sees (no traceback)."""
