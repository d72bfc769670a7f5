"""``build_report``: result stores -> ``<out>/report.md``, ``report.html``, PNG figures, ``results.csv``
and ``results.json``."""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from ..errors import UsageError
from ..registry import canonical_spec
from ..selection import SUITE as SELECTION
from ..store import ROW_COLUMNS
from ..suites.base import ALEXNET, DEFAULT_REFERENCE
from ..suites.intervals import METHOD_NOTE
from . import illustrations, plots
from .markdown import Document, code_span
from .page import write_page
from .publish import publish, staging
from .sections import RENDERERS, ReportContext, generic_section, suite_order, title_of
from .stores import load_stores

NORMALISED_SUITES = ("robustness", "perturbation")
ENVIRONMENT = (("torch", "torch_version"), ("poolbench", "poolbench_version"),
               ("git commit", "git_commit"), ("device", "device"), ("threads", "threads"),
               ("dtype", "dtype"), ("memory format", "memory_format"))
# Columns that identify a row, in sort priority; every other column follows alphabetically.
SORT_FIRST = ("suite", "model", "dataset", "pool", "seed", "metric")


def build_report(results: str | Sequence[str], out: str, *, title: str | None = None,
                 reference: str | None = None, illustrations: bool = True, strict: bool = False) -> Path:
    """Write ``report.md``, ``report.html``, ``fig-*.png``, ``results.csv`` and
    ``results.json`` into ``out`` from the rows under ``results`` (one store, or several merged
    by cell hash: ``report.stores``); returns the path of report.md.

    ``reference``: the pool that normalises CE/mCE and FR/mFR (default: the reference the
    latest run of that suite recorded in its rows); it is marked with a dagger in the tables. ``illustrations``: also draw the LiftPool sub-band and
    up-pooling reconstruction figures (computed at report time, not from the results).
    The report is built in a temporary folder and moved into place (``report.publish``): an
    interrupted build leaves the previous report intact, and only files an earlier report wrote
    are ever removed from ``out``.
    Raises UsageError when a store is missing, holds no rows, or two stores disagree on a
    cell. A cell whose files fail verification is never shown: it is left out with one warning
    line, or, with ``strict`` (for audits), the report is refused. The same rows give
    byte-identical files.
    """
    paths = [results] if isinstance(results, (str, Path)) else [str(r) for r in results]
    if not paths:
        raise UsageError("no result store given; pass --results DIR (repeat it to merge stores)")
    frame, store = load_stores([str(p) for p in paths], strict=strict)
    where = ", ".join(map(str, paths))
    if frame.empty:
        raise UsageError(f"no result rows under {where}; run a suite first "
                         f"(e.g. `poolbench run accuracy --results {paths[0]}`)")
    frame = sort_rows(frame)
    out_path = Path(out)
    with staging(out_path) as tmp:
        _build(frame, store, paths, tmp, title=title or f"poolbench report: {Path(paths[0]).name or paths[0]}"
               + (f" and {len(paths) - 1} more stores" if len(paths) > 1 and not title else ""),
               reference=reference, illustrations=illustrations)
        publish(tmp, out_path)
    return out_path / "report.md"


def _build(frame: pd.DataFrame, store, paths: list, out_path: Path, *, title: str,
           reference: str | None, illustrations: bool) -> None:
    commands = list(dict.fromkeys(line for p in paths for line in read_commands(Path(p))))
    refs = {s: _canonical(reference or recorded_reference(frame, s)) for s in NORMALISED_SUITES}
    refs["efficiency"] = recorded_reference(frame, "efficiency", "baseline")
    errors = frame["error"].fillna("").astype(str) != ""
    good = frame[~errors]      # (metric "error" is also robustness's error per corruption)
    if "split" in good.columns:  # the candidates of --recipe tuned: validation errors, never results
        good = good[good["split"].fillna("") != "validation"]
    ctx = ReportContext(rows=good, out=out_path, references=refs, store=store,
                        baseline=refs["robustness"] if refs["robustness"] != "alexnet" else DEFAULT_REFERENCE,
                        styles=plots.pool_styles(frame["pool"].dropna().astype(str)),
                        recipes=_recipes(good, store))

    doc = Document()
    where = ", ".join(code_span(p) for p in paths)
    doc.heading(title, 1)
    doc.para(f"Built by poolbench's report builder from the {len(frame)} result rows under "
             f"{where}; every row is in `results.csv` and `results.json` (tidy: one measured value per row).")
    _overview(doc, frame, good)
    _certainty_header(doc, good[good["suite"] != SELECTION])  # its seed is the selection's
    _environment(doc, frame)
    _commands(doc, commands)

    order = suite_order()
    present = [s for s in order if (good["suite"] == s).any()]
    others = sorted(set(good["suite"].dropna().astype(str)) - set(order))
    sections = order + others
    if SELECTION in others and "accuracy" in order:  # the tuned recipe beside the accuracy it changes
        sections.remove(SELECTION)
        sections.insert(sections.index("accuracy") + 1, SELECTION)
    for name in sections:
        doc.within(suite=name, rows=good[good["suite"] == name])
        doc.heading(title_of(name), 2)
        if name not in present and name not in others:
            if (frame["suite"] == name).any():
                doc.note(f"Every {name} cell failed: see Failed cells below.")
                continue
            doc.note(f"No {name} results in this folder: section skipped "
                     f"(run `poolbench run {name} --results {paths[0]}` to add it).")
            continue
        if name in RENDERERS:
            RENDERERS[name](doc, ctx)
        else:
            generic_section(doc, ctx, name)

    doc.within(suite="")
    if illustrations:
        _illustrations(doc, ctx)
    _failures(doc, frame[errors])

    write_csv(frame, out_path / "results.csv")
    write_json(frame, out_path / "results.json")
    (out_path / "report.md").write_text(doc.render())
    write_page(doc, out_path, title=title, links={"results.csv": "results.csv",
                                                  "results.json": "results.json",
                                                  "report.md": "report.md"})


def _recipes(rows: pd.DataFrame, store) -> dict[str, dict]:
    """{config hash: training recipe} of every cell: the tables and learning curves keep
    different recipes apart (``context.groups``, ``sections.learning_curves``)."""
    pairs = sorted(set(zip(rows["suite"].astype(str), rows["config_hash"].astype(str))))
    return {chash: store.recipe(suite, chash) for suite, chash in pairs}


# --- rows -----------------------------------------------------------------------------------

def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """All rows in a fixed order and a fixed column order (store columns, then the rest sorted)."""
    first = [c for c in ROW_COLUMNS if c in frame.columns]
    columns = first + sorted(c for c in frame.columns if c not in first)
    frame = frame[columns]
    keys = [c for c in SORT_FIRST if c in frame.columns]
    keys += sorted(c for c in frame.columns if c not in keys and c not in ("value", "time"))
    keys += [c for c in ("time", "value") if c in frame.columns]
    order = pd.DataFrame({k: _sort_key(frame[k]) for k in keys})
    index = order.sort_values(keys, kind="mergesort", na_position="last").index
    return frame.loc[index].reset_index(drop=True)


def _sort_key(series: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().sum() == series.notna().sum():      # numbers stored as objects
        return numeric
    return series.map(lambda v: "" if v is None or (isinstance(v, float) and v != v) else str(v))


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


def write_json(frame: pd.DataFrame, path: Path) -> Path:
    """The rows as a JSON list of objects, one a line, in ``results.csv``'s order (missing
    values as null)."""
    lines = frame.to_json(orient="records", lines=True, double_precision=15).splitlines()
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n")
    return path


# --- header sections ------------------------------------------------------------------------

def _overview(doc: Document, frame: pd.DataFrame, good: pd.DataFrame) -> None:
    rows, order = [], suite_order()
    for suite in sorted(set(frame["suite"].dropna().astype(str)),
                        key=lambda s: (order.index(s) if s in order else len(order), s)):
        sub = frame[frame["suite"] == suite]
        failed = int((sub["error"].fillna("").astype(str) != "").sum())
        rows.append([suite, ", ".join(sorted(sub["pool"].dropna().astype(str).unique())),
                     str(sub["config_hash"].nunique()), str(len(sub)), str(failed)])
    doc.table(tabulate(rows, headers=["suite", "pools", "cells", "rows", "failed rows"],
                       tablefmt="github", disable_numparse=True))


def _values(series: pd.Series) -> str:
    vals = series.dropna()
    vals = sorted({(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
                   for v in vals if str(v) != ""})
    if not vals:
        return "n/a"
    text = ", ".join(vals)
    return text + " (mixed)" if len(vals) > 1 else text


def _environment(doc: Document, frame: pd.DataFrame) -> None:
    doc.heading("Environment", 2)
    rows = [[label, _values(frame[col]) if col in frame else "n/a"] for label, col in ENVIRONMENT]
    times = frame["time"].dropna().astype(str) if "time" in frame else pd.Series(dtype=str)
    if len(times):
        rows.append(["rows written (UTC)", f"{times.min()} to {times.max()}"])
    doc.table(tabulate(rows, headers=["", "value (from the result rows)"], tablefmt="github",
                       disable_numparse=True))


def read_commands(results: Path) -> list[str]:
    """The command lines in ``<results>/commands.log``, each once, in first-run order."""
    path = Path(results) / "commands.log"
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    return list(dict.fromkeys(line for line in lines if line))


def _commands(doc: Document, commands: list[str]) -> None:
    doc.heading("Commands", 2)
    if not commands:
        doc.note("No commands.log in the results folder: the commands that produced these rows "
                 "are not recorded.")
        return
    doc.para("The commands that produced these results (from `commands.log`, each once, in order):")
    doc.code(commands, "console")


def recorded_reference(frame: pd.DataFrame, suite: str, column: str = "reference") -> str:
    """The reference (or efficiency ``baseline``) the latest run of ``suite`` normalised by,
    as its rows record it (``max`` for rows written before runs recorded one)."""
    rows = frame[frame["suite"] == suite]
    if column not in rows.columns or rows[column].isna().all():
        return DEFAULT_REFERENCE
    rows = rows[rows[column].notna()]
    if "time" in rows.columns:
        rows = rows.sort_values("time", kind="mergesort")
    return str(rows[column].iloc[-1])


def _canonical(spec: str) -> str:
    if spec == ALEXNET:
        return spec
    try:
        return canonical_spec(spec)
    except UsageError:
        return spec


# --- closing sections ----------------------------------------------------------------------

def _illustrations(doc: Document, ctx: ReportContext) -> None:
    doc.heading("LiftPool illustrations", 2)
    doc.para("Computed when the report is built (seeded, untrained operators on scikit-image's "
             "sample images), not read from the results.")
    try:
        ctx.figure(doc, "lift-subbands", illustrations.band_figure, "LiftDownPool sub-bands",
                   "LiftDownPool-2D sub-bands LL, LH, HL, HH (as the LiftPool paper's Figures 1 "
                   "and 3) with an untrained, seeded LiftPool; with P = U = 0 (the lazy wavelet); "
                   "and with the Haar predictor/updater.")
    except (ImportError, UsageError) as exc:
        doc.note(f"Sub-band figure skipped: {exc}")
    try:
        psnrs = []

        def draw(path):
            psnrs.extend(illustrations.reconstruction_figure(path)[1])

        ctx.figure(doc, "up-pooling-reconstruction", draw, "up-pooling reconstructions",
                   "Down-pool then up-pool (as the LiftPool paper's Figure 6): MaxUnpool, "
                   "MaxUnpool + blur, LiftUpPool and bilinear upsampling.")
        doc.table("\n".join(["| method | PSNR (dB) |", "|---|---:|"] +
                            [f"| {name} | {value:.2f} |" for name, value in psnrs]))
    except (ImportError, UsageError) as exc:
        doc.note(f"Reconstruction figure skipped: {exc}")


def _certainty_header(doc: Document, good: pd.DataFrame) -> None:
    """What the intervals below cover, and how many training seeds each suite has."""
    seeds = {s: sorted({int(v) for v in g["seed"].dropna()}) for s, g in good.groupby("suite")}
    listed = "; ".join(f"{s}: {', '.join(map(str, v)) or 'n/a'}" for s, v in seeds.items())
    one = [s for s, v in seeds.items() if len(v) == 1]
    doc.para(f"Training seeds per suite: {listed}. Each table of means is followed by the same "
             f"metrics with their 95% intervals: {METHOD_NOTE}."
             + (f" With one seed ({', '.join(one)}) the intervals cover evaluation noise only, "
                "not training noise." if one else ""))


def _failures(doc: Document, failed: pd.DataFrame) -> None:
    if failed.empty:
        return
    doc.heading("Failed cells", 2)
    doc.para("These cells recorded an error instead of results (they are left out of the tables):")
    items = []
    for _, row in failed.iterrows():
        where = " / ".join(str(row[c]) for c in ("suite", "pool", "model", "dataset")
                           if c in row and pd.notna(row[c]))
        if row.get("split") == "validation":  # a candidate of --recipe tuned, not a result
            where += f" (validation candidate, lr {row.get('lr')})"
        message = re.sub(r"\s+", " ", str(row.get("error") or "no message"))
        items.append(f"{where}: {message}")
    doc.bullets(sorted(dict.fromkeys(items)))
