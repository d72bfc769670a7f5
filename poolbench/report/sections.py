"""One section per suite: its wide tables (best in bold, reference pool marked) and plots.

Every section renders from the tidy rows alone, through the suite's own ``table``/``derived``
views where the suite module exists, and is skipped with a note when its suite has no rows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from ..errors import UsageError
from ..store import ROW_COLUMNS
from ..suites import get_suite
from ..suites.base import with_reference
from ..suites.robustness import HARSHNESS_NOTE
from . import plots
from .markdown import Document, code_span
from .tables import REFERENCE_MARK, sort_pools, to_markdown

SUITE_ORDER = ("accuracy", "shift", "robustness", "perturbation", "segmentation", "efficiency")
TITLES = {
    "accuracy": "Clean accuracy",
    "shift": "Shift consistency",
    "robustness": "Corruption robustness",
    "perturbation": "Perturbation stability",
    "segmentation": "Segmentation and up-pooling",
    "efficiency": "Efficiency",
}
SEGMENTATION_ORDER = ("max_unpool", "max_unpool_blur", "lift", "bilinear", "bilinear_avg")


@dataclass
class ReportContext:
    rows: pd.DataFrame                 # every row without an error
    out: Path
    references: dict[str, str]         # suite -> reference pool (robustness, perturbation)
    baseline: str                      # the pool marked in the other tables
    styles: dict = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)

    def suite(self, name: str) -> pd.DataFrame:
        """The rows of one suite, without the protocol columns only other suites use."""
        sub = self.rows[self.rows["suite"] == name]
        unused = [c for c in sub.columns if c not in ROW_COLUMNS and sub[c].isna().all()]
        return sub.drop(columns=unused)

    def figure(self, doc: Document, name: str, draw, alt: str, caption: str | None = None) -> None:
        """Draw ``draw(path)`` into ``fig-<name>.png`` and link it."""
        filename = f"fig-{name}.png"
        draw(self.out / filename)
        self.figures.append(filename)
        doc.figure(filename, alt, caption)


# --- helpers ------------------------------------------------------------------------------

def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def groups(frame: pd.DataFrame) -> list[tuple[str | None, str, pd.DataFrame]]:
    """[(heading or None when there is one group, file-name suffix, rows)] per (model, dataset)."""
    keys = frame[["model", "dataset"]].astype(str)
    pairs = sorted(set(map(tuple, keys.to_numpy())))
    if len(pairs) <= 1:
        return [(None, "", frame)]
    out = []
    for model, dataset in pairs:
        mask = (keys["model"] == model) & (keys["dataset"] == dataset)
        out.append((f"{model} on {dataset}", f"-{slug(model)}-{slug(dataset)}", frame[mask]))
    return out


def _ints(values) -> str:
    vals = sorted({int(v) for v in pd.Series(values).dropna()})
    return ", ".join(map(str, vals)) if vals else "n/a"


def describe(frame: pd.DataFrame) -> str:
    models = ", ".join(sorted({str(m) for m in frame["model"].dropna()})) or "n/a"
    datasets = ", ".join(sorted({str(d) for d in frame["dataset"].dropna()})) or "n/a"
    return f"Backbone {code_span(models)} on {code_span(datasets)}; seeds {_ints(frame['seed'])} (mean over seeds)."


def suite_table(name: str, frame: pd.DataFrame, options: dict | None = None) -> pd.DataFrame:
    """The suite's own wide view of ``frame``; ``options`` (the suite's option keys) narrow it."""
    suite = get_suite(name)
    return suite.table(frame, suite.options(options or {}))


def generic_table(frame: pd.DataFrame) -> pd.DataFrame:
    """pool x "metric [unit]", mean over everything else (for suites without a view)."""
    f = frame[frame["value"].notna()].copy()
    if f.empty:
        return pd.DataFrame()
    unit = f["unit"].fillna("").astype(str) if "unit" in f else ""
    f["column"] = f["metric"].astype(str) + np.where(unit != "", " " + unit, "")
    wide = f.pivot_table(index="pool", columns="column", values="value", aggfunc="mean")
    wide = wide[sorted(wide.columns)]
    wide.columns.name = None
    return wide


def ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Rows in sorted pool order (tables indexed by pool), column index names dropped."""
    if table.empty:
        return table
    if table.index.name in (None, "pool"):
        table = table.loc[sort_pools(table.index)]
    table.columns.name = None
    return table


def legend(table: pd.DataFrame, reference: str | None, what: str = "reference pool",
           along: str = "columns") -> str:
    bold = "best per column" if along == "columns" else "best per row"
    text = f"Bold: {bold} (lower is better for errors, CE/FR, times; higher for accuracy and consistency)."
    names = table.index if along == "columns" else table.columns
    if reference is not None and reference in [str(n) for n in names]:
        text += f" {REFERENCE_MARK} {code_span(reference)}: {what}."
    return text


def render(doc: Document, table: pd.DataFrame, reference: str | None, *, what: str = "reference pool",
           along: str = "columns", index_name: str = "pool", how: str | None = "auto") -> None:
    if table.empty:
        return
    empty = [c for c in table.columns if pd.to_numeric(table[c], errors="coerce").isna().all()]
    if along == "columns" and empty and len(empty) < len(table.columns):
        table = table.drop(columns=empty)
    note = legend(table, reference, what, along)
    if along == "columns" and empty:
        note += (" Left out, undefined for every pool: " + ", ".join(map(str, empty)) + ".")
    doc.table(to_markdown(table, reference=reference, along=along, index_name=index_name, how=how),
              note)


# --- accuracy -----------------------------------------------------------------------------

def accuracy_section(doc: Document, ctx: ReportContext) -> None:
    rows = ctx.suite("accuracy")
    for label, _, sub in groups(rows):
        if label:
            doc.heading(label, 3)
        n = sub.loc[sub["metric"] == "top1_error", "n"]
        doc.para(describe(sub) + (f" Errors on {_ints(n)} test images." if len(n.dropna()) else ""))
        render(doc, ordered(suite_table("accuracy", sub)), ctx.baseline, what="baseline")


# --- shift --------------------------------------------------------------------------------

def shift_section(doc: Document, ctx: ReportContext) -> None:
    rows = ctx.suite("shift")
    accuracy = ctx.suite("accuracy")
    for label, suffix, sub in groups(rows):
        if label:
            doc.heading(label, 3)
        doc.para(describe(sub) + " " + _shift_protocol(sub))
        render(doc, ordered(suite_table("shift", sub)), ctx.baseline, what="baseline")
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
                "Top-1 accuracy and mean probability of the true class as the input is rolled "
                "diagonally by 0..k pixels (circular shift).")


def _shift_protocol(frame: pd.DataFrame) -> str:
    cons = frame[frame["metric"] == "consistency"]
    parts = []
    if "shift_kind" in cons and (cons["shift_kind"] == "crop").any():
        crop = cons[cons["shift_kind"] == "crop"]
        k = _ints(crop.get("max_shift", pd.Series(dtype=float)))
        parts.append(f"crop: zero-pad by k = {k}, two random crops with offsets in {{0..2k}}^2")
    if "shift_kind" in cons and (cons["shift_kind"] == "circular").any():
        parts.append("circular: torch.roll by two random offsets in [-3, 2] per axis")
    if not parts:
        return ""
    passes = _ints(cons.get("passes", pd.Series(dtype=float)))
    return (f"Consistency = % of {_ints(cons['n'])} test images whose top-1 class agrees between two "
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
    panels = {}
    for metric, title, ylabel in (("top1_accuracy", "Top-1 accuracy", "top-1 accuracy %"),
                                  ("true_class_probability", "True-class probability", "mean p(true class)")):
        m = diag[diag["metric"] == metric]
        if m.empty:
            continue
        mean = m.groupby(["pool", "shift"])["value"].mean()
        series = {}
        for pool in sorted(m["pool"].unique()):
            s = mean.loc[pool].sort_index()
            series[str(pool)] = ([float(x) for x in s.index], [float(v) for v in s.to_numpy()])
        panels[title] = {"ylabel": ylabel, "series": series}
    return panels


# --- robustness ---------------------------------------------------------------------------

def robustness_section(doc: Document, ctx: ReportContext) -> None:
    suite = get_suite("robustness")
    ref = ctx.references["robustness"]
    rows = ctx.suite("robustness")
    for label, suffix, sub in groups(rows):
        if label:
            doc.heading(label, 3)
        errs = sub[sub["metric"] == "error"]
        sources = sorted({str(s) for s in sub.get("corruption_source", pd.Series(dtype=str)).dropna()}) or ["generated"]
        doc.para(describe(sub) + f" {_count(errs, 'corruption', 'corruption')} at "
                 f"severities {_ints(errs.get('severity', []))}, on {_ints(errs['n'])} test images "
                 f"(corruptions: {', '.join(sources)}); CE and mCE normalised by {code_span(ref)}.")
        sub = with_reference(sub, ref)
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
            summary = suite_table("robustness", sub)
            summary = summary[[c for c in summary.columns if not str(c).startswith("CE ")]]
            render(doc, ordered(summary), ref)
            ce = derived[derived["metric"] == "CE"].pivot_table(
                index="corruption", columns="pool", values="value", aggfunc="mean")
            ce = ce.loc[[c for c in metrics.ALL_CORRUPTIONS if c in ce.index] +
                        sorted(c for c in ce.index if c not in metrics.ALL_CORRUPTIONS)]
            ce = ce[sort_pools(ce.columns)]
            ce.columns.name = None
            doc.para("CE per corruption (%, the reference scores 100):")
            render(doc, ce, ref, along="rows", index_name="corruption", how="min")
            ctx.figure(doc, f"ce-per-corruption{suffix}", lambda p: plots.grouped_bars(
                ce, ctx.styles, p, ylabel="CE (%)", title="Corruption error per corruption" +
                (f" ({label})" if label else ""), hline=100.0, hline_label=f"reference ({ref})"),
                "CE per corruption", f"CE per corruption, normalised by {ref} (dotted line, 100).")
        series = _severity_series(sub)
        if series:
            ctx.figure(doc, f"error-vs-severity{suffix}", lambda p: plots.lines(
                series, ctx.styles, p, xlabel="severity", ylabel="top-1 error %",
                title="Error vs corruption severity" + (f" ({label})" if label else ""),
                xticks=range(0, 6), xticklabels=["clean", "1", "2", "3", "4", "5"]),
                "error vs severity", f"Top-1 error per severity, averaged over the "
                f"{_count(errs, 'corruption', 'corruption')} (0 = clean images).")
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
    ref = ctx.references["perturbation"]
    rows = ctx.suite("perturbation")
    for label, suffix, sub in groups(rows):
        if label:
            doc.heading(label, 3)
        fp = sub[sub["metric"] == "flip_probability"]
        sources = sorted({str(s) for s in sub.get("perturbation_source", pd.Series(dtype=str)).dropna()}) or ["generated"]
        doc.para(describe(sub) + f" {_count(fp, 'perturbation', 'perturbation')}, "
                 f"{_ints(fp['n'])} sequences each (sequences: {', '.join(sources)}); FR and T5D "
                 f"normalised by {code_span(ref)}.")
        sub = with_reference(sub, ref)
        derived = suite.derived(sub)
        if derived.empty:
            doc.note(f"The reference pool {ref} has no rows on these sequences, so FR and mFR cannot "
                     f"be computed: run the suite with --pool {ref}. Raw flip probabilities follow.")
            raw = fp.pivot_table(index="pool", columns="perturbation", values="value", aggfunc="mean")
            render(doc, ordered(raw.rename(columns=lambda c: f"FP {c}")), None)
            continue
        summary = suite_table("perturbation", sub)
        summary = summary[[c for c in summary.columns if not str(c).startswith("FR ")]]
        render(doc, ordered(summary), ref)
        fr = derived[derived["metric"] == "FR"].pivot_table(
            index="perturbation", columns="pool", values="value", aggfunc="mean")
        known = list(dict.fromkeys(metrics.ALL_PERTURBATIONS))
        fr = fr.loc[[p for p in known if p in fr.index] + sorted(p for p in fr.index if p not in known)]
        fr = fr[sort_pools(fr.columns)]
        fr.columns.name = None
        doc.para("FR per perturbation (%, the reference scores 100):")
        render(doc, fr, ref, along="rows", index_name="perturbation", how="min")
        ctx.figure(doc, f"fr-per-perturbation{suffix}", lambda p: plots.grouped_bars(
            fr, ctx.styles, p, ylabel="FR (%)", title="Flip rate per perturbation" +
            (f" ({label})" if label else ""), hline=100.0, hline_label=f"reference ({ref})"),
            "FR per perturbation", f"Flip rate per perturbation, normalised by {ref} (dotted line, 100).")


# --- segmentation -------------------------------------------------------------------------

def segmentation_section(doc: Document, ctx: ReportContext) -> None:
    rows = ctx.suite("segmentation")
    train = rows[rows["metric"].isin(["miou", "pixel_accuracy"])]
    if len(train):
        doc.para(describe(train) + f" SegNet on {_ints(train['n'])} test images per variant.")
    table = suite_table("segmentation", rows)
    if not table.empty:   # the paper's order (Figure 6), then any other variant alphabetically
        first = [v for v in SEGMENTATION_ORDER if v in table.index]
        table = table.loc[first + sorted(str(v) for v in table.index if v not in first)]
    render(doc, table, None, index_name="up-pooling")
    if "psnr" in set(rows["metric"]):
        doc.para("PSNR: down-pool then up-pool the scikit-image sample images without training "
                 "(mean over the images); LiftUpPool is exact up to floating-point rounding.")


# --- efficiency ---------------------------------------------------------------------------

def efficiency_section(doc: Document, ctx: ReportContext) -> None:
    from ..suites.efficiency import EfficiencySuite, table_setting

    rows = ctx.suite("efficiency")
    targets = _efficiency_targets(rows)
    if not targets:
        table = generic_table(rows)
        doc.note("These efficiency rows carry no level/shape columns: mean per pool and metric "
                 "over all recorded settings.")
        render(doc, ordered(table), ctx.baseline, what="baseline")
    for level, shape in targets:
        setting = "model" if level == "model" else shape
        try:
            table = suite_table("efficiency", rows, {"table_setting": setting})
        except (UsageError, ValueError) as exc:
            doc.note(f"No efficiency table at {level} {shape}: {exc}")
            continue
        _, _, dtype, fmt = table_setting({"table_setting": setting}, rows)
        where = f"model level ({_model_name(rows)}, input {shape})" if level == "model" else f"layer level, input {shape}"
        doc.heading(f"{where[0].upper()}{where[1:]}, {dtype}, {fmt}", 3)
        render(doc, ordered(table), ctx.baseline, what="baseline")
    for metric, what in (("latency_fwd_ratio", "forward"), ("latency_fwdbwd_ratio", "forward+backward")):
        ratios = _ratio_matrix(rows, metric)
        if ratios.empty:
            continue
        doc.para(f"{what[0].upper()}{what[1:]} latency / the baseline's, every setting (median "
                 "over the repeats, timed round-robin with the baseline in the same cell, eager; "
                 "rows: input, dtype, memory format):")
        render(doc, ratios, ctx.baseline, what="baseline", along="rows", index_name="setting", how="min")
        name = "fwd" if metric == "latency_fwd_ratio" else "fwdbwd"
        ctx.figure(doc, f"latency-ratios-{name}", lambda p, r=ratios, w=what: plots.ratio_heatmap(
            r, p, title=f"{w[0].upper()}{w[1:]} latency / {ctx.baseline} (same cell)",
            colorbar_label=f"ratio to {ctx.baseline} (log scale)"),
            f"{what} latency ratios", f"The table above as a heat map: blue faster than "
            f"{ctx.baseline}, red slower, log colour scale.")
    if targets:
        doc.para("Notes: " + " ".join(f"({i}) {n}." for i, n in
                                      enumerate(EfficiencySuite().notes({})[1:], start=1)))
    points, metric, unit = latency_vs_accuracy(rows, ctx.suite("accuracy"))
    if points:
        xlabel = "forward latency" if metric == "latency_fwd" else metric
        xlabel += f" ({unit})" if unit else ""
        setting = _latency_setting_text(rows)
        ctx.figure(doc, "latency-vs-accuracy", lambda p: plots.scatter_front(
            points, ctx.styles, p, xlabel=f"{xlabel}, {setting}",
            ylabel="top-1 accuracy %", title="Latency vs accuracy", x_better="min", y_better="max"),
            "latency vs accuracy",
            f"Top-1 accuracy (accuracy suite) against {metric} (efficiency suite, "
            f"{setting}); the dashed line is the Pareto front.")


def _efficiency_targets(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """[(level, shape)] the rows hold: layer shapes in run order, then the model level."""
    if rows.empty or not {"level", "shape"} <= set(rows.columns):
        return []
    pairs = list(dict.fromkeys(zip(rows["level"].astype(str), rows["shape"].astype(str))))
    pairs = [(lv, sh) for lv, sh in pairs if lv in ("layer", "model") and sh not in ("nan", "None")]
    return [p for p in pairs if p[0] == "layer"] + [p for p in pairs if p[0] == "model"]


def _model_name(rows: pd.DataFrame) -> str:
    names = sorted({str(m) for m in rows.loc[rows["level"] == "model", "model"].dropna()}) \
        if "model" in rows.columns else []
    return ", ".join(names) or "model"


def _eager(rows: pd.DataFrame) -> pd.DataFrame:
    if "compiled" not in rows.columns:
        return rows
    return rows[~rows["compiled"].fillna(False).astype(bool)]


_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64",
          "channels_last": "CL", "nchw": "NCHW"}


def _ratio_matrix(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """"input dtype format" x pool: one latency ratio to the baseline per eager cell."""
    need = {"level", "shape", "dtype", "memory_format", "metric", "value", "pool"}
    if rows.empty or not need <= set(rows.columns):
        return pd.DataFrame()
    f = _eager(rows)
    f = f[(f["metric"] == metric) & f["value"].notna()].copy()
    if f.empty:
        return pd.DataFrame()
    target = np.where(f["level"] == "model", "model " + f["shape"].astype(str), f["shape"].astype(str))
    f["setting"] = (pd.Series(target, index=f.index) + " " + f["dtype"].map(lambda d: _SHORT.get(d, d))
                    + " " + f["memory_format"].map(lambda m: _SHORT.get(m, m)))
    # rows in a fixed order: the inputs as measured (layers, then the model), then dtypes and
    # memory formats in the efficiency suite's order (float32 first, NCHW first)
    from ..suites.efficiency import DEFAULT_FORMATS, DTYPES

    targets = {t: i for i, t in enumerate(_efficiency_targets(rows))}
    dtypes, formats = list(DTYPES), list(DEFAULT_FORMATS)
    key = f.apply(lambda r: (targets.get((str(r["level"]), str(r["shape"])), len(targets)),
                             dtypes.index(r["dtype"]) if r["dtype"] in dtypes else len(dtypes),
                             str(r["dtype"]),
                             formats.index(r["memory_format"]) if r["memory_format"] in formats
                             else len(formats)), axis=1)
    order = list(dict.fromkeys(f.loc[key.sort_values(kind="stable").index, "setting"]))
    wide = f.pivot_table(index="setting", columns="pool", values="value", aggfunc="median")
    wide = wide.reindex(order)
    wide = wide[sort_pools(wide.columns)]
    wide.columns.name = None
    return wide


def _latency_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows the latency-vs-accuracy plot uses: eager, the model level when measured (else
    every layer input), at the dtype and memory format of the efficiency tables."""
    f = _eager(rows)
    if "level" in f.columns and (f["level"] == "model").any():
        f = f[f["level"] == "model"]
    if {"dtype", "memory_format"} <= set(f.columns) and len(f):
        from ..suites.efficiency import table_setting

        _, _, dtype, fmt = table_setting({"table_setting": "model"}, f)
        f = f[(f["dtype"] == dtype) & (f["memory_format"] == fmt)]
    return f


def _latency_setting_text(rows: pd.DataFrame) -> str:
    f = _latency_rows(rows)
    parts = []
    if "level" in f.columns and f["level"].notna().any():
        parts.append("model level" if (f["level"] == "model").all() else "mean over the layer inputs")
    for col in ("dtype", "memory_format"):
        if col in f.columns and f[col].notna().any():
            parts.append(str(f[col].dropna().iloc[0]))
    return ", ".join(parts + ["eager"]) if parts else "mean over its settings"


def latency_metric(rows: pd.DataFrame) -> str | None:
    """The efficiency metric to plot: a latency, preferring forward-only and median ones."""
    names = sorted({str(m) for m in rows["metric"].dropna() if "latency" in str(m).lower()})
    if not names:
        return None

    def score(name):
        n = name.lower()
        return ("backward" in n or "train" in n, "median" not in n, "forward" not in n, n)

    return sorted(names, key=score)[0]


def latency_vs_accuracy(efficiency: pd.DataFrame, accuracy: pd.DataFrame):
    metric = latency_metric(efficiency) if len(efficiency) else None
    if metric is None or accuracy.empty:
        return {}, metric, ""
    lat = _latency_rows(efficiency)
    lat = lat[lat["metric"] == metric]
    for col in ("pass", "direction", "mode"):
        if col in lat and (lat[col] == "forward").any():
            lat = lat[lat[col] == "forward"]
            break
    unit = ", ".join(sorted({str(u) for u in lat["unit"].dropna() if str(u)}))
    latency = lat.groupby("pool")["value"].mean()
    top1 = accuracy[accuracy["metric"] == "top1_error"].groupby("pool")["value"].mean()
    points = {str(p): (float(latency[p]), 100.0 - float(top1[p])) for p in latency.index
              if p in top1.index and np.isfinite(latency[p]) and np.isfinite(top1[p])}
    return points, metric, unit


# --- any other suite -----------------------------------------------------------------------

def generic_section(doc: Document, ctx: ReportContext, name: str) -> None:
    rows = ctx.suite(name)
    try:
        table = suite_table(name, rows)
    except (UsageError, ImportError, AttributeError, TypeError, KeyError, ValueError):
        # a suite this report does not know, or whose view does not fit: the plain pivot
        table = generic_table(rows)
    render(doc, table, None)


RENDERERS = {
    "accuracy": accuracy_section,
    "shift": shift_section,
    "robustness": robustness_section,
    "perturbation": perturbation_section,
    "segmentation": segmentation_section,
    "efficiency": efficiency_section,
}


def _count(frame: pd.DataFrame, column: str, noun: str) -> str:
    """"15 corruptions", "1 corruption"."""
    n = int(frame[column].nunique()) if len(frame) and column in frame else 0
    return f"{n} {noun}{'' if n == 1 else 's'}"
