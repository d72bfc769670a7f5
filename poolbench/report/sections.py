"""One section per suite: its wide tables (best in bold, reference pool marked) and plots.

Every section renders from the tidy rows alone, through the suite's own ``table``/``derived``
views where the suite module exists, and is skipped with a note when its suite has no rows.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import metrics
from ..canonical import canonical_json
from ..errors import UsageError
from ..selection import SUITE as SELECTION
from ..suites import get_suite, list_suites
from ..suites.base import with_reference
from ..suites.robustness import HARSHNESS_NOTE
from . import plots
from .certainty import certainty
from .context import (
    ReportContext,
    count_of,
    describe,
    generic_table,
    groups,
    ints_text,
    ordered,
    recipe_differences,
    render,
    suite_table,
)
from .efficiency import efficiency_section
from .markdown import Document, code_span
from .recipes import TITLE as SELECTION_TITLE
from .recipes import selection_section
from .tables import sort_pools


def suite_order() -> list[str]:
    """The order of the report's sections: the registered suites' (``Suite.order``)."""
    return list_suites()


def title_of(name: str) -> str:
    """A section's heading: the suite's ``title``, else its name (a suite no longer registered)."""
    if name == SELECTION:  # the choice records of --recipe tuned: no suite of their own
        return SELECTION_TITLE
    try:
        return get_suite(name).title or name
    except UsageError:
        return name


SEGMENTATION_ORDER = ("max_unpool", "max_unpool_blur", "lift", "bilinear", "bilinear_avg")


# --- accuracy -----------------------------------------------------------------------------

def accuracy_section(doc: Document, ctx: ReportContext) -> None:
    rows = ctx.suite("accuracy")
    for label, suffix, sub in groups(rows, ctx.recipes):
        if label:
            doc.heading(label, 3)
        doc.within(sub)
        n = sub.loc[sub["metric"] == "top1_error", "n"]
        doc.para(describe(sub) + (f" Errors on {ints_text(n)} test images." if len(n.dropna()) else ""))
        table = ordered(suite_table("accuracy", sub, store=ctx.store))
        render(doc, table, ctx.baseline, what="baseline")
        certainty(doc, ctx, table, f"accuracy{suffix}", ctx.baseline if ctx.baseline in table.index else None)
        curves, styles = learning_curves(sub, ctx.recipes, ctx.styles)
        if curves:
            ctx.figure(doc, f"learning-curves{suffix}", lambda p: plots.learning_curves(
                curves, styles, p, title=label or ""), "learning curves",
                "Per epoch and pool (mean over the seeds of one training recipe; a pool trained "
                "with several recipes has one line per recipe, labelled by what differs): "
                "training loss, test error, learning rate and every auxiliary loss term; a "
                "diverging or under-trained operator shows here.")


def learning_curves(frame: pd.DataFrame, recipes: dict, styles: dict) -> tuple[dict, dict]:
    """({metric: {line: (epochs, mean values over seeds)}}, {line: style}) of the learning-curve
    rows: one line per pool and training recipe (``recipes``: config hash -> the cell's recipe
    without its seed), so that curves of different recipes are never averaged together; a pool
    with several recipes gets lines named ``pool (what differs)`` in its colour."""
    if "epoch" not in frame.columns:
        return {}, {}
    rows = frame[frame["metric"].astype(str).str.startswith("curve_") & frame["epoch"].notna()].copy()
    if rows.empty:
        return {}, {}
    rows["recipe"] = [canonical_json(recipes.get(str(h), {})) for h in rows["config_hash"]]
    names = {}
    for pool, g in rows.groupby("pool", sort=True):
        keys = sorted(g["recipe"].unique())
        differ = recipe_differences([json.loads(k) for k in keys])
        for key, text in zip(keys, differ):
            names[(pool, key)] = f"{pool} ({text})" if len(keys) > 1 else str(pool)
    out: dict = {}
    for (metric, pool, key), g in rows.groupby(["metric", "pool", "recipe"], sort=True):
        mean = g.groupby("epoch")["value"].mean().sort_index()
        out.setdefault(metric, {})[names[(pool, key)]] = (list(mean.index.astype(int)),
                                                         list(mean.to_numpy(float)))
    lines, seen = {}, {}
    for (pool, _), name in sorted(names.items()):
        base = styles.get(str(pool), {"color": "black", "marker": "o"})
        k = seen.setdefault(pool, 0)
        seen[pool] = k + 1
        lines[name] = {"color": base["color"],
                       "marker": base["marker"] if k == 0 else plots.MARKERS[(k * 3) % len(plots.MARKERS)]}
    return out, lines


# --- shift --------------------------------------------------------------------------------

def shift_section(doc: Document, ctx: ReportContext) -> None:
    rows = ctx.suite("shift")
    accuracy = ctx.suite("accuracy")
    for label, suffix, sub in groups(rows, ctx.recipes):
        if label:
            doc.heading(label, 3)
        doc.within(sub)
        doc.para(describe(sub) + " " + _shift_protocol(sub))
        table = ordered(suite_table("shift", sub, store=ctx.store))
        render(doc, table, ctx.baseline, what="baseline")
        certainty(doc, ctx, table, f"shift{suffix}", ctx.baseline if ctx.baseline in table.index else None)
        points, source = _accuracy_vs_consistency(sub, accuracy)
        if points:
            xlabel = f"shift consistency ({source[0]}) %"
            ctx.figure(doc, f"accuracy-vs-consistency{suffix}", lambda p: plots.scatter_front(
                points, ctx.styles, p, xlabel=xlabel, ylabel=f"top-1 accuracy % ({source[1]})",
                title="Accuracy vs shift consistency" + (f" ({label})" if label else "")),
                "accuracy vs consistency",
                f"Top-1 accuracy ({source[1]}) against shift consistency ({source[0]}); the dashed "
                "line joins the pools no other pool beats on both (Pareto front).")
        sweep = _sweep(sub)
        if sweep:
            ctx.figure(doc, f"shift-sweep{suffix}", lambda p: plots.lines(
                {}, ctx.styles, p, xlabel="diagonal shift (pixels)", ylabel="", title="",
                panels=sweep, xticks=sorted({x for s in sweep.values() for xs, _ in s["series"].values()
                                             for x in xs})),
                "accuracy along a diagonal shift",
                "Top-1 accuracy and mean probability of the true class (%) as the input moves "
                "diagonally by 0..k pixels: diagonal_crop without wrap-around (the published "
                "protocol), diagonal_roll as a circular shift.")


def _shift_protocol(frame: pd.DataFrame) -> str:
    cons = frame[frame["metric"] == "consistency"]
    parts = []
    if "shift_kind" in cons and (cons["shift_kind"] == "crop").any():
        crop = cons[cons["shift_kind"] == "crop"]
        k = ints_text(crop.get("max_shift", pd.Series(dtype=float)))
        parts.append(f"crop: zero-pad by k = {k}, two random crops with offsets in {{0..2k}}^2")
    if "shift_kind" in cons and (cons["shift_kind"] == "circular").any():
        parts.append("circular: torch.roll by two random offsets in [-3, 2] per axis")
    if not parts:
        return ""
    passes = ints_text(cons.get("passes", pd.Series(dtype=float)))
    return (f"Consistency = % of {ints_text(cons['n'])} test images whose top-1 class agrees between two "
            f"shifted views, mean of {passes} seeded passes ({'; '.join(parts)}).")


def _accuracy_vs_consistency(shift: pd.DataFrame, accuracy: pd.DataFrame):
    cons = shift[shift["metric"] == "consistency"]
    if cons.empty or "shift_kind" not in cons:
        return {}, None
    kind = "crop" if (cons["shift_kind"] == "crop").any() else str(sorted(cons["shift_kind"].dropna().unique())[0])
    c = cons[cons["shift_kind"] == kind].groupby("pool")["value"].mean()
    acc, acc_source = pd.Series(dtype=float), ""
    if not accuracy.empty:
        model_data = set(map(tuple, shift[["model", "dataset"]].astype(str).to_numpy()))
        match = accuracy[[tuple(x) in model_data for x in accuracy[["model", "dataset"]].astype(str).to_numpy()]]
        top1 = match[match["metric"] == "top1_error"]
        if len(top1):
            acc, acc_source = 100.0 - top1.groupby("pool")["value"].mean(), "accuracy suite"
    if acc.empty and "shift" in shift:
        diag = shift[(shift["metric"] == "top1_accuracy") & (shift["shift"] == 0)]
        acc, acc_source = diag.groupby("pool")["value"].mean(), "shift suite, unshifted"
    points = {str(p): (float(c[p]), float(acc[p])) for p in c.index
              if p in acc.index and np.isfinite(c[p]) and np.isfinite(acc[p])}
    return points, (kind, acc_source)


def _sweep(frame: pd.DataFrame) -> dict:
    if "shift" not in frame:
        return {}
    diag = frame[frame["shift"].notna() & frame["metric"].isin(["top1_accuracy", "true_class_probability"])]
    kinds = sorted(diag["shift_kind"].dropna().astype(str).unique()) if "shift_kind" in diag else []
    panels = {}
    for kind in kinds or [None]:
        of_kind = diag if kind is None else diag[diag["shift_kind"] == kind]
        for metric, title, ylabel in (("top1_accuracy", "Top-1 accuracy", "top-1 accuracy %"),
                                      ("true_class_probability", "True-class probability", "mean p(true class) %")):
            m = of_kind[of_kind["metric"] == metric]
            if m.empty:
                continue
            mean = m.groupby(["pool", "shift"])["value"].mean()
            series = {}
            for pool in sorted(m["pool"].unique()):
                s = mean.loc[pool].sort_index()
                series[str(pool)] = ([float(x) for x in s.index], [float(v) for v in s.to_numpy()])
            panels[f"{title} ({kind})" if kind else title] = {"ylabel": ylabel, "series": series}
    return panels


# --- robustness ---------------------------------------------------------------------------

def robustness_section(doc: Document, ctx: ReportContext) -> None:
    suite = get_suite("robustness")
    for label, suffix, raw, sub, ref in _by_reference(doc, ctx, "robustness"):
        errs = raw[raw["metric"] == "error"]
        sources = _sources(raw, "corruption_source")
        doc.para(describe(raw) + f" {count_of(errs, 'corruption', 'corruption')} at "
                 f"severities {ints_text(errs.get('severity', []))}, on {ints_text(errs['n'])} test images "
                 f"(corruptions: {', '.join(sources)}); CE and mCE normalised by {code_span(ref)}.")
        try:
            derived = suite.derived(sub)
        except UsageError as exc:
            doc.note(f"CE/mCE not computed: {exc}")
            derived = pd.DataFrame()
        if derived.empty:
            doc.note(f"The reference pool {ref} has no rows on these images, so CE and mCE cannot "
                     f"be computed: run the suite with --pool {ref}, or build the report with "
                     "another reference. Unnormalised errors follow.")
            render(doc, ordered(_unnormalised(sub)), None)
        else:
            _normalised_tables(doc, ctx, "robustness", sub, derived, label, suffix, "CE", "corruption",
                               metrics.ALL_CORRUPTIONS, "Corruption error per corruption",
                               "CE per corruption", "ce-per-corruption")
        series = _severity_series(sub)
        if series:
            ctx.figure(doc, f"error-vs-severity{suffix}", lambda p: plots.lines(
                series, ctx.styles, p, xlabel="severity", ylabel="top-1 error %",
                title="Error vs corruption severity" + (f" ({label})" if label else ""),
                xticks=range(0, 6), xticklabels=["clean", "1", "2", "3", "4", "5"]),
                "error vs severity", f"Top-1 error per severity, averaged over the "
                f"{count_of(errs, 'corruption', 'corruption')} (0 = clean images).")
        if "generated" in sources:
            doc.note(HARSHNESS_NOTE)


def _unnormalised(frame: pd.DataFrame) -> pd.DataFrame:
    clean = frame[frame["metric"] == "clean_error"].groupby("pool")["value"].mean().rename("clean err %")
    err = frame[frame["metric"] == "error"].groupby("pool")["value"].mean().rename("mean corrupted err %")
    return pd.concat([clean, err], axis=1)


def _severity_series(frame: pd.DataFrame) -> dict:
    errs = frame[frame["metric"] == "error"]
    if errs.empty or "severity" not in errs:
        return {}
    # mean over corruptions of the mean over seeds
    per = errs.groupby(["pool", "corruption", "severity"])["value"].mean().groupby(["pool", "severity"]).mean()
    clean = frame[frame["metric"] == "clean_error"].groupby("pool")["value"].mean()
    out = {}
    for pool in sorted(errs["pool"].unique()):
        s = per.loc[pool].sort_index()
        xs, ys = [float(x) for x in s.index], [float(v) for v in s.to_numpy()]
        if pool in clean.index:
            xs, ys = [0.0] + xs, [float(clean[pool])] + ys
        out[str(pool)] = (xs, ys)
    return out


# --- perturbation -------------------------------------------------------------------------

def perturbation_section(doc: Document, ctx: ReportContext) -> None:
    suite = get_suite("perturbation")
    for label, suffix, raw, sub, ref in _by_reference(doc, ctx, "perturbation"):
        fp = raw[raw["metric"] == "flip_probability"]
        doc.para(describe(raw) + f" {count_of(fp, 'perturbation', 'perturbation')}, {ints_text(fp['n'])} "
                 f"sequences each (sequences: {', '.join(_sources(raw, 'perturbation_source'))}); FR and T5D "
                 f"normalised by {code_span(ref)}.")
        derived = suite.derived(sub)
        if derived.empty:
            doc.note(f"The reference pool {ref} has no rows on these sequences, so FR and mFR cannot "
                     f"be computed: run the suite with --pool {ref}. Raw flip probabilities follow.")
            raw_fp = fp.pivot_table(index="pool", columns="perturbation", values="value", aggfunc="mean")
            render(doc, ordered(raw_fp.rename(columns=lambda c: f"FP {c}")), None)
            continue
        _normalised_tables(doc, ctx, "perturbation", sub, derived, label, suffix, "FR", "perturbation",
                           metrics.ALL_PERTURBATIONS, "Flip rate per perturbation",
                           "Flip rate per perturbation", "fr-per-perturbation")


# --- shared by robustness and perturbation ---------------------------------------------------

def _by_reference(doc: Document, ctx: ReportContext, name: str):
    """Each group of the suite's rows, under its heading: (label, figure suffix, the rows, the
    rows normalised by the report's reference pool, that pool)."""
    ref = ctx.references[name]
    for label, suffix, raw in groups(ctx.suite(name), ctx.recipes):
        if label:
            doc.heading(label, 3)
        doc.within(raw)
        yield label, suffix, raw, with_reference(raw, ref), ref


def _sources(frame: pd.DataFrame, column: str) -> list[str]:
    """Where the distorted images came from (official data sets, or generated)."""
    return sorted({str(s) for s in frame.get(column, pd.Series(dtype=str)).dropna()}) or ["generated"]


def _normalised_tables(doc: Document, ctx: ReportContext, name: str, sub: pd.DataFrame,
                       derived: pd.DataFrame, label: str, suffix: str, metric: str, item: str,
                       known: Sequence[str], title: str, caption: str, figure: str) -> None:
    """The summary table without its per-item columns, with its certainty; then ``metric`` per
    ``item`` (known items first, in their order) and pool, as a table and as grouped bars."""
    ref = ctx.references[name]
    summary = suite_table(name, sub, store=ctx.store)
    summary = ordered(summary[[c for c in summary.columns if not str(c).startswith(f"{metric} ")]])
    render(doc, summary, ref)
    certainty(doc, ctx, summary, f"{name}{suffix}", ref, f" ({label})" if label else "")
    table = derived[derived["metric"] == metric].pivot_table(
        index=item, columns="pool", values="value", aggfunc="mean")
    known = list(dict.fromkeys(known))
    table = table.loc[[k for k in known if k in table.index] + sorted(k for k in table.index if k not in known)]
    table = table[sort_pools(table.columns)]
    table.columns.name = None
    doc.para(f"{metric} per {item} (%, the reference scores 100):")
    render(doc, table, ref, along="rows", index_name=item, how="min")
    ctx.figure(doc, f"{figure}{suffix}", lambda p: plots.grouped_bars(
        table, ctx.styles, p, ylabel=f"{metric} (%)", title=title + (f" ({label})" if label else ""),
        hline=100.0, hline_label=f"reference ({ref})"),
        f"{metric} per {item}", f"{caption}, normalised by {ref} (dotted line, 100).")


# --- segmentation -------------------------------------------------------------------------

def segmentation_section(doc: Document, ctx: ReportContext) -> None:
    rows = ctx.suite("segmentation")
    train = rows[rows["metric"].isin(["miou", "pixel_accuracy"])]
    if len(train):
        doc.para(describe(train) + f" SegNet on {ints_text(train['n'])} test images per variant.")
    table = suite_table("segmentation", rows)
    if not table.empty:   # the paper's order (Figure 6), then any other variant alphabetically
        first = [v for v in SEGMENTATION_ORDER if v in table.index]
        table = table.loc[first + sorted(str(v) for v in table.index if v not in first)]
    render(doc, table, None, index_name="up-pooling")
    if "psnr" in set(rows["metric"]):
        doc.para("PSNR: down-pool then up-pool the scikit-image sample images without training "
                 "(mean over the images); LiftUpPool is exact up to floating-point rounding.")


# --- any other suite -----------------------------------------------------------------------

def generic_section(doc: Document, ctx: ReportContext, name: str) -> None:
    rows = ctx.suite(name)
    try:
        table = suite_table(name, rows)
    except (UsageError, ImportError, AttributeError, TypeError, KeyError, ValueError):
        # a suite this report does not know, or whose view does not fit: the plain pivot
        table = generic_table(rows)
    render(doc, table, None)


# suites with a section of their own; any other suite gets ``generic_section``
RENDERERS = {
    "accuracy": accuracy_section,
    "shift": shift_section,
    "robustness": robustness_section,
    "perturbation": perturbation_section,
    "segmentation": segmentation_section,
    "efficiency": efficiency_section,
    SELECTION: selection_section,
}
