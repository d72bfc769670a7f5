"""Result store: config hash, atomic writes, loading rows as a DataFrame."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from poolbench import store
from poolbench.config import TrainConfig
from poolbench.errors import UsageError
from poolbench.integrity import DamagedFileWarning
from poolbench.store import ROW_COLUMNS, ResultStore, config_hash, load_results, make_row

CELL = {"train": TrainConfig(train_size=256, test_size=64, epochs=1).to_dict(), "subset": 32}


def test_config_hash_is_sha256_of_sorted_compact_json():
    expected = hashlib.sha256(b'{"a":1,"b":[1,2]}').hexdigest()
    assert config_hash({"b": [1, 2], "a": 1}) == expected


@pytest.mark.parametrize("field,value", [
    ("results", "/elsewhere"), ("data_root", "/data"), ("cache_dir", "/c"), ("workers", 8),
    ("device", "cuda:1"), ("threads", 3), ("progress", False), ("executor", "slurm"),
    ("corruption_data", "/x/CIFAR-10-C"), ("json", True), ("verbose", 2),
])
def test_config_hash_ignores_non_result_fields(field, value):
    assert config_hash({**CELL, field: value}) == config_hash(CELL)


@pytest.mark.parametrize("change", [
    {"subset": 64},
    {"train": {**CELL["train"], "lr": 0.1}},
    {"train": {**CELL["train"], "seed": 1}},
    {"train": {**CELL["train"], "pool": "avg"}},
    {"corruptions": ["fog"]},
])
def test_config_hash_changes_with_result_fields(change):
    assert config_hash({**CELL, **change}) != config_hash(CELL)


def test_rows_round_trip_and_numpy_values_stay_numbers(tmp_path):
    rs = ResultStore(tmp_path)
    rows = [make_row({"pool": "max", "seed": 0}, "top1_error", np.float32(12.5), "%", np.int64(64),
                     severity=np.int64(3))]
    path = rs.write("accuracy", "abc", {"suite": "accuracy"}, rows)
    assert path == tmp_path / "accuracy" / "abc.json"
    back = rs.read("accuracy", "abc")
    assert back[0]["value"] == 12.5 and back[0]["n"] == 64 and back[0]["severity"] == 3
    assert isinstance(back[0]["n"], int) and isinstance(back[0]["severity"], int)
    assert back[0]["error"] == ""


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_result_files_follow_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        path = ResultStore(tmp_path).write("accuracy", "abc", {}, [])
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("target", ["json.dumps", "os.replace"])
def test_failing_write_leaves_no_file(tmp_path, monkeypatch, target):
    rs = ResultStore(tmp_path)
    rs.write("accuracy", "keep", {}, [{"metric": "m", "value": 1.0}])

    def boom(*args, **kwargs):
        raise OSError("disk full")

    module, name = target.split(".")
    monkeypatch.setattr(getattr(store, module), name, boom)
    with pytest.raises(OSError, match="disk full"):
        rs.write("accuracy", "new", {}, [{"metric": "m", "value": 2.0}])
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "accuracy").iterdir()) == ["keep.json"]
    assert not rs.has("accuracy", "new")
    assert rs.read("accuracy", "keep")[0]["value"] == 1.0


def test_failing_write_keeps_the_previous_version(tmp_path, monkeypatch):
    rs = ResultStore(tmp_path)
    rs.write("accuracy", "c", {}, [{"metric": "m", "value": 1.0}])
    monkeypatch.setattr(store.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        rs.write("accuracy", "c", {}, [{"metric": "m", "value": 2.0}])
    monkeypatch.undo()
    assert rs.read("accuracy", "c") == [{"metric": "m", "value": 1.0}]
    assert [p.name for p in (tmp_path / "accuracy").iterdir()] == ["c.json"]


def test_load_results_has_row_columns(tmp_path):
    rs = ResultStore(tmp_path)
    rs.write("accuracy", "h1", {}, [make_row({"pool": "max", "seed": 0}, "top1_error", 10.0, "%", 64)])
    rs.write("shift", "h2", {}, [make_row({"pool": "avg", "seed": 1}, "consistency", 90.0, "%", 32,
                                          shift_kind="crop")])
    frame = load_results(tmp_path)
    assert set(ROW_COLUMNS) <= set(frame.columns)
    assert len(frame) == 2
    assert sorted(frame["metric"]) == ["consistency", "top1_error"]
    only = load_results(tmp_path, suites=["shift"])
    assert list(only["pool"]) == ["avg"] and list(only["shift_kind"]) == ["crop"]


def test_load_results_empty_store_has_columns(tmp_path):
    frame = load_results(tmp_path)
    assert len(frame) == 0 and set(ROW_COLUMNS) <= set(frame.columns)


def test_load_results_ignores_json_outside_the_layout(tmp_path):
    ResultStore(tmp_path).write("accuracy", "h1", {}, [make_row({"pool": "max"}, "params", 3.0)])
    (tmp_path / ".slurm").mkdir()
    (tmp_path / ".slurm" / "job.json").write_text("not json")
    (tmp_path / "notes.json").write_text("{}")
    assert list(load_results(tmp_path)["metric"]) == ["params"]


def test_missing_results_dir_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no results at"):
        load_results(tmp_path / "nothing")


@pytest.mark.parametrize("content", ["{truncated", '{"cell": {}}', "[1, 2]", ""])
def test_unreadable_file_is_set_aside_with_one_warning_or_refused_when_strict(tmp_path, content):
    (tmp_path / "accuracy").mkdir()
    bad = tmp_path / "accuracy" / "deadbeef.json"
    bad.write_text(content)
    with pytest.raises(UsageError) as info:
        load_results(tmp_path, strict=True)
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and "--strict" in msg and bad.read_text() == content
    with pytest.warns(DamagedFileWarning) as caught:
        frame = load_results(tmp_path)
    assert len(frame) == 0 and len(caught) == 1 and str(bad) in str(caught[0].message)
    assert not bad.exists() and (tmp_path / ".damaged" / "accuracy" / "deadbeef.json").read_text() == content


def test_written_file_is_plain_json(tmp_path):
    path = ResultStore(tmp_path).write("accuracy", "h", {"suite": "accuracy"}, [{"value": float("nan")}])
    data = json.loads(path.read_text())
    assert data["cell"] == {"suite": "accuracy"} and np.isnan(data["rows"][0]["value"])


def test_atomic_open_keeps_the_old_file_when_the_block_raises(tmp_path):
    from poolbench.atomic import atomic_open

    path = tmp_path / "sub" / "data.bin"
    with atomic_open(path, "wb") as fh:
        fh.write(b"old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_open(path, "wb") as fh:
            fh.write(b"new, half written")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["data.bin"]     # no temporary left
