"""How sure a benchmark number is: a paired bootstrap over test images, and an interval over
training seeds.

Evaluation noise (which test images were drawn) and training noise (which seed) are different
things, and a table shows both. The bootstrap resamples image *indices* once per resample and
applies them to every array of a comparison (a pool and its reference, every corruption and
severity), so a difference is judged on the same images, as a paired test must.

    >>> import numpy as np
    >>> wrong = {"a": np.array([1., 0.]), "b": np.array([0., 0.])}
    >>> est = paired_bootstrap(lambda m: {"a": m["a"], "a-b": m["a"] - m["b"]}, wrong, n_resamples=999)
    >>> est["a"].value, est["a"].low, est["a"].high
    (0.5, 0.0, 1.0)
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Hashable

import numpy as np
from scipy import stats

from ..errors import UsageError

CONFIDENCE = 0.95
N_RESAMPLES = 1000
METHOD = "percentile"   # scipy.stats.bootstrap; BCa's jackknife costs n evaluations per table


@dataclass(frozen=True)
class Estimate:
    """A value with its interval (``low``/``high`` NaN where none can be computed)."""

    value: float
    low: float = float("nan")
    high: float = float("nan")

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def _check_arrays(values: Mapping[Hashable, np.ndarray]) -> tuple[list, np.ndarray]:
    keys = list(values)
    if not keys:
        raise UsageError("no per-image values to resample")
    arrays = [np.asarray(values[k], dtype=np.float64).ravel() for k in keys]
    n = {a.size for a in arrays}
    if len(n) != 1:
        raise UsageError(f"paired arrays must cover the same images; got lengths {sorted(n)}")
    if arrays[0].size < 2:
        raise UsageError("a bootstrap needs 2 or more test images")
    return keys, np.stack(arrays)


def paired_bootstrap(metric: Callable[[Mapping[Hashable, np.ndarray]], Mapping[str, np.ndarray]],
                     values: Mapping[Hashable, np.ndarray], *, n_resamples: int = N_RESAMPLES,
                     confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Estimate]:
    """Intervals of every output of ``metric`` under a paired bootstrap over images.

    ``values`` maps a key to a per-image array (an error indicator, a flip rate, a pixel count;
    all over the same images in the same order). ``metric`` receives key -> the mean of that
    array over a resample (an array, one entry per resample) and returns name -> value per
    resample; it is also applied to the full sample for the point estimate. The resampling is
    scipy.stats.bootstrap's (percentile method), seeded.
    """
    keys, matrix = _check_arrays(values)
    n = matrix.shape[1]

    def means(counts: np.ndarray) -> dict:
        m = counts @ matrix.T / n                  # (resamples, keys): one matmul for all keys
        return {k: m[:, j] for j, k in enumerate(keys)}

    full = {k: np.atleast_1d(v) for k, v in metric(means(np.ones((1, n)))).items()}
    names = list(full)

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.atleast_2d(idx)
        flat = (np.arange(idx.shape[0])[:, None] * n + idx).ravel()   # how often each image is drawn
        counts = np.bincount(flat, minlength=idx.shape[0] * n).reshape(idx.shape[0], n).astype(np.float64)
        out = metric(means(counts))
        return np.stack([np.asarray(out[name], dtype=np.float64) for name in names])

    with warnings.catch_warnings():  # a constant statistic (e.g. 0 errors) has a point interval
        warnings.simplefilter("ignore")
        res = stats.bootstrap((np.arange(n),), statistic, vectorized=True, n_resamples=int(n_resamples),
                              confidence_level=confidence, method=METHOD, batch=200,
                              random_state=np.random.default_rng(seed))
    low, high = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
    out = {}
    for j, name in enumerate(names):
        lo, hi = float(low[j]), float(high[j])
        if np.isnan(lo) and np.ptp(res.bootstrap_distribution[j]) == 0:
            lo = hi = float(res.bootstrap_distribution[j][0])  # scipy's NaN for a point distribution
        out[name] = Estimate(float(full[name][0]), lo, hi)
    return out


def bootstrap_ranks(metric: Callable[[Mapping[Hashable, np.ndarray]], Mapping[str, np.ndarray]],
                    values: Mapping[Hashable, np.ndarray], *, lower_is_better: bool = True,
                    **kwargs) -> dict[str, Estimate]:
    """Rank of each output of ``metric`` (1 = best) on the full sample, with the interval of
    its rank over the same paired resamples. Ties share the better rank."""

    def ranks(m):
        scores = metric(m)
        names = list(scores)
        table = np.stack([np.asarray(scores[k], dtype=np.float64) for k in names])
        table = table if lower_is_better else -table
        # rank = 1 + how many are strictly better, per resample
        better = (table[None, :, :] < table[:, None, :]).sum(axis=1)
        return {k: 1.0 + better[i] for i, k in enumerate(names)}

    return paired_bootstrap(ranks, values, **kwargs)


def seed_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean over training seeds with a Student-t interval (NaN interval for one seed)."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return Estimate(float("nan"))
    mean = float(x.mean())
    if x.size < 2:
        return Estimate(mean)
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return Estimate(mean, mean - half, mean + half)
