"""The layer table of ARCHITECTURE.md is executable: import-linter's layers contract in
pyproject.toml. It holds for the package, and it fails when an upward import is planted."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

import poolbench

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"


def test_layers_contract_holds(tmp_path):
    assert lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0


def test_no_module_imports_the_package_root():
    # the root imports the parts (api, pools, registry...); a part importing the root back is
    # a cycle that works only by import order
    graph = grimp.build_graph("poolbench", cache_dir=None)
    importers = sorted(graph.find_modules_that_directly_import("poolbench"))
    assert importers == []


def test_no_two_top_level_parts_import_each_other():
    graph = grimp.build_graph("poolbench", cache_dir=None)
    parts = sorted({m.split(".")[1] for m in graph.modules if m.count(".") >= 1})
    edges = set()
    for module in graph.modules:
        if module.count(".") < 1:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = module.split(".")[1], imported.split(".")
            if len(b) > 1 and b[1] != a:
                edges.add((a, b[1]))
    cycles = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert parts and cycles == []


def _lint_copy(tmp_path: Path, plant: str | None) -> subprocess.CompletedProcess:
    """lint-imports on a copy of the package, with ``plant`` appended to poolbench/store.py."""
    shutil.copytree(Path(poolbench.__file__).parent, tmp_path / "poolbench", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    if plant:
        with open(tmp_path / "poolbench" / "store.py", "a") as fh:
            fh.write(f"\n{plant}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache", "--no-logo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # spawns lint-imports on a copy of the package
def test_a_planted_upward_import_breaks_the_contract(tmp_path):
    clean = _lint_copy(tmp_path / "clean", None)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    planted = _lint_copy(tmp_path / "planted", "from . import api  # noqa: E402  (an upward import)")
    assert planted.returncode == 1
    assert "poolbench layers BROKEN" in planted.stdout
    assert "poolbench.store -> poolbench.api" in planted.stdout
