"""Answers, not only intervals: a verdict per pool against the reference, how many seeds would
settle it, and the narrow table the terminal shows first.

A difference Δ M (pool minus reference) is *resolved* when its 95% interval excludes zero. With
two or more training seeds the interval is the Student-t interval of the per-seed differences
(training and evaluation noise together); with one seed only the evaluation interval exists,
and the verdict says that training noise was not measured. The seed plan comes from
``metrics.planning`` (docs/protocols.md, "Verdicts and the seeds a question needs").

    >>> table = pd.DataFrame({"mCE": [99.6, 100.0], "Δ mCE": [-0.37, None],
    ...                       "Δ mCE seeds lo": [-28.39, None], "Δ mCE seeds hi": [27.65, None],
    ...                       "Δ mCE seeds n": [3, None], "Δ mCE seeds sd": [11.3, None]},
    ...                      index=pd.Index(["lift", "max"], name="pool"))
    >>> verdict_lines(table, "max", resolve=10)
    ['lift vs max, mCE: -0.37, 95% over 3 seeds [-28.39, +27.65]: not resolved; a difference of 10 needs about 13 seeds']
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..metrics.planning import resolvable, seeds_needed
from .intervals import INTERVAL_SUFFIXES, compact


def as_number(value) -> float | None:
    """A table cell as a float, or None where it is blank, NaN or not a number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def delta_metrics(table: pd.DataFrame) -> list[str]:
    """The metrics M of ``table`` that have a difference column ``Δ M``, in table order."""
    return [c[2:] for c in table.columns if str(c).startswith("Δ ") and c[2:] in table.columns
            and not str(c).endswith(INTERVAL_SUFFIXES)]


def verdict(table: pd.DataFrame, pool, metric: str) -> dict | None:
    """The verdict of ``pool``'s Δ ``metric``: value, interval, its kind, seeds and resolved."""
    if pool not in table.index or f"Δ {metric}" not in table.columns:
        return None
    row = table.loc[pool]
    delta = as_number(row.get(f"Δ {metric}"))
    if delta is None:
        return None
    n = as_number(row.get(f"Δ {metric} seeds n"))
    if n is not None and n >= 2:
        lo, hi = as_number(row.get(f"Δ {metric} seeds lo")), as_number(row.get(f"Δ {metric} seeds hi"))
        kind, sd = "seeds", as_number(row.get(f"Δ {metric} seeds sd"))
    else:
        lo, hi = as_number(row.get(f"Δ {metric} lo")), as_number(row.get(f"Δ {metric} hi"))
        kind, sd, n = "evaluation", None, 1
    if lo is None or hi is None:
        return None
    return {"delta": delta, "lo": lo, "hi": hi, "kind": kind, "seeds": int(n), "sd": sd,
            "resolved": lo > 0 or hi < 0}


def _text(v: float) -> str:
    return f"{v:+.2f}"


def verdict_lines(table: pd.DataFrame, reference: str | None, resolve: float | None = None) -> list[str]:
    """One line per (pool, metric with a difference) against ``reference``: the difference, its
    interval, resolved or not, and the seeds a difference needs (the observed one, or ``resolve``)."""
    lines = []
    for metric in delta_metrics(table):
        for pool in table.index:
            if pool == reference:
                continue
            v = verdict(table, pool, metric)
            if v is None:
                continue
            head = f"{pool} vs {reference}, {metric}: {v['delta']:.2f}, "
            if v["kind"] == "evaluation":
                lines.append(head + f"95% over test images [{_text(v['lo'])}, {_text(v['hi'])}]: "
                             f"{'resolved' if v['resolved'] else 'not resolved'} (one seed: training "
                             "noise not measured)")
                continue
            head += (f"95% over {v['seeds']} seeds [{_text(v['lo'])}, {_text(v['hi'])}]: "
                     f"{'resolved' if v['resolved'] else 'not resolved'}")
            lines.append(head + "; " + _plan(v, resolve))
    return lines


def _plan(v: dict, resolve: float | None) -> str:
    sd = v["sd"]
    if sd is None or not np.isfinite(sd):
        return "no seed plan (the per-seed differences have no spread)"
    if resolve is None and v["resolved"]:
        return (f"{v['seeds']} seeds resolve differences of about {resolvable(sd, v['seeds']):.2g} "
                "or more (80% power)")
    target = abs(resolve if resolve is not None else v["delta"])
    needed = seeds_needed(target, sd)
    what = f"a difference of {target:.2g}"
    if needed is None:
        return f"{what} needs more than 1000 seeds"
    return f"{what} needs about {needed} seeds"


def narrow(table: pd.DataFrame, reference: str | None, verdict_metric: str | None = None,
           digits: int = 2, delta_digits: int = 1) -> pd.DataFrame:
    """The table the terminal shows first: each metric with a difference, its Δ with the
    interval a verdict rests on (over seeds with 2+, else over test images) and ``*`` where it
    excludes 0, and the verdict of ``verdict_metric`` (default: the first such metric). A table
    without differences is shown as ``intervals.compact`` shows it."""
    metrics = delta_metrics(table)
    if not metrics:
        return compact(table, digits)
    out = pd.DataFrame(index=table.index)
    for metric in metrics:
        out[metric] = [("" if as_number(v) is None else f"{as_number(v):.{digits}f}") for v in table[metric]]
        texts = []
        for pool in table.index:
            v = verdict(table, pool, metric)
            d = delta_digits  # intervals over 3 seeds are wide: a tenth is the precision they carry
            texts.append("" if v is None else f"{v['delta']:+.{d}f} [{v['lo']:+.{d}f}, "
                         f"{v['hi']:+.{d}f}]{' *' if v['resolved'] else ''}")
        out[f"Δ {metric}"] = texts
    chosen = verdict_metric if verdict_metric in metrics else metrics[0]
    words = []
    for pool in table.index:
        v = verdict(table, pool, chosen)
        words.append("reference" if pool == reference else "" if v is None else
                     ("resolved" if v["resolved"] else "not resolved")
                     + (" (eval only)" if v["kind"] == "evaluation" else ""))
    out[f"{chosen} verdict"] = words
    return out


def narrow_note(table: pd.DataFrame, reference: str | None) -> str | None:
    """How to read the narrow table's Δ columns (None when it has none)."""
    if not delta_metrics(table):
        return None
    seeds = [verdict(table, p, m) for m in delta_metrics(table) for p in table.index]
    many = any(v and v["kind"] == "seeds" for v in seeds)
    over = "the per-seed differences (training and evaluation noise)" if many else \
        "test images (evaluation noise only: one training seed)"
    return (f"Δ = pool - {reference}, with its 95% interval over {over}; * where it excludes 0; "
            "--wide shows every column and interval")
