"""Every Python block of the README runs, in order, in one namespace: the docs cannot drift."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from poolbench import registry

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    blocks = python_blocks()
    assert len(blocks) >= 3, "the README's Python API, plugin and contract examples are missing"
    assert any("poolbench.run(" in b for b in blocks)


@pytest.mark.slow  # the API example trains a (tiny) model
def test_every_readme_python_block_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # my_pool stays here
    namespace: dict = {}
    for i, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as exc:  # name the block, not just the line
            pytest.fail(f"README python block {i + 1} failed: {type(exc).__name__}: {exc}\n{block}")
    # the API block's results: a real table with the pool the example asked for
    assert list(namespace["run"].table.index) == ["avg"]
    assert set(namespace["frame"]["suite"]) == {"shift"}
    assert tuple(namespace["y"].shape) == (8, 64, 16, 16)
    assert namespace["x_hat"].shape == namespace["x"].shape
