"""What every report section shares: the rows of a build, grouping, the suites' own views,
and rendering a wide table with its legend."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..canonical import canonical_json, digest
from ..store import ROW_COLUMNS
from ..suites import get_suite
from .certainty import values_only
from .markdown import Document, code_span
from .meta import table_meta
from .tables import REFERENCE_MARK, sort_pools, to_markdown


@dataclass
class ReportContext:
    rows: pd.DataFrame                 # every row without an error
    out: Path
    references: dict[str, str]         # suite -> the pool its rows are normalised by (from the rows)
    baseline: str                      # the pool marked in the other tables
    styles: dict = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    store: Any = None                  # the ResultStore: per-image predictions for the intervals
    recipes: dict = field(default_factory=dict)   # config hash -> the cell's recipe without its seed

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


def groups(frame: pd.DataFrame, recipes: dict | None = None) -> list[tuple[str | None, str, pd.DataFrame]]:
    """[(heading or None when there is one group, file-name suffix, rows)] per (model, dataset)
    and, where a pool there was trained with several recipes (``recipes``: config hash -> the
    cell's training recipe without its seed), per recipe, headed by what differs: a table
    never averages the results of different recipes as if they were seeds."""
    keys = frame[["model", "dataset"]].astype(str)
    recipe = pd.Series([canonical_json(_shared(recipes.get(str(h), {}))) if recipes else "{}"
                        for h in frame["config_hash"]], index=frame.index)
    out, split = [], False
    for model, dataset in sorted(set(map(tuple, keys.to_numpy()))):
        mask = (keys["model"] == model) & (keys["dataset"] == dataset)
        label, suffix = f"{model} on {dataset}", f"-{slug(model)}-{slug(dataset)}"
        per_pool = recipe[mask].groupby(frame.loc[mask, "pool"].astype(str)).nunique()
        if (per_pool <= 1).all():
            out.append((label + _per_pool(recipe[mask], frame.loc[mask, "pool"]), suffix, frame[mask]))
            continue
        split, kinds = True, sorted(recipe[mask].unique())
        for kind, text in zip(kinds, recipe_differences([json.loads(k) for k in kinds])):
            out.append((f"{label}, {text}", f"{suffix}-{digest(kind, 8)}", frame[mask & (recipe == kind)]))
    if len(out) == 1 and not split and out[0][0] == label:
        return [(None, "", frame)]
    return out


def _per_pool(recipe: pd.Series, pools: pd.Series) -> str:
    """", recipe per pool: lift lr=0.1; max lr=0.025" where the pools of one table were trained
    with different recipes (``--recipe tuned``), else ""."""
    mine = {str(p): json.loads(k) for p, k in zip(pools, recipe)}
    if len({canonical_json(r) for r in mine.values()}) < 2:
        return ""
    texts = recipe_differences(list(mine.values()))
    return ", recipe per pool: " + "; ".join(f"{p} {t}" for p, t in sorted(zip(mine, texts)))


def _shared(recipe: dict) -> dict:
    """A recipe without what differs between the pools of one table by design."""
    return {k: v for k, v in recipe.items() if k not in ("pool", "model", "dataset")}


def recipe_differences(recipes: list[dict]) -> list[str]:
    """For each recipe, ``key=value`` of the keys whose values differ among ``recipes``."""
    keys = sorted({k for r in recipes for k in r})
    differ = [k for k in keys if len({canonical_json(r.get(k)) for r in recipes}) > 1]
    return [", ".join(f"{k}={r.get(k)}" for k in differ) or "same recipe" for r in recipes]


def ints_text(values) -> str:
    vals = sorted({int(v) for v in pd.Series(values).dropna()})
    return ", ".join(map(str, vals)) if vals else "n/a"


def describe(frame: pd.DataFrame) -> str:
    models = ", ".join(sorted({str(m) for m in frame["model"].dropna()})) or "n/a"
    datasets = ", ".join(sorted({str(d) for d in frame["dataset"].dropna()})) or "n/a"
    return f"Backbone {code_span(models)} on {code_span(datasets)}; seeds {ints_text(frame['seed'])} (mean over seeds)."


def suite_table(name: str, frame: pd.DataFrame, options: dict | None = None, store=None) -> pd.DataFrame:
    """The suite's own wide view of ``frame``; ``options`` (the suite's option keys) narrow it;
    with ``store`` the view has evaluation intervals (``suites.intervals``)."""
    suite = get_suite(name)
    return suite.table(frame, suite.options(options or {}), store)


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
    full, table = table, values_only(table)  # the intervals get a table of their own (report.certainty)
    empty = [c for c in table.columns if pd.to_numeric(table[c], errors="coerce").isna().all()]
    if along == "columns" and empty and len(empty) < len(table.columns):
        table = table.drop(columns=empty)
    note = legend(table, reference, what, along)
    if along == "columns" and empty:
        note += (" Left out, undefined for every pool: " + ", ".join(map(str, empty)) + ".")
    doc.table(to_markdown(table, reference=reference, along=along, index_name=index_name, how=how),
              note, table_meta(full, table, doc.scope, reference, along=along, index_name=index_name))


def count_of(frame: pd.DataFrame, column: str, noun: str) -> str:
    """"15 corruptions", "1 corruption"."""
    n = int(frame[column].nunique()) if len(frame) and column in frame else 0
    return f"{n} {noun}{'' if n == 1 else 's'}"
