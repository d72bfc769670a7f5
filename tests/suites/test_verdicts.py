"""Verdicts: the mark and words a reader sees first come from the per-seed differences when there
are 2 or more seeds (training and evaluation noise), the evaluation-only mark stays beside it, the
seed plan is the planner's, and the narrow terminal table fits 100 columns."""
from __future__ import annotations

import numpy as np
import pandas as pd
from tabulate import tabulate

from poolbench.metrics.planning import resolvable, seeds_needed
from poolbench.suites.intervals import add_intervals
from poolbench.suites.verdicts import narrow, verdict_lines


def _three_seed_table(pool_seeds: dict, ref_seeds: dict, eval_shift: float) -> pd.DataFrame:
    """A table for metric M whose evaluation interval of Δ excludes 0 (the pool's per-image
    errors sit eval_shift below the reference's) while the per-seed differences may not."""
    rng = np.random.default_rng(0)
    n = 2000
    ref_img = (rng.random(n) < 0.5).astype(float)
    pool_img = np.where(rng.random(n) < eval_shift, 0.0, ref_img)
    table = pd.DataFrame({"M": [np.mean(list(pool_seeds.values())), np.mean(list(ref_seeds.values()))]},
                         index=pd.Index(["lift", "max"], name="pool"))
    return add_intervals(table, "M", {"lift": pool_seeds, "max": ref_seeds},
                         lambda m: {"lift": 100 * m["lift"], "max": 100 * m["max"]},
                         {"lift": pool_img, "max": ref_img}, "max", ranks=False)


def test_with_seeds_the_mark_comes_from_the_per_seed_differences():
    # one image in ten moved from wrong to right: the evaluation interval excludes 0 ...
    table = _three_seed_table({0: 40.0, 1: 55.0, 2: 48.0}, {0: 50.0, 1: 45.0, 2: 52.0}, 0.2)
    assert table.loc["lift", "Δ M eval sig"] == "*"
    # ... but the per-seed differences (-10, +10, -4) do not resolve anything
    assert table.loc["lift", "Δ M seeds n"] == 3 and table.loc["lift", "Δ M sig"] == ""
    assert table.loc["lift", "Δ M seeds sd"] == np.std([-10.0, 10.0, -4.0], ddof=1)
    (line,) = verdict_lines(table, "max")
    delta, sd = table.loc["lift", "Δ M"], table.loc["lift", "Δ M seeds sd"]
    lo, hi = table.loc["lift", "Δ M seeds lo"], table.loc["lift", "Δ M seeds hi"]
    assert line.startswith(f"lift vs max, M: {delta:.2f}, 95% over 3 seeds [{lo:+.2f}, {hi:+.2f}]: not resolved;")
    assert line.endswith(f"a difference of {abs(delta):.2g} needs about {seeds_needed(abs(delta), sd)} seeds")


def test_a_resolved_difference_says_what_the_seeds_can_resolve():
    table = _three_seed_table({0: 40.0, 1: 41.0, 2: 40.5}, {0: 50.0, 1: 50.5, 2: 50.2}, 0.2)
    assert table.loc["lift", "Δ M sig"] == "*"
    (line,) = verdict_lines(table, "max")
    sd = table.loc["lift", "Δ M seeds sd"]
    assert ": resolved; 3 seeds resolve differences of about" in line
    assert f"{resolvable(sd, 3):.2g} or more (80% power)" in line
    (planned,) = verdict_lines(table, "max", resolve=0.1)
    assert planned.endswith(f"a difference of 0.1 needs about {seeds_needed(0.1, sd)} seeds")


def test_one_seed_gives_an_evaluation_only_verdict():
    table = _three_seed_table({0: 40.0}, {0: 50.0}, 0.2)
    assert "Δ M seeds n" not in table.columns and table.loc["lift", "Δ M sig"] == "*"
    (line,) = verdict_lines(table, "max")
    assert "95% over test images" in line and line.endswith("resolved (one seed: training noise not measured)")


def test_the_narrow_table_fits_100_columns():
    table = _three_seed_table({0: 40.0, 1: 55.0, 2: 48.0}, {0: 50.0, 1: 45.0, 2: 52.0}, 0.2)
    table = table.rename(columns=lambda c: c.replace("M", "mCE"))
    for other in ("clean err %", "Δ clean err %"):
        table[other] = table["mCE"]
    for suffix in (" seeds lo", " seeds hi", " seeds n", " seeds sd", " lo", " hi", " sig", " eval sig"):
        table["Δ clean err %" + suffix] = table["Δ mCE" + suffix]
    shown = narrow(table, "max", "mCE")
    assert list(shown.columns) == ["mCE", "Δ mCE", "clean err %", "Δ clean err %", "mCE verdict"]
    assert shown.loc["max", "mCE verdict"] == "reference" and shown.loc["lift", "mCE verdict"] == "not resolved"
    text = tabulate(shown, headers="keys", tablefmt="github")
    assert max(len(line) for line in text.splitlines()) <= 100
