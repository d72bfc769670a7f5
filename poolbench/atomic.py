"""Atomic file writes: a temporary file beside the target, fsync, then one rename.

A reader sees the old file or the new one, never half of one. An interrupted write leaves no
temporary file behind; one killed mid-write (``kill -9``) leaves a temporary file whose name
holds the host and pid that wrote it (``temp_prefix``), which ``remove_stale_temps`` deletes
on the next run once that process is gone.

A full disk (ENOSPC, or a quota: EDQUOT) while writing is :class:`DiskFull`, one line naming the
file; the temporary file is removed and the previous file stands. Locks and logs are opened
with :func:`open_nofollow`: a symbolic link planted at their name is refused, never written
through.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import tempfile
import time
from pathlib import Path

from .errors import UsageError
from .lifeline import alive

# .<name>.<host>-<pid>.<random>.tmp (mkstemp adds the random part)
_TEMP = re.compile(r"^\..*\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
_FOREIGN_AGE_S = 24 * 3600   # another host's temp file: its writer cannot be asked, only aged


_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(UsageError):
    """No space left where poolbench writes: the user must free space or point elsewhere. A
    failure of the machine, not of the input (exit 1), but never turned into an error row: the
    run stops, keeping what is finished."""

    exit_code = 1


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL


def disk_full(path: str | os.PathLike, exc: OSError) -> DiskFull:
    """The one-line error of a write to ``path`` that found no space."""
    return DiskFull(f"no space left on the device of {path} ({exc.strerror or exc}); free space there "
                    "or point the run elsewhere (--results, POOLBENCH_CACHE), then run again: "
                    "finished work is kept")


class PlantedLink(UsageError):
    """A symbolic link where poolbench creates a lock or a log."""


def open_nofollow(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (O_NOFOLLOW) in one line, so that a
    link planted at a lock or a log never has its target created, truncated or appended to."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PlantedLink(f"{path} is a symbolic link; poolbench never writes through a link in "
                              "its store or cache: remove the link and run again") from None
        if is_disk_full(exc):
            raise disk_full(path, exc) from None
        raise


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (os.umask sets it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def temp_prefix(name: str) -> str:
    """The prefix of a temporary file for ``name`` that says which process owns it."""
    return f".{name}.{_host()}-{os.getpid()}."


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Delete the temporary files in ``directory`` whose writing process is gone; returns how
    many. A file of this host is stale when its pid is not running; another host's (a shared
    file system) when it is a day old."""
    removed, host, now = 0, _host(), time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        m = _TEMP.match(entry.name)
        if not m or not entry.is_file(follow_symlinks=False):
            continue
        try:
            stale = (not alive(int(m["pid"])) if m["host"] == host
                     else now - entry.stat().st_mtime > _FOREIGN_AGE_S)
            if stale:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w"):
    """``with atomic_open(path, "wb") as fh: ...``: ``path`` appears with the full contents when
    the block ends, and is untouched when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(path, exc) from None
        raise
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared like any file
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_disk_full(exc):
            raise disk_full(path, exc) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line with a single write (O_APPEND): concurrent writers never interleave; a
    symbolic link at ``path`` is refused (``open_nofollow``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode())
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(path, exc) from None
        raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def lock_file(path: str | os.PathLike):
    """An open descriptor of the lock file ``path`` (created, never truncated, never a link)."""
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
    try:
        yield fd
    finally:
        os.close(fd)
