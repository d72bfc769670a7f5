"""Nothing is written outside the store and the cache (issue 24, part 5): a symbolic link
planted at a lock, a log, a result file or the .damaged folder leaves its target untouched, and
reading the commit takes no git lock."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from poolbench.atomic import PlantedLink, append_line
from poolbench.integrity import DamagedFileWarning
from poolbench.process import file_lock
from poolbench.store import ResultStore, config_hash, read_commit

SECRET = "the user's file\n"


@pytest.fixture
def target(tmp_path) -> Path:
    """A file outside the store that a planted link points at."""
    path = tmp_path / "outside" / "precious.txt"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


def test_a_link_planted_at_a_lock_is_refused_in_one_line(tmp_path, target):
    store = tmp_path / "results" / "accuracy"
    store.mkdir(parents=True)
    (store / ".abc.lock").symlink_to(target)
    with pytest.raises(PlantedLink) as refused:
        with file_lock(store / ".abc"):
            pass
    assert "\n" not in str(refused.value) and ".abc.lock" in str(refused.value)
    assert target.read_text() == SECRET


def test_a_dangling_link_at_a_lock_creates_nothing(tmp_path):
    elsewhere = tmp_path / "elsewhere.txt"
    (tmp_path / "model.pt.lock").symlink_to(elsewhere)
    with pytest.raises(PlantedLink):
        with file_lock(tmp_path / "model.pt"):
            pass
    assert not elsewhere.exists()


def test_a_lock_file_is_not_truncated(tmp_path):
    (tmp_path / "x.lock").write_text("kept")
    with file_lock(tmp_path / "x"):
        pass
    assert (tmp_path / "x.lock").read_text() == "kept"


def test_a_link_planted_at_the_log_is_refused(tmp_path, target):
    log = tmp_path / "commands.log"
    log.symlink_to(target)
    with pytest.raises(PlantedLink, match="symbolic link"):
        append_line(log, "poolbench run accuracy")
    assert target.read_text() == SECRET


def test_a_link_planted_at_a_result_file_is_replaced_not_written_through(tmp_path, target):
    cell = {"suite": "accuracy", "train": {"pool": "max"}}
    chash = config_hash(cell)
    store = ResultStore(tmp_path / "results")
    path = store.path("accuracy", chash)
    path.parent.mkdir(parents=True)
    path.symlink_to(target)
    # read first: the link's target is no result file of this cell; the link is moved, not its target
    with pytest.warns(DamagedFileWarning):
        assert store.has("accuracy", chash) is False
    assert target.read_text() == SECRET and (tmp_path / "results" / ".damaged" / "accuracy" / path.name).is_symlink()
    path.symlink_to(target)
    store.write("accuracy", chash, cell, [{"metric": "m", "value": 1.0}])
    assert target.read_text() == SECRET and not path.is_symlink()
    assert json.loads(path.read_text())["rows"] == [{"metric": "m", "value": 1.0}]


def test_a_link_planted_at_the_damaged_folder_is_refused(tmp_path, target):
    cell = {"suite": "accuracy", "train": {"pool": "max"}}
    chash = config_hash(cell)
    store = ResultStore(tmp_path)
    store.write("accuracy", chash, cell, [{"metric": "m", "value": 1.0}])
    store.path("accuracy", chash).write_text("{}")
    (tmp_path / ".damaged").symlink_to(target.parent, target_is_directory=True)
    with pytest.raises(Exception, match="symbolic link"):
        store.has("accuracy", chash)
    assert sorted(p.name for p in target.parent.iterdir()) == ["precious.txt"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def test_reading_the_commit_takes_no_index_lock_and_rewrites_no_index(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    # the file's stat no longer matches the index: a plain `git status` refreshes (rewrites) the
    # index under .git/index.lock
    os.utime(repo / "a.txt", (1, 1))
    index = repo / ".git" / "index"
    before = (index.read_bytes(), index.stat().st_mtime_ns)
    commit = read_commit(repo)
    assert commit == _git(repo, "rev-parse", "--short=12", "HEAD").strip()
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before
    # while the user's own git command holds the lock, the read still works
    (repo / ".git" / "index.lock").write_text("")
    assert read_commit(repo) == commit
    (repo / ".git" / "index.lock").unlink()
    subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], check=True, capture_output=True)
    assert index.stat().st_mtime_ns != before[1]  # the oracle: a plain status does rewrite it
