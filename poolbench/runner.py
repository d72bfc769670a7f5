"""Expand a suite into cells and run the missing ones through an executor.

Executors: ``sequential`` (default), ``process`` (local worker processes) and ``slurm`` (the
missing cells as one array job through submitit, the optional extra ``poolbench[slurm]``; the
Slurm side is ``slurm.py``). Every executor writes through the config-hash store, so every
executor is resumable: a rerun skips finished cells.
"""
from __future__ import annotations

import concurrent.futures as cf
import enum
import hashlib
import multiprocessing
import os
import sys
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import registry, slurm
from .atomic import remove_stale_temps
from .cell import (  # noqa: F401 - RunContext, cell_hash, cell_label, worker_device: the runner's API
    RunContext,
    cell_hash,
    cell_label,
    execute,
    finished,
    set_worker_device,
    stamped,
    threads_here,
    train_ahead,
    worker_device,
)
from .errors import PoolbenchError, UsageError, install_one_line_warnings
from .lifeline import exit_with_parent
from .process import barrier, free_cores, is_main_process, torch_threads, worker_devices
from .slurm import SlurmOptions
from .store import ResultStore
from .suites import get_suite
from .training.checkpoint import save_now


class Executor(enum.StrEnum):
    """Where cells run."""

    AUTO = "auto"              # process when 2 or more cells must be computed on 2 or more free cores
    SEQUENTIAL = "sequential"
    PROCESS = "process"
    SLURM = "slurm"


EXECUTORS = tuple(e.value for e in Executor)


@dataclass
class RunReport:
    rows: list[dict]
    computed: int
    skipped: int
    failed: int
    submitted: int = 0   # cells left running on Slurm (--no-wait)


def run_cells(suite_name: str, cells: list[dict], ctx: RunContext, executor: str = "sequential",
              log=None) -> RunReport:
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if torchrun and executor not in ("sequential", "auto"):
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
        stored = finished(store, suite_name, chash)
        if stored is not None:
            rows_by_index[i] = stored
            skipped += 1
            continue
        retried += store.has(suite_name, chash)  # a failed cell is not finished: run it again
        todo.append((i, cell))
    if todo and is_main_process():
        # before any work: a store that cannot take the results fails now, not after training
        problem = store.unwritable(suite_name)
        if problem:
            raise UsageError(f"{len(todo)} of {len(cells)} {suite_name} cells must be computed but "
                             f"{problem}: pass --results DIR with a writable folder")
        remove_stale_temps(store.root / suite_name)
    # every process has listed the store before any writes to it (torchrun)
    barrier()
    if is_main_process():
        if skipped:
            log(f"{suite_name}: {skipped} of {len(cells)} cells already in {ctx.results}, skipped")
        if retried:
            log(f"{suite_name}: {retried} cells that failed before are run again")
    if executor == "auto":
        executor = choose_executor(len(todo), ctx, torchrun)
        if executor == "process" and is_main_process():
            log(f"{suite_name}: {len(todo)} cells on {min(ctx.workers, len(todo))} worker processes "
                "(--executor auto; --executor sequential runs them here)")
    if executor in ("process", "slurm") and not ctx.plugins:
        ctx = replace(ctx, plugins=_loaded_plugins())

    outcomes = {}
    if executor == "sequential" or not todo:
        for i, cell in todo:
            outcomes[i] = execute(suite_name, cell, ctx)
            barrier()
    elif executor == "process":
        workers = max(1, min(ctx.workers, len(todo)))
        # the free cores shared out, so that the workers never oversubscribe them
        threads = ctx.threads or threads_here(workers)
        wctx = replace(ctx, threads=threads, progress=False)
        with worker_pool(workers, worker_devices(ctx.device, workers)) as pool:
            for i, rows in _in_workers(pool, suite_name, todo, wctx,
                                       lambda: _prepare(suite_name, [cell for _, cell in todo],
                                                        replace(ctx, workers=1, progress=False), log), log):
                outcomes[i] = rows
                log(f"{suite_name}: cell {skipped + len(outcomes)}/{len(cells)} done")
    else:
        outcomes.update(run_slurm(suite_name, todo, ctx, log))
    reused = sum(1 for _, computed in outcomes.values() if not computed)
    if reused and is_main_process():
        log(f"{suite_name}: {reused} cells were computed meanwhile by another run, reused")
    rows_by_index.update({i: rows for i, (rows, _) in outcomes.items()})
    rows = [r for i in sorted(rows_by_index) for r in rows_by_index[i]]
    failed = sum(1 for r in rows if r.get("error"))
    return RunReport(rows=rows, computed=len(outcomes) - reused, skipped=skipped + reused, failed=failed,
                     submitted=len(todo) - len(outcomes))


def _in_workers(pool: cf.ProcessPoolExecutor, suite_name: str, todo: list[tuple[int, dict]],
                ctx: RunContext, prepare, log=lambda msg: None):
    """Yield ``(index, outcome)`` of every cell as it finishes. The trainings the cells need go
    first, each once (``Suite.training_key``); a cell is queued when its training is made,
    behind the trainings still waiting, so that the evaluations fill the cores that trainings
    of unequal length leave idle at the end (one worker training two LiftPool models and one
    max while the other trains one and two: docs/measurements.md). ``prepare`` runs here
    meanwhile; ``log`` hears of each model made, the cells' own lines coming only after."""
    suite = get_suite(suite_name)
    waiting: dict[str, list[tuple[int, dict]]] = {}
    futures: dict[cf.Future, tuple[str, object]] = {}
    for i, cell in todo:
        key = suite.training_key(cell, ctx)
        if key is None:
            futures[pool.submit(execute, suite_name, cell, ctx)] = ("cell", i)
            continue
        if key not in waiting:
            futures[pool.submit(train_ahead, suite_name, cell, ctx)] = ("training", key)
        waiting.setdefault(key, []).append((i, cell))
    trainings, made = len(waiting), 0
    prepare()
    while futures:
        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            kind, what = futures.pop(fut)
            if kind == "cell":
                yield what, fut.result()
                continue
            if isinstance(fut.exception(), BrokenProcessPool):  # a worker died: no cell can run
                raise fut.exception()
            made += 1
            cells = waiting.pop(what)
            failed = fut.exception() or fut.result()
            log(f"{suite_name}: model {made}/{trainings} " + (f"failed ({cell_label(cells[0][1])}: {failed})"
                if failed else f"trained ({cell_label(cells[0][1])})"))
            for i, cell in cells:
                futures[pool.submit(execute, suite_name, cell, ctx)] = ("cell", i)


def _prepare(suite_name: str, cells: list[dict], ctx: RunContext, log) -> None:
    """The suite's shared inputs, made in this process on one thread while the workers train.
    A failure is logged, not raised: each cell that needs the input then makes it itself and
    stores its own error row if that fails too."""
    try:
        with torch_threads(1):
            get_suite(suite_name).prepare(cells, ctx)
    except (PoolbenchError, OSError, RuntimeError, ValueError) as exc:
        log(f"{suite_name}: could not prepare the cells' shared inputs here ({exc}); each cell makes them")


def choose_executor(todo: int, ctx: RunContext, torchrun: bool = False) -> str:
    """``auto``: worker processes when two or more cells must be computed and two or more cores
    are free (measured now, not from the lagging load average), else this process."""
    if torchrun or todo < 2 or ctx.workers < 2 or ctx.device.startswith("cuda"):
        return "sequential"
    return "process" if _free_cores_here() >= 2 else "sequential"


_FREE: dict = {}     # the free cores, measured once per process


def _free_cores_here() -> int:
    """``process.free_cores`` measured the first time this process asks (later, it would count
    this process's own workers)."""
    if "cores" not in _FREE:
        _FREE["cores"] = free_cores()
    return _FREE["cores"]


def worker_pool(workers: int, devices: list[str]) -> cf.ProcessPoolExecutor:
    """``workers`` spawned processes; each takes one of ``devices`` when it starts, and exits
    when this process dies."""
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    for device in devices:
        queue.put(device)
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=spawn, initializer=_init_worker,
                                  initargs=(os.getpid(), queue))


def _init_worker(run_pid: int, devices) -> None:
    exit_with_parent(run_pid)
    install_one_line_warnings()
    device = devices.get()
    set_worker_device(device)
    if device.startswith("cuda:") and torch.cuda.is_available():
        torch.cuda.set_device(device)


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


class CellJob:
    """One cell as a submitit task that survives preemption and time-outs (submitit's
    checkpointing protocol: it calls ``checkpoint`` on the signal Slurm sends before it preempts
    or stops the task). The running training writes its resume checkpoint at once if it is
    between two steps (else its last periodic one stands), and the task is requeued with the
    same arguments, so that it resumes from there. A task requeued from outside (``scontrol
    requeue``) resumes from the last periodic checkpoint in the same way."""

    def __call__(self, suite_name: str, cell: dict, ctx: RunContext):
        return execute(suite_name, cell, ctx)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        save_now()
        return DelayedSubmission(self, *args, **kwargs)


def run_slurm(suite_name: str, todo: list[tuple[int, dict]], ctx: RunContext, log) -> dict:
    """The ``todo`` cells as one Slurm array job (cells whose task is still in the queue from an
    earlier command are followed instead); with ``wait``, their outcomes by index. A task that
    fails or is cancelled leaves an error row naming its job and log, so that the others' rows
    stand and the next run computes only it."""
    opts = ctx.extra.get("slurm") or SlurmOptions()
    folder = Path(ctx.results) / ".slurm"
    keys = [{"suite": suite_name, "hash": cell_hash(suite_name, cell), "cell": cell_label(cell)}
            for _, cell in todo]
    earlier = slurm.manifest_tasks(folder)
    queued = slurm.queue_states([earlier[k["hash"]]["job_id"] for k in keys if k["hash"] in earlier]) or {}
    jobs = {}
    for k, (i, _) in zip(keys, todo):
        task = earlier.get(k["hash"])
        if task and task["job_id"] in queued:
            jobs[i] = slurm.attach(folder, task["job_id"])
    if jobs:
        log(f"{suite_name}: {len(jobs)} cells are still queued from an earlier command "
            f"(jobs {', '.join(sorted({j.job_id.split('_')[0] for j in jobs.values()}))}): following them")
    fresh = [(k, i, cell) for k, (i, cell) in zip(keys, todo) if i not in jobs]
    if fresh:
        ex = slurm.executor(folder, opts, ctx.device)
        wctx = replace(ctx, progress=False, threads=ctx.threads or opts.slurm_cpus_per_task or 1)
        submitted = slurm.submit_array(ex, CellJob(), [(suite_name, cell, wctx) for _, _, cell in fresh],
                                       [k for k, _, _ in fresh])
        jobs.update({i: job for (_, i, _), job in zip(fresh, submitted)})
        cap = f", {opts.slurm_array_parallelism} at once" if opts.slurm_array_parallelism else ""
        log(f"{suite_name}: {len(fresh)} cells submitted as Slurm job {submitted[0].job_id.split('_')[0]}"
            f"{cap} (logs in {folder})")
    if not opts.wait:
        log(f"{suite_name}: not waiting; `poolbench status` shows the tasks, the same command again "
            "collects the rows")
        return {}
    order = sorted(jobs)
    ended = slurm.wait([jobs[i] for i in order], ctx.progress, suite_name)
    cells = dict(todo)
    out = {}
    store = ResultStore(ctx.results)
    for i, result in zip(order, ended):
        if result.error is None:
            out[i] = result.value
            continue
        chash = cell_hash(suite_name, cells[i])
        stored = finished(store, suite_name, chash)  # another command computed it meanwhile
        if stored is not None:
            out[i] = (stored, False)
            continue
        message = f"Slurm task {result.job_id} failed: {result.error} (log {result.log})"
        log(f"{suite_name}: {cell_label(cells[i])}: {message}")
        rows = stamped(suite_name, cells[i], ctx, chash,
                        [get_suite(suite_name).error_row(cells[i], ctx, message)], {})
        store.write(suite_name, chash, {"suite": suite_name, **cells[i]}, rows)
        out[i] = (rows, True)
    return out
