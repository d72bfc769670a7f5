"""Pool spec strings: ``name:key=value,key=value``, parsed and written back in one canonical form."""
from __future__ import annotations

from typing import Any

from .errors import PoolOptionError, UsageError


def normalize_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _parse_value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"lift:bands=LL,kernel_size=7"`` -> ``("lift", {"bands": "LL", "kernel_size": 7})``."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("a pool spec must be a non-empty string like 'max' or 'lift:kernel_size=7'")
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise PoolOptionError(
                f"bad option {part!r} in pool spec {spec!r}; write name:key=value,key=value"
            )
        if key.strip() in options:  # the last would win silently: one of them is a mistake
            raise PoolOptionError(f"option {key.strip()!r} is given twice in pool spec {spec!r}; "
                                  "give each option once")
        options[key.strip()] = _parse_value(value)
    return normalize_name(name), options


def format_spec(name: str, options: dict[str, Any] | None = None) -> str:
    """Canonical spec string (options sorted), the inverse of parse_spec."""
    if not options:
        return normalize_name(name)
    body = ",".join(f"{k}={format_value(v)}" for k, v in sorted(options.items()))
    return f"{normalize_name(name)}:{body}"


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "none" if v is None else str(v)
