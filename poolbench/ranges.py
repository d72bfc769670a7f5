"""Accepted ranges of numeric options, declared on the dataclass field that holds them.

An option is range-checked where it enters (the training recipe, a suite's options), before any
data is loaded or a model trained, with one line naming the option, its flag and the range:

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Recipe:
    ...     epochs: int = bounded(6, low=1)
    >>> check_ranges(Recipe(epochs=0))
    Traceback (most recent call last):
    ...
    poolbench.errors.UsageError: epochs must be >= 1, got 0 (--epochs)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .errors import UsageError


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False    # the bound itself is excluded (lr > 0)
    high_open: bool = False

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def text(self) -> str:
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        if low and high:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        return low or high or "a number"


def bounded(default: Any, low: float | None = None, high: float | None = None, *,
            low_open: bool = False, high_open: bool = False, flag: str | None = None):
    """A dataclass field whose value (or each value of a tuple) must lie in the range;
    ``None`` always passes (it means "not given" or "all")."""
    return dataclasses.field(default=default, metadata={
        "range": Range(low, high, low_open, high_open), "flag": flag})


def check_ranges(obj: Any, where: str = "", values: dict[str, Any] | None = None,
                 source: str | None = None) -> None:
    """Raise one UsageError for the first field of ``obj`` (an instance, or a class with the
    ``values`` it is about to be built from) outside its declared range. ``source`` says where
    the values came from when not from the flags (``"key {name} in FILE"``), and the message
    names that instead of the flag."""
    for f in dataclasses.fields(obj):
        accepted = f.metadata.get("range")
        if accepted is None:
            continue
        value = getattr(obj, f.name) if values is None else values.get(f.name)
        origin = source.format(name=f.name) if source else f.metadata.get("flag")
        _check(f.name, value, accepted, where, origin)


def check_value(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, where: str = "") -> Any:
    """``value`` itself when it lies in the range (or is None), else one UsageError."""
    _check(name, value, Range(low, high, low_open, high_open), where, None)
    return value


def _check(name: str, value: Any, accepted: Range, where: str, flag: str | None) -> None:
    if value is None:
        return
    for item in value if isinstance(value, tuple) else (value,):
        if item not in accepted:
            raise UsageError(f"{where + ' ' if where else ''}{name} must be {accepted.text()}, "
                             f"got {item!r} ({flag or '--' + name.replace('_', '-')})")

