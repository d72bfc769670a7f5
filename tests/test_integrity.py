"""The damage matrix of issue 24 at the level of the files: rows, predictions, cached models and
generated sets, each truncated, bit-flipped, deleted, hand-edited and swapped with another
entry's. Every case is detected with one warning line naming the file, the damaged files are
moved into .damaged/ unchanged (never deleted), no damaged value is returned, and the entry is
computed again; with strict, the read is refused in one line and nothing moves.

The end-to-end matrix through the command line (the rerun prints the true table) is in
tests/test_integrity_cli.py (slow: it trains).
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from poolbench.config import TrainConfig
from poolbench.distortions.jobs import Job, generate
from poolbench.errors import UsageError
from poolbench.integrity import DamagedFileWarning
from poolbench.report import build_report
from poolbench.store import ResultStore, config_hash, load_results
from poolbench.training import cache
from poolbench.training.loop import TrainResult

SUITE = "accuracy"


# --- the damage, applied to one file -----------------------------------------------------------

def truncate(path: Path, other: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def flip(path: Path, other: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 10] = bytes(b ^ 0xFF for b in data[middle:middle + 10])
    path.write_bytes(bytes(data))


def delete(path: Path, other: Path) -> None:
    path.unlink()


def swap(path: Path, other: Path) -> None:
    """The file of another entry at this entry's name."""
    shutil.copyfile(other, path)


DAMAGE = {"truncate": truncate, "flip": flip, "delete": delete, "swap": swap}


def some_fast(cases, fast):
    """``cases`` as parameters, all but the ``fast`` ones marked slow (the fast suite's budget)."""
    return [pytest.param(*(c if isinstance(c, tuple) else (c,)), id="-".join(c) if isinstance(c, tuple) else c,
                         marks=() if c in fast else pytest.mark.slow) for c in cases]


def damaged_once(call):
    """``call()``'s value and the text of the one DamagedFileWarning it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call()
    texts = [str(w.message) for w in caught if issubclass(w.category, DamagedFileWarning)]
    assert len(texts) == 1 and "\n" not in texts[0], texts
    return value, texts[0]


# --- rows and predictions ------------------------------------------------------------------------

def _cell(pool):
    cell = {"suite": SUITE, "train": {"pool": pool, "seed": 0}}
    return cell, config_hash(cell)


def _stored(root: Path) -> tuple[ResultStore, dict]:
    """Two cells (max and lift) with rows and predictions; returns the truth per hash."""
    store, truth = ResultStore(root), {}
    for pool, error, wrong in (("max", 86.72, [1, 1, 0, 1]), ("lift", 80.47, [1, 0, 0, 1])):
        cell, chash = _cell(pool)
        rows = [{"pool": pool, "metric": "top1_error", "value": error, "predictions": "wrong"}]
        store.write(SUITE, chash, cell, rows, {"wrong": np.array(wrong, dtype=bool)})
        truth[chash] = (rows, np.array(wrong, dtype=bool))
    return store, truth


def hand_edit_json(path: Path, other: Path) -> None:
    data = json.loads(path.read_text())
    data["rows"][0]["value"] = 12.5
    path.write_text(json.dumps(data))


def hand_edit_npz(path: Path, other: Path) -> None:
    """A valid .npz with other predictions (the cell hash inside kept)."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["wrong"] = ~arrays["wrong"]
    np.savez_compressed(path, **arrays)


ROW_DAMAGE = {**DAMAGE, "hand-edit": hand_edit_json}
NPZ_DAMAGE = {**DAMAGE, "hand-edit": hand_edit_npz}
CASES = ([("json", name) for name in ROW_DAMAGE if name != "delete"]  # a deleted row file: not stored
         + [("npz", name) for name in NPZ_DAMAGE])


@pytest.mark.parametrize("suffix,damage", some_fast(CASES, {("json", "hand-edit"), ("npz", "flip"), ("npz", "swap")}))
def test_damaged_cell_is_set_aside_in_one_line_and_never_read(tmp_path, suffix, damage):
    store, truth = _stored(tmp_path)
    (lift, (rows, wrong)), (other_hash, (other_rows, _)) = list(truth.items())[1], list(truth.items())[0]
    target = store.path(SUITE, lift).with_suffix(f".{suffix}")
    other = store.path(SUITE, other_hash).with_suffix(f".{suffix}")
    (ROW_DAMAGE if suffix == "json" else NPZ_DAMAGE)[damage](target, other)
    before = {p.name: p.read_bytes() for p in target.parent.iterdir() if p.name.startswith(lift)}

    with pytest.raises(UsageError) as refused:  # an audit refuses, naming the file, moving nothing
        ResultStore(tmp_path, strict=True).has(SUITE, lift)
    assert "\n" not in str(refused.value) and str(target) in str(refused.value)
    assert {p.name: p.read_bytes() for p in target.parent.iterdir() if p.name.startswith(lift)} == before

    stored, text = damaged_once(lambda: store.has(SUITE, lift))
    assert stored is False and str(target) in text
    aside = tmp_path / ".damaged" / SUITE
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before  # moved whole, unchanged
    assert store.read(SUITE, other_hash) == other_rows  # the other cell is untouched
    # computed again, it reads back as the truth
    store.write(SUITE, lift, _cell("lift")[0], rows, {"wrong": wrong})
    assert store.read(SUITE, lift) == rows and np.array_equal(store.arrays(SUITE, lift)["wrong"], wrong)


@pytest.mark.parametrize("suffix,damage", some_fast(CASES, {("json", "hand-edit")}))
def test_a_report_never_shows_a_damaged_cells_rows(tmp_path, suffix, damage):
    store, truth = _stored(tmp_path)
    (lift, _), (other_hash, _) = list(truth.items())[1], list(truth.items())[0]
    target = store.path(SUITE, lift).with_suffix(f".{suffix}")
    (ROW_DAMAGE if suffix == "json" else NPZ_DAMAGE)[damage](
        target, store.path(SUITE, other_hash).with_suffix(f".{suffix}"))
    frame, text = damaged_once(lambda: load_results(tmp_path))
    assert str(target) in text and list(frame["pool"]) == ["max"] and list(frame["value"]) == [86.72]


def test_report_strict_refuses_a_damaged_store_in_one_line_and_writes_nothing(tmp_path):
    store, truth = _stored(tmp_path / "results")
    lift = list(truth)[1]
    hand_edit_json(store.path(SUITE, lift).with_suffix(".json"), None)
    with pytest.raises(UsageError) as err:
        build_report(str(tmp_path / "results"), str(tmp_path / "out"), illustrations=False, strict=True)
    message = str(err.value)
    assert "\n" not in message and f"{lift}.json failed verification" in message and "--strict" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert store.path(SUITE, lift).exists()    # strict moves nothing aside


def test_a_cell_written_before_digests_is_read_and_refused_only_when_strict(tmp_path):
    cell, chash = _cell("max")
    path = tmp_path / SUITE / f"{chash}.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"cell": cell, "rows": [{"metric": "m", "value": 1.0}]}))
    assert ResultStore(tmp_path).read(SUITE, chash) == [{"metric": "m", "value": 1.0}]
    with pytest.raises(UsageError, match="before results carried a digest"):
        ResultStore(tmp_path, strict=True).has(SUITE, chash)
    # another cell's old file at this name is caught by the hash of the cell it holds
    _, other = _cell("lift")
    shutil.copyfile(path, tmp_path / SUITE / f"{other}.json")
    stored, text = damaged_once(lambda: ResultStore(tmp_path).has(SUITE, other))
    assert stored is False and "not the cell" in text


# --- cached models -------------------------------------------------------------------------------

def _linear(cfg, bundle):
    return nn.Linear(3, 2)


TASK = SimpleNamespace(build=_linear)
BUNDLE = SimpleNamespace(num_classes=2)


@pytest.fixture
def trainer(monkeypatch, tmp_path):
    """``cache.train`` replaced by a 'training' that makes the recipe's weights from its seed,
    counting its calls; the cache in tmp_path."""
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    calls = []

    def train(cfg, bundle, device, progress, task, settings, resume):
        calls.append(cfg.seed)
        torch.manual_seed(cfg.seed)
        return TrainResult(model=nn.Linear(3, 2), info={"epochs": 1}, num_classes=2)

    monkeypatch.setattr(cache, "train", train)
    return calls


def _model(cfg):
    return cache.get_trained_model(cfg, BUNDLE, progress=False, task=TASK)


def hand_edit_record(path: Path, other: Path) -> None:
    record = json.loads(path.with_suffix(".json").read_text())
    record["info"]["epochs"] = 100
    record["sha256"] = "0" * 64
    path.with_suffix(".json").write_text(json.dumps(record))


def delete_record(path: Path, other: Path) -> None:
    path.with_suffix(".json").unlink()


def swap_both(path: Path, other: Path) -> None:
    """Another recipe's model and its record at this recipe's names."""
    shutil.copyfile(other, path)
    shutil.copyfile(other.with_suffix(".json"), path.with_suffix(".json"))


MODEL_DAMAGE = {"truncate": truncate, "flip": flip, "delete-record": delete_record, "swap": swap,
                "swap-with-record": swap_both, "hand-edit": hand_edit_record}


@pytest.mark.parametrize("damage", some_fast(MODEL_DAMAGE, {"flip", "swap-with-record"}))
def test_damaged_cached_model_is_set_aside_and_trained_again(trainer, tmp_path, damage):
    cfg, other_cfg = TrainConfig(seed=1), TrainConfig(seed=2)
    truth = _model(cfg).model.weight.detach().clone()
    _model(other_cfg)
    path, other = cache.checkpoint_path(cfg), cache.checkpoint_path(other_cfg)
    assert trainer == [1, 2] and torch.equal(_model(cfg).model.weight, truth) and trainer == [1, 2]
    MODEL_DAMAGE[damage](path, other)
    before = {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.stem)
              and not p.name.endswith(".lock")}

    with pytest.raises(UsageError) as refused:
        cache.get_trained_model(cfg, BUNDLE, progress=False, task=TASK, strict=True)
    assert "\n" not in str(refused.value) and path.stem in str(refused.value) and trainer == [1, 2]

    result, text = damaged_once(lambda: _model(cfg))
    assert path.stem in text and trainer == [1, 2, 1]            # trained again
    assert torch.equal(result.model.weight, truth)               # the true model, not the damaged one
    aside = tmp_path / "cache" / ".damaged" / "checkpoints"
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before
    assert torch.equal(_model(other_cfg).model.weight, _model(other_cfg).model.weight) and trainer == [1, 2, 1]


def test_a_model_cached_before_digests_is_used_unless_strict(trainer):
    cfg = TrainConfig(seed=3)
    _model(cfg)
    record_path = cache.checkpoint_path(cfg).with_suffix(".json")
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({k: v for k, v in record.items() if k not in ("sha256", "hash")}))
    assert _model(cfg).info["from_cache"] and trainer == [3]
    with pytest.raises(UsageError, match="before models carried a digest"):
        cache.get_trained_model(cfg, BUNDLE, progress=False, task=TASK, strict=True)


def test_a_cached_model_records_how_it_was_trained(trainer):
    torch.set_num_threads(1)
    result = _model(TrainConfig(seed=4))
    assert result.info["threads"] == 1 and result.info["device"] == "cpu"
    again = _model(TrainConfig(seed=4))
    assert again.info["from_cache"] and again.info["threads"] == 1 and again.info["device"] == "cpu"


# --- generated sets ------------------------------------------------------------------------------

def _invert(chunk, start, offset):
    return 255 - chunk + offset


def _jobs(root: Path) -> list[Job]:
    return [Job(key=(name, 1), func=_invert, params={"offset": offset}, item_shape=(4, 4, 3),
                path=root / "corruptions" / name / f"1-{offset}.npy", manifest={"name": name})
            for name, offset in (("fog", 0), ("snow", 1))]


def hand_edit_array(path: Path, other: Path) -> None:
    array = np.load(path)
    array[0, 0, 0, 0] ^= 1
    np.save(path, array)


def delete_manifest(path: Path, other: Path) -> None:
    path.with_suffix(".json").unlink()


SET_DAMAGE = {"truncate": truncate, "flip": flip, "delete-manifest": delete_manifest, "swap": swap,
              "hand-edit": hand_edit_array}


@pytest.mark.parametrize("damage", some_fast(SET_DAMAGE, {"hand-edit"}))
def test_damaged_generated_set_is_set_aside_and_generated_again(tmp_path, damage):
    images = np.random.default_rng(0).integers(0, 250, (5, 4, 4, 3), dtype=np.uint8)
    jobs = _jobs(tmp_path)
    first = generate(jobs, images, workers=0, progress=False, cache_dir=tmp_path)
    truth = first[("fog", 1)].load(False)
    assert np.array_equal(truth, 255 - images)
    path, other = jobs[0].path, jobs[1].path
    SET_DAMAGE[damage](path, other)
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}

    sources, text = damaged_once(lambda: generate(_jobs(tmp_path), images, workers=0, progress=False,
                                                  cache_dir=tmp_path))
    assert str(path.stem) in text
    assert np.array_equal(sources[("fog", 1)].load(False), truth)
    assert np.array_equal(sources[("snow", 1)].load(False), (256 - images.astype(np.int64)) % 256)
    aside = tmp_path / ".damaged" / "corruptions" / "fog"
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before


def test_a_damaged_generated_set_is_refused_under_strict_and_left_in_place(tmp_path):
    # regression: --strict reached rows and models, but a damaged set was regenerated anyway
    images = np.random.default_rng(0).integers(0, 250, (5, 4, 4, 3), dtype=np.uint8)
    jobs = _jobs(tmp_path)
    generate(jobs, images, workers=0, progress=False, cache_dir=tmp_path)
    path = jobs[0].path
    hand_edit_array(path, None)
    damaged = path.read_bytes()
    with pytest.raises(UsageError) as err:
        generate(_jobs(tmp_path), images, workers=0, progress=False, cache_dir=tmp_path, strict=True)
    assert str(path) in str(err.value) and "--strict" in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == damaged and not (tmp_path / ".damaged").exists()
