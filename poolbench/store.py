"""Result store: tidy rows, one JSON file per cell named by its config hash, atomic writes.

Layout: ``<results>/<suite>/<config_hash>.json`` holding ``{"cell": {...}, "rows": [...]}``,
and beside it ``<config_hash>.npz`` with the cell's per-image predictions (numpy arrays, never
pickle), the raw data every metric and interval is computed from. A cell's files appear
complete or not at all (written to a temporary file, then renamed; the predictions before the
rows), so a killed run loses at most the cell in progress and a rerun skips finished cells.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch

from .atomic import atomic_open, atomic_write_text
from .canonical import digest, json_default
from .errors import UsageError
from .version import __version__

# Fields that never change a result: left out of the config hash.
NON_RESULT_FIELDS = frozenset({
    "data_root", "results", "cache_dir", "workers", "progress", "executor", "verbose",
    "corruption_data", "perturbation_data", "checkpoint_dir", "device", "threads", "json",
})

ROW_COLUMNS = (
    "suite", "pool", "pool_options", "pool_source", "pool_version", "model", "dataset", "seed",
    "metric", "value", "unit", "n", "device", "dtype", "memory_format", "threads",
    "torch_version", "poolbench_version", "git_commit", "time", "config_hash", "error",
)


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON of the fields that change a result."""
    relevant = {k: v for k, v in config.items() if k not in NON_RESULT_FIELDS}
    return digest(relevant)


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Commit of the poolbench checkout, or '' when not run from one."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance() -> dict:
    """Columns every row carries about what produced it."""
    return {
        "torch_version": torch.__version__,
        "poolbench_version": __version__,
        "git_commit": git_commit(),
        "host": platform.node(),
    }


@dataclass
class Measured:
    """What a suite's ``run_cell`` measured: tidy rows and the per-image arrays they came from
    (name -> array; rows name theirs in the ``predictions`` column)."""

    rows: list[dict]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def make_row(base: dict, metric: str, value: float | None, unit: str = "", n: int | None = None,
             **extra) -> dict:
    row = {**base, "metric": metric, "value": None if value is None else float(value),
           "unit": unit, "n": n, **extra}
    row.setdefault("error", "")
    row.setdefault("time", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return row


class ResultStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, suite: str, chash: str) -> Path:
        return self.root / suite / f"{chash}.json"

    def has(self, suite: str, chash: str) -> bool:
        return self.path(suite, chash).is_file()

    def unwritable(self, suite: str) -> str | None:
        """Why rows of ``suite`` cannot be written here (read-only, not a folder), else None.
        Tried, not inferred from permission bits, which say nothing to root or on a read-only
        mount; folders the probe had to make are removed again."""
        folder = self.path(suite, "x").parent
        missing = []
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        made = []
        try:
            for d in reversed(missing):
                d.mkdir()
                made.append(d)
            with tempfile.TemporaryFile(dir=self.path(suite, "x").parent):
                pass
        except OSError as exc:
            return f"the result store {self.root} is not writable ({exc.strerror or exc})"
        finally:
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    d.rmdir()
        return None

    def write(self, suite: str, chash: str, cell: dict, rows: list[dict],
              arrays: dict[str, np.ndarray] | None = None) -> Path:
        path = self.path(suite, chash)
        if arrays:  # first: rows that exist always have their predictions
            with atomic_open(path.with_suffix(".npz"), "wb") as fh:
                np.savez_compressed(fh, **arrays)
        atomic_write_text(path, json.dumps({"cell": cell, "rows": rows}, indent=1, default=json_default))
        return path

    def arrays(self, suite: str, chash: str) -> dict[str, np.ndarray]:
        """The per-image predictions of a cell ({} for cells stored without them)."""
        path = self.path(suite, chash).with_suffix(".npz")
        if not path.is_file():
            return {}
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise UsageError(f"prediction file {path} is unreadable ({exc}); delete it and its "
                             f"{path.with_suffix('.json').name}, and run again") from exc

    def read(self, suite: str, chash: str) -> list[dict]:
        return _read_rows(self.path(suite, chash))

    def iter_rows(self, suites: Iterable[str] | None = None):
        if not self.root.exists():
            return
        # only <results>/<suite>/<hash>.json: not other JSON that lives below (e.g. .slurm/)
        for path in sorted(self.root.glob("*/*.json")):
            if path.parent.name.startswith(".") or path.name.startswith("."):
                continue
            if suites is not None and path.parent.name not in suites:
                continue
            yield from _read_rows(path)


def _read_rows(path: Path) -> list[dict]:
    try:
        data = json.loads(Path(path).read_text())
        return list(data["rows"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"result file {path} is unreadable ({exc}); delete it and run again") from exc


def load_results(path: str | os.PathLike = "results", suites: Iterable[str] | None = None):
    """All result rows under ``path`` as a tidy pandas DataFrame (one row per measured value)."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"no results at {p}; run a suite first or pass --results DIR")
    rows = list(ResultStore(p).iter_rows(suites))
    frame = pd.DataFrame(rows)
    for col in ROW_COLUMNS:
        if col not in frame.columns:
            frame[col] = None
    return frame
