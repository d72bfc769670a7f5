"""One report from several result stores: rows merged by cell hash, conflicts named.

The same config hash is the same cell, so the same result: a cell found in several stores is
read once (from the first store given). Two stores whose rows for one hash measure different
values cannot both be right; the report names every such cell in one line and builds nothing,
rather than pick one silently.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..canonical import canonical_json
from ..errors import UsageError
from ..store import ResultStore, load_results

# Columns that say where and when a value was made, not what it is: two machines computing
# one cell differ here and still agree on the result.
CIRCUMSTANCE = frozenset({"time", "host", "device", "threads", "world_size", "git_commit",
                          "torch_version", "poolbench_version", "lift_impl", "train_lift_impl",
                          "store"})


class MergedStore:
    """The stores of a merged report, read through ``ResultStore``: each cell's files from the
    store its rows were taken from."""

    def __init__(self, stores: Sequence[ResultStore], owner: dict[str, int]):
        self.stores = list(stores)
        self.owner = owner          # config hash -> index of the store it is read from

    def of(self, chash: str) -> ResultStore:
        return self.stores[self.owner.get(str(chash), 0)]

    def arrays(self, suite: str, chash: str):
        return self.of(chash).arrays(suite, chash)

    def read(self, suite: str, chash: str) -> list[dict]:
        return self.of(chash).read(suite, chash)

    def recipe(self, suite: str, chash: str) -> dict:
        """The cell's training recipe (its ``train`` settings without the training seed);
        {} for a cell without one."""
        path = self.of(chash).path(suite, chash)
        try:
            cell = json.loads(path.read_text()).get("cell") or {}
        except (OSError, ValueError, AttributeError):
            return {}
        train = cell.get("train") if isinstance(cell, dict) else None
        if not isinstance(train, dict):
            return {}
        return {k: v for k, v in train.items() if k != "seed"}


def load_stores(paths: Sequence[str], strict: bool = False) -> tuple[pd.DataFrame, MergedStore]:
    """The rows of every store in ``paths``, each cell once; with more than one store, a
    ``store`` column names where each row was read. Raises UsageError naming missing stores
    and cells whose values differ between stores; a cell that fails verification is left out
    with one warning line, or refused (``strict``)."""
    frames, stores = [], []
    for path in paths:
        if not Path(path).is_dir():
            raise UsageError(f"no results folder at {path}; run a suite first "
                             "(e.g. `poolbench run accuracy`) or pass --results DIR")
        frame = load_results(path, strict=strict)
        if len(paths) > 1 and not frame.empty:
            frame["store"] = str(path)
        frames.append(frame)
        stores.append(ResultStore(path))
    owner: dict[str, int] = {}
    kept = []
    conflicts = []
    for i, frame in enumerate(frames):
        if frame.empty:
            continue
        hashes = frame["config_hash"].astype(str)
        new = ~hashes.isin(owner)
        for chash in sorted(set(hashes[~new])):
            first = frames[owner[chash]]
            a = first[first["config_hash"].astype(str) == chash]
            b = frame[hashes == chash]
            diff = _difference(a, b)
            if diff:
                conflicts.append(f"cell {chash[:12]} ({_what(a)}) holds {diff[0]} in "
                                 f"{paths[owner[chash]]} but {diff[1]} in {paths[i]}")
        for chash in hashes[new].unique():
            owner[chash] = i
        kept.append(frame[new])
    if conflicts:
        more = f" (and {len(conflicts) - 1} more cells)" if len(conflicts) > 1 else ""
        raise UsageError(f"the stores disagree: {conflicts[0]}{more}; the same cell hash must be "
                         "the same result: delete the wrong copy (its <suite>/<hash>.json and "
                         ".npz) and build again")
    frame = pd.concat(kept, ignore_index=True) if kept else frames[0]
    return frame, MergedStore(stores, owner)


def _measured(rows: pd.DataFrame) -> dict[str, object]:
    """{what a row is (every column but its value and circumstances): its value}."""
    out = {}
    for _, row in rows.iterrows():
        key = {k: v for k, v in row.items() if k not in CIRCUMSTANCE and k != "value" and not _missing(v)}
        out[canonical_json(key)] = None if _missing(row.get("value")) else float(row["value"])
    return out


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _difference(a: pd.DataFrame, b: pd.DataFrame) -> tuple[str, str] | None:
    """None when ``a`` and ``b`` measure the same values, else the first row that differs, as
    each side has it."""
    ma, mb = _measured(a), _measured(b)
    for key in sorted(set(ma) | set(mb)):
        metric = json.loads(key).get("metric", "value")
        if key not in ma or key not in mb:
            return (f"a {metric} row", "none") if key in ma else ("no such row", f"a {metric} row")
        if ma[key] != mb[key]:
            return f"{metric} = {ma[key]}", f"{mb[key]}"
    return None


def _what(rows: pd.DataFrame) -> str:
    row = rows.iloc[0]
    return ", ".join(str(row[c]) for c in ("suite", "pool", "dataset") if c in row and not _missing(row[c]))
