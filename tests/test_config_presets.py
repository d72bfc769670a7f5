"""The presets of the top-level suites/ folder are package data (poolbench/presets links to it):
read through importlib.resources in place, and carried by a built wheel."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from poolbench.config import PRESET_DIR, list_presets, load_preset, train_config
from poolbench.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def test_every_preset_of_suites_is_listed_and_loads():
    on_disk = sorted(p.stem for p in (REPO / "suites").glob("*.toml"))
    assert list_presets() == on_disk and "quick" in on_disk
    for name in on_disk:
        assert load_preset(name)["train"], name
    assert (PRESET_DIR / "quick.toml").read_text() == (REPO / "suites" / "quick.toml").read_text()


@pytest.mark.slow  # builds a wheel in a subprocess
def test_a_built_wheel_carries_the_presets(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, timeout=600)
    (wheel,) = tmp_path.glob("poolbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"poolbench/presets/{p.name}" for p in (REPO / "suites").glob("*.toml")} <= names
    assert "poolbench/pools/lift_kernel.c" in names


# --- [train.<dataset>] tables ------------------------------------------------------------------

RECIPE = '[train]\ndataset = "shapes"\nepochs = 6\nlr = 0.05\n[train.photos]\nepochs = 12\n'


def _preset(tmp_path, text: str) -> dict:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return load_preset(str(path))


def test_dataset_table_applies_to_its_dataset_only(tmp_path):
    preset = _preset(tmp_path, RECIPE)
    assert train_config(preset, "max", 0).epochs == 6                        # shapes: [train]
    photos = train_config(preset, "max", 0, {"dataset": "photos"})
    assert (photos.epochs, photos.lr, photos.dataset) == (12, 0.05, "photos")  # the rest from [train]


def test_flags_win_over_the_dataset_table(tmp_path):
    preset = _preset(tmp_path, RECIPE)
    assert train_config(preset, "max", 0, {"dataset": "photos", "epochs": 3}).epochs == 3


def test_the_quick_preset_trains_both_built_in_datasets_with_one_recipe():
    # measured to a plateau on both (docs/measurements.md, "The 12-epoch recipe")
    preset = load_preset("quick")
    shapes = train_config(preset, "lift", 0).to_dict()
    photos = train_config(preset, "lift", 0, {"dataset": "photos"}).to_dict()
    assert shapes.pop("dataset") == "shapes" and photos.pop("dataset") == "photos"
    assert shapes == photos and shapes["epochs"] == 12


def test_unknown_key_in_a_dataset_table_is_refused_in_one_line(tmp_path):
    with pytest.raises(UsageError, match=r"unknown \[train\] keys \['photos.epoch'\]"):
        _preset(tmp_path, '[train]\nepochs = 6\n[train.photos]\nepoch = 12\n')
