"""Issue 24, part 6: every option has a range checked where it enters, and the notes say what
was computed. Each case is one of the issue's findings: the value that got through, and the
one line it gets now."""
from __future__ import annotations

import os
import warnings

import pandas as pd
import pytest

from poolbench import api
from poolbench.config import train_config
from poolbench.errors import PluginError, PoolOptionError, UsageError
from poolbench.pools.lift import LiftDownPool2d
from poolbench.registry import load_plugin
from poolbench.specs import parse_spec
from poolbench.suites import get_suite
from poolbench.suites.robustness import RobustnessOptions, unnormalized_note


def test_a_lifting_kernel_wider_than_any_feature_map_is_refused_before_allocating():
    with pytest.raises(PoolOptionError, match="kernel_size=100001 is not accepted; choose a positive integer up to 64"):
        LiftDownPool2d(32, kernel_size=100001)
    assert LiftDownPool2d(4, kernel_size=64).kernel_size == 64


def test_a_preset_value_out_of_range_names_the_files_key_not_a_flag(tmp_path):
    preset = {"train": {"epochs": 1_000_000_000}, "_path": str(tmp_path / "mine.toml")}
    with pytest.raises(UsageError) as refused:
        train_config(preset, "max", 0)
    assert str(refused.value) == (f"epochs must be in [1, 10000], got 1000000000 (key epochs in [train] of "
                                  f"{tmp_path / 'mine.toml'})")
    preset = {"train": {"epochs": 2.5, "photos": {"epochs": 3}}, "_path": "p.toml"}
    with pytest.raises(UsageError, match=r"epochs must be an integer, got 2.5 \(key epochs in \[train\] of p.toml\)"):
        train_config(preset, "max", 0)
    # a key of the dataset's own table is named in that table
    with pytest.raises(UsageError, match=r"got 0 \(key epochs in \[train.photos\] of p.toml\)"):
        train_config({"train": {"photos": {"epochs": 0}}, "_path": "p.toml"}, "max", 0, {"dataset": "photos"})
    # a flag that overrides the file's bad value wins, and is named when it is the bad one
    assert train_config({"train": {"epochs": 0}, "_path": "p.toml"}, "max", 0, {"epochs": 2}).epochs == 2
    with pytest.raises(UsageError, match=r"epochs must be in \[1, 10000\], got 0 \(--epochs\)"):
        train_config({"train": {}, "_path": "p.toml"}, "max", 0, {"epochs": 0})


def test_a_repeated_spec_key_is_refused_not_silently_the_last():
    with pytest.raises(PoolOptionError, match="'kernel_size' is given twice"):
        parse_spec("lift:kernel_size=3,kernel_size=7")
    assert parse_spec("lift:kernel_size=7") == ("lift", {"kernel_size": 7})


def test_a_plugin_folder_is_named_a_folder_not_missing(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "pyproject.toml").write_text("")
    with pytest.raises(PluginError, match=r"is a folder, not a \.py file; install the project"):
        load_plugin(str(tmp_path / "pkg"))
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "mypool.py").write_text("")
    with pytest.raises(PluginError, match=r"pass one of its \.py files \(mypool\.py\)"):
        load_plugin(str(tmp_path / "loose"))


def test_the_unnormalised_mce_note_counts_the_corruptions_evaluated():
    note = unnormalized_note(("gaussian_noise", "fog"), "benchmark")
    assert "the 2 benchmark corruptions evaluated (gaussian_noise, fog)" in note and "15" in note
    assert get_suite("robustness").notes(RobustnessOptions(corruptions=("gaussian_noise", "fog")))[1] == note
    assert unnormalized_note(RobustnessOptions().corruptions, "benchmark") == \
        "unnorm. mCE: mean error over the 15 benchmark corruptions"


def _rows(pool, error, clean):
    base = {"suite": "robustness", "pool": pool, "model": "m", "dataset": "d", "seed": 0,
            "corruption_source": "generated", "subset": 8, "reference": "ref"}
    return [{**base, "metric": "clean_error", "value": clean},
            {**base, "metric": "error", "corruption": "fog", "severity": 1, "value": error}]


def test_a_blank_relative_mce_says_why():
    # the reference loses nothing under fog (error = clean error): relative CE divides by zero
    frame = pd.DataFrame(_rows("ref", 20.0, 20.0) + _rows("pool", 30.0, 10.0))
    table = get_suite("robustness").table(frame)
    assert pd.isna(table.loc["pool", "rel. mCE"])
    assert any("rel. mCE blank: the reference ref loses no accuracy under fog" in n
               for n in table.attrs["notes"])


@pytest.mark.slow
def test_more_threads_than_cores_is_warned_and_a_subset_beyond_the_test_set_refused(tmp_path):
    tiny = dict(train_size=64, test_size=32, epochs=1, batch_size=32, seed=0, results=str(tmp_path / "r"),
                progress=False, executor="sequential")
    cores = len(os.sched_getaffinity(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api.run("accuracy", ["max"], threads=cores + 1, **tiny)
    assert any(f"--threads {cores + 1} is more than the {cores} cores" in str(w.message) for w in caught)
    with pytest.raises(UsageError, match=r"--subset 100 is larger than the test set \(32 images\); pass --subset 32"):
        api.run("robustness", ["max"], subset=100, corruptions="fog", severities="1", **tiny)


def test_a_suite_table_value_out_of_range_names_the_files_key(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text("[robustness]\nseverities = [1, 9]\nsubset = 8\n")
    with pytest.raises(UsageError) as refused:
        api.run("robustness", ["max"], preset=str(preset), results=str(tmp_path / "r"))
    assert str(refused.value) == f"severities must be in [1, 5], got 9 (key severities in [robustness] of {preset})"
    with pytest.raises(UsageError, match=r"got 7 \(--severities\)"):  # the flag wins, and is named
        api.run("robustness", ["max"], preset=str(preset), severities="7", results=str(tmp_path / "r"))
