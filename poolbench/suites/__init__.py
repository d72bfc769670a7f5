"""Suites: each expands a run into cells and measures one cell into tidy rows (see base.Suite)."""
from __future__ import annotations

import difflib
import enum
import importlib

from ..errors import UsageError


class SuiteName(str, enum.Enum):
    """The suites (one module each), in the order `poolbench run all` runs them."""

    ACCURACY = "accuracy"
    ROBUSTNESS = "robustness"
    PERTURBATION = "perturbation"
    SHIFT = "shift"
    EFFICIENCY = "efficiency"
    SEGMENTATION = "segmentation"


def list_suites() -> list[str]:
    return [s.value for s in SuiteName]


def get_suite(name: str | SuiteName):
    """The suite object (a ``base.Suite``) of ``name``; an unknown name fails in one line."""
    key = name.value if isinstance(name, SuiteName) else str(name)
    if key not in list_suites():
        close = difflib.get_close_matches(key, list_suites(), n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown suite {key!r}{hint} (suites: {', '.join(list_suites())})")
    return importlib.import_module(f"{__name__}.{key}").SUITE
