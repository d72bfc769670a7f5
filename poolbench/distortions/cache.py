"""The cache of generated image sets: keys, seeds, paths and the lazily loaded sets.

Used by the corruption and perturbation generators. Every generated array (one corruption at
one severity, or one perturbation's sequences) is one ``.npy`` with a JSON manifest beside it:

    <cache_dir>/<kind>/<dataset>/<subset>/<name>/<level>-seed<seed>-<digest>.npy  (+ .json)

``digest`` is the sha256 of the canonical JSON of everything that changes the bytes: kind,
dataset, subset, name, level, seed, the generator library and its version, a format version
and a fingerprint of the input images (so a different subset of the "same" dataset never
reuses a stale file). The arrays are generated in parallel processes and written atomically
by ``poolbench.distortions.jobs``.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.metadata as md
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_open
from ..canonical import digest as canonical_digest
from ..errors import UsageError

FORMAT_VERSION = 1


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


def check_name(name: str, known: Sequence[str], what: str) -> str:
    """``name`` if it is one of ``known``, else a UsageError with the closest match."""
    if name in known:
        return name
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"choose from {', '.join(known)}"
    raise UsageError(f"unknown {what} '{name}'; {hint}")


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


ENGINES = ("auto", "reference", "torch")


def choose_engine(name: str, engine: str, tested, implemented, what: str) -> str:
    """The engine that makes ``name`` (a corruption or a perturbation): ``reference`` or
    ``torch``. ``auto``: torch where its equivalence tests pass (``tested``); an explicit
    ``torch`` falls back to the reference only where the torch engine has no implementation."""
    if engine not in ENGINES:
        raise UsageError(f"unknown {what} engine {engine!r}; use {', '.join(ENGINES)}")
    if engine == "auto":
        return "torch" if name in tested else "reference"
    if engine == "torch" and name not in implemented:
        return "reference"
    return engine


def dataset_dir(cache_dir: Path, kind: str, dataset: str) -> Path:
    """The folder of one dataset's generated sets of ``kind`` (corruptions, perturbations); its
    lock is this path + ``.lock``."""
    return Path(cache_dir) / kind / safe_component(dataset)


def entry_path(cache_dir: Path, kind: str, dataset: str, subset: str, name: str, level: str,
               seed: int, key_digest: str) -> Path:
    return (dataset_dir(cache_dir, kind, dataset) / safe_component(subset)
            / safe_component(name) / f"{level}-seed{seed}-{key_digest}.npy")



def library_version(*distributions: str) -> str:
    """Version of the first installed distribution of ``distributions`` ("unknown" if none)."""
    for dist in distributions:
        with contextlib.suppress(md.PackageNotFoundError):
            return f"{dist}=={md.version(dist)}"
    return "unknown"
