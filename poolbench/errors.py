"""Errors a user can cause. The CLI prints them as one line; exit code 2 for usage errors.
Warnings, too, are one line each under ``one_line_warnings``."""
from __future__ import annotations

import contextlib
import sys
import warnings


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
    error must stay one line (ARCHITECTURE.md, conventions).
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    text = lines[0] if lines else type(exc).__name__
    if with_type and lines:
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 200 else text[:197] + "..."


def _show_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    print(f"poolbench: warning: {text} ({category.__name__})", file=file or sys.stderr)


def install_one_line_warnings() -> None:
    """Every Python warning of this process as one line on stderr, ``poolbench: warning:
    <message> (<Category>)``, instead of Python's two (the message, then the source line that
    raised it, which tells a user nothing)."""
    warnings.showwarning = _show_one_line


@contextlib.contextmanager
def one_line_warnings():
    """``install_one_line_warnings`` for the block; the previous handler is restored after."""
    with warnings.catch_warnings():
        install_one_line_warnings()
        yield
