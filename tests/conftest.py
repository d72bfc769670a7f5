import os

import pytest
import torch

from poolbench.cli import main

# Tiny tensors run fastest single-threaded, and the CI machine has 2 cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Checkpoints and generated data sets go to a per-session temporary cache; cells run in
    the test's process unless a test asks for an executor (the default, auto, would spawn
    workers for any run of two or more cells), on one thread unless a test asks otherwise."""
    if "POOLBENCH_CACHE_KEEP" not in os.environ:
        monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("POOLBENCH_EXECUTOR", "sequential")
    # and on one thread, as this process: the free-core default would give a cell 2 threads on
    # an idle 2-core machine, and a result computed here would differ in its last bits
    monkeypatch.setenv("POOLBENCH_THREADS", "1")


@pytest.fixture
def cli(capsys):
    """The CLI in this process: (exit code, stdout, stderr)."""
    def _run(*args):
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return _run
