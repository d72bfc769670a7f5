"""mCE and its companions per bootstrap resample (the robustness table's intervals).

The robustness view computes CE, mCE, relative and unnormalised mCE from the stored errors
(``RobustnessSuite.derived``); its intervals need the same quantities from resampled per-image
means, for every pool at once and against the reference of the same seed: this class pairs
them and leaves the formulas to ``metrics.corruption``.
"""
from __future__ import annotations

import numpy as np

from .. import metrics
from ..metrics.rates import ratio
from .base import ALEXNET


class CorruptionMetrics:
    """clean error, mCE, relative and unnormalised mCE per pool from resampled per-image means
    (key (pool, seed, corruption | "clean", severity) -> array over resamples), paired with the
    reference of the same seed (or the mean of its seeds), severities paired by label."""

    def __init__(self, values: dict, reference: str, over: str):
        self.reference, self.over = reference, over
        self.pools: dict[str, dict[int, dict]] = {}
        for pool, seed, corruption, severity in values:
            cell = self.pools.setdefault(pool, {}).setdefault(seed, {})
            if corruption != "clean":
                cell.setdefault(corruption, set()).add(severity)

    def _ref(self, m, seed, corruption, severity):
        if self.reference == ALEXNET:
            return (100 * metrics.ALEXNET_CLEAN_ERR if corruption == "clean"
                    else 100 * metrics.ALEXNET_ERR[corruption][severity - 1])
        seeds = self.pools.get(self.reference, {})
        use = [seed] if seed in seeds else list(seeds)
        return np.mean([m[(self.reference, s, corruption, severity)] for s in use], axis=0)

    def _ref_severities(self, corruption):
        if self.reference == ALEXNET:
            return set(range(1, 6)) if corruption in metrics.ALEXNET_ERR else set()
        seeds = self.pools.get(self.reference, {})
        return set.intersection(*(seeds[s].get(corruption, set()) for s in seeds)) if seeds else set()

    def __call__(self, m) -> dict[str, dict[str, np.ndarray]]:
        out = {k: {} for k in ("clean_error", "mCE", "relative_mCE", "unnormalized_mCE")}
        for pool, seeds in self.pools.items():
            per_seed = {k: [] for k in out}
            for seed, corr in seeds.items():
                clean = m[(pool, seed, "clean", 0)]
                shared = {c: sorted(sev & self._ref_severities(c)) for c, sev in corr.items()}
                shared = {c: sev for c, sev in shared.items() if sev}
                common = [c for c in metrics.BENCHMARK_CORRUPTIONS if c in shared] or list(shared)
                if not common:
                    continue
                ref_clean = self._ref(m, seed, "clean", 0)
                ce, rel = [], []
                for c in common:
                    e = [m[(pool, seed, c, v)] for v in shared[c]]
                    r = [self._ref(m, seed, c, v) for v in shared[c]]
                    ce.append(metrics.corruption_error_ratio(e, r))
                    # the severity sums less n clean errors, not relative_corruption_error's sum of
                    # differences: the two round differently, and the intervals keep their bits
                    n = len(shared[c])
                    rel.append(ratio(np.sum(e, axis=0) - n * clean, np.sum(r, axis=0) - n * ref_clean))
                over = common if self.over == "benchmark" else list(shared)
                per_seed["clean_error"].append(clean)
                per_seed["mCE"].append(metrics.mean_percent(ce))
                per_seed["relative_mCE"].append(metrics.mean_percent(rel))
                per_seed["unnormalized_mCE"].append(metrics.mean_error(
                    [[m[(pool, seed, c, v)] for v in shared[c]] for c in over]))
            for k, vals in per_seed.items():
                if vals:
                    out[k][pool] = np.mean(vals, axis=0)
        return out
