"""How sure each number of a report is: the interval table, a forest plot of the differences
to the reference and a rank-confidence plot, per suite table (``suites.intervals`` columns).

The value tables of the sections show means only (best in bold); this module adds, below each,
the same metrics with their evaluation and seed intervals, the difference to the reference with
its interval, and the rank with its interval.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..suites.intervals import INTERVAL_SUFFIXES, METHOD_NOTE, compact
from . import plots
from .markdown import Document
from .meta import provenance
from .tables import mark_reference, to_markdown


def headline(table: pd.DataFrame) -> list[str]:
    """The metrics of ``table`` that carry an interval."""
    return [c for c in table.columns if not str(c).startswith("Δ ") and
            (f"{c} lo" in table.columns or f"{c} seeds lo" in table.columns)]


def values_only(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` without its interval, difference and rank columns (the value table)."""
    heads = headline(table)
    drop = [c for c in table.columns
            if str(c).startswith("Δ ") or any(str(c) == f"{h}{s}" for h in heads for s in INTERVAL_SUFFIXES)]
    return table.drop(columns=drop)


def certainty(doc: Document, ctx, table: pd.DataFrame, name: str, reference: str | None,
              title: str = "") -> None:
    """The interval table of ``table`` and its forest and rank plots (nothing without intervals)."""
    heads = headline(table)
    if not heads:
        return
    keep = [c for c in table.columns if c in heads or any(str(c) == f"{h}{s}" for h in heads for s in INTERVAL_SUFFIXES)
            or any(str(c).startswith(f"Δ {h}") for h in heads)]
    shown = compact(table[keep])
    shown.index = [mark_reference(p, reference) for p in shown.index]
    doc.para("How sure (95% intervals):")
    doc.table(to_markdown(shown, how=None), METHOD_NOTE + ".",
              {"pools_in": "rows", "provenance": provenance(doc.scope.get("rows"), [str(p) for p in table.index])})
    deltas = [h for h in heads if (f"Δ {h} lo" in table.columns or f"Δ {h} seeds lo" in table.columns)
              and table[f"Δ {h}"].notna().any()]
    if deltas and reference is not None:
        ctx.figure(doc, f"forest-{name}", lambda p: forest(table, deltas, ctx.styles, p, reference,
                                                           title=f"Difference to {reference}{title}"),
                   "forest plot", f"Each pool minus the reference {reference}: the thick bar is its 95% "
                   "paired-bootstrap interval (evaluation noise; one that misses 0, dotted, is a difference "
                   "beyond it), the thin line with end ticks, where 2 or more seeds were run, the 95% "
                   "Student-t interval of the per-seed differences (training noise).")
    ranked = [h for h in heads if f"{h} rank lo" in table.columns and table[f"{h} rank"].notna().any()]
    if ranked:
        ctx.figure(doc, f"ranks-{name}", lambda p: rank_plot(table, ranked, ctx.styles, p,
                                                             title=f"Rank with 95% interval{title}"),
                   "rank plot", "Each pool's rank (1 = best) and the interval of its rank over the "
                   "bootstrap resamples of the test images.")


def forest(table: pd.DataFrame, metrics: list[str], styles: dict, path, reference: str, *, title: str):
    """Each pool's difference to ``reference`` per metric, with its interval, and the zero line."""
    return _intervals_plot(table, [p for p in table.index if p != reference],
                           {m: f"Δ {m}" for m in metrics}, styles, path, title=title, zero=True)


def rank_plot(table: pd.DataFrame, metrics: list[str], styles: dict, path, *, title: str):
    """Each pool's rank per metric (1 = best), with its bootstrap interval."""
    return _intervals_plot(table, list(table.index), {m: f"{m} rank" for m in metrics}, styles, path,
                           title=title, zero=False)


def _intervals_plot(table, pools, columns: dict, styles: dict, path, *, title: str, zero: bool):
    def at(pool, name):
        return float(table.at[pool, name]) if name in table.columns else np.nan

    with plots.plot_style():
        fig = plots.new_figure(3.2 * len(columns) + 1.2, 0.45 * len(pools) + 1.4)
        axes = fig.subplots(1, len(columns), squeeze=False)[0]
        for ax, (metric, col) in zip(axes, columns.items()):
            for y, pool in enumerate(pools):
                v, lo, hi, slo, shi = (at(pool, f"{col}{s}") for s in ("", " lo", " hi", " seeds lo", " seeds hi"))
                if np.isnan(v):
                    continue
                style = styles.get(str(pool), {})
                if np.isfinite(slo + shi):  # training noise: a thin line under the evaluation bar
                    ax.plot([slo, shi], [y, y], color=style.get("color"), alpha=0.45, linewidth=1,
                            solid_capstyle="butt")
                    ax.plot([slo, shi], [y, y], linestyle="none", marker="|", markersize=9,
                            color=style.get("color"), alpha=0.45)
                ax.errorbar([v], [y], xerr=[[v - lo], [hi - v]] if np.isfinite(lo + hi) else None,
                            fmt=style.get("marker", "o"), color=style.get("color"), capsize=3,
                            elinewidth=3)
            ax.set_yticks(range(len(pools)), [str(p) for p in pools])
            if zero:
                ax.axvline(0.0, color="0.4", linestyle=":", linewidth=1)
                ax.set_xlabel(col)
            else:
                ax.set_xticks(range(1, len(pools) + 1))
                ax.set_xlim(0.5, len(pools) + 0.5)
                ax.set_xlabel(f"rank by {metric} (1 = best)")
            ax.invert_yaxis()
        fig.suptitle(title)
        return plots.save(fig, path)
