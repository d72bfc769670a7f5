"""Worker processes that never outlive the run that started them.

A pool worker blocked in a long task (a corrupted set, a training cell) only notices that its
parent is gone when it asks for the next task; after ``kill -9`` of a run that took minutes and
a gigabyte per worker, with the fork server and the resource tracker waiting on them. Each
worker therefore watches the run's process: Linux delivers SIGKILL when the worker's parent dies
(``PR_SET_PDEATHSIG``; for a forked-server worker that parent is the fork server, which exits
with the run), and a daemon thread polls the run's pid and exits the worker within
``interval`` seconds of its death anywhere else.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
_started = {"pid": None}


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): os.kill said it exists


def exit_with_parent(run_pid: int, interval: float = 1.0) -> None:
    """Make this worker process exit when process ``run_pid`` (the run) dies. Idempotent."""
    if _started["pid"] == run_pid:
        return
    _started["pid"] = run_pid
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if not alive(run_pid):  # died between fork and here: the signal above comes too late
        os._exit(1)
    threading.Thread(target=_watch, args=(run_pid, interval), name="poolbench-lifeline",
                     daemon=True).start()


def _watch(run_pid: int, interval: float) -> None:
    while alive(run_pid):
        time.sleep(interval)
    os._exit(1)  # no cleanup handlers: the run that wanted the result is gone
