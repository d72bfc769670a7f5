"""Corruption errors (Hendrycks & Dietterich 2019): CE, mCE, relative mCE, unnormalised mCE.

The ``*_ratio``/``mean_*`` functions are the formulas, vectorised over bootstrap resamples (the
robustness table's intervals); the named metrics check their inputs and call them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import UsageError
from ._inputs import _floats, _lookup, _names
from .benchmarks import BENCHMARK_CORRUPTIONS
from .rates import ratio


def corruption_error(err: Any, ref_err: Any) -> float:
    """CE = sum_s E(f, c, s) / sum_s E(ref, c, s) (a ratio; 1.0 means as good as the reference)."""
    e, r = _paired(err, ref_err)
    if r.sum() <= 0:
        raise UsageError("the reference errors sum to 0, so CE is undefined; pick a reference "
                         "model that makes mistakes under this corruption")
    return float(corruption_error_ratio(e, r))


def corruption_error_ratio(err: Any, ref_err: Any) -> np.ndarray:
    """CE with the severities on axis 0 and anything after it elementwise (bootstrap resamples):
    sum_s E(f, c, s) / sum_s E(ref, c, s), NaN where the reference sums to 0."""
    return ratio(np.sum(err, axis=0), np.sum(ref_err, axis=0))


def mean_percent(ratios: Any) -> np.ndarray:
    """100 x the mean over axis 0 (the corruptions) of CE ratios: mCE, or relative mCE of
    relative CEs; elementwise over any further axis (bootstrap resamples)."""
    return 100 * np.mean(ratios, axis=0)


def mean_error(errors: Sequence[Any]) -> np.ndarray:
    """Unnormalised mCE: the mean over corruptions of mean_s E(f, c, s), one per-severity array
    (severities on axis 0, bootstrap resamples after it) per corruption."""
    return np.mean([np.mean(e, axis=0) for e in errors], axis=0)


def _paired(err: Any, ref_err: Any) -> tuple[np.ndarray, np.ndarray]:
    e = _floats(err, "errors")
    r = _floats(ref_err, "reference errors")
    if e.shape != r.shape:
        raise UsageError(f"{e.size} errors but {r.size} reference errors; evaluate the same "
                         "severities as the reference")
    return e, r


def corruption_errors(errors: Mapping[str, Any], ref_errors: Mapping[str, Any],
                      corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS) -> dict[str, float]:
    """CE for every corruption named, as a dict (ratios, not x100)."""
    out = {}
    for c in _names(corruptions, "corruptions"):
        out[c] = corruption_error(_lookup(errors, c, "errors"), _lookup(ref_errors, c, "reference errors"))
    return out


def mce(errors: Mapping[str, Any], ref_errors: Mapping[str, Any],
        corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS) -> float:
    """mCE = 100 * mean over ``corruptions`` of CE (errors: corruption -> per-severity errors).

    ``ref_errors`` is ``ALEXNET_ERR`` only for the official ImageNet-C images; for generated
    corruptions pass the suite's reference model's errors on the same images.
    """
    ces = corruption_errors(errors, ref_errors, corruptions)
    return float(mean_percent(list(ces.values())))


def relative_corruption_error(err: Any, clean: float, ref_err: Any, ref_clean: float) -> float:
    """relative CE = sum_s (E(f,c,s) - E(f,clean)) / sum_s (E(ref,c,s) - E(ref,clean))."""
    e, r = _paired(err, ref_err)
    denom = float((r - float(ref_clean)).sum())
    if denom == 0:
        raise UsageError("the reference loses no accuracy under this corruption, so relative CE "
                         "is undefined; use plain CE or another reference")
    return float((e - float(clean)).sum() / denom)


def relative_mce(errors: Mapping[str, Any], clean: float, ref_errors: Mapping[str, Any],
                 ref_clean: float, corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS) -> float:
    """Relative mCE = 100 * mean of relative CE (for AlexNet: ref_clean=ALEXNET_CLEAN_ERR)."""
    vals = [relative_corruption_error(_lookup(errors, c, "errors"), clean,
                                      _lookup(ref_errors, c, "reference errors"), ref_clean)
            for c in _names(corruptions, "corruptions")]
    return float(mean_percent(vals))


def unnormalized_mce(errors: Mapping[str, Any],
                     corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS) -> float:
    """Mean over ``corruptions`` (the 15 benchmark ones, NOT all 19) of mean_s E(f, c, s).

    Same unit as the errors given (fractions in, fraction out). This is what the CIFAR-C
    literature reports; the authors' own script averages all 19, a known trap.
    """
    return float(mean_error([_floats(_lookup(errors, c, "errors"), f"errors['{c}']")
                             for c in _names(corruptions, "corruptions")]))
