"""Content digests recorded when a file is written and checked before it is read.

Every stored result, prediction file, cached model and generated set carries the sha256 of its
content (and a result file the hash of its cell, which is its name). A reader verifies before
use; a file that fails (edited, truncated, bytes flipped, deleted companion, another cell's
file at this name) is :class:`Damaged`. :func:`set_aside` then moves it (and its companions)
into a ``.damaged/`` folder at the root of the store or cache, never deleting it, with one
warning line naming the file, so that the caller computes it again; with ``strict`` (an audit:
``--strict``) the run refuses in one line instead and nothing is moved.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path

from .errors import UsageError, one_line

DAMAGED = ".damaged"


class Damaged(Exception):
    """``path`` failed verification for ``reason`` (internal: callers set it aside or refuse)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


class DamagedFileWarning(UserWarning):
    """A stored file failed verification and was moved aside; its cell is computed again."""


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, streamed (generated sets run to gigabytes)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def check_file(path: Path, expected: str | None, what: str) -> None:
    """Raise :class:`Damaged` unless ``path`` exists and its sha256 is ``expected``."""
    if not path.is_file():
        raise Damaged(path, f"its {what} is missing")
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise Damaged(path, f"its {what} cannot be read ({exc.strerror or exc})") from None
    if actual != expected:
        raise Damaged(path, f"its {what} does not match the sha256 recorded when it was written "
                            "(edited or damaged)")


def read_record(path: Path, what: str) -> dict:
    """The JSON object a file's sidecar record holds; :class:`Damaged` when it is missing,
    unreadable or not an object (``what`` names it: "the manifest of the generated set")."""
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise Damaged(path, f"{what} is missing") from None
    except (OSError, ValueError) as exc:
        raise Damaged(path, f"{what} is unreadable ({one_line(exc)})") from None
    if not isinstance(record, dict):
        raise Damaged(path, f"it is not {what}")
    return record


def set_aside(damage: Damaged, root: str | os.PathLike, companions=(), strict: bool = False,
              then: str = "it is computed again") -> Path | None:
    """Move the damaged file and its ``companions`` (the files of the same entry) into
    ``<root>/.damaged/`` keeping their path below ``root``, warn in one line and return the
    folder; with ``strict`` raise one UsageError instead (an audit must not repair silently)."""
    if strict:
        raise UsageError(f"{damage.path} failed verification ({damage.reason}); --strict refuses "
                         "damaged files: move it aside, or run without --strict to recompute it")
    root = Path(root)
    folder = root / DAMAGED
    if folder.is_symlink():  # moving into a planted link would write outside the store
        raise UsageError(f"{folder} is a symbolic link; remove it and run again")
    moved = []
    for path in dict.fromkeys([damage.path, *map(Path, companions)]):
        if not path.exists() and not path.is_symlink():
            continue
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = Path(path.name)
        target = _free_name(folder / rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # another run moved it first
            os.replace(path, target)
            moved.append(target.name)
    warnings.warn(f"{damage.path} failed verification ({damage.reason}): moved to {folder}"
                  f"{'' if moved else ' (already moved)'}; {then}", DamagedFileWarning, stacklevel=2)
    return folder


def _free_name(target: Path) -> Path:
    """``target``, or ``target.1``, ``target.2``... when an earlier damaged copy holds the name."""
    candidate, n = target, 0
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = target.with_name(f"{target.name}.{n}")
    return candidate
