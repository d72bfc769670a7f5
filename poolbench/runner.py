"""Expand a suite into cells and run the missing ones through an executor.

Executors: ``sequential`` (default), ``process`` (local worker processes) and ``slurm`` (the
missing cells as one array job through submitit, the optional extra ``poolbench[slurm]``; the
Slurm side is ``slurm.py``). Every executor writes through the config-hash store, so every
executor is resumable: a rerun skips finished cells.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import enum
import hashlib
import multiprocessing
import os
import sys
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import registry, slurm
from .atomic import remove_stale_temps
from .errors import PoolbenchError, UsageError, install_one_line_warnings
from .implementations import columns, mark, ran_since
from .lifeline import exit_with_parent
from .process import (
    barrier,
    default_threads,
    dist_info,
    file_lock,
    free_cores,
    is_main_process,
    keep_freed_memory,
    torch_threads,
    worker_devices,
)
from .slurm import SlurmOptions
from .store import Measured, ResultStore, config_hash, provenance
from .suites import get_suite
from .training.checkpoint import save_now
from .training.runtime import TrainSettings


class Executor(enum.StrEnum):
    """Where cells run."""

    AUTO = "auto"              # process when 2 or more cells must be computed on 2 or more free cores
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


@dataclass
class RunReport:
    rows: list[dict]
    computed: int
    skipped: int
    failed: int
    submitted: int = 0   # cells left running on Slurm (--no-wait)


def cell_hash(suite: str, cell: dict) -> str:
    return config_hash({"suite": suite, **cell})


def _execute(suite_name: str, cell: dict, ctx: RunContext) -> tuple[list[dict], bool]:
    """Run one cell and write its rows (rank 0 only under torchrun): (rows, computed here).
    Used by every executor.

    Under the cell's lock in the store: a second run of the same cell (another command, another
    worker) waits for the first and reads its rows instead of computing them again."""
    with _here(ctx) as ctx:
        return _execute_here(suite_name, cell, ctx)


def _train_ahead(suite_name: str, cell: dict, ctx: RunContext) -> None:
    """Make the training ``cell`` needs (``Suite.train_ahead``) in a worker process. A failure
    is left to the cell, which meets it again and stores its error row."""
    with _here(ctx) as ctx:
        _load_plugins(ctx)
        with contextlib.suppress(PoolbenchError):
            get_suite(suite_name).train_ahead(cell, ctx)


@contextlib.contextmanager
def _here(ctx: RunContext):
    """``ctx`` as this process runs it: its own GPU in a worker (--device cuda --workers N),
    its threads."""
    if _WORKER.get("device"):
        ctx = replace(ctx, device=_WORKER["device"])
    keep_freed_memory()
    with torch_threads(ctx.threads or _threads_here(1)):
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
        stored = _finished(store, suite_name, chash)
        if stored is not None:
            return stored, False
        measured = _measure(suite_name, cell, ctx, chash)
        if dist_info()[0] == 0:
            store.write(suite_name, chash, {"suite": suite_name, **cell}, measured.rows, measured.arrays)
    return measured.rows, True


def _finished(store: ResultStore, suite_name: str, chash: str) -> list[dict] | None:
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
    return Measured(_stamped(suite_name, cell, ctx, chash, rows, ran_since(before)), arrays)


def _stamped(suite_name: str, cell: dict, ctx: RunContext, chash: str, rows: list[dict], ran) -> list[dict]:
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
        stored = _finished(store, suite_name, chash)
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
            outcomes[i] = _execute(suite_name, cell, ctx)
            barrier()
    elif executor == "process":
        workers = max(1, min(ctx.workers, len(todo)))
        # the free cores shared out, so that the workers never oversubscribe them
        threads = ctx.threads or _threads_here(workers)
        wctx = replace(ctx, threads=threads, progress=False)
        with worker_pool(workers, worker_devices(ctx.device, workers)) as pool:
            for i, rows in _in_workers(pool, suite_name, todo, wctx,
                                       lambda: _prepare(suite_name, [cell for _, cell in todo],
                                                        replace(ctx, workers=1, progress=False), log)):
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
                ctx: RunContext, prepare):
    """Yield ``(index, outcome)`` of every cell as it finishes. The trainings the cells need go
    first, each once (``Suite.training_key``); a cell is queued when its training is made,
    behind the trainings still waiting, so that the evaluations fill the cores that trainings
    of unequal length leave idle at the end (one worker training two LiftPool models and one
    max while the other trains one and two: docs/measurements.md). ``prepare`` runs here
    meanwhile."""
    suite = get_suite(suite_name)
    waiting: dict[str, list[tuple[int, dict]]] = {}
    futures: dict[cf.Future, tuple[str, object]] = {}
    for i, cell in todo:
        key = suite.training_key(cell, ctx)
        if key is None:
            futures[pool.submit(_execute, suite_name, cell, ctx)] = ("cell", i)
            continue
        if key not in waiting:
            futures[pool.submit(_train_ahead, suite_name, cell, ctx)] = ("training", key)
        waiting.setdefault(key, []).append((i, cell))
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
            for i, cell in waiting.pop(what):
                futures[pool.submit(_execute, suite_name, cell, ctx)] = ("cell", i)


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


_WORKER: dict = {}  # in a process-executor worker: {"device": the device its cells use}
_THREADS: dict = {}  # workers -> the default thread count, measured once per process
_FREE: dict = {}     # the free cores, measured once per process


def _threads_here(workers: int) -> int:
    """``process.default_threads`` measured the first time this process asks: later, the load
    average counts this process's own training (``run all``, a session running suites)."""
    if workers not in _THREADS:
        _THREADS[workers] = default_threads(workers)
    return _THREADS[workers]


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
    _WORKER["device"] = device
    if device.startswith("cuda:") and torch.cuda.is_available():
        torch.cuda.set_device(device)


def worker_device() -> str | None:
    """The device of this worker process (None outside a process-executor worker)."""
    return _WORKER.get("device")


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
        return _execute(suite_name, cell, ctx)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        save_now()
        return DelayedSubmission(self, *args, **kwargs)


def cell_label(cell: dict) -> str:
    """A cell in words, for logs and ``poolbench status``: its pool and training seed."""
    train = cell.get("train", cell)
    label = f"{train.get('pool', '?')} seed {train.get('seed', '?')}"
    if train.get("holdout"):  # a candidate of --recipe tuned (poolbench.selection)
        label += f" (validation, lr {train.get('lr'):g})"
    if "candidates" in cell:  # the choice among them
        label = f"{train.get('pool', '?')}: the learning rate chosen"
    return label


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
        stored = _finished(store, suite_name, chash)  # another command computed it meanwhile
        if stored is not None:
            out[i] = (stored, False)
            continue
        message = f"Slurm task {result.job_id} failed: {result.error} (log {result.log})"
        log(f"{suite_name}: {cell_label(cells[i])}: {message}")
        rows = _stamped(suite_name, cells[i], ctx, chash,
                        [get_suite(suite_name).error_row(cells[i], ctx, message)], {})
        store.write(suite_name, chash, {"suite": suite_name, **cells[i]}, rows)
        out[i] = (rows, True)
    return out
