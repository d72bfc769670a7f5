"""Data fingerprints: a short digest of what a run's data is, cheap enough for every command.

Every training config, cell and row holds the fingerprint of its data, so that results and
checkpoints computed on one copy of a dataset are never returned for another (another
``--data-root``, a re-extracted archive, a folder with images added). What is digested:

- built-in generated sets: the generator's name and version (its seed and sizes are already in
  the training config);
- files of a fixed set (the CIFAR batches): their bytes (~180 MB, a fraction of a second);
- class-folder trees (ImageFolder, ImageNet, ImageNet-C): the sorted relative paths and sizes,
  without opening a file, so a million images cost seconds, not an hour;
- folders of a few large arrays (CIFAR-10-C/-P .npy): names, sizes and the first and last MiB
  of every file (reading 3 GB whole on every command would cost more than a cell).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

from ..errors import UsageError

LENGTH = 16          # hex characters kept: 64 bits, collisions out of reach for any store
_SAMPLE = 1 << 20    # bytes read from each end of a large array file


def _short(h) -> str:
    return h.hexdigest()[:LENGTH]


def files_fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """Digest of the names and the full bytes of ``paths`` (in the order given)."""
    h = hashlib.sha256()
    for path in map(Path, paths):
        h.update(f"{path.name}\0".encode())
        try:
            with open(path, "rb") as fh:
                h.update(hashlib.file_digest(fh, "sha256").digest())
        except OSError as exc:
            raise UsageError(f"cannot read data file {path} ({exc.strerror or exc}); "
                             "check the path and its permissions") from None
    return _short(h)


def tree_fingerprint(root: str | os.PathLike, what: str = "data folder") -> str:
    """Digest of every file's path relative to ``root`` and its size (no file is opened)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UsageError(f"{what} {root} is not a directory; check the path")
    entries = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in filenames:
            if name.startswith("."):
                continue  # temporary and hidden files are not data
            try:
                size = os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue  # a dangling link is not an image either
            entries.append(f"{os.path.normpath(os.path.join(rel, name))}\0{size}\n")
    if not entries:
        raise UsageError(f"{what} {root} holds no files; check the path")
    h = hashlib.sha256()
    for entry in sorted(entries):
        h.update(entry.encode())
    return _short(h)


def arrays_fingerprint(root: str | os.PathLike, pattern: str = "*.npy", what: str = "data folder") -> str:
    """Digest of the names, sizes and both ends of every ``pattern`` file in ``root``."""
    root = Path(root).expanduser()
    files = sorted(p for p in root.glob(pattern) if p.is_file()) if root.is_dir() else []
    if not files:
        raise UsageError(f"{what} {root} holds no {pattern} files; check the path")
    h = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        h.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as fh:
            h.update(fh.read(_SAMPLE))
            if size > 2 * _SAMPLE:
                fh.seek(size - _SAMPLE)
                h.update(fh.read(_SAMPLE))
    return _short(h)


def held_out_fingerprint(whole: str, holdout: int, split: str) -> str:
    """The fingerprint of a validation split: of the whole set's fingerprint, how many
    training images are held out and how they are drawn (``bundles.HOLDOUT_SPLIT``)."""
    return _short(hashlib.sha256(f"{whole}\0holdout\0{int(holdout)}\0{split}".encode()))


def folder_fingerprint(path: str | os.PathLike, what: str = "data folder") -> str:
    """An official -C/-P set: its .npy arrays (CIFAR-10-C/-P), else its image tree (ImageNet-C)."""
    folder = Path(path).expanduser()
    if folder.is_dir() and any(folder.glob("*.npy")):
        return arrays_fingerprint(folder, what=what)
    return tree_fingerprint(folder, what)
