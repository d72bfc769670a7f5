"""Input coercion shared by the metric functions: arrays, predictions, per-severity errors."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import UsageError


def _np(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except ValueError as exc:  # ragged nested lists
        raise UsageError(f"{what} is not a rectangular array ({exc}); pass a numpy array") from None


def _predictions(x: Any, what: str, label_ndim: int | None = None) -> np.ndarray:
    """Class indices from predictions or logits (logits have one more axis than the labels)."""
    a = _np(x, what)
    if label_ndim is not None and a.ndim == label_ndim + 1:
        return a.argmax(axis=-1)
    if a.dtype.kind not in "iub":
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            return a.astype(np.int64)
        raise UsageError(f"{what} must be integer class predictions (or logits with a class axis); "
                         f"got dtype {a.dtype} and shape {a.shape}")
    return a


def _floats(values: Any, what: str) -> np.ndarray:
    if isinstance(values, Mapping):  # {severity: error}
        values = [values[k] for k in sorted(values)]
    a = _np(values, what).astype(np.float64).reshape(-1)
    if a.size == 0:
        raise UsageError(f"{what} is empty; pass one error per severity")
    if not np.all(np.isfinite(a)):
        raise UsageError(f"{what} contains NaN or infinity; check the evaluation that produced it")
    return a


def _lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise UsageError(
            f"{what} has no entry for '{name}'; add it, or pass the names you evaluated "
            f"(corruptions=... / perturbations=...)") from None


def _names(names: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise UsageError(f"no {what} given; pass at least one name")
    return names
