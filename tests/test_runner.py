"""Runner: resume from the store, interrupted runs, the process executor and the submitit checkpoint
handler (the Slurm executor against a real slurmctld: tests/slurm/)."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from poolbench import api, cell, registry, runner
from poolbench.config import TrainConfig, train_config
from poolbench.errors import UsageError
from poolbench.pools import lift_native
from poolbench.runner import RunContext, cell_hash, run_cells
from poolbench.store import ResultStore
from poolbench.suites import get_suite
from poolbench.suites.accuracy import AccuracySuite
from poolbench.suites.base import train_config_of
from poolbench.training import cache
from poolbench.training import loop as train
from poolbench.training.runtime import TrainSettings

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
    real = cache.train  # the model cache trains what it does not hold

    def counting(cfg, *a, **k):
        calls.append(cfg.pool)
        return real(cfg, *a, **k)

    monkeypatch.setattr(cache, "train", counting)
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
    cache.checkpoint_path(train_config_of(cells[1])).unlink()
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
    assert [p.name for p in (tmp_path / "accuracy").glob("*.json")] == [f"{cell_hash('accuracy', cells[0])}.json"]

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
    assert "lift_impl" not in row  # LiftDownPool did not run


@pytest.mark.slow  # trains
def test_lift_rows_name_the_implementation_that_computed_them(tmp_path):
    ctx = RunContext(results=str(tmp_path), progress=False)
    expected = "native" if lift_native.library() is not None else "torch"
    rows = run_cells("accuracy", cells_for(["lift"]), ctx, log=quiet).rows
    assert {r["lift_impl"] for r in rows} == {expected}
    assert {r.get("train_lift_impl") for r in rows if r["metric"] == "train_time"} == {expected}
    again = run_cells("accuracy", cells_for(["lift:impl=reference"], options=None),
                      RunContext(results=str(tmp_path / "ref"), progress=False), log=quiet).rows
    assert {r["lift_impl"] for r in again} == {"reference"}


@pytest.mark.slow  # trains
def test_explicit_checkpoint_gets_its_own_cell(tmp_path):
    ctx = RunContext(results=str(tmp_path), progress=False)
    cells = cells_for(["max"])
    trained = run_cells("accuracy", cells, ctx, log=quiet)
    ckpt = cache.checkpoint_path(TrainConfig(**{**TINY, "pool": "max", "milestones": ()}))
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


@pytest.mark.slow  # trains
def test_all_processes_list_the_store_before_anyone_writes(tmp_path, monkeypatch):
    """Under torchrun rank 0 writes while the others may still be listing: a barrier between."""
    seen = []
    monkeypatch.setattr(runner, "barrier", lambda: seen.append(len(list(tmp_path.glob("accuracy/*.json")))))
    run_cells("accuracy", cells_for(["max", "avg"]), RunContext(results=str(tmp_path), progress=False),
              log=quiet)
    assert seen == [0, 1, 2]  # after listing, then after each cell


# --- devices, threads, preemption ----------------------------------------------------------------

def test_worker_devices_one_gpu_per_worker():
    from poolbench.process import worker_devices

    assert worker_devices("cuda", 2, count=2) == ["cuda:0", "cuda:1"]
    assert worker_devices("cuda", 3, count=2) == ["cuda:0", "cuda:1", "cuda:0"]  # round robin
    assert worker_devices("cuda:1", 2, count=2) == ["cuda:1", "cuda:1"]          # pinned: shared
    assert worker_devices("cpu", 2) == ["cpu", "cpu"]
    with pytest.raises(UsageError, match="no CUDA device"):
        worker_devices("cuda", 2, count=0)


def _device_after_a_while():
    import time

    time.sleep(1.5)  # both workers are busy at once, so each has taken one task
    return runner.worker_device()


@pytest.mark.slow  # spawns worker processes
def test_process_workers_take_one_device_each(monkeypatch):
    """--device cuda --workers 2: the pool's workers get cuda:0 and cuda:1 (a fake device count:
    the placement is what is tested; no GPU is touched where CUDA is unavailable)."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    devices = runner.worker_devices("cuda", 2)
    with runner.worker_pool(2, devices) as pool:
        seen = sorted(f.result() for f in [pool.submit(_device_after_a_while) for _ in range(2)])
    assert seen == ["cuda:0", "cuda:1"]
    assert runner.worker_device() is None  # the parent is no worker


def test_execute_runs_the_cell_on_the_worker_device_with_its_settings(tmp_path, monkeypatch):
    seen = {}

    def fake_run_cell(self, cell, ctx):
        seen.update(device=ctx.device, threads=torch.get_num_threads(), settings=ctx.train)
        return []

    monkeypatch.setattr(AccuracySuite, "run_cell", fake_run_cell)
    monkeypatch.setitem(cell._WORKER, "device", "cuda:1")
    before = torch.get_num_threads()
    ctx = RunContext(results=str(tmp_path), device="cuda", threads=1,
                     train=TrainSettings(checkpoint_minutes=3, eval_every=2))
    cell.execute("accuracy", cells_for(["max"])[0], ctx)
    assert seen["device"] == "cuda:1" and seen["threads"] == 1
    assert seen["settings"].checkpoint_minutes == 3 and seen["settings"].eval_every == 2
    assert torch.get_num_threads() == before  # restored after the cell


def test_default_threads_never_oversubscribe(monkeypatch):
    from poolbench import process

    monkeypatch.delenv("POOLBENCH_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(process.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(process, "busy_cores", lambda window=0.25: 3.4)
    assert process.free_cores() == 5
    assert process.default_threads() == 5 and process.default_threads(2) == 2
    monkeypatch.setattr(process, "busy_cores", lambda window=0.25: 40.0)
    assert process.free_cores() == 1 and process.default_threads(4) == 1
    monkeypatch.setattr(process, "busy_cores", lambda window=0.25: 0.2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes on this machine
    assert process.default_threads() == 4 and process.default_threads(2) == 2
    monkeypatch.setenv("POOLBENCH_THREADS", "3")
    assert process.default_threads(2) == 3
    monkeypatch.setenv("POOLBENCH_THREADS", "x")
    with pytest.raises(UsageError, match="POOLBENCH_THREADS"):
        process.default_threads()


@pytest.mark.slow  # submits a job and trains
@pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                    reason="submitit not installed (pip install 'poolbench[slurm]')")
def test_preempted_submitit_job_checkpoints_requeues_and_resumes(tmp_path, monkeypatch):
    """The preemption signal (USR2) reaches a running training job: submitit calls
    CellJob.checkpoint, the job is requeued and resumes from the resume checkpoint; its model is
    the one an uninterrupted run trains, bit for bit."""
    import time

    import submitit

    from poolbench.training import checkpoint as ckpt

    cache = tmp_path / "cache"
    monkeypatch.setenv("POOLBENCH_CACHE", str(cache))
    cfg = TrainConfig(train_size=512, test_size=64, epochs=3, batch_size=64)
    cell = get_suite("accuracy").cells([cfg], get_suite("accuracy").options({}))[0]
    ctx = RunContext(results=str(tmp_path / "res"), progress=False, threads=1,
                     train=TrainSettings(checkpoint_minutes=1e-9))
    ex = submitit.AutoExecutor(folder=str(tmp_path / "jobs"), cluster="local")
    ex.update_parameters(timeout_min=10)
    job = ex.submit(runner.CellJob(), "accuracy", cell, ctx)
    deadline = time.monotonic() + 240
    while not list((cache / "checkpoints").glob(f"*{ckpt.STATE_SUFFIX}")):
        assert time.monotonic() < deadline and not job.done(), job.stderr()
        time.sleep(0.05)
    # what Slurm sends before it preempts the job (USR2), to the job's task process (submitit's
    # local controller does not forward LocalJob._interrupt's signal)
    tasks = [int(p) for t in Path(f"/proc/{job._process.pid}/task").iterdir()
             for p in (t / "children").read_text().split()]
    assert len(tasks) == 1
    os.kill(tasks[0], signal.SIGUSR2)
    rows, computed = job.result()
    assert computed and not any(r["error"] for r in rows)
    logs = "".join(p.read_text() for p in (tmp_path / "jobs").glob("*_log.*"))
    assert "Calling checkpoint method" in logs and "Requeued job" in logs, logs[-3000:]

    (info_file,) = (cache / "checkpoints").glob("*.json")
    info = json.loads(info_file.read_text())["info"]
    assert info["resumed_from"] is not None  # the second run continued the first
    assert not list((cache / "checkpoints").glob(f"*{ckpt.STATE_SUFFIX}"))
    with_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = train.train(train_config_of(cell), train.load_bundle(cfg), progress=False).model.state_dict()
    finally:
        torch.set_num_threads(with_threads)
    (model_file,) = [p for p in (cache / "checkpoints").glob("*.pt")]
    got = torch.load(model_file, weights_only=True)["state_dict"]
    assert all(torch.equal(got[k], expected[k]) for k in expected)


_FAULTS = textwrap.dedent("""
    import resource, torch
    from poolbench.process import keep_freed_memory
    applied = keep_freed_memory()
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def batch():  # 64 MB, above glibc's 32 MB ceiling: one activation of a 224-px batch
        x = torch.empty(64 << 20, dtype=torch.uint8)
        x.fill_(1)
    for _ in range(3):  # steady state: the heap holds the freed blocks after a few batches
        batch()
    counts = []
    for _ in range(9):
        before = faults()
        batch()
        counts.append(faults() - before)
    print(applied, sorted(counts)[4])  # the median batch: a rare regrowth of the heap is no signal
""")


@pytest.mark.slow  # spawns processes
@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="glibc/Linux page-fault counts")
@pytest.mark.parametrize("env, applied", [({}, True), ({"POOLBENCH_MALLOC": "0"}, False),
                                          ({"MALLOC_TRIM_THRESHOLD_": "1"}, False)])
def test_freed_batch_memory_is_reused_not_faulted_in_again(env, applied):
    # a 64 MB block, freed and allocated again: glibc's default unmaps it, so the next one
    # page-faults every 4 KB page (16,384); kept for reuse it faults none
    clean = {k: v for k, v in os.environ.items() if k not in ("POOLBENCH_MALLOC", "MALLOC_TRIM_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", _FAULTS], env={**clean, **env}, text=True,
                         capture_output=True, check=True).stdout.split()
    assert out[0] == str(applied)
    median_faults = int(out[1])
    assert (median_faults < 100) if applied else (median_faults > 1000), median_faults


def test_busy_cores_is_the_cpu_time_others_used_in_the_window(monkeypatch):
    """Regression: the free-core default read the one-minute load average, which right after an
    install still counts a busy core on an idle 2-core machine (the main job trained on 1 of 2
    free cores). Now: /proc/stat's busy share of the machine over the window, less this
    process's own CPU time."""
    from poolbench import process

    snapshots = iter([(1000.0, 10000.0), (1000.0 + 300.0, 10000.0 + 400.0)])  # 75% busy
    own = iter([5.0, 5.0 + 0.25])                                              # 1 core for 0.25 s
    monkeypatch.setattr(process, "_cpu_jiffies", lambda: next(snapshots))
    monkeypatch.setattr(process.time, "process_time", lambda: next(own))
    monkeypatch.setattr(process.time, "sleep", lambda s: None)
    monkeypatch.setattr(process.os, "cpu_count", lambda: 4)
    # 0.75 x 4 cores busy machine-wide, 1 of them this process: 2 cores busy elsewhere
    assert process.busy_cores(0.25) == pytest.approx(2.0)


def test_busy_cores_reads_this_machine():
    from poolbench import process

    busy = process.busy_cores(0.05)
    assert 0.0 <= busy <= (process.os.cpu_count() or 1)
    assert process._cpu_jiffies()[1] > process._cpu_jiffies()[0] > 0


def test_auto_executor_uses_workers_only_for_two_cells_on_two_free_cores(monkeypatch):
    monkeypatch.setattr(runner, "_free_cores_here", lambda: 2)
    ctx = RunContext(device="cpu", workers=2)
    assert runner.choose_executor(2, ctx) == "process"
    assert runner.choose_executor(1, ctx) == "sequential"          # one cell: no worker start-up
    assert runner.choose_executor(6, ctx, torchrun=True) == "sequential"
    assert runner.choose_executor(6, RunContext(device="cpu", workers=1)) == "sequential"
    monkeypatch.setattr(runner, "_free_cores_here", lambda: 1)      # the other core is busy
    assert runner.choose_executor(6, ctx) == "sequential"


def test_auto_is_the_default_executor_and_sequential_for_timed_suites(monkeypatch, tmp_path):
    seen = []
    monkeypatch.delenv("POOLBENCH_EXECUTOR")
    monkeypatch.setattr(api, "run_cells", lambda suite, cells, ctx, executor, log=None:
                        seen.append((suite, executor)) or runner.RunReport([], 0, 0, 0))
    for suite in ("accuracy", "efficiency"):
        api.run(suite, ["max"], results=str(tmp_path))
    assert seen == [("accuracy", "auto"), ("efficiency", "sequential")]


def test_prepare_generates_each_corrupted_set_once_for_all_cells(fresh_cache, monkeypatch):
    """The process executor's main process generates the set its workers' cells will read:
    one set for every pool and seed of a dataset, none for on-the-fly corruptions."""
    from poolbench.suites import robustness
    made = []
    real = robustness.generate_corrupted_set

    def counting(*args, **kwargs):
        made.append(kwargs.get("cache_dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(robustness, "generate_corrupted_set", counting)
    suite = get_suite("robustness")
    options = suite.options({"subset": 4, "corruptions": "gaussian_noise,contrast", "severities": [1]})
    configs = [train_config({"train": TINY}, p, s) for p in ("max", "lift") for s in (0, 1)]
    cells = suite.cells(configs, options)
    suite.prepare(cells, RunContext(results="unused", progress=False))
    assert made == [fresh_cache]
    assert len(list((fresh_cache / "corruptions").rglob("*.npy"))) == 2
    made.clear()
    suite.prepare(cells, RunContext(results="unused", progress=False, corruption_on_the_fly=True))
    assert made == []


def test_a_failed_prepare_is_one_line_and_the_cells_still_run(monkeypatch):
    from poolbench.suites.robustness import RobustnessSuite

    def broken(self, cells, ctx):
        raise OSError("No space left on device")

    monkeypatch.setattr(RobustnessSuite, "prepare", broken)
    lines = []
    runner._prepare("robustness", [], RunContext(results="unused"), lines.append)
    assert lines == ["robustness: could not prepare the cells' shared inputs here (No space left on "
                     "device); each cell makes them"]
