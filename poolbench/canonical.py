"""One canonical JSON and one digest for every hash poolbench computes (cells, checkpoints, caches).

numpy scalars and tensors hash as their Python values, so ``np.int64(3)`` and ``3`` name the
same cell, checkpoint and cached data set.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any


def json_default(obj: Any) -> Any:
    """numpy scalars/arrays and tensors as their Python values (not their str); else str."""
    for attr in ("item", "tolist"):
        fn = getattr(obj, attr, None)
        if callable(fn):
            try:
                return fn()
            except (TypeError, ValueError, RuntimeError):
                continue
    return str(obj)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=json_default)


def digest(obj: Any, length: int | None = None) -> str:
    """sha256 hex of the canonical JSON of ``obj`` (the first ``length`` characters if given)."""
    full = hashlib.sha256(canonical_json(obj).encode()).hexdigest()
    return full[:length] if length else full
