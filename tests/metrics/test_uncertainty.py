"""Intervals against cases whose bootstrap distribution can be enumerated by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poolbench.errors import UsageError
from poolbench.metrics.uncertainty import bootstrap_ranks, paired_bootstrap, seed_interval
from poolbench.suites.intervals import add_intervals, compact


def mean_of(key):
    return lambda m: {"v": m[key]}


def test_two_image_bootstrap_matches_the_enumerated_distribution():
    # resamples of 2 images: (0,0) (0,1) (1,0) (1,1), each 1/4: the mean error is 1, 1/2, 1/2, 0
    est = paired_bootstrap(mean_of("a"), {"a": np.array([1.0, 0.0])}, n_resamples=2000)["v"]
    assert est.value == 0.5 and (est.low, est.high) == (0.0, 1.0) and not est.excludes_zero


def test_three_image_percentiles_follow_the_binomial():
    # mean of 3 draws with one error: k/3, k ~ Binomial(3, 1/3): P = 8/27, 12/27, 6/27, 1/27
    # 95%: 2.5th pct 0, 97.5th pct 1 (P(k<=2) = 26/27 < 0.975); 80%: 10th pct 0, 90th 2/3
    values = {"a": np.array([1.0, 0.0, 0.0])}
    wide = paired_bootstrap(mean_of("a"), values, n_resamples=4000)["v"]
    assert (wide.low, wide.high) == (0.0, 1.0)
    narrow = paired_bootstrap(mean_of("a"), values, n_resamples=4000, confidence=0.8)["v"]
    assert narrow.low == 0.0 and narrow.high == pytest.approx(2 / 3)


def test_pairing_uses_the_same_images_for_pool_and_reference():
    rng = np.random.default_rng(0)
    a = (rng.random(200) < 0.3).astype(float)
    same = paired_bootstrap(lambda m: {"d": m["a"] - m["b"]}, {"a": a, "b": a.copy()})["d"]
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)  # unpaired it would be ~±0.09
    better = paired_bootstrap(lambda m: {"d": m["a"] - m["b"]}, {"a": a, "b": np.zeros(200)})["d"]
    assert better.excludes_zero and better.low > 0


def test_ranks_and_their_intervals():
    a, b, c = np.zeros(50), np.ones(50), np.r_[np.zeros(25), np.ones(25)]
    ranks = bootstrap_ranks(lambda m: {"a": m["a"], "b": m["b"], "c": m["c"]}, {"a": a, "b": b, "c": c})
    assert (ranks["a"].value, ranks["a"].low, ranks["a"].high) == (1, 1, 1)
    assert (ranks["c"].value, ranks["b"].value) == (2, 3)
    tied = bootstrap_ranks(lambda m: {"x": m["a"], "y": m["a"]}, {"a": c})
    assert tied["x"].value == tied["y"].value == 1  # ties share the better rank


def test_seed_interval_is_the_student_t_interval():
    est = seed_interval([1.0, 2.0, 3.0])   # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert est.value == 2.0 and est.high - 2.0 == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert np.isnan(seed_interval([5.0]).low) and seed_interval([5.0]).value == 5.0


def test_arrays_of_other_images_are_refused():
    with pytest.raises(UsageError, match="same images"):
        paired_bootstrap(mean_of("a"), {"a": np.zeros(3), "b": np.zeros(4)})


def test_table_gets_intervals_deltas_ranks_and_a_compact_text():
    table = pd.DataFrame({"err": [30.0, 50.0]}, index=pd.Index(["lift", "max"], name="pool"))
    values = {("lift", 0): np.r_[np.ones(30), np.zeros(70)] * 100, ("max", 0): np.r_[np.ones(50), np.zeros(50)] * 100}
    out = add_intervals(table, "err", {"lift": {0: 30.0}, "max": {0: 50.0}},
                        lambda m: {"lift": m[("lift", 0)], "max": m[("max", 0)]}, values, "max")
    assert out.loc["lift", "err lo"] < 30 < out.loc["lift", "err hi"]
    assert out.loc["lift", "Δ err"] == -20 and out.loc["lift", "Δ err sig"] == "*"
    assert out.loc["lift", "err rank"] == 1 and out.loc["max", "err rank"] == 2
    text = compact(out)
    assert list(text.columns) == ["err", "Δ err", "err rank"]  # one seed: no seed column
    assert text.loc["lift", "Δ err"].startswith("-20.00 [") and text.loc["lift", "Δ err"].endswith("*")
    assert text.loc["max", "Δ err"] == "" and text.loc["lift", "err rank"].startswith("1 [1, ")


def test_difference_gets_the_student_t_interval_of_the_per_seed_differences():
    # lift - max per seed: 1, 3, 2 -> mean 2, sd 1, t(0.975, 2) = 4.3027: 2 -+ 4.3027 / sqrt(3)
    table = pd.DataFrame({"err": [12.0, 10.0, 11.0]}, index=pd.Index(["lift", "max", "avg"], name="pool"))
    per_seed = {"lift": {0: 10.0, 1: 12.0, 2: 14.0}, "max": {0: 9.0, 1: 9.0, 2: 12.0},
                "avg": {0: 11.0, 5: 11.0}}  # avg shares one seed with max: no interval
    out = add_intervals(table, "err", per_seed, None, {}, "max")
    half = 4.302652729911275 / np.sqrt(3)
    assert out.loc["lift", "Δ err"] == pytest.approx(2.0)
    assert out.loc["lift", "Δ err seeds lo"] == pytest.approx(2 - half)
    assert out.loc["lift", "Δ err seeds hi"] == pytest.approx(2 + half)
    assert np.isnan(out.loc["avg", "Δ err seeds lo"]) and np.isnan(out.loc["max", "Δ err seeds lo"])
    text = compact(out)
    assert text.loc["lift", "Δ err seeds"] == f"[{2 - half:.2f}, {2 + half:.2f}]" == "[-0.48, 4.48]"
    assert text.loc["avg", "Δ err seeds"] == "" and text.loc["max", "Δ err seeds"] == ""
