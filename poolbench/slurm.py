"""A grid of cells as one Slurm array job (submitit), its tasks followed until they end.

Slurm's own view is the truth about a task that is still queued or running (``squeue``); a task
that left the queue either wrote its result (submitit's result file) or ended without one
(cancelled, killed, out of time), and ``sacct`` (with slurmdbd) or ``scontrol`` (for
``MinJobAge`` seconds) says how. A requeued task (``scontrol requeue``, preemption, submitit's
requeue at the time limit) stays in the queue, so it is never taken for finished.

Every submission leaves a manifest, ``<folder>/<array job id>.manifest.json``: which cell each
task computes. ``poolbench status`` and a later run of the same command read it, so that a
cell whose task is still in the queue is followed, not submitted again.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from .atomic import atomic_write_text
from .errors import UsageError, one_line
from .options import option

MANIFEST_SUFFIX = ".manifest.json"
MAX_REQUEUES = 20   # times a task at its time limit requeues itself (submitit's default is 3)
LIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                         "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "PREEMPTED"})


@dataclass(frozen=True)
class SlurmOptions:
    """How the tasks of ``--executor slurm`` are sized (a preset's ``[slurm]`` table holds the
    same keys without ``slurm_``)."""

    slurm_partition: str | None = option(None, "Slurm partition of the tasks (default: the cluster's).")
    slurm_time: int = option(60, "Slurm: minutes per task; a training that reaches the limit saves "
                             "its state, is requeued and resumes.", low=1)
    slurm_mem_gb: float | None = option(None, "Slurm: memory per task in GB (default: the "
                                        "partition's).", low=0, low_open=True)
    slurm_cpus_per_task: int | None = option(None, "Slurm: CPUs per task (default 1), the cell's torch "
                                             "threads unless --threads.", low=1)
    slurm_gpus_per_task: int | None = option(None, "Slurm: GPUs per task (default 1 with --device "
                                             "cuda, else 0).", low=0)
    slurm_array_parallelism: int | None = option(None, "Slurm: most tasks of the array running at "
                                                 "once (default: no cap).", low=1)
    slurm_setup: str | None = option(None, "Slurm: a shell line each task runs before poolbench, "
                                     "e.g. 'module load cuda; source venv/bin/activate'.")
    wait: bool = option(True, "Slurm: wait for the tasks with a progress bar; --no-wait returns once "
                        "they are submitted (`poolbench status` follows them).")


def preset_options(table: dict) -> dict:
    """A preset's ``[slurm]`` table as SlurmOptions keywords (``partition`` -> ``slurm_partition``)."""
    return {k if k == "wait" else f"slurm_{k}": v for k, v in table.items()}


@dataclass
class Outcome:
    """How one task ended: ``value`` (what the function returned) or ``error`` (one line)."""

    job_id: str
    value: object = None
    error: str | None = None
    log: str | None = None


def executor(folder: Path, opts: SlurmOptions, device: str):
    """A submitit SlurmExecutor sized by ``opts``."""
    try:
        import submitit
    except ImportError as exc:
        raise UsageError("--executor slurm needs submitit: pip install 'poolbench[slurm]'") from exc
    try:
        # a training longer than the time limit needs one run per limit: requeue it that often
        ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=MAX_REQUEUES)
    except RuntimeError as exc:  # no srun: not on a Slurm cluster
        raise UsageError(f"--executor slurm: {one_line(exc)}; run it where sbatch and srun work") from exc
    gpus = opts.slurm_gpus_per_task
    if gpus is None:
        gpus = int(device.startswith("cuda"))
    params = {
        "time": opts.slurm_time, "cpus_per_task": opts.slurm_cpus_per_task or 1,
        # USR2 before the limit, for the checkpoint handler; Slurm may send it up to a minute
        # earlier still, and a task must have installed its handler by then (a few seconds in)
        "signal_delay_s": min(90, max(15, opts.slurm_time * 60 - 80)),
        "partition": opts.slurm_partition,
        "mem": f"{round(opts.slurm_mem_gb * 1024)}M" if opts.slurm_mem_gb else None,
        "gpus_per_task": gpus or None, "setup": [opts.slurm_setup] if opts.slurm_setup else None,
        "job_name": "poolbench",
    }
    if opts.slurm_array_parallelism:
        params["array_parallelism"] = opts.slurm_array_parallelism
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def submit_array(ex, fn: Callable, calls: Sequence[tuple], keys: Sequence[dict]) -> list:
    """``fn(*call)`` for every call, as one array job; its manifest names each task's ``keys``."""
    if len(calls) == 1:  # submitit submits a single call as a plain job
        jobs = [ex.submit(fn, *calls[0])]
    else:
        jobs = ex.map_array(fn, *zip(*calls))
    array_id = jobs[0].job_id.split("_")[0]
    tasks = [{**key, "job_id": job.job_id, "log": str(job.paths.stderr)} for key, job in zip(keys, jobs)]
    atomic_write_text(Path(ex.folder) / f"{array_id}{MANIFEST_SUFFIX}",
                      json.dumps({"array_job_id": array_id, "submitted": time.time(), "tasks": tasks},
                                 indent=1))
    return jobs


def manifest_tasks(folder: Path) -> dict[str, dict]:
    """The latest submitted task of every key ``hash`` in the manifests under ``folder``."""
    manifests = []
    for path in Path(folder).glob(f"*{MANIFEST_SUFFIX}"):
        try:
            manifests.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a manifest being replaced or damaged names no task
    latest = {}
    for manifest in sorted(manifests, key=lambda m: m.get("submitted", 0)):
        for task in manifest.get("tasks", []):
            latest[task["hash"]] = task
    return latest


def queue_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """Slurm state of every task of ``job_ids`` still in the queue (array tasks one by one);
    None when ``squeue`` cannot answer (the controller busy or away), so that no task is taken
    for ended."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # an id the controller no longer knows fails the whole call: ask one by one
        if len(arrays) > 1:
            parts = [queue_states([a]) for a in arrays]
            return None if any(p is None for p in parts) else {k: v for p in parts for k, v in p.items()}
        return {} if "Invalid job id" in out.stderr else None
    states = dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)
    return {j: s for j, s in states.items() if s in LIVE_STATES}


def ended_state(job_id: str) -> str:
    """How a task that left the queue ended, from ``sacct`` or else ``scontrol`` (which keeps
    ended jobs for MinJobAge seconds); "ENDED" when neither knows."""
    commands = (["sacct", "-n", "-P", "-X", "-o", "State", "-j", job_id],
                ["scontrol", "-o", "show", "job", job_id])
    for command in commands:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode != 0 or not out.stdout.strip():
            continue
        text = out.stdout.strip()
        if command[0] == "sacct":
            return text.splitlines()[0].split()[0]
        for word in text.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
    return "ENDED"


def outcome(job) -> Outcome:
    """How a task that ended did: its value, the error it raised, or the way Slurm ended it
    with the first error line of its log."""
    from submitit.core.utils import pickle_load

    log = str(job.paths.stderr)
    if job.paths.result_pickle.exists():
        # submitit's result file: ("success", value) or ("error", the traceback as text)
        kind, payload = pickle_load(job.paths.result_pickle)
        if kind == "success":
            return Outcome(job.job_id, value=payload, log=log)
        lines = [ln.strip() for ln in str(payload).splitlines() if ln.strip()]
        return Outcome(job.job_id, error=lines[-1] if lines else "the task raised", log=log)
    state = ended_state(job.job_id)
    return Outcome(job.job_id, error=f"Slurm ended the task: {state}" + _log_error(Path(log)), log=log)


def _log_error(path: Path) -> str:
    """The last line of a task's log that reports an error (Slurm's CANCELLED or TIME LIMIT
    line, srun's signal, a Python error), as '; ' + line: the earlier ones may be of a run
    that was requeued."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "error" in line.lower() or "cancelled" in line.lower():
            return "; " + line.strip()
    return ""


def wait(jobs: Sequence, progress: bool, label: str, poll_s: float = 2.0) -> list[Outcome]:
    """Follow ``jobs`` until every task has left the queue; the outcomes in their order."""
    left = {job.job_id: job for job in jobs}
    done: dict[str, Outcome] = {}
    with tqdm(total=len(jobs), disable=not progress, desc=f"{label}: slurm tasks", unit="task") as bar:
        while left:
            states = queue_states(list(left))
            if states is not None:
                for job_id in [j for j in left if j not in states]:
                    done[job_id] = outcome(left.pop(job_id))
                    bar.update(1)
                running = sum(1 for s in states.values() if s == "RUNNING")
                bar.set_postfix_str(f"{running} running, {len(states) - running} queued")
            if left:
                time.sleep(poll_s)
    return [done[job.job_id] for job in jobs]


def attach(folder: Path, job_id: str):
    """The submitit job of a task submitted earlier (by another command), to follow it."""
    import submitit

    return submitit.SlurmJob(folder=str(folder), job_id=job_id)
