"""A result store of accuracy cells written through ResultStore with real per-image predictions,
so that the report's intervals and verdicts exist and every error is known in advance."""
from __future__ import annotations

import numpy as np
import pytest

from poolbench.canonical import digest
from poolbench.store import ResultStore

N_IMAGES = 200
TIME = "2025-01-01T00:00:00+00:00"


def accuracy_cell(pool: str, dataset: str, seed: int, top1: float, *, epochs: int = 2,
                  curve: tuple[float, ...] = ()) -> tuple[str, dict, list[dict], dict]:
    """(hash, cell, rows, arrays) of one accuracy cell whose stored predictions miss exactly
    ``top1`` % of ``N_IMAGES`` labels (and, of those, half miss the top 5 too)."""
    cell = {"suite": "accuracy", "train": {"pool": pool, "model": "convnet", "dataset": dataset,
                                           "epochs": epochs, "batch_size": 32, "seed": seed}}
    chash = digest(cell)
    rng = np.random.default_rng(int(digest([pool, dataset, seed])[:8], 16))
    labels = rng.integers(0, 10, N_IMAGES)
    preds = (labels[:, None] + np.arange(5)[None, :]) % 10       # top-1 right, top-5 right
    wrong = rng.permutation(N_IMAGES)[: round(top1 * N_IMAGES / 100)]
    preds[wrong, 0] = (labels[wrong] + 5) % 10                     # top-1 wrong
    top5_wrong = wrong[: len(wrong) // 2]
    preds[top5_wrong] = (labels[top5_wrong, None] + 5 + np.arange(5)[None, :]) % 10
    base = {"suite": "accuracy", "config_hash": chash, "pool": pool, "pool_options": "",
            "pool_source": "built-in", "pool_version": "0.1.0", "model": "convnet",
            "dataset": dataset, "seed": seed, "device": "cpu", "threads": 1, "dtype": "float32",
            "memory_format": "channels_last", "torch_version": "2.0.0", "poolbench_version": "0.1.0",
            "git_commit": "abc123def456", "host": "testhost", "time": TIME, "error": ""}
    rows = [{**base, "metric": "top1_error", "value": 100.0 * len(wrong) / N_IMAGES, "unit": "%",
             "n": N_IMAGES, "predictions": "clean"},
            {**base, "metric": "top5_error", "value": 100.0 * len(top5_wrong) / N_IMAGES, "unit": "%",
             "n": N_IMAGES, "predictions": "clean"},
            {**base, "metric": "params", "value": 1000.0, "unit": "count"}]
    rows += [{**base, "metric": "curve_test_error", "value": v, "unit": "%", "epoch": e}
             for e, v in enumerate(curve, start=1)]
    return chash, cell, rows, {"labels": labels, "clean": preds}


@pytest.fixture(scope="session")
def make_cell():
    """``accuracy_cell`` for module-scoped fixtures."""
    return accuracy_cell


@pytest.fixture
def write_cell():
    """write_cell(root, pool, dataset, seed, top1, **kw) -> the cell's hash."""
    def write(root, pool, dataset, seed, top1, **kw):
        chash, cell, rows, arrays = accuracy_cell(pool, dataset, seed, top1, **kw)
        ResultStore(root).write("accuracy", chash, cell, rows, arrays)
        return chash
    return write
