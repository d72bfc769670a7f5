"""Rates per bootstrap resample, where a zero denominator is a normal outcome, not an error."""
from __future__ import annotations

import numpy as np


def ratio(a, b) -> np.ndarray:
    """a / b per resample, NaN where the denominator is 0 (a rate undefined on that resample)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)
