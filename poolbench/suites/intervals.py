"""Interval columns of the suite tables: evaluation noise, training noise, differences, ranks.

Every headline metric ``M`` of a table gets, beside its mean over seeds:

- ``M lo`` / ``M hi``: the 95% interval of a paired bootstrap over test images (the same
  resampled images for every pool, seed and reference; ``metrics.uncertainty``), computed from
  the per-image predictions the cells stored;
- ``M seeds lo`` / ``M seeds hi``: the 95% Student-t interval over training seeds (2+ seeds);
- ``Δ M`` with ``Δ M lo`` / ``Δ M hi`` against the reference pool (``Δ M eval sig`` = ``*``
  where that evaluation interval excludes zero); ``Δ M seeds lo`` / ``Δ M seeds hi``: the
  Student-t interval of the n per-seed differences (pool at seed s minus the reference at seed
  s: training and evaluation noise together; 2+ shared seeds), with ``Δ M seeds n`` and their
  ``Δ M seeds sd`` for the seed planner; ``Δ M sig`` = ``*`` where the interval a verdict rests
  on excludes zero: the seed interval with 2+ seeds, else the evaluation interval;
- ``M rank`` with ``M rank lo`` / ``M rank hi``: the rank among the table's pools (1 = best)
  and its interval over the same resamples.

``compact`` folds these columns into ``value [lo, hi]`` texts for the terminal.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Hashable

import numpy as np
import pandas as pd

from ..metrics.uncertainty import (
    CONFIDENCE,
    METHOD,
    N_RESAMPLES,
    bootstrap_ranks,
    paired_bootstrap,
    seed_interval,
)

BOOTSTRAP_SEED = 0   # the resamples are part of the protocol: the same on every machine

#: how the table notes name the intervals
METHOD_NOTE = (f"intervals: {int(CONFIDENCE * 100)}% paired bootstrap over test images "
               f"({N_RESAMPLES} resamples, {METHOD} method, scipy.stats.bootstrap, seed {BOOTSTRAP_SEED}; "
               "the same images for every pool and its reference) in [lo, hi]; 'seeds' = Student-t "
               "interval over training seeds (for Δ: of the per-seed differences); Δ = pool - reference, * where "
               "its seed interval excludes 0 (with one seed: its evaluation interval); "
               "rank 1 = best, with its bootstrap interval")
ONE_SEED_NOTE = ("one training seed: the intervals cover evaluation noise only, not training noise; "
                 "run with --seeds 0,1,2 (or --seeds 3) to measure it")


def wrong_top1(arrays: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    """1.0 where the top-1 prediction stored under ``key`` misses the label, else 0.0."""
    return (arrays[key][:, 0] != arrays["labels"]).astype(np.float64)


def per_image(frame: pd.DataFrame, store, suite: str, value: Callable[[dict, str], np.ndarray],
              key_of: Callable[[pd.Series], Hashable]) -> dict[Hashable, np.ndarray]:
    """key_of(row) -> value(arrays of the row's cell, row's predictions name), for every row of
    ``frame`` that names stored predictions (rows without them are skipped)."""
    if store is None or "predictions" not in frame.columns:
        return {}
    out, cache = {}, {}
    for _, row in frame[frame["predictions"].notna()].iterrows():
        chash = row["config_hash"]
        if chash not in cache:
            cache[chash] = store.arrays(suite, chash)
        arrays = cache[chash]
        if row["predictions"] in arrays:
            out[key_of(row)] = value(arrays, row["predictions"])
    return out


def one_reference(derived: pd.DataFrame, *columns: str) -> str | None:
    """The reference pool of a derived view that holds one comparison (one reference, one
    dataset, one value of each of ``columns``), else None: paired intervals need one."""
    refs = derived["reference"].dropna().unique()
    if len(refs) != 1 or any(derived[c].nunique() > 1 for c in ("dataset", *columns)):
        return None
    return refs[0]


def add_intervals(table: pd.DataFrame, column: str, per_seed: Mapping[str, Mapping[int, float]],
                  boot: Callable[[Mapping], dict[str, np.ndarray]] | None,
                  values: Mapping[Hashable, np.ndarray], reference: str | None,
                  lower_is_better: bool = True, ranks: bool = True, deltas: bool = True) -> pd.DataFrame:
    """Add the interval columns of ``column`` to ``table`` (indexed by pool).

    ``per_seed``: pool -> seed -> value (the seed interval). ``boot(means)`` maps resampled
    per-image means (key -> array) to pool -> metric per resample; ``values`` are the per-image
    arrays it reads. Without ``values`` only the seed interval is added.
    """
    table = table.copy()
    pools = [p for p in table.index if p in per_seed]
    for pool in pools:
        est = seed_interval(list(per_seed[pool].values()))
        table.loc[pool, f"{column} seeds lo"] = est.low
        table.loc[pool, f"{column} seeds hi"] = est.high
    if deltas and reference in per_seed:
        ref = per_seed[reference]
        for pool in pools:
            shared = [s for s in per_seed[pool] if s in ref]
            if pool == reference or len(shared) < 2:
                continue
            differences = [per_seed[pool][s] - ref[s] for s in shared]
            est = seed_interval(differences)
            if f"Δ {column}" not in table.columns or pd.isna(table.loc[pool, f"Δ {column}"]):
                table.loc[pool, f"Δ {column}"] = est.value
            table.loc[pool, f"Δ {column} seeds lo"] = est.low
            table.loc[pool, f"Δ {column} seeds hi"] = est.high
            table.loc[pool, f"Δ {column} seeds n"] = len(differences)
            table.loc[pool, f"Δ {column} seeds sd"] = float(np.std(differences, ddof=1))
            table.loc[pool, f"Δ {column} sig"] = "*" if est.excludes_zero else ""
    if boot is None or not values:
        return table
    n = {len(v) for v in values.values()}
    if len(n) != 1 or n.pop() < 2:
        return table  # not one shared set of test images: no paired interval

    def metric_and_deltas(m):
        scores = boot(m)
        out = {p: scores[p] for p in pools if p in scores}
        if deltas and reference in scores:
            out.update({f"Δ{p}": scores[p] - scores[reference] for p in pools if p in scores and p != reference})
        return out

    est = paired_bootstrap(metric_and_deltas, values, seed=BOOTSTRAP_SEED)
    for pool in pools:
        if pool in est:
            table.loc[pool, f"{column} lo"], table.loc[pool, f"{column} hi"] = est[pool].low, est[pool].high
        delta = est.get(f"Δ{pool}")
        if delta is not None:
            table.loc[pool, f"Δ {column}"] = delta.value
            table.loc[pool, f"Δ {column} lo"], table.loc[pool, f"Δ {column} hi"] = delta.low, delta.high
            table.loc[pool, f"Δ {column} eval sig"] = "*" if delta.excludes_zero else ""
            if pd.isna(table.loc[pool].get(f"Δ {column} seeds n")):  # one seed: evaluation noise only
                table.loc[pool, f"Δ {column} sig"] = table.loc[pool, f"Δ {column} eval sig"]
    if ranks and len(pools) > 1:
        ranks = bootstrap_ranks(lambda m: {p: v for p, v in boot(m).items() if p in pools}, values,
                                lower_is_better=lower_is_better, seed=BOOTSTRAP_SEED)
        for pool, r in ranks.items():
            table.loc[pool, f"{column} rank"] = r.value
            table.loc[pool, f"{column} rank lo"], table.loc[pool, f"{column} rank hi"] = r.low, r.high
    return table


def add_metric_intervals(table: pd.DataFrame, derived: pd.DataFrame, columns: Mapping[str, str],
                         boot: Callable[[Mapping], dict[str, dict[str, np.ndarray]]] | None,
                         values: Mapping[Hashable, np.ndarray], reference: str | None,
                         headline: tuple[str, ...], index: str = "pool",
                         lower_is_better: bool = True) -> pd.DataFrame:
    """``add_intervals`` for every ``metric -> column`` of a derived view: ``boot(means)`` gives
    metric -> pool -> value per resample; Δ and ranks only for the ``headline`` metrics."""
    for metric, column in columns.items():
        if column not in table.columns:
            continue
        rows = derived[derived["metric"] == metric]
        per_seed = {p: dict(zip(g["seed"], g["value"])) for p, g in rows.groupby(index, sort=False)}
        table = add_intervals(table, column, per_seed,
                              None if boot is None or not values else (lambda m, metric=metric: boot(m)[metric]),
                              values, reference, lower_is_better=lower_is_better, ranks=metric in headline,
                              deltas=metric in headline)
    return table


def mean_over_seeds(m: Mapping[Hashable, np.ndarray], keys: list[Hashable]) -> np.ndarray:
    return np.mean([m[k] for k in keys], axis=0)


#: the columns an interval adds beside its metric M (``M lo``, ``Δ M seeds n``, ...)
INTERVAL_SUFFIXES = (" lo", " hi", " seeds lo", " seeds hi", " seeds n", " seeds sd", " sig", " eval sig",
                     " rank", " rank lo", " rank hi")


def compact(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """``M`` with ``M lo``/``M hi`` -> "v [lo, hi]", then its seed interval, its difference to the
    reference (with the mark) and its rank, each as one text column; other columns unchanged."""
    if table.empty:
        return table
    out = pd.DataFrame(index=table.index)

    def fmt(v, d=digits):
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            return ""
        return f"{v:.{d}f}"

    def span(row, col, d=digits):
        lo, hi = fmt(row.get(f"{col} lo"), d), fmt(row.get(f"{col} hi"), d)
        return f" [{lo}, {hi}]" if lo and hi else ""

    def with_span(col, d=digits, mark=None):
        texts = []
        for _, row in table.iterrows():
            text = fmt(row[col], d)
            text = text + span(row, col, d) if text else ""
            if mark and text and row.get(f"{col} {mark}"):
                text += f" {row[f'{col} {mark}']}"
            texts.append(text)
        return texts

    def add_seeds(col, mark=False):
        # the seed interval of a difference carries the verdict's mark (Δ M sig, 2+ seeds)
        if f"{col} seeds lo" in table.columns and table[f"{col} seeds lo"].notna().any():
            out[f"{col} seeds"] = [
                f"[{fmt(r[f'{col} seeds lo'])}, {fmt(r[f'{col} seeds hi'])}]"
                + (f" {r[f'{col} sig']}" if mark and isinstance(r.get(f"{col} sig"), str) and r[f"{col} sig"] else "")
                if fmt(r[f"{col} seeds lo"]) else "" for _, r in table.iterrows()]

    derived = {c for c in table.columns
               if any(c.endswith(s) and c[: -len(s)] in table.columns for s in INTERVAL_SUFFIXES)
               or (c.startswith("Δ ") and c[2:] in table.columns) or c.endswith(" rank")}
    for col in table.columns:
        if col in derived:
            continue
        numeric = pd.api.types.is_float_dtype(table[col]) and f"{col} lo" in table.columns
        out[col] = with_span(col) if numeric else table[col]
        add_seeds(col)
        if f"Δ {col}" in table.columns:
            # the evaluation interval with its own mark; the seed interval with the verdict's
            out[f"Δ {col}"] = with_span(f"Δ {col}", mark="eval sig" if f"Δ {col} eval sig" in table.columns
                                        else "sig")
            add_seeds(f"Δ {col}", mark=True)
        if f"{col} rank" in table.columns:
            out[f"{col} rank"] = with_span(f"{col} rank", d=0)
    return out
