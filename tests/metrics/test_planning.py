"""The seed planner (metrics.planning): the power of the paired t-test on per-seed differences,
checked against published sample sizes and by simulation with a known answer."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from poolbench.metrics.planning import power, resolvable, seeds_needed
from poolbench.metrics.uncertainty import seed_interval


@pytest.mark.parametrize("effect, n, achieved", [
    # one-sample/paired t-test, alpha 0.05 two-sided, power 0.80: Cohen's d -> n and the power
    # actually reached (the tables of Cohen 1988 and G*Power's "t tests: difference from constant")
    (1.0, 10, 0.8031),
    (0.8, 15, 0.8213),
    (0.5, 34, 0.8078),
])
def test_seeds_needed_matches_published_sample_sizes(effect, n, achieved):
    assert seeds_needed(effect, 1.0) == n
    assert seeds_needed(3 * effect, 3.0) == n           # only delta / sd matters
    assert power(effect, 1.0, n) == pytest.approx(achieved, abs=5e-4)
    assert power(effect, 1.0, n - 1) < 0.8 <= power(effect, 1.0, n)


def test_seeds_needed_is_above_the_normal_approximation():
    # n >= ((z_.975 + z_.80) / d)^2: the t distribution's heavier tails only add seeds
    for d in (0.3, 0.7, 1.5, 3.0):
        z = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / d
        assert seeds_needed(d, 1.0) >= max(2, math.ceil(z * z))


def test_resolvable_is_the_inverse_of_seeds_needed():
    for n in (3, 5, 10, 30):
        d = resolvable(1.0, n)
        assert power(d, 1.0, n) == pytest.approx(0.8, abs=1e-6)
        assert seeds_needed(d * 1.0001, 1.0) <= n
    assert math.isnan(resolvable(1.0, 1)) and resolvable(0.0, 3) == 0.0


def test_edge_cases():
    assert seeds_needed(0.0, 1.0) is None            # no difference is ever resolved at 80%
    assert seeds_needed(1e-4, 1.0) is None           # beyond MAX_SEEDS
    assert seeds_needed(1.0, 0.0) == 2
    assert power(1.0, 1.0, 1) == 0.0


@pytest.mark.parametrize("delta, sd", [(10.0, 16.0), (2.0, 1.5), (-1.7, 2.3)])
def test_the_planned_seed_count_resolves_about_80_percent_of_the_time(delta, sd):
    """Simulation with a known answer: per-seed differences drawn from N(delta, sd); a run of
    the planned number of seeds resolves the difference (its Student-t interval excludes 0) in
    about 80% of 3000 trials, as the power says, and one seed fewer as its power says."""
    rng = np.random.default_rng(7)
    n = seeds_needed(delta, sd)

    def resolved_rate(k: int) -> float:
        draws = rng.normal(delta, sd, size=(3000, k))
        return float(np.mean(_excludes_zero(draws)))

    rate = resolved_rate(n)
    assert rate == pytest.approx(power(delta, sd, n), abs=0.025)
    assert 0.78 <= rate <= 0.9
    assert resolved_rate(n - 1) == pytest.approx(power(delta, sd, n - 1), abs=0.025)


def test_no_difference_is_resolved_about_5_percent_of_the_time():
    rng = np.random.default_rng(11)
    draws = rng.normal(0.0, 3.0, size=(4000, 5))
    assert np.mean(_excludes_zero(draws)) == pytest.approx(0.05, abs=0.012)


def _excludes_zero(draws: np.ndarray) -> np.ndarray:
    """Per row: does the tables' seed interval (metrics.uncertainty.seed_interval) exclude 0?
    Vectorised, and checked equal to seed_interval on the first rows."""
    k = draws.shape[1]
    mean = draws.mean(axis=1)
    half = stats.t.ppf(0.975, k - 1) * draws.std(axis=1, ddof=1) / np.sqrt(k)
    out = (mean - half > 0) | (mean + half < 0)
    assert [seed_interval(row).excludes_zero for row in draws[:50]] == list(out[:50])
    return out
