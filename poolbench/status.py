"""``poolbench status``: where every cell of a command, or of a whole store, stands.

A cell is *done* when the store holds its rows without an error; *running* while its latest
Slurm task is in the queue (pending, running or requeued), with the task's job id; *failed*
when its rows are an error row, or when its task left the queue without rows (cancelled,
killed, out of time), with the first line of the error and the task's log; *missing* when
nothing of it exists yet. The store and the Slurm manifests (``slurm.manifest_tasks``) are read,
never written.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import slurm
from .runner import cell_hash, cell_label
from .store import ResultStore

STATES = ("done", "running", "failed", "missing", "unknown")


def cell_status(results: str, cells: list[tuple[str, dict]] | None = None) -> list[dict]:
    """One record per cell (``suite``, ``cell``, ``hash``, ``state``, ``job``, ``detail``,
    ``log``): of ``cells`` (suite name, cell) in their order, else of every cell the store or a
    Slurm submission into it knows."""
    store = ResultStore(results)
    folder = Path(results) / ".slurm"
    tasks = slurm.manifest_tasks(folder)
    if cells is None:
        keys = _stored_cells(Path(results))
        keys.update({(t["suite"], h): t["cell"] for h, t in tasks.items() if (t["suite"], h) not in keys})
    else:
        keys = {(suite, cell_hash(suite, cell)): cell_label(cell) for suite, cell in cells}
    asked = [tasks[h]["job_id"] for _, h in keys if h in tasks]
    queued = slurm.queue_states(asked) if asked else {}
    return [_one(store, folder, suite, chash, label, tasks.get(chash), queued)
            for (suite, chash), label in keys.items()]


def _one(store: ResultStore, folder: Path, suite: str, chash: str, label: str, task: dict | None,
         queued: dict[str, str] | None) -> dict:
    record = {"suite": suite, "cell": label, "hash": chash[:12], "state": "missing",
              "job": task["job_id"] if task else "", "detail": "", "log": task["log"] if task else ""}
    rows = store.read(suite, chash) if store.has(suite, chash) else None
    errors = [r["error"] for r in rows or () if r.get("error")]
    if rows and not errors:
        return {**record, "state": "done", "log": ""}
    if task and queued is None:
        return {**record, "state": "unknown", "detail": "squeue did not answer"}
    if task and task["job_id"] in queued:
        return {**record, "state": "running", "detail": queued[task["job_id"]]}
    if errors:
        return {**record, "state": "failed", "detail": errors[0].splitlines()[0]}
    if task:
        ended = slurm.outcome(slurm.attach(folder, task["job_id"]))
        return {**record, "state": "failed", "detail": (ended.error or "ended without rows").splitlines()[0]}
    return {**record, "job": "", "log": ""}


def _stored_cells(root: Path) -> dict[tuple[str, str], str]:
    """(suite, hash) -> the cell in words, for every cell file in the store."""
    out = {}
    for path in sorted(root.glob("*/*.json")):
        if path.parent.name.startswith("."):
            continue
        try:
            cell = json.loads(path.read_text()).get("cell", {})
        except (OSError, ValueError, AttributeError):
            continue  # not a cell file (or one being replaced)
        out[(path.parent.name, path.stem)] = cell_label(cell)
    return out


def summary(records: list[dict]) -> str:
    """'4 cells: 2 done, 1 running, 1 failed, 0 missing'."""
    counts = {s: sum(1 for r in records if r["state"] == s) for s in STATES}
    shown = [f"{counts[s]} {s}" for s in STATES if s != "unknown" or counts[s]]
    return f"{len(records)} cells: " + ", ".join(shown)
