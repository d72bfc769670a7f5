"""One cell, in whatever process runs it: the run's settings (``RunContext``), the cell's hash
and name, and its execution under the store's per-cell lock, with the columns every row of it
carries. Every executor of ``runner`` (this process, worker processes, Slurm tasks) runs cells
through ``execute``; the process executor also makes trainings ahead (``train_ahead``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace

import torch

from . import registry
from .errors import PoolbenchError, UsageError
from .implementations import columns, mark, ran_since
from .process import default_threads, dist_info, file_lock, keep_freed_memory, torch_threads
from .store import Measured, ResultStore, config_hash, provenance
from .suites import get_suite
from .training.runtime import TrainSettings


@dataclass
class RunContext:
    """Settings of a run that never change a result (so they stay out of the config hash)."""

    results: str = "results"
    device: str = "cpu"
    data_root: str | None = None
    progress: bool = True
    checkpoint: str | None = None
    corruption_data: str | None = None
    perturbation_data: str | None = None
    corruption_on_the_fly: bool = False   # robustness: generate inside the evaluation, no cache
    threads: int | None = None
    workers: int = 2
    extra: dict = field(default_factory=dict)
    plugins: tuple = ()  # plugin files/modules to load again in worker processes and jobs
    checkpoint_pool: str | None = None  # the pool whose cells use --checkpoint (None: every cell)
    train: TrainSettings = field(default_factory=TrainSettings)  # how models train here

    def checkpoint_for(self, cell: dict) -> str | None:
        """The --checkpoint file for this cell: only the named pool's, never the reference's."""
        if not self.checkpoint:
            return None
        pool = cell.get("train", {}).get("pool")
        return self.checkpoint if self.checkpoint_pool in (None, pool) else None


_WORKER: dict = {}  # in a process-executor worker: {"device": the device its cells use}
_THREADS: dict = {}  # workers -> the default thread count, measured once per process


def threads_here(workers: int) -> int:
    """``process.default_threads`` measured the first time this process asks: later, the load
    average counts this process's own training (``run all``, a session running suites)."""
    if workers not in _THREADS:
        _THREADS[workers] = default_threads(workers)
    return _THREADS[workers]


def worker_device() -> str | None:
    """The device of this worker process (None outside a process-executor worker)."""
    return _WORKER.get("device")


def set_worker_device(device: str) -> None:
    """Make this process a process-executor worker whose cells run on ``device``."""
    _WORKER["device"] = device


def cell_label(cell: dict) -> str:
    """A cell in words, for logs and ``poolbench status``: its pool and training seed."""
    train = cell.get("train", cell)
    label = f"{train.get('pool', '?')} seed {train.get('seed', '?')}"
    if train.get("holdout"):  # a candidate of --recipe tuned (poolbench.selection)
        label += f" (validation, lr {train.get('lr'):g})"
    if "candidates" in cell:  # the choice among them
        label = f"{train.get('pool', '?')}: the learning rate chosen"
    return label


def cell_hash(suite: str, cell: dict) -> str:
    return config_hash({"suite": suite, **cell})


def execute(suite_name: str, cell: dict, ctx: RunContext) -> tuple[list[dict], bool]:
    """Run one cell and write its rows (rank 0 only under torchrun): (rows, computed here).
    Used by every executor.

    Under the cell's lock in the store: a second run of the same cell (another command, another
    worker) waits for the first and reads its rows instead of computing them again."""
    with _here(ctx) as here:
        return _execute_here(suite_name, cell, here)


def train_ahead(suite_name: str, cell: dict, ctx: RunContext) -> str | None:
    """Make the training ``cell`` needs (``Suite.train_ahead``) in a worker process: None, or
    why it failed. The failure is left to the cell, which meets it again and stores its error
    row."""
    with _here(ctx) as here:
        _load_plugins(here)
        try:
            get_suite(suite_name).train_ahead(cell, here)
        except UsageError:
            raise
        except PoolbenchError as exc:
            return str(exc)
    return None


@contextlib.contextmanager
def _here(ctx: RunContext):
    """``ctx`` as this process runs it: its own GPU in a worker (--device cuda --workers N),
    its threads."""
    if _WORKER.get("device"):
        ctx = replace(ctx, device=_WORKER["device"])
    keep_freed_memory()
    with torch_threads(ctx.threads or threads_here(1)):
        yield ctx


def _load_plugins(ctx: RunContext) -> None:
    for item in ctx.plugins:  # a fresh worker process knows only built-in and entry-point pools
        registry.load_plugin(item)


def _execute_here(suite_name: str, cell: dict, ctx: RunContext) -> tuple[list[dict], bool]:
    _load_plugins(ctx)
    store = ResultStore(ctx.results)
    chash = cell_hash(suite_name, cell)
    # torchrun ranks compute one cell together: a lock per rank would deadlock them
    lock = file_lock(store.path(suite_name, chash).with_name(f".{chash}")) if dist_info()[1] == 1 \
        else contextlib.nullcontext()
    with lock:
        stored = finished(store, suite_name, chash)
        if stored is not None:
            return stored, False
        measured = _measure(suite_name, cell, ctx, chash)
        if dist_info()[0] == 0:
            store.write(suite_name, chash, {"suite": suite_name, **cell}, measured.rows, measured.arrays)
    return measured.rows, True


def finished(store: ResultStore, suite_name: str, chash: str) -> list[dict] | None:
    """The stored rows of a cell that finished without an error, else None."""
    if not store.has(suite_name, chash):
        return None
    rows = store.read(suite_name, chash)
    return None if any(r.get("error") for r in rows) else rows


def _measure(suite_name: str, cell: dict, ctx: RunContext, chash: str) -> Measured:
    suite = get_suite(suite_name)
    before = mark()
    try:
        out = suite.run_cell(cell, ctx)
    except UsageError:
        raise
    except PoolbenchError as exc:  # e.g. training diverged: an error row, never a silent number
        out = [suite.error_row(cell, ctx, str(exc))]
    rows, arrays = (out.rows, out.arrays) if isinstance(out, Measured) else (out, {})
    return Measured(stamped(suite_name, cell, ctx, chash, rows, ran_since(before)), arrays)


def stamped(suite_name: str, cell: dict, ctx: RunContext, chash: str, rows: list[dict], ran) -> list[dict]:
    """``rows`` with the columns every row of the cell carries: what produced it and where."""
    # what the data was (poolbench.data.fingerprint) goes into every row of the cell
    prints = {k: v for k, v in cell.items() if k.endswith("_fingerprint")}
    if "data_fingerprint" in cell.get("train", {}):
        prints["data_fingerprint"] = cell["train"]["data_fingerprint"]
    base = {
        "suite": suite_name, "config_hash": chash, "device": ctx.device,
        "threads": torch.get_num_threads(), "world_size": dist_info()[1], **prints, **provenance(),
    }
    base.update(columns(ran))  # operators with several implementations: which ran
    return [{**base, **row} for row in rows]
