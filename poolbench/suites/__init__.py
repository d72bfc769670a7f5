"""Suites: each expands a run into cells and measures one cell into tidy rows (see base.Suite).

A suite registers itself once, at the bottom of its module (``register_suite(MySuite())``);
the command line (``poolbench run NAME``), ``poolbench.run``, ``run all`` and the report all
find it here. The built-in suites are the modules of this package that register one; they are
imported explicitly, the first time a suite is looked up.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import pkgutil

from ..errors import UsageError
from .base import Suite

_SUITES: dict[str, Suite] = {}
# modules of this package that hold helpers, not suites
_NOT_SUITES = frozenset({"base", "intervals", "corruption_metrics"})


def register_suite(suite: Suite) -> Suite:
    """Make ``suite`` available by its name; registering a name again replaces it."""
    if not getattr(suite, "name", None):
        raise TypeError(f"{type(suite).__name__} has no name")
    _SUITES[suite.name] = suite
    return suite


def unregister_suite(name: str) -> None:
    _SUITES.pop(name, None)


@functools.cache
def load_builtin_suites() -> None:
    """Import every suite module of this package (each registers its suite), once."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_SUITES:
            importlib.import_module(f"{__name__}.{info.name}")


def list_suites() -> list[str]:
    """Registered suite names in the order `poolbench run all` runs them."""
    load_builtin_suites()
    return [s.name for s in sorted(_SUITES.values(), key=lambda s: (s.order, s.name))]


def get_suite(name: str) -> Suite:
    """The suite registered as ``name``; an unknown name fails in one line."""
    key = str(name)
    names = list_suites()
    if key not in _SUITES:
        close = difflib.get_close_matches(key, names, n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown suite {key!r}{hint} (suites: {', '.join(names)})")
    return _SUITES[key]
