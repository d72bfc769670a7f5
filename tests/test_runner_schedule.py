"""The process executor's schedule: every training a run needs goes first, each once, and a
cell is queued when its model is made, so that evaluations fill the cores that trainings of
unequal length leave idle (runner._in_workers). Run on a one-thread pool, whose order of
execution is the order of submission."""
from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass

import pytest

from poolbench import runner
from poolbench.errors import PoolbenchError
from poolbench.options import check_fields
from poolbench.runner import RunContext
from poolbench.store import make_row
from poolbench.suites import register_suite, unregister_suite
from poolbench.suites.base import Suite, pool_columns

EVENTS: list[tuple[str, str]] = []


@dataclass(frozen=True)
class _Options:
    def __post_init__(self):
        check_fields(self, "schedule")


class ScheduleSuite(Suite):
    """Cells that name their training: "none" trains nothing, "made" has its model already,
    "bad" fails to train; cells of one name share one training."""

    name = "schedule"
    Options = _Options

    def cells(self, train_configs, options):
        return []

    def training_key(self, cell, ctx):
        return None if cell["name"] in ("none", "made") else cell["name"]

    def train_ahead(self, cell, ctx):
        EVENTS.append(("train", cell["name"]))
        if cell["name"] == "bad":
            raise PoolbenchError("diverged")

    def run_cell(self, cell, ctx):
        EVENTS.append(("cell", f"{cell['name']}{cell['seed']}"))
        return [make_row({**pool_columns("max"), "seed": cell["seed"]}, "things", 1, "count")]

    def error_row(self, cell, ctx, message):
        return make_row(pool_columns("max"), "error", None, error=message)

    def table(self, frame, options=None, store=None):
        return frame


@pytest.fixture
def schedule_suite():
    EVENTS.clear()
    register_suite(ScheduleSuite())
    yield
    unregister_suite("schedule")


def test_trainings_go_first_each_once_and_cells_follow_their_own(schedule_suite, tmp_path):
    cells = [{"name": p, "pool": p, "seed": s} for p, s in
             (("lift", 0), ("lift", 1), ("none", 0), ("max", 0), ("made", 0), ("bad", 0))]
    ctx = RunContext(results=str(tmp_path), progress=False, threads=1)
    prepared, lines = [], []
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        done = dict(runner._in_workers(pool, "schedule", list(enumerate(cells)), ctx,
                                       lambda: prepared.append(len(EVENTS)), lines.append))
    assert sorted(done) == list(range(6)) and all(computed for _, computed in done.values())
    assert EVENTS == [
        ("train", "lift"),                       # one training for the two lift cells
        ("cell", "none0"),                       # nothing to train: queued at once, in order
        ("train", "max"),
        ("cell", "made0"),                       # its model is made: evaluated at once
        ("train", "bad"),                        # queued behind every training ...
        ("cell", "lift0"), ("cell", "lift1"),    # ... the evaluations, as their models are made
        ("cell", "max0"),
        ("cell", "bad0"),                        # a failed training is the cell's to meet again
    ]
    assert prepared and prepared[0] <= 5  # the shared inputs are made before any waiting cell runs
    # the user hears of each model while the cells' own lines wait for the evaluations
    assert lines == ["schedule: model 1/3 trained (lift seed 0)", "schedule: model 2/3 trained (max seed 0)",
                     "schedule: model 3/3 failed (bad seed 0: diverged)"]


def test_a_cell_with_a_given_checkpoint_or_a_cached_model_trains_nothing_ahead(tmp_path, monkeypatch):
    from poolbench.config import TrainConfig
    from poolbench.suites import get_suite
    from poolbench.suites.base import train_config_of

    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    suite = get_suite("accuracy")
    cfg = TrainConfig(train_size=256, test_size=64, epochs=1, batch_size=64)
    cell = suite.cells([cfg], suite.options({}))[0]
    ctx = RunContext(results=str(tmp_path), progress=False)
    key = suite.training_key(cell, ctx)
    assert key and key == suite.training_key(suite.cells([cfg], suite.options({}))[0], ctx)
    assert suite.training_key(suite.cells([TrainConfig(**{**cfg.to_dict(), "seed": 1, "milestones": ()})],
                                          suite.options({}))[0], ctx) != key
    assert suite.training_key(cell, RunContext(results=str(tmp_path), checkpoint="model.pt")) is None
    from poolbench.training.cache import checkpoint_path
    path = checkpoint_path(train_config_of(cell))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a model")
    assert suite.training_key(cell, ctx) is None
