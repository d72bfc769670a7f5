"""Runner: resume from the store, interrupted runs, process and Slurm (submitit local) executors."""
from __future__ import annotations

import importlib.util
import json
import textwrap

import pytest

from poolbench import registry, runner, train
from poolbench.config import TrainConfig, train_config
from poolbench.errors import UsageError
from poolbench.runner import RunContext, cell_hash, run_cells
from poolbench.store import ResultStore
from poolbench.suites import get_suite
from poolbench.suites.accuracy import AccuracySuite
from poolbench.suites.base import train_config_of

TINY = TrainConfig(train_size=256, test_size=64, epochs=1, batch_size=64).to_dict()
# metrics that depend on wall time, not on the model
TIMING = {"train_time", "train_throughput"}


def cells_for(pools, suite="accuracy", options=None):
    configs = [train_config({"train": TINY}, p, 0) for p in pools]
    suite = get_suite(suite)
    return suite.cells(configs, suite.options(options or {}))


def values(rows, timing=True):
    return {(r["pool"], r["metric"], r.get("corruption"), r.get("severity")): r["value"] for r in rows
            if timing or r["metric"] not in TIMING}


def quiet(msg):
    pass


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def count_training(monkeypatch):
    calls = []
    real = train.train

    def counting(cfg, *a, **k):
        calls.append(cfg.pool)
        return real(cfg, *a, **k)

    monkeypatch.setattr(train, "train", counting)
    return calls


@pytest.fixture
def count_cells(monkeypatch):
    calls = []
    real = AccuracySuite.run_cell

    def counting(self, cell, ctx):
        calls.append(cell["train"]["pool"])
        return real(self, cell, ctx)

    monkeypatch.setattr(AccuracySuite, "run_cell", counting)
    return calls


@pytest.mark.slow  # trains
def test_rerun_recomputes_only_the_deleted_cell(tmp_path, fresh_cache, count_training, count_cells):
    ctx = RunContext(results=str(tmp_path / "results"), progress=False)
    cells = cells_for(["max", "avg"])
    first = run_cells("accuracy", cells, ctx, log=quiet)
    assert (first.computed, first.skipped, first.failed) == (2, 0, 0)
    assert count_training == ["max", "avg"] and count_cells == ["max", "avg"]
    files = sorted((tmp_path / "results" / "accuracy").glob("*.json"))
    assert len(files) == 2

    # nothing missing: everything comes from the store
    second = run_cells("accuracy", cells, ctx, log=quiet)
    assert (second.computed, second.skipped) == (0, 2)
    assert count_cells == ["max", "avg"]
    assert values(second.rows) == values(first.rows)

    # delete avg's cell and its checkpoint: only avg is trained and evaluated again
    avg_hash = cell_hash("accuracy", cells[1])
    (tmp_path / "results" / "accuracy" / f"{avg_hash}.json").unlink()
    train.checkpoint_path(train_config_of(cells[1])).unlink()
    third = run_cells("accuracy", cells, ctx, log=quiet)
    assert (third.computed, third.skipped) == (1, 1)
    assert count_training == ["max", "avg", "avg"] and count_cells == ["max", "avg", "avg"]
    assert values(third.rows, timing=False) == values(first.rows, timing=False)
    assert [r["pool"] for r in third.rows] == [r["pool"] for r in first.rows]  # cell order kept


@pytest.mark.slow  # trains
def test_interrupted_run_keeps_finished_cells(tmp_path, count_cells, monkeypatch):
    ctx = RunContext(results=str(tmp_path), progress=False)
    cells = cells_for(["max", "avg"])
    real = AccuracySuite.run_cell

    def interrupt_second(self, cell, ctx):
        if cell["train"]["pool"] == "avg":
            raise KeyboardInterrupt
        return real(self, cell, ctx)

    monkeypatch.setattr(AccuracySuite, "run_cell", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run_cells("accuracy", cells, ctx, log=quiet)
    store = ResultStore(tmp_path)
    assert store.has("accuracy", cell_hash("accuracy", cells[0]))
    assert not store.has("accuracy", cell_hash("accuracy", cells[1]))
    assert [p.name for p in (tmp_path / "accuracy").iterdir()] == [f"{cell_hash('accuracy', cells[0])}.json"]

    monkeypatch.setattr(AccuracySuite, "run_cell", real)
    log = []
    report = run_cells("accuracy", cells, ctx, log=log.append)
    assert (report.computed, report.skipped) == (1, 1)
    assert any("1 of 2 cells already in" in m for m in log)
    assert {r["pool"] for r in report.rows} == {"max", "avg"}


@pytest.mark.slow  # trains
def test_rows_carry_provenance(tmp_path):
    report = run_cells("accuracy", cells_for(["max"]), RunContext(results=str(tmp_path), progress=False),
                       log=quiet)
    row = report.rows[0]
    assert row["suite"] == "accuracy" and row["config_hash"] == cell_hash("accuracy", cells_for(["max"])[0])
    assert row["world_size"] == 1 and row["device"] == "cpu" and row["torch_version"]
    stored = json.loads(ResultStore(tmp_path).path("accuracy", row["config_hash"]).read_text())
    assert stored["cell"]["train"]["pool"] == "max" and stored["rows"] == report.rows


@pytest.mark.slow  # trains
def test_explicit_checkpoint_gets_its_own_cell(tmp_path):
    ctx = RunContext(results=str(tmp_path), progress=False)
    cells = cells_for(["max"])
    trained = run_cells("accuracy", cells, ctx, log=quiet)
    ckpt = train.checkpoint_path(TrainConfig(**{**TINY, "pool": "max", "milestones": ()}))
    assert ckpt.is_file()
    with_ckpt = RunContext(results=str(tmp_path), progress=False, checkpoint=str(ckpt))
    evaluated = run_cells("accuracy", cells, with_ckpt, log=quiet)
    # neither reuses nor overwrites the rows of the model trained from the recipe
    assert (evaluated.computed, evaluated.skipped) == (1, 0)
    assert len(list((tmp_path / "accuracy").glob("*.json"))) == 2
    assert evaluated.rows[0]["config_hash"] != trained.rows[0]["config_hash"]
    top1 = [r["value"] for r in evaluated.rows + trained.rows if r["metric"] == "top1_error"]
    assert top1[0] == top1[1]  # the same weights
    assert run_cells("accuracy", cells, with_ckpt, log=quiet).skipped == 1


def test_bad_executor_and_torchrun_checks(tmp_path, monkeypatch):
    ctx = RunContext(results=str(tmp_path), progress=False)
    with pytest.raises(UsageError, match="unknown executor"):
        run_cells("accuracy", cells_for(["max"]), ctx, executor="threads")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="--executor sequential"):
        run_cells("accuracy", cells_for(["max"]), ctx, executor="process")


PLUGIN = textwrap.dedent('''
    import torch.nn.functional as F
    from torch import nn
    from poolbench.registry import register_pool

    class HalfMax(nn.Module):
        def forward(self, x):
            return 0.5 * F.max_pool2d(x, 2) + 0.5 * F.avg_pool2d(x, 2)

    @register_pool("test_plugin_halfmax")
    def halfmax(channels):
        return HalfMax()
''')


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "halfmax_plugin.py"
    path.write_text(PLUGIN)
    registry.load_plugin(str(path))
    yield path
    registry.unregister_pool("test_plugin_halfmax")
    registry._loaded_plugins.discard(str(path.resolve()))


@pytest.mark.slow  # spawns worker processes
def test_process_executor_matches_sequential(tmp_path, monkeypatch, plugin_file):
    pools = ["max", "test_plugin_halfmax"]  # a --plugin pool must exist in the workers too
    cells = cells_for(pools)
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache-seq"))
    seq = run_cells("accuracy", cells, RunContext(results=str(tmp_path / "seq"), progress=False, threads=1),
                    log=quiet)
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache-proc"))  # the workers train again
    proc = run_cells("accuracy", cells, RunContext(results=str(tmp_path / "proc"), progress=False,
                                                   threads=1, workers=2),
                     executor="process", log=quiet)
    assert (proc.computed, proc.failed) == (2, 0)
    assert values(proc.rows, timing=False) == values(seq.rows, timing=False)
    assert [r["pool"] for r in proc.rows] == [r["pool"] for r in seq.rows]
    assert sorted(p.name for p in (tmp_path / "proc" / "accuracy").iterdir()) == \
        sorted(p.name for p in (tmp_path / "seq" / "accuracy").iterdir())
    again = run_cells("accuracy", cells, RunContext(results=str(tmp_path / "proc"), progress=False),
                      executor="process", log=quiet)
    assert (again.computed, again.skipped) == (0, 2)


@pytest.mark.slow  # submits jobs
@pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                    reason="submitit not installed (pip install 'poolbench[slurm]')")
def test_slurm_executor_with_submitit_local(tmp_path):
    cells = cells_for(["max", "avg"])
    seq = run_cells("accuracy", cells, RunContext(results=str(tmp_path / "seq"), progress=False), log=quiet)
    log = []
    ctx = RunContext(results=str(tmp_path / "slurm"), progress=False, threads=1,
                     extra={"slurm": {"cluster": "local", "timeout_min": 5}})
    report = run_cells("accuracy", cells, ctx, executor="slurm", log=log.append)
    assert any("submitted 2 jobs to local" in m for m in log)
    assert (report.computed, report.failed) == (2, 0)
    # same checkpoints (shared cache), so every value matches, timings included
    assert values(report.rows) == values(seq.rows)
    assert len(list((tmp_path / "slurm" / "accuracy").glob("*.json"))) == 2
    again = run_cells("accuracy", cells, ctx, executor="slurm", log=log.append)
    assert (again.computed, again.skipped) == (0, 2)


@pytest.mark.slow  # trains
def test_all_processes_list_the_store_before_anyone_writes(tmp_path, monkeypatch):
    """Under torchrun rank 0 writes while the others may still be listing: a barrier between."""
    seen = []
    monkeypatch.setattr(runner, "barrier", lambda: seen.append(len(list(tmp_path.glob("accuracy/*.json")))))
    run_cells("accuracy", cells_for(["max", "avg"]), RunContext(results=str(tmp_path), progress=False),
              log=quiet)
    assert seen == [0, 1, 2]  # after listing, then after each cell
