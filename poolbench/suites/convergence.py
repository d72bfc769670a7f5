"""Whether each training reached a plateau: the fairness check a comparison of pools needs.

A pool whose test error is still falling when its recipe ends is compared before it has
learned; its deficit then measures the recipe, not the pool. The criterion is the one the
quick recipe was chosen with (docs/measurements.md, "The quick recipe"): the last two points of
the learning curve (``curve_test_error``, one per epoch) within ``PLATEAU_POINTS`` points of
test error. A curve that rises at the end (noise, or over-fitting) counts as a plateau: more
epochs would not help it.

The last-epoch fall is a flag, not the verdict: under a cosine schedule the error falls most as
the learning rate reaches zero, whether or not a longer schedule would end lower. The verdict is
``poolbench check plateau`` (``tools.check_plateau``), which trains the same recipe twice as long.
"""
from __future__ import annotations

from collections.abc import Iterable

PLATEAU_POINTS = 1.0   # test-error points between the last two epochs


def last_drops(rows: Iterable[dict]) -> dict[tuple[str, int], float]:
    """{(pool, seed): test error at the second-to-last epoch minus at the last} for every
    training with two or more learning-curve points among ``rows``."""
    curves: dict[tuple[str, int], dict[int, float]] = {}
    for r in rows:
        if r.get("metric") == "curve_test_error" and r.get("value") is not None:
            curves.setdefault((r["pool"], r.get("seed")), {})[int(r["epoch"])] = float(r["value"])
    drops = {}
    for key, points in curves.items():
        if len(points) >= 2:
            before, last = sorted(points)[-2:]
            drops[key] = points[before] - points[last]
    return drops


def still_learning(rows: Iterable[dict], points: float = PLATEAU_POINTS) -> dict[str, list[tuple[int, float]]]:
    """{pool: [(seed, drop), ...]} of the trainings whose test error fell by more than ``points``
    over their last epoch, in the order the rows hold them."""
    out: dict[str, list[tuple[int, float]]] = {}
    for (pool, seed), drop in last_drops(rows).items():
        if drop > points:
            out.setdefault(pool, []).append((seed, drop))
    return out


def plateau_note(rows: Iterable[dict], points: float = PLATEAU_POINTS) -> str | None:
    """One note naming the pools that had not reached a plateau, or None when all had."""
    late = still_learning(rows, points)
    if not late:
        return None
    named = "; ".join(f"{pool} (" + ", ".join(f"seed {s}: -{d:.1f}" for s, d in runs) + ")"
                      for pool, runs in late.items())
    return (f"still learning when training ended (test error fell more than {points:g} point over "
            f"the last epoch): {named}. Its numbers measure the recipe as much as the pool: "
            f"`poolbench check plateau{''.join(f' --pool {pool}' for pool in late)}` trains the same "
            "recipe with twice the --epochs and says whether that changes it")
