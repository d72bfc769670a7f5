"""Result store: tidy rows, one JSON file per cell named by its config hash, atomic writes.

Layout: ``<results>/<suite>/<config_hash>.json`` holding ``{"cell": {...}, "rows": [...]}``,
and beside it ``<config_hash>.npz`` with the cell's per-image predictions (numpy arrays, never
pickle), the raw data every metric and interval is computed from. A cell's files appear
complete or not at all (written to a temporary file, then renamed; the predictions before the
rows), so a killed run loses at most the cell in progress and a rerun skips finished cells.

Integrity (``poolbench.integrity``): the JSON holds the cell's hash (its name), the sha256 of
its prediction file and the sha256 of its own canonical content, and the prediction file holds
the hash too. Every read verifies them; a cell that fails is set aside into
``<results>/.damaged/`` with one warning line and counts as not stored (so it is computed
again), or, in a ``strict`` store, stops the run in one line.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import io
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
from .integrity import Damaged, check_file, set_aside, sha256_bytes
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


FORMAT = 2            # 2: the cell's hash and the sha256 digests inside (1: none, before them)
HASH_KEY = "__cell_hash__"   # the cell's hash inside its prediction file


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Commit of the poolbench checkout, or '' when not run from one."""
    return read_commit(Path(__file__).resolve().parents[1])


def read_commit(root: Path) -> str:
    """HEAD of the checkout at ``root`` (12 characters), ``+dirty`` when tracked files differ.

    Read without git's optional locks: a plain ``git status`` refreshes the index and so takes
    ``.git/index.lock``, which collides with the user's own git commands in that checkout."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    git = ["git", "--no-optional-locks", "-C", str(root)]
    try:
        out = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, env=env)
        if out.returncode != 0:
            return ""
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, env=env).stdout.strip()
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
    """``strict``: a cell that fails verification stops the run (an audit) instead of being set
    aside and computed again."""

    def __init__(self, root: str | os.PathLike, strict: bool = False):
        self.root = Path(root)
        self.strict = strict

    def path(self, suite: str, chash: str) -> Path:
        return self.root / suite / f"{chash}.json"

    def has(self, suite: str, chash: str) -> bool:
        """Whether the cell is stored and its files verify; a damaged cell is set aside."""
        if not self.path(suite, chash).is_file():
            return False
        try:
            self._verified(self.path(suite, chash), chash)
        except Damaged as damage:
            self._set_aside(damage, suite, chash)
            return False
        return True

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
        predictions = None
        if arrays:  # first: rows that exist always have their predictions
            if HASH_KEY in arrays:
                raise ValueError(f"{HASH_KEY} is the store's own array name")
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays, **{HASH_KEY: np.array(chash)})
            predictions = {"file": path.with_suffix(".npz").name, "sha256": sha256_bytes(buf.getbuffer())}
            with atomic_open(path.with_suffix(".npz"), "wb") as fh:
                fh.write(buf.getbuffer())
        # the digest is of what a reader will parse: the JSON as written, read back
        body = json.loads(json.dumps({"format": FORMAT, "hash": chash, "cell": cell, "rows": rows,
                                      "predictions": predictions}, default=json_default))
        atomic_write_text(path, json.dumps({**body, "sha256": digest(body)}, indent=1))
        return path

    def arrays(self, suite: str, chash: str) -> dict[str, np.ndarray]:
        """The per-image predictions of a cell ({} for cells stored without them), verified."""
        path = self.path(suite, chash)
        try:
            data = self._verified(path, chash)
        except Damaged as damage:
            self._set_aside(damage, suite, chash)
            raise UsageError(f"the predictions of {path} failed verification ({damage.reason}) and "
                             "were set aside; run the suite again to compute them") from None
        npz = path.with_suffix(".npz")
        if data.get("format") is None and not npz.is_file():
            return {}  # a cell stored before digests, without predictions
        if data.get("format") is not None and not data.get("predictions"):
            return {}
        try:
            with np.load(npz, allow_pickle=False) as loaded:
                out = {k: loaded[k] for k in loaded.files}
        except Exception as exc:  # noqa: BLE001 - any undecodable file (zlib, zip, header)
            self._set_aside(Damaged(npz, f"cannot be decoded ({type(exc).__name__})"), suite, chash)
            raise UsageError(f"prediction file {npz} cannot be decoded and was set aside; run the "
                             "suite again to compute it") from None
        held = out.pop(HASH_KEY, None)
        if held is not None and str(held) != chash:
            self._set_aside(Damaged(npz, f"holds the predictions of cell {str(held)[:12]}"), suite, chash)
            raise UsageError(f"prediction file {npz} holds another cell's predictions and was set "
                             "aside; run the suite again to compute it")
        return out

    def read(self, suite: str, chash: str) -> list[dict]:
        path = self.path(suite, chash)
        try:
            return list(self._verified(path, chash)["rows"])
        except Damaged as damage:
            self._set_aside(damage, suite, chash)
            raise UsageError(f"result file {path} failed verification ({damage.reason}) and was set "
                             "aside; run again to compute the cell") from None

    def iter_rows(self, suites: Iterable[str] | None = None):
        """The rows of every stored cell that verifies; a damaged one is set aside (one warning
        line) and its rows left out, never shown."""
        if not self.root.exists():
            return
        # only <results>/<suite>/<hash>.json: not other JSON that lives below (e.g. .slurm/)
        for path in sorted(self.root.glob("*/*.json")):
            if path.parent.name.startswith(".") or path.name.startswith("."):
                continue
            if suites is not None and path.parent.name not in suites:
                continue
            try:
                yield from self._verified(path, path.stem)["rows"]
            except Damaged as damage:
                self._set_aside(damage, path.parent.name, path.stem,
                                then="its rows are left out; a run computes it again")

    def _verified(self, path: Path, chash: str) -> dict:
        """The parsed result file after every check, else :class:`Damaged`."""
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise Damaged(path, "it is missing") from None
        except OSError as exc:
            raise Damaged(path, f"it cannot be read ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise Damaged(path, f"it is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list) \
                or not isinstance(data.get("cell"), dict):
            raise Damaged(path, "it is not a result file (no cell and rows)")
        if data.get("format") is None:  # written before digests: its cell must still be its name
            held = config_hash(data["cell"])
            if held != chash:
                raise Damaged(path, f"it holds the cell {held[:12]}, not the cell {chash[:12]} it is named after")
            if self.strict:
                raise Damaged(path, "it was written before results carried a digest and cannot be verified")
            return data
        body = {k: v for k, v in data.items() if k != "sha256"}
        if data.get("hash") != chash:
            raise Damaged(path, f"the hash inside, {str(data.get('hash'))[:12]}, is not its name")
        if data.get("sha256") != digest(body):
            raise Damaged(path, "its content does not match the sha256 recorded when it was written "
                                "(edited or damaged)")
        predictions = data.get("predictions")
        if predictions:
            check_file(path.with_suffix(".npz"), predictions.get("sha256"), "prediction file")
        return data

    def _set_aside(self, damage: Damaged, suite: str, chash: str,
                   then: str = "the cell is computed again") -> None:
        base = self.path(suite, chash)
        set_aside(damage, self.root, (base, base.with_suffix(".npz")), self.strict, then)


def load_results(path: str | os.PathLike = "results", suites: Iterable[str] | None = None,
                 strict: bool = False):
    """All result rows under ``path`` as a tidy pandas DataFrame (one row per measured value);
    a cell whose files fail verification is left out with one warning line (``strict``: refused)."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"no results at {p}; run a suite first or pass --results DIR")
    rows = list(ResultStore(p, strict=strict).iter_rows(suites))
    frame = pd.DataFrame(rows)
    for col in ROW_COLUMNS:
        if col not in frame.columns:
            frame[col] = None
    return frame
