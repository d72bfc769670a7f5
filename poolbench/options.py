"""Options declared once, on the dataclass field that holds them.

A field made with :func:`option` carries its help, its accepted range or choices and its flag;
everything else is derived from that declaration: the command line's options and their help
(``cli.py``), the preset keys a TOML table accepts, the coercion of strings and lists to the
field's type and the validation (:func:`build_options`), and the generated CLI reference.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Recipe:
    ...     epochs: int = option(6, "training epochs", low=1)
    ...     clock: str = option("wall", "what is timed", choices=("wall", "thread"))
    >>> build_options(Recipe, {"epochs": "8"}, "recipe")
    Recipe(epochs=8, clock='wall')
    >>> build_options(Recipe, {"clock": "cpu"}, "recipe")
    Traceback (most recent call last):
    ...
    poolbench.errors.UsageError: recipe option clock must be one of wall, thread, got 'cpu' (--clock)
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from .errors import UsageError
from .ranges import Range, check_ranges


def option(default: Any, help: str = "", *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, choices: tuple[str, ...] | None = None,
           flag: str | tuple[str, ...] | None = None, metavar: str | None = None,
           cli: bool = True):
    """A dataclass field declaring an option: ``help`` for the CLI and the docs, an accepted
    range (``low``/``high``) or ``choices``, the ``flag`` when it is not ``--field-name`` (a tuple
    for aliases), and ``cli=False`` for options only a preset or a Python call sets."""
    flags = (flag,) if isinstance(flag, str) else tuple(flag or ())
    metadata = {"help": help, "flag": flags[0] if flags else None, "aliases": flags[1:],
                "choices": tuple(choices) if choices else None, "metavar": metavar, "cli": cli}
    if low is not None or high is not None:
        metadata["range"] = Range(low, high, low_open, high_open)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field) -> str:
    """The command-line flag of an option field."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _coerce(value: Any, kind: Any, key: str, where: str) -> Any:
    """``value`` as type ``kind`` (int, float, bool, str, X | None, tuple[T, ...])."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            return None
        errors = []
        for arg in args:
            try:
                return _coerce(value, arg, key, where)
            except UsageError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is tuple:
        (item,) = [a for a in typing.get_args(kind) if a is not Ellipsis][:1] or (str,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(v, item, key, where) for v in value)
    bad = UsageError(f"{where} option {key!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        raise bad
    if kind is int:
        if isinstance(value, bool):
            raise bad
        try:
            if isinstance(value, float) and not value.is_integer():
                raise bad
            return int(value)
        except (TypeError, ValueError):
            raise bad from None
    if kind is float:
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if kind is str:
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        return str(value)
    return value


def check_fields(obj: Any, where: str = "") -> None:
    """Every field of ``obj`` (a built options object) within its declared range and choices: for
    ``__post_init__``, so that an object built directly is checked like one from :func:`build_options`."""
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    check_ranges(type(obj), where, values)
    _check_choices(type(obj), where, values)


def _check_choices(cls: type, where: str, values: dict[str, Any]) -> None:
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        value = values.get(f.name)
        if choices is None or value is None:
            continue
        for item in value if isinstance(value, tuple) else (value,):
            if item not in choices:
                raise UsageError(f"{where + ' ' if where else ''}option {f.name} must be one of "
                                 f"{', '.join(choices)}, got {item!r} ({flag_of(f)})")


def build_options(cls: type, values: dict[str, Any], where: str):
    """``cls(**values)`` with every value coerced to its field's type and checked against its
    declared range or choices; an unknown key or a value of the wrong type fails in one line
    naming the accepted keys. ``None`` means "not given"."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UsageError(f"unknown {where} option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)}; accepted: {', '.join(sorted(fields))}")
    given = {k: _coerce(v, hints[k], k, where) for k, v in values.items() if v is not None}
    check_ranges(cls, where, given)  # before __post_init__ works with the values
    _check_choices(cls, where, given)
    return cls(**given)


def options_dict(options) -> dict:
    """The options as JSON-ready values (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(options).items()}
