"""Expand a suite into cells and run the missing ones through an executor.

Executors: ``sequential`` (default), ``process`` (local worker processes) and ``slurm``
(submitit, the optional extra ``poolbench[slurm]``). Every executor writes through the
config-hash store, so every executor is resumable: a rerun skips finished cells.
"""
from __future__ import annotations

import concurrent.futures as cf
import enum
import hashlib
import multiprocessing
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import registry
from .errors import PoolbenchError, UsageError, one_line
from .process import barrier, dist_info, is_main_process
from .store import ResultStore, config_hash, provenance
from .suites import get_suite



class Executor(str, enum.Enum):
    """Where cells run."""

    SEQUENTIAL = "sequential"
    PROCESS = "process"
    SLURM = "slurm"


EXECUTORS = tuple(e.value for e in Executor)


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
    threads: int | None = None
    workers: int = 2
    extra: dict = field(default_factory=dict)
    plugins: tuple = ()  # plugin files/modules to load again in worker processes and jobs
    checkpoint_pool: str | None = None  # the pool whose cells use --checkpoint (None: every cell)

    def checkpoint_for(self, cell: dict) -> str | None:
        """The --checkpoint file for this cell: only the named pool's, never the reference's."""
        if not self.checkpoint:
            return None
        pool = cell.get("train", {}).get("pool")
        return self.checkpoint if self.checkpoint_pool in (None, pool) else None


@dataclass
class RunReport:
    rows: list[dict]
    computed: int
    skipped: int
    failed: int


def cell_hash(suite: str, cell: dict) -> str:
    return config_hash({"suite": suite, **cell})


def _execute(suite_name: str, cell: dict, ctx: RunContext) -> list[dict]:
    """Run one cell and write its rows (rank 0 only under torchrun). Used by every executor."""
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    if ctx.plugins:  # a fresh worker process knows only built-in and entry-point pools
        for item in ctx.plugins:
            registry.load_plugin(item)
    suite = get_suite(suite_name)
    chash = cell_hash(suite_name, cell)
    try:
        rows = suite.run_cell(cell, ctx)
    except UsageError:
        raise
    except PoolbenchError as exc:  # e.g. training diverged: an error row, never a silent number
        rows = [suite.error_row(cell, ctx, str(exc))]
    base = {
        "suite": suite_name, "config_hash": chash, "device": ctx.device,
        "threads": torch.get_num_threads(), "world_size": dist_info()[1], **provenance(),
    }
    rows = [{**base, **row} for row in rows]
    if dist_info()[0] == 0:
        ResultStore(ctx.results).write(suite_name, chash, {"suite": suite_name, **cell}, rows)
    return rows


def run_cells(suite_name: str, cells: list[dict], ctx: RunContext, executor: str = "sequential",
              log=None) -> RunReport:
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and executor != "sequential":
        raise UsageError("under torchrun use --executor sequential (the processes train together)")
    if ctx.checkpoint:
        # the model evaluated is the file's, not the recipe's: its content names the cell, so
        # that it neither reuses nor shadows the rows of the model trained from the recipe
        digest = _file_sha256(ctx.checkpoint)
        cells = [{**cell, "checkpoint_sha256": digest} if ctx.checkpoint_for(cell) else cell for cell in cells]
    store = ResultStore(ctx.results)
    todo, rows_by_index, skipped, retried = [], {}, 0, 0
    for i, cell in enumerate(cells):
        chash = cell_hash(suite_name, cell)
        if store.has(suite_name, chash):
            stored = store.read(suite_name, chash)
            if not any(r.get("error") for r in stored):
                rows_by_index[i] = stored
                skipped += 1
                continue
            retried += 1  # a failed cell is not finished: run it again
        todo.append((i, cell))
    # every process has listed the store before any writes to it (torchrun)
    barrier()
    if is_main_process():
        if skipped:
            log(f"{suite_name}: {skipped} of {len(cells)} cells already in {ctx.results}, skipped")
        if retried:
            log(f"{suite_name}: {retried} cells that failed before are run again")
    if executor in ("process", "slurm") and not ctx.plugins:
        ctx = RunContext(**{**asdict(ctx), "plugins": _loaded_plugins()})

    failed = 0
    if executor == "sequential" or not todo:
        for i, cell in todo:
            rows_by_index[i] = _execute(suite_name, cell, ctx)
            barrier()
    elif executor == "process":
        workers = max(1, min(ctx.workers, len(todo)))
        threads = ctx.threads or max(1, (os.cpu_count() or 1) // workers)
        wctx = RunContext(**{**asdict(ctx), "threads": threads, "progress": False})
        spawn = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
            futures = {pool.submit(_execute, suite_name, cell, wctx): i for i, cell in todo}
            for fut in cf.as_completed(futures):
                rows_by_index[futures[fut]] = fut.result()
                log(f"{suite_name}: cell {len(rows_by_index)}/{len(cells)} done")
    else:
        rows_by_index.update(_run_slurm(suite_name, todo, ctx, log))
    rows = [r for i in sorted(rows_by_index) for r in rows_by_index[i]]
    failed = sum(1 for r in rows if r.get("error"))
    return RunReport(rows=rows, computed=len(todo), skipped=skipped, failed=failed)


def _file_sha256(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError as exc:
        raise UsageError(f"checkpoint {path} not found; pass an existing file to --checkpoint") from exc
    except OSError as exc:
        raise UsageError(f"checkpoint {path} cannot be read ({exc.strerror or exc}); "
                         "pass a readable file to --checkpoint") from exc


def _loaded_plugins() -> tuple:
    """Plugin files and modules loaded in this process (--plugin), for worker processes."""
    return tuple(sorted(registry.loaded_plugins()))


def _run_slurm(suite_name: str, todo, ctx: RunContext, log) -> dict:
    try:
        import submitit
    except ImportError as exc:
        raise UsageError("--executor slurm needs submitit: pip install 'poolbench[slurm]'") from exc
    slurm = dict(ctx.extra.get("slurm", {}))
    cluster = slurm.pop("cluster", None)  # "local" runs the jobs as local processes (for tests)
    folder = Path(ctx.results) / ".slurm"
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    ex.update_parameters(**({"timeout_min": 60} | slurm))
    wctx = RunContext(**{**asdict(ctx), "progress": False})
    jobs = [(i, ex.submit(_execute, suite_name, cell, wctx)) for i, cell in todo]
    log(f"{suite_name}: submitted {len(jobs)} jobs to {ex.cluster} (logs in {folder})")
    out = {}
    for i, job in jobs:
        try:
            out[i] = job.result()
        except Exception as exc:
            raise PoolbenchError(f"job {job.job_id} failed: {_last_line(exc)}; "
                                 f"see {folder}; finished cells are kept, run again to resume") from exc
    return out


def _last_line(exc: BaseException) -> str:
    """A failed job's exception carries the worker's whole traceback: its last line is the error."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return one_line(RuntimeError(lines[-1])) if lines else type(exc).__name__
