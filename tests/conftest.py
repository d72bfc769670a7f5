import os

import pytest
import torch

# Tiny tensors run fastest single-threaded, and the CI machine has 2 cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Checkpoints and generated data sets go to a per-session temporary cache."""
    if "POOLBENCH_CACHE_KEEP" not in os.environ:
        monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
