"""Generate image sets once, in parallel processes, into the cache (``poolbench.distortions.cache``).

Work is split into chunks of images; each chunk of each array is one task for a
``ProcessPoolExecutor``. Every image is seeded from (run seed, name, level, image index)
alone, so the bytes do not depend on the number of workers or the chunk size. Workers come
from a fork server (spawn where there is none), not plain fork (see ``_mp_context``): the
first parallel call in a process pays a few seconds to start it, and a script that generates
with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard. The input images
are written once to a scratch .npy that every worker memory-maps. The ``.npy`` of a result
is filled through a memory map at a temporary name and renamed into place (``os.replace``)
when complete, after its manifest: a crash never leaves a half-written array under the final
name, and a rerun regenerates only what is missing. The manifest records the sha256 of the
array; a cached array that fails it (or lost its manifest) is set aside into
``<cache_dir>/.damaged/`` with one warning line and generated again. The temporary file gets
all its blocks before it is mapped (``posix_fallocate``): a disk that fills is one
``DiskFull`` line, never a bus error in the middle of a write through the map.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm  # plain tqdm, not tqdm.auto: always a text bar on stderr

from ..atomic import disk_full, is_disk_full, remove_stale_temps, temp_prefix
from ..errors import PoolbenchError, UsageError
from ..integrity import Damaged, check_file, read_record, set_aside, sha256_file
from ..lifeline import exit_with_parent
from .cache import _Cached, atomic_write_json

_WORKER_IMAGES: np.ndarray | None = None


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class Job:
    """One array to generate: ``func(images_chunk, start_index, **params)`` per chunk."""

    key: tuple
    func: Callable[..., np.ndarray]
    params: dict
    item_shape: tuple            # shape per input image, e.g. (H, W, 3) or (frames, H, W, 3)
    path: Path | None = None     # final .npy; None keeps the result in memory
    manifest: dict = field(default_factory=dict)


def _init_worker(images_path: str, threads: int, run_pid: int) -> None:
    global _WORKER_IMAGES
    exit_with_parent(run_pid)
    _WORKER_IMAGES = np.load(images_path, mmap_mode="r", allow_pickle=False)
    with contextlib.suppress(Exception):
        cv2.setNumThreads(threads)


def _run_chunk(func: Callable, start: int, stop: int, params: dict,
               images: np.ndarray | None = None) -> np.ndarray:
    src = _WORKER_IMAGES if images is None else images
    chunk = np.ascontiguousarray(src[start:stop])
    out = func(chunk, start, **params)
    return np.ascontiguousarray(out, dtype=np.uint8)


class _Output:
    """Where one job's chunks land: a memory-mapped temporary .npy, or memory."""

    def __init__(self, job: Job, n: int, chunks: int):
        self.job = job
        self.shape = (n, *job.item_shape)
        self.remaining = chunks
        self.tmp: str | None = None
        if job.path is None:
            self.array = np.empty(self.shape, np.uint8)
        else:
            job.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(job.path.parent)
            try:
                fd, self.tmp = tempfile.mkstemp(dir=job.path.parent, prefix=temp_prefix(job.path.name),
                                                suffix=".tmp")
                os.close(fd)
                self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.uint8,
                                                       shape=self.shape)
                # a sparse map whose disk fills dies of SIGBUS at the first page it cannot back
                with open(self.tmp, "r+b") as fh:
                    os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
            except OSError as exc:
                self.abort()
                if is_disk_full(exc):
                    raise disk_full(job.path, exc) from None
                raise

    def put(self, start: int, block: np.ndarray) -> bool:
        if block.shape[1:] != self.shape[1:]:
            raise RuntimeError(f"generator for {self.job.key} returned {block.shape[1:]}, "
                               f"expected {self.shape[1:]}")
        self.array[start:start + len(block)] = block
        self.remaining -= 1
        return self.remaining == 0

    def finish(self) -> np.ndarray | Path:
        if self.job.path is None:
            return self.array
        self.array.flush()
        del self.array
        manifest = dict(self.job.manifest, shape=list(self.shape), dtype="uint8",
                        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), sha256=sha256_file(self.tmp))
        atomic_write_json(self.job.path.with_suffix(".json"), manifest)
        os.replace(self.tmp, self.job.path)
        self.tmp = None
        return self.job.path

    def abort(self) -> None:
        if self.tmp is not None:
            self.array = None
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


# Imported once by the fork server, so that workers forked from it start in milliseconds.
_PRELOAD = ("numpy", "cv2", "scipy.ndimage", "skimage.color", "skimage.filters", "imagecorruptions",
            "poolbench.distortions.cache", "poolbench.distortions.jobs", "poolbench.distortions.corruptions",
            "poolbench.distortions.perturbations")


def _mp_context(name: str | None):
    """Worker processes come from a fork server where available, else spawn.

    Not plain fork: a child forked from a process that already ran OpenCV's thread pool
    deadlocks in its first OpenCV threading call (reproduced here with cv2.setNumThreads in
    the worker initializer after the parent had blurred and resized images). The fork server is
    a fresh single-threaded process that has only imported the generators.
    """
    if name is None:
        name = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(name)
    if name == "forkserver":
        ctx.set_forkserver_preload(list(_PRELOAD))  # no effect once the server runs
        # The server starts as `python -c ...`, which puts the working directory first on
        # sys.path (3.11 ignores the parent's path it is handed): run from a folder holding a
        # `poolbench/` directory (a clone's parent) and the workers imported that instead of
        # the installed package. Safe-path mode (-P) leaves the working directory out.
        with _environ(PYTHONSAFEPATH="1"):
            multiprocessing.forkserver.ensure_running()
    return ctx


@contextlib.contextmanager
def _environ(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_jobs(jobs: Sequence[Job], images: np.ndarray, *, workers: int | None = None,
             chunk_size: int = 256, progress: bool = True, desc: str = "generating",
             mp_context: str | None = None, scratch_dir: Path | None = None) -> dict:
    """Run every job over ``images`` in chunks; returns key -> array (memory) or Path (cached)."""
    if not jobs:
        return {}
    n = len(images)
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise UsageError(f"chunk_size must be >= 1; got {chunk_size}")
    workers = default_workers() if workers is None else int(workers)
    if workers < 0:
        raise UsageError(f"workers must be >= 0 (0 or 1: generate in this process); got {workers}")
    bounds = [(s, min(n, s + chunk_size)) for s in range(0, n, chunk_size)]
    tasks = [(j, s, e) for j in range(len(jobs)) for (s, e) in bounds]
    outputs: dict[int, _Output] = {}
    results: dict = {}

    def deliver(j: int, s: int, block: np.ndarray, bar) -> None:
        out = outputs.get(j)
        if out is None:
            out = outputs[j] = _Output(jobs[j], n, len(bounds))
        if out.put(s, block):
            results[jobs[j].key] = out.finish()
            del outputs[j]
        bar.update(len(block))

    total = n * len(jobs)
    try:
        if workers <= 1 or len(tasks) == 1:
            with tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not progress,
                      dynamic_ncols=True) as bar:
                for j, s, e in tasks:
                    deliver(j, s, _run_chunk(jobs[j].func, s, e, jobs[j].params, images), bar)
            return results
        with _staged(images, scratch_dir) as staged:
            ctx = _mp_context(mp_context)
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx,
                                     initializer=_init_worker, initargs=(staged, 1, os.getpid())) as pool:
                pending = {}
                queue = iter(tasks)
                limit = 2 * min(workers, len(tasks))  # bounded in-flight tasks: bounded memory

                def top_up():
                    for j, s, e in queue:
                        fut = pool.submit(_run_chunk, jobs[j].func, s, e, jobs[j].params)
                        pending[fut] = (j, s)
                        if len(pending) >= limit:
                            break

                top_up()
                with tqdm(total=total, desc=desc, unit="img", file=sys.stderr,
                          disable=not progress, dynamic_ncols=True) as bar:
                    try:
                        while pending:
                            done, _ = wait(pending, return_when=FIRST_COMPLETED)
                            for fut in done:
                                j, s = pending.pop(fut)
                                deliver(j, s, fut.result(), bar)
                            top_up()
                    except BaseException:
                        for fut in pending:
                            fut.cancel()
                        raise
        return results
    except BrokenProcessPool:
        raise PoolbenchError(
            "a generator worker process died (out of memory, or a script without "
            "'if __name__ == \"__main__\":'); retry with fewer workers or workers=0") from None
    finally:
        for out in outputs.values():
            out.abort()


@contextlib.contextmanager
def _staged(images: np.ndarray, scratch_dir: Path | None):
    """The input images as an .npy the workers memory-map (sent once, not per task)."""
    existing = _whole_npy(images)
    if existing is not None:  # already an .npy on disk (np.load(..., mmap_mode="r"))
        yield existing
        return
    directory = Path(scratch_dir) if scratch_dir is not None else None
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(directory if directory is not None else tempfile.gettempdir())
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=temp_prefix("poolbench-images"), suffix=".tmp")
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(images), allow_pickle=False)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(tmp, exc) from None
            raise
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _whole_npy(images: np.ndarray) -> str | None:
    filename = getattr(images, "filename", None)
    if not isinstance(images, np.memmap) or not filename or not str(filename).endswith(".npy"):
        return None
    try:
        whole = np.load(filename, mmap_mode="r", allow_pickle=False)
    except Exception:  # noqa: BLE001 - not a readable .npy: stage a copy instead
        return None
    if (whole.shape == images.shape and whole.dtype == images.dtype
            and images.flags.c_contiguous and whole.strides == images.strides):
        return str(filename)
    return None


def generate(jobs: Sequence[Job], images: np.ndarray, *, workers: int | None = None,
             chunk_size: int = 256, progress: bool = True, desc: str = "generating",
             mp_context: str | None = None, cache_dir: str | os.PathLike | None = None,
             strict: bool = False) -> dict:
    """key -> source of every job: its cached .npy where that exists already, else generated
    now (``run_jobs``; scratch files under ``cache_dir``); a source is a ``_Cached`` file or an
    in-memory array (jobs without a path). A cached array is verified against its manifest
    first; one that fails is set aside and generated again (``strict``: refused, in one line)."""
    root = Path(cache_dir) if cache_dir is not None else None
    sources: dict = {j.key: _Cached(j.path) for j in jobs if j.path is not None and _intact(j.path, root, strict)}
    todo = [j for j in jobs if j.key not in sources]
    done = run_jobs(todo, images, workers=workers, chunk_size=chunk_size, progress=progress,
                    desc=desc, mp_context=mp_context,
                    scratch_dir=None if cache_dir is None else Path(cache_dir))
    for key, result in done.items():
        sources[key] = _Cached(result) if isinstance(result, Path) else result
    return sources


_VERIFIED: dict = {}   # path -> (size, mtime_ns) of the arrays this process verified already


def _intact(path: Path, root: Path | None, strict: bool = False) -> bool:
    """Whether the cached array ``path`` exists and matches its manifest's sha256 (hashed once
    per process and file version); a damaged one is set aside (under ``root``, the cache)."""
    if not path.exists():
        return False
    try:
        stat = path.stat()
        if _VERIFIED.get(path) == (stat.st_size, stat.st_mtime_ns):
            return True
        verify_array(path)
    except Damaged as damage:
        set_aside(damage, root if root is not None else path.parent, (path, path.with_suffix(".json")),
                  strict=strict, then="it is generated again")
        return False
    _VERIFIED[path] = (stat.st_size, stat.st_mtime_ns)
    return True


def verify_array(path: Path) -> None:
    """Raise :class:`Damaged` unless ``path`` is the array its manifest recorded (a manifest
    written before digests: its shape only)."""
    manifest = read_record(path.with_suffix(".json"), "the manifest of the generated set")
    if "sha256" in manifest:
        check_file(path, manifest["sha256"], "generated set")
        return
    try:
        shape = list(np.load(path, mmap_mode="r", allow_pickle=False).shape)
    except Exception as exc:  # noqa: BLE001 - any unreadable header
        raise Damaged(path, f"it cannot be read as an array ({type(exc).__name__})") from None
    if shape != manifest.get("shape"):
        raise Damaged(path, f"its shape {shape} is not the recorded {manifest.get('shape')}")
