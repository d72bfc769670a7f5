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


def one_line(exc: BaseException, with_type: bool = False) -> str:
    """The informative first line of an exception, at most 200 characters.

    Compile errors run to pages and load_state_dict puts a header line first, yet a user's
    error must stay one line (architecture.md, conventions).
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    text = lines[0] if lines else type(exc).__name__
    if with_type and lines:
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 200 else text[:197] + "..."
