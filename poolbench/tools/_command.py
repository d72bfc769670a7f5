"""What the tools' click commands share: the top-level CLI's context settings, a check of an
output path, and ``run_command``, behind each module's ``main(argv)``."""
from __future__ import annotations

import os

import click

from ..errors import PoolbenchError, UsageError, one_line

# as the top-level CLI sets them, so that -h works however the command is reached
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def check_positive(option: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise UsageError(f"{option} must be >= {minimum}; got {value} (e.g. {option} {minimum})")


def check_output_path(option: str, path: str | None) -> None:
    """A benchmark runs for minutes before it writes ``path``: a folder that is missing should
    stop it before, not after."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{option} {path!r} is a folder; pass a file path, e.g. {option} rows.json")
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path!r}: folder {folder!r} does not exist; create it or pass another path")


def run_command(command: click.Command, argv: list[str] | None, prog_name: str, name: str) -> int:
    """Run ``command`` on ``argv`` (default: ``sys.argv[1:]``) and return its exit code instead
    of exiting, for callers and tests that hold an argument list. A user's error is one line on
    stderr, ``NAME: message``, as the top-level CLI prints it under ``poolbench: error:``."""
    try:
        rc = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo(f"{name}: interrupted", err=True)
        return 130
    except click.ClickException as exc:  # click's own: unknown option, a value of the wrong type
        click.echo(f"{name}: {exc.format_message()} (see `{prog_name} -h`)", err=True)
        return exc.exit_code
    except PoolbenchError as exc:
        click.echo(f"{name}: {one_line(exc)}", err=True)
        return exc.exit_code
    # without standalone mode click returns, rather than raises, an Exit's code
    return rc if isinstance(rc, int) else 0
