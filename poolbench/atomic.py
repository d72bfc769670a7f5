"""Atomic file writes: a temporary file beside the target, fsync, then one rename.

A reader sees the old file or the new one, never half of one. An interrupted write leaves no
temporary file behind; one killed mid-write (``kill -9``) leaves a temporary file whose name
holds the host and pid that wrote it (``temp_prefix``), which ``remove_stale_temps`` deletes
on the next run once that process is gone.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import time
from pathlib import Path

from .lifeline import alive

# .<name>.<host>-<pid>.<random>.tmp (mkstemp adds the random part)
_TEMP = re.compile(r"^\..*\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
_FOREIGN_AGE_S = 24 * 3600   # another host's temp file: its writer cannot be asked, only aged


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared like any file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line with a single write (O_APPEND): concurrent writers never interleave."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode())
    finally:
        os.close(fd)
