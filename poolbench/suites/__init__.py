"""Suites: each expands a run into cells and measures one cell into tidy rows."""
from __future__ import annotations

import difflib
import importlib

from ..errors import UsageError

SUITE_MODULES = {
    "accuracy": "accuracy",
    "robustness": "robustness",
    "perturbation": "perturbation",
    "shift": "shift",
    "efficiency": "efficiency",
    "segmentation": "segmentation",
}


def list_suites() -> list[str]:
    return [name for name, mod in SUITE_MODULES.items() if importlib.util.find_spec(f"{__name__}.{mod}")]


def get_suite(name: str):
    if name not in SUITE_MODULES:
        close = difflib.get_close_matches(name, list(SUITE_MODULES), n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown suite {name!r}{hint} (suites: {', '.join(list_suites())})")
    return importlib.import_module(f"{__name__}.{SUITE_MODULES[name]}").SUITE
