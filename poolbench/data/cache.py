"""Generate image sets once, in parallel processes, and cache them as .npy files.

Used by the corruption and perturbation generators. Every generated array (one corruption at
one severity, or one perturbation's sequences) is one ``.npy`` with a JSON manifest beside it:

    <cache_dir>/<kind>/<dataset>/<subset>/<name>/<level>-seed<seed>-<digest>.npy  (+ .json)

``digest`` is the sha256 of the canonical JSON of everything that changes the bytes: kind,
dataset, subset, name, level, seed, the generator library and its version, a format version
and a fingerprint of the input images (so a different subset of the "same" dataset never
reuses a stale file). The ``.npy`` is filled through a memory map at a temporary name and
renamed into place (``os.replace``) when complete, after its manifest: a crash never leaves a
half-written array under the final name, and a rerun regenerates only what is missing.

Work is split into chunks of images; each chunk of each array is one task for a
``ProcessPoolExecutor``. Every image is seeded from (run seed, name, level, image index)
alone, so the bytes do not depend on the number of workers or the chunk size. Workers come
from a fork server (spawn where there is none), not plain fork (see ``_mp_context``): the
first parallel call in a process pays a few seconds to start it, and a script that generates
with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard. The input images
are written once to a scratch .npy that every worker memory-maps.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_open
from ..canonical import digest as canonical_digest
from ..errors import PoolbenchError, UsageError

FORMAT_VERSION = 1

_WORKER_IMAGES: np.ndarray | None = None


# --------------------------------------------------------------------------- small helpers

def digest(parts: dict) -> str:
    """Short sha256 of the canonical JSON of ``parts`` (names a cached data set)."""
    return canonical_digest(parts, 16)


def images_fingerprint(images: np.ndarray) -> str:
    """sha256 of dtype, shape and bytes (streamed, so memory maps are fine)."""
    h = hashlib.sha256(f"{images.dtype.str}{tuple(images.shape)}".encode())
    step = max(1, (64 << 20) // max(1, images[0].nbytes if len(images) else 1))
    for i in range(0, len(images), step):
        h.update(np.ascontiguousarray(images[i:i + step]).tobytes())
    return h.hexdigest()[:24]


def name_code(name: str) -> int:
    """A stable integer for a name (for seed derivation)."""
    return zlib.crc32(name.encode())


def item_seed(seed: int, name: str, level: int, index: int) -> int:
    """The uint32 seed of one image of one generated array, from the run seed alone."""
    ss = np.random.SeedSequence([int(seed), name_code(name), int(level), int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise UsageError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def safe_component(text: str) -> str:
    """A path component from a user string (dataset or subset names)."""
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", str(text)).strip("-.")
    return s or "unnamed"


def atomic_write_json(path: Path, obj: Any) -> None:
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


def check_images(images: Any, min_size: int = 1, what: str = "images") -> np.ndarray:
    """uint8 (N, H, W, 3) or a clear one-line error."""
    if hasattr(images, "detach"):
        raise UsageError(f"{what} must be a numpy uint8 array (N, H, W, 3); got a torch tensor: "
                         "pass (t.permute(0, 2, 3, 1) * 255).round().byte().numpy()")
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise UsageError(f"{what} must have shape (N, H, W, 3) (channels last, RGB); got {a.shape}")
    if a.dtype != np.uint8:
        raise UsageError(f"{what} must be uint8 in 0..255; got {a.dtype}: convert with "
                         "(x * 255).round().astype(np.uint8)")
    if len(a) == 0:
        raise UsageError(f"{what} is empty; pass at least one image")
    if a.shape[1] < min_size or a.shape[2] < min_size:
        raise UsageError(f"{what} are {a.shape[1]}x{a.shape[2]} but must be at least "
                         f"{min_size}x{min_size}; resize or pad them first")
    return a


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------- generated sets

@dataclass
class ArraySet:
    """Generated or official arrays keyed by (name, level), loaded lazily on ``get``."""

    kind: str
    labels: np.ndarray | None
    _sources: dict = field(default_factory=dict, repr=False)

    def keys(self) -> list[tuple]:
        return list(self._sources)

    def __iter__(self) -> Iterator[tuple]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def __contains__(self, key: tuple) -> bool:
        return key in self._sources

    def _source(self, key: tuple):
        try:
            return self._sources[key]
        except KeyError:
            held = ", ".join(str(k) for k in self._sources) or "nothing"
            raise UsageError(f"this {self.kind} set has no {key}; it holds {held}") from None

    def path(self, key: tuple) -> Path | None:
        """The cached .npy behind ``key`` (None when the array is held in memory)."""
        src = self._source(key)
        return src.path if isinstance(src, _Cached) else None

    def manifest(self, key: tuple) -> dict:
        src = self._source(key)
        if isinstance(src, _Cached) and src.path.with_suffix(".json").exists():
            return json.loads(src.path.with_suffix(".json").read_text())
        return dict(getattr(src, "manifest", {}) or {})

    def _get(self, key: tuple, mmap: bool = False) -> np.ndarray:
        src = self._source(key)
        if isinstance(src, np.ndarray):
            return src
        return src.load(mmap)


@dataclass
class _Cached:
    path: Path

    def load(self, mmap: bool) -> np.ndarray:
        try:
            return np.load(self.path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise UsageError(f"cached array {self.path} disappeared; run the generation again") from None


@dataclass
class _Sliced:
    """Rows [start, stop) of an .npy file (official CIFAR-C: one severity block)."""

    path: Path
    start: int
    stop: int
    manifest: dict = field(default_factory=dict)

    def load(self, mmap: bool) -> np.ndarray:
        arr = np.load(self.path, mmap_mode="r", allow_pickle=False)[self.start:self.stop]
        return arr if mmap else np.array(arr)


# --------------------------------------------------------------------------- the generator

@dataclass
class Job:
    """One array to generate: ``func(images_chunk, start_index, **params)`` per chunk."""

    key: tuple
    func: Callable[..., np.ndarray]
    params: dict
    item_shape: tuple            # shape per input image, e.g. (H, W, 3) or (frames, H, W, 3)
    path: Path | None = None     # final .npy; None keeps the result in memory
    manifest: dict = field(default_factory=dict)


def _init_worker(images_path: str, threads: int) -> None:
    global _WORKER_IMAGES
    _WORKER_IMAGES = np.load(images_path, mmap_mode="r", allow_pickle=False)
    with contextlib.suppress(Exception):
        import cv2  # a dependency of imagecorruptions
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
            fd, self.tmp = tempfile.mkstemp(dir=job.path.parent, prefix=f".{job.path.name}.",
                                            suffix=".tmp")
            os.close(fd)
            self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.uint8,
                                                   shape=self.shape)

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
                        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
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
            "poolbench.data.cache", "poolbench.data.corruptions", "poolbench.data.perturbations")


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
    return ctx


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

    from tqdm import tqdm  # noqa: PLC0415 - plain tqdm: always a text bar on stderr

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
                                     initializer=_init_worker, initargs=(staged, 1)) as pool:
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
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".poolbench-images-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, np.ascontiguousarray(images), allow_pickle=False)
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


def entry_path(cache_dir: Path, kind: str, dataset: str, subset: str, name: str, level: str,
               seed: int, key_digest: str) -> Path:
    return (Path(cache_dir) / kind / safe_component(dataset) / safe_component(subset)
            / safe_component(name) / f"{level}-seed{seed}-{key_digest}.npy")


def library_version(*distributions: str) -> str:
    """Version of the first installed distribution of ``distributions`` ("unknown" if none)."""
    import importlib.metadata as md  # noqa: PLC0415
    for dist in distributions:
        with contextlib.suppress(md.PackageNotFoundError):
            return f"{dist}=={md.version(dist)}"
    return "unknown"
