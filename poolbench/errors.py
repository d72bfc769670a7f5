"""Errors a user can cause. The CLI prints them as one line; exit code 2 for usage errors."""


class PoolbenchError(Exception):
    """A failure the user can act on (exit code 1 in the CLI)."""

    exit_code = 1


class UsageError(PoolbenchError, ValueError):
    """Bad input: unknown name, bad option, missing file (exit code 2 in the CLI)."""

    exit_code = 2


class UnknownPoolError(UsageError, KeyError):
    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PoolOptionError(UsageError):
    pass


class PluginError(UsageError):
    pass
