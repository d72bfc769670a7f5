"""The presets of the top-level suites/ folder are package data (poolbench/presets links to it):
read through importlib.resources in place, and carried by a built wheel."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from poolbench.config import PRESET_DIR, list_presets, load_preset

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
