"""Benchmarks and checks run from the command line (``poolbench bench ...``, ``poolbench check ...``):
the click groups ``bench`` and ``check``, which the top-level CLI adds; each subcommand's options
live in its own module."""
import click

from . import bench_corrupt, bench_lift, check_corrupt, check_plateau
from ._command import CONTEXT


@click.group("bench", context_settings=CONTEXT)
def bench():
    """Timings run by hand, printed and not stored: LiftPool's fast path, the corruption engines."""


@click.group("check", context_settings=CONTEXT)
def check():
    """Checks of the benchmark's own machinery and of its recipe, on trained models."""


bench.add_command(bench_lift.command)
bench.add_command(bench_corrupt.command)
check.add_command(check_corrupt.command)
check.add_command(check_plateau.command)

__all__ = ["bench", "check"]
