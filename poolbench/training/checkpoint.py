"""Resume checkpoints of the training loop: everything a run needs to continue bit for bit.

A run being trained for the cache entry ``<hash>.pt`` keeps its progress in ``<hash>.state.pt``
beside it: the model, the optimizer (momentum buffers), the position in the schedule (epoch and
step), every random state (python, numpy, torch CPU and CUDA, the data-order generator as it
was at the start of the epoch), the grad scaler, the learning curve so far and the torch thread
count. It is written atomically (a reader sees the previous state or the new one, also after a
``kill -9`` in the middle of a write), holds only tensors and plain values so that it loads with
``weights_only=True``, and is removed once the finished model is cached.

Preemption: :func:`save_now` writes the live run's state at once if the loop is between two
steps (a submitit checkpoint handler calls it from a signal handler, see ``runner.CellJob``);
otherwise the last periodic checkpoint is the one resumed from.
"""
from __future__ import annotations

import contextlib
import io
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..atomic import atomic_open

STATE_SUFFIX = ".state.pt"
FORMAT = 1


def state_path(final: Path) -> Path:
    """The resume checkpoint of the run that trains the cache entry ``final``."""
    return final.with_name(final.stem + STATE_SUFFIX)


# --- random states, in weights-only-loadable form ---------------------------------------------

def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- a training run's state ---------------------------------------------------------------------

class StaleState(Exception):
    """A resume checkpoint that does not fit the model (written by another version of it)."""


def training_state(model, optimizer, scaler, world: int, **progress) -> dict:
    """What a run needs to continue: the module, optimizer and grad-scaler states, ``progress``
    (position, data-order state, curve...), and the random states of every process (gathered
    under torchrun: a collective, so every process calls this together)."""
    rngs = [rng_state()]
    if world > 1:
        rngs = [None] * world
        torch.distributed.all_gather_object(rngs, rng_state())
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {}, "rng": rngs,
            "threads": torch.get_num_threads(), "world": world, **progress}


def restore(state: dict, model, optimizer, scaler, rank: int) -> None:
    """Load ``state`` into the objects, and this process's random states last."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise StaleState(str(exc)) from exc
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"][rank])


# --- files -------------------------------------------------------------------------------------

def _to_cpu(obj):
    """A copy of ``obj`` with every tensor on the CPU (and dense), the rest as is."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def write_state(path: Path, state: dict) -> None:
    """``state`` to ``path`` atomically: serialised in memory first, then one write and rename."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **_to_cpu(state)}, buf)
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getbuffer())


def read_state(path: Path) -> dict | None:
    """The saved state, or None when there is none. A file that does not load (written by
    another poolbench version, or damaged) is not resumed from: the run starts again."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable state means "start from scratch"
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return None
    return state


def remove_state(path: Path) -> None:
    """The resume checkpoint and any temporary file a killed write left beside it."""
    for leftover in [path, *path.parent.glob(f".{path.name}.*.tmp")]:
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


# --- when to write ------------------------------------------------------------------------------

class Saver:
    """Writes the state of one training run: at every epoch end, and inside an epoch once
    ``minutes`` have passed since the last write; ``snapshot()`` gives the state to write."""

    def __init__(self, path: Path, minutes: float, snapshot: Callable[[], dict],
                 write: bool = True, collective: bool = False):
        self.path, self.interval = path, 60.0 * minutes
        # ``write``: this process writes the file (rank 0); ``collective``: taking a snapshot
        # needs every process (torchrun), so it never happens from one process's signal handler
        self.snapshot, self.write, self.collective = snapshot, write, collective
        self.last = time.monotonic()
        self.safe = False   # True only between two steps, where the state is consistent
        self.writes = 0

    def due(self, epoch_end: bool) -> bool:
        return epoch_end or (self.interval > 0 and time.monotonic() - self.last >= self.interval)

    def save(self) -> None:
        safe, self.safe = self.safe, False   # no second write from a signal handler meanwhile
        try:
            state = self.snapshot()   # every process takes part (under torchrun: the RNG gather)
            if self.write:
                write_state(self.path, state)
                self.writes += 1
            self.last = time.monotonic()
        finally:
            self.safe = safe


_LIVE: list[Saver] = []


@contextlib.contextmanager
def live(saver: Saver):
    """Make ``saver`` the one :func:`save_now` writes while the block runs."""
    _LIVE.append(saver)
    try:
        yield saver
    finally:
        _LIVE.remove(saver)


def save_now() -> bool:
    """Write the running training's state now if it is between two steps; True if written."""
    if _LIVE and _LIVE[-1].safe and not _LIVE[-1].collective:
        _LIVE[-1].save()
        return True
    return False
