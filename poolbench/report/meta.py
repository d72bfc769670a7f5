"""What the web page shows beside a table's values and the markdown does not: each value's
interval (for the inline bars), each pool's verdict against the reference
(``suites.verdicts``) and the provenance of each pool's values (cells, seeds, commit, device).

Everything here is read from the suite's full view (with its interval columns) and from the
rows the table was computed from (the document's scope), never recomputed.
"""
from __future__ import annotations

import pandas as pd

from ..suites.verdicts import as_number, delta_metrics, verdict
from .tables import REFERENCE_MARK, direction

# provenance lines: (label, row column)
PROVENANCE = (("seeds", "seed"), ("commit", "git_commit"), ("device", "device"),
              ("threads", "threads"), ("torch", "torch_version"), ("host", "host"),
              ("store", "store"))


def pool_key(label) -> str:
    """The pool a row or column label names (without the reference mark)."""
    text = str(label)
    return text[: -len(REFERENCE_MARK) - 1] if text.endswith(f" {REFERENCE_MARK}") else text


def intervals(full: pd.DataFrame, shown: pd.DataFrame) -> dict:
    """{column: {pool: {"lo", "hi", "slo", "shi"}}} for the shown columns that have an
    evaluation (lo/hi) or seed (seeds lo/hi) interval in ``full``."""
    out: dict = {}
    for col in shown.columns:
        spans = {}
        for pool in shown.index:
            if pool not in full.index:
                continue
            row = full.loc[pool]
            span = {key: as_number(row.get(f"{col}{suffix}")) for key, suffix in
                    (("lo", " lo"), ("hi", " hi"), ("slo", " seeds lo"), ("shi", " seeds hi"))}
            if any(v is not None for v in span.values()):
                spans[str(pool)] = span
        if spans:
            out[str(col)] = spans
    return out


def verdicts(full: pd.DataFrame, reference: str | None) -> dict[str, str]:
    """{pool: its verdict against ``reference`` for every metric with a difference}."""
    if reference is None or reference not in [str(p) for p in full.index]:
        return {}
    out = {}
    for pool in full.index:
        if str(pool) == reference:
            out[str(pool)] = "reference"
            continue
        parts = []
        for metric in delta_metrics(full):
            v = verdict(full, pool, metric)
            if v is None:
                continue
            over = f"{v['seeds']} seeds" if v["kind"] == "seeds" else "test images only"
            better = direction(metric)
            word = "not resolved" if not v["resolved"] else "resolved" if better is None else \
                "resolved, " + ("better" if (v["delta"] < 0) == (better == "min") else "worse")
            parts.append(f"{metric}: Δ {v['delta']:+.2f} [{v['lo']:+.2f}, {v['hi']:+.2f}] ({over}): {word}")
        if parts:
            out[str(pool)] = "; ".join(parts)
    return out if len(out) > 1 else {}     # no pool with a difference: no verdict column


def provenance(rows: pd.DataFrame | None, pools) -> dict[str, dict]:
    """{pool: {"cells": [config hashes], label: values}} of the rows behind each pool's values."""
    if rows is None or rows.empty or "pool" not in rows.columns:
        return {}
    out = {}
    for pool in pools:
        sub = rows[rows["pool"].astype(str) == pool]
        if sub.empty:
            continue
        info = {"cells": sorted({str(h) for h in sub["config_hash"].dropna()})}
        for label, column in PROVENANCE:
            if column in sub.columns:
                values = sorted({_text(v) for v in sub[column].dropna()} - {""})
                if values:
                    info[label] = ", ".join(values)
        if "time" in sub.columns and sub["time"].notna().any():
            times = sub["time"].dropna().astype(str)
            info["written"] = f"{times.min()} to {times.max()}" if times.nunique() > 1 else times.min()
        out[pool] = info
    return out


def _text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def table_meta(full: pd.DataFrame, shown: pd.DataFrame, scope: dict, reference: str | None,
               *, along: str, index_name: str) -> dict:
    """The page's extras for a table rendered from ``shown`` (``full``: the same rows with
    their interval and difference columns)."""
    if along == "columns" and index_name == "pool":
        keys = [str(p) for p in shown.index]
        return {"pools_in": "rows", "intervals": intervals(full, shown),
                "verdicts": verdicts(full, reference), "reference": reference,
                "provenance": provenance(scope.get("rows"), keys)}
    if along == "rows":
        keys = [str(p) for p in shown.columns]
        return {"pools_in": "columns", "provenance": provenance(scope.get("rows"), keys)}
    return {}
