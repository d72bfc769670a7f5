"""The efficiency section: one table per measured input, latency-ratio matrices and the
latency-vs-accuracy plot."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..suites.efficiency import DEFAULT_FORMATS, DTYPES, table_setting
from ..suites.efficiency import SUITE as EFFICIENCY
from . import plots
from .context import ReportContext, generic_table, ordered, render, suite_table
from .markdown import Document
from .tables import sort_pools


def efficiency_section(doc: Document, ctx: ReportContext) -> None:
    rows = ctx.suite("efficiency")
    baseline = ctx.references["efficiency"]    # the pool the ratios divide by, from the rows
    targets = _efficiency_targets(rows)
    if not targets:
        table = generic_table(rows)
        doc.note("These efficiency rows carry no level/shape columns: mean per pool and metric "
                 "over all recorded settings.")
        render(doc, ordered(table), baseline, what="baseline")
    for level, shape in targets:
        setting = "model" if level == "model" else shape
        try:
            table = suite_table("efficiency", rows, {"table_setting": setting})
        except (UsageError, ValueError) as exc:
            doc.note(f"No efficiency table at {level} {shape}: {exc}")
            continue
        _, _, dtype, fmt = table_setting(EFFICIENCY.options({"table_setting": setting}), rows)
        where = f"model level ({_model_name(rows)}, input {shape})" if level == "model" else f"layer level, input {shape}"
        doc.heading(f"{where[0].upper()}{where[1:]}, {dtype}, {fmt}", 3)
        render(doc, ordered(table), baseline, what="baseline")
    for metric, what in (("latency_fwd_ratio", "forward"), ("latency_fwdbwd_ratio", "forward+backward")):
        ratios = _ratio_matrix(rows, metric)
        if ratios.empty:
            continue
        doc.para(f"{what[0].upper()}{what[1:]} latency / the baseline's, every setting (median "
                 "over the repeats, timed round-robin with the baseline in the same cell, eager; "
                 "rows: input, dtype, memory format):")
        render(doc, ratios, baseline, what="baseline", along="rows", index_name="setting", how="min")
        name = "fwd" if metric == "latency_fwd_ratio" else "fwdbwd"
        ctx.figure(doc, f"latency-ratios-{name}", lambda p, r=ratios, w=what: plots.ratio_heatmap(
            r, p, title=f"{w[0].upper()}{w[1:]} latency / {baseline} (same cell)",
            colorbar_label=f"ratio to {baseline} (log scale)"),
            f"{what} latency ratios", f"The table above as a heat map: blue faster than "
            f"{baseline}, red slower, log colour scale.")
    if targets:
        doc.para("Notes: " + " ".join(f"({i}) {n}." for i, n in
                                      enumerate(EFFICIENCY.notes(EFFICIENCY.options({}))[1:], start=1)))
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
        _, _, dtype, fmt = table_setting(EFFICIENCY.options({"table_setting": "model"}), f)
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
