"""Wide tables as markdown: best value per column (or row) in bold, the reference pool marked.

Whether lower or higher is better is decided from the column's name (``direction``): errors,
CE/mCE, FR/mFR, T5D, flip probabilities, latency, memory, FLOPs and times are better low;
accuracy, consistency, IoU/mIoU, PSNR and throughput are better high; counts (params, seeds)
get no bold.
"""
from __future__ import annotations

import math
import re

import pandas as pd
from tabulate import tabulate

REFERENCE_MARK = "†"

_NEUTRAL = {"seeds", "params", "n", "frames", "buffers", "count", "severity", "shift", "pools"}
_HIGHER = {"acc", "accuracy", "consistency", "miou", "iou", "psnr", "throughput", "prob",
           "probability", "img/s"}
_LOWER = {"err", "error", "errors", "ce", "mce", "fr", "mfr", "t5d", "mt5d", "fp", "latency",
          "time", "s", "ms", "us", "µs", "memory", "bytes", "mib", "mb", "gib", "flops",
          "gflops", "mflops", "range", "spread", "std"}


def direction(label) -> str | None:
    """'min', 'max' or None (no best value) for a column or row label."""
    text = str(label).strip().lower()
    tokens = set(re.findall(r"[a-zµ0-9]+(?:/[a-z]+)?", text))
    if not tokens or tokens <= _NEUTRAL or text in _NEUTRAL:
        return None
    if "params" in tokens and not tokens & (_HIGHER | _LOWER):
        return None
    if tokens & {"range", "spread", "std", "sd", "flip", "distance"}:
        return "min"          # a spread of accuracy over shifts, a flip probability: better small
    if tokens & _HIGHER:
        return "max"
    if tokens & _LOWER:
        return "min"
    return None


def format_value(value, decimals: int = 2) -> str:
    """A cell as text: '' for missing, integers as integers, floats with ``decimals``."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    try:
        return f"{float(value):.{decimals}f}"
    except (TypeError, ValueError):
        return str(value)


def _column_formatter(series: pd.Series, decimals: int):
    """Integer columns, and whole-number columns without a better direction (counts such as
    params), print without decimals."""
    numeric = pd.to_numeric(series, errors="coerce")
    whole = numeric.dropna()
    if pd.api.types.is_integer_dtype(series.dtype) or (
            direction(series.name) is None and len(whole) and (whole == whole.round()).all()):
        return lambda v: "" if pd.isna(v) else f"{int(round(float(v)))}"
    return lambda v: format_value(v, decimals)


def best_mask(frame: pd.DataFrame, along: str = "columns", decimals: int = 2,
              how: str | None = "auto") -> pd.DataFrame:
    """True where a cell holds the best value of its column (``along="columns"``) or row
    (``along="rows"``), judged on the printed precision; ties are all bold; nothing is bold
    when fewer than two values differ or the label has no direction. ``how``: "auto" (from
    each label, ``direction``), "min", "max" or None (no bold)."""
    mask = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    labels = frame.columns if along == "columns" else frame.index
    for label in labels:
        best_is = direction(label) if how == "auto" else how
        if best_is is None:
            continue
        values = frame[label] if along == "columns" else frame.loc[label]
        numeric = pd.to_numeric(values, errors="coerce").astype(float).round(decimals)
        valid = numeric.dropna()
        if valid.nunique() < 2:
            continue
        best = valid.min() if best_is == "min" else valid.max()
        hit = (numeric == best).fillna(False).to_numpy()
        if along == "columns":
            mask[label] = hit
        else:
            mask.loc[label] = hit
    return mask


def mark_reference(name, reference: str | None) -> str:
    return f"{name} {REFERENCE_MARK}" if reference is not None and str(name) == reference else str(name)


def to_markdown(frame: pd.DataFrame, *, reference: str | None = None, along: str = "columns",
                index_name: str = "pool", decimals: int = 2, how: str | None = "auto") -> str:
    """A GitHub markdown table of ``frame`` with the best cells in bold.

    ``along="columns"``: pools are rows, the best pool per column is bold and the reference row
    is marked. ``along="rows"``: pools are columns (e.g. CE per corruption), the best pool per
    row is bold and the reference column is marked. ``how`` overrides the per-label
    direction (see ``best_mask``).
    """
    if frame.empty:
        return ""
    mask = best_mask(frame, along, decimals, how)
    body = []
    if along == "columns":
        formatters = {c: _column_formatter(frame[c], decimals) for c in frame.columns}
    else:   # a row is one quantity across pools: every cell with the same precision
        formatters = {c: (lambda v: format_value(v, decimals)) for c in frame.columns}
    for idx in frame.index:
        label = mark_reference(idx, reference) if along == "columns" else str(idx)
        row = [label]
        for col in frame.columns:
            text = formatters[col](frame.at[idx, col])
            if text and mask.at[idx, col]:
                text = f"**{text}**"
            row.append(text)
        body.append(row)
    columns = [mark_reference(c, reference) if along == "rows" else str(c) for c in frame.columns]
    headers = [index_name] + columns
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=["left"] + ["right"] * len(columns))


def sort_pools(index) -> list:
    """Pools in a fixed order: alphabetical (by their canonical spec strings)."""
    return sorted(index, key=lambda p: str(p))
