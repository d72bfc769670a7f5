"""Writing a report folder without ever leaving it half-written or deleting what is not ours.

A report is built in a temporary folder inside ``--out`` (same filesystem) and moved into place
file by file with ``os.replace`` once everything is written: an interrupted build leaves the
previous report as it was (and at most the temporary folder). Afterwards only files the
previous report wrote itself, and this one does not, are removed: its fixed files and the
figures its ``report.md`` linked; a user's own files (a README, their own ``fig-*.png``) stay.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..atomic import DiskFull, is_disk_full
from ..errors import UsageError

REPORT_FILES = ("report.md", "report.html", "results.csv", "results.json")
TEMP_PREFIX = ".report-building-"
_LINKED_FIGURE = re.compile(r"!\[[^\]]*\]\((fig-[A-Za-z0-9._-]+\.png)\)")


def written_by_report(folder: Path) -> set[str]:
    """The files of ``folder`` an earlier report wrote: its fixed files and linked figures."""
    names = {n for n in REPORT_FILES if (folder / n).is_file()}
    md = folder / "report.md"
    if md.is_file():
        names |= {m for m in _LINKED_FIGURE.findall(md.read_text(errors="replace"))
                  if (folder / m).is_file()}
    return names


@contextlib.contextmanager
def staging(out: Path):
    """A fresh temporary folder inside ``out`` for a build; removed however the build ends.
    A full disk or an unwritable ``out`` is one UsageError naming the folder."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(out)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=out))
    except OSError as exc:
        raise _disk_error(out, exc) from exc
    try:
        yield tmp
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise _disk_error(out, exc) from exc
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_abandoned(out: Path) -> None:
    """Temporary folders of builds killed outright (SIGKILL, power loss) on this machine: those
    whose process is gone; a concurrent build's folder stays."""
    for folder in out.glob(f"{TEMP_PREFIX}*"):
        pid = folder.name[len(TEMP_PREFIX):].split("-")[0]
        if not pid.isdigit() or not folder.is_dir() or folder.is_symlink():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue


def publish(tmp: Path, out: Path) -> None:
    """Move every file of ``tmp`` into ``out`` (report.md last: it names the figures the next
    build may remove), then remove the files the previous report wrote and this one did not."""
    before = written_by_report(out)
    new = sorted(p.name for p in tmp.iterdir() if p.is_file())
    new.sort(key=lambda n: n == "report.md")
    try:
        for name in new:
            os.replace(tmp / name, out / name)
    except OSError as exc:
        raise _disk_error(out, exc) from exc
    for name in sorted(before - set(new)):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()


def _disk_error(out: Path, exc: OSError) -> UsageError:
    # a full disk is the machine's failure (exit 1), a folder that cannot be written the input's (2)
    kind = DiskFull if is_disk_full(exc) else UsageError
    return kind(f"cannot write the report into {out} ({exc.strerror or exc}); free space "
                "or choose another --out: the previous report there is unchanged")
