"""torchrun + DistributedDataParallel on CPU (gloo, two processes): rank 0 alone writes results."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

TINY = ["--train-size", "256", "--test-size", "64", "--epochs", "1", "--batch-size", "64", "--seeds", "1"]


def _torchrun(tmp_path, *args):
    """``poolbench run ARGS`` on two torchrun processes: (the finished process, results, cache)."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    env = {**os.environ, "POOLBENCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1",
           "POOLBENCH_DIST_TIMEOUT_MIN": "5"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "poolbench.cli", "run", *args, "--results", str(results), "--no-progress", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, results, cache


def test_torchrun_two_processes_write_each_cell_once(tmp_path):
    proc, results, cache = _torchrun(tmp_path, "accuracy", "--pool", "max", "--pool", "avg", *TINY)

    # one JSON document on stdout: rank 1 prints nothing
    printed = json.loads(proc.stdout)["rows"]
    assert {r["pool"] for r in printed} == {"max", "avg"}

    every = sorted((results / "accuracy").iterdir())
    assert not [f for f in every if f.suffix == ".tmp" or f.name.startswith(".")]  # no temporary leftovers
    files = [f for f in every if f.suffix == ".json"]
    assert len(files) == 2
    rows = [r for f in files for r in json.loads(f.read_text())["rows"]]
    keys = [(r["pool"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))  # every value exactly once
    assert {"top1_error", "top5_error", "params"} <= {m for _, m in keys}
    assert all(r["world_size"] == 2 and r["error"] == "" for r in rows)
    assert sorted(rows, key=str) == sorted(printed, key=str)

    # the checkpoints were trained by both processes together and written once
    infos = [json.loads(p.read_text())["info"] for p in (cache / "checkpoints").glob("*.json")]
    assert len(infos) == 2 and all(i["world_size"] == 2 for i in infos)
    assert len(list((cache / "checkpoints").glob("*.pt"))) == 2  # the resume checkpoints are gone
    # rank 0 alone logged the command
    assert len((results / "commands.log").read_text().splitlines()) == 1


def test_torchrun_trains_one_segnet_across_two_processes(tmp_path):
    """The SegNet trains in the same loop as the classifiers: DDP under torchrun, rank 0 writes."""
    proc, results, cache = _torchrun(
        tmp_path, "segmentation", "--variants", "max_unpool", "--no-reconstruction", "--train-size", "32",
        "--test-size", "8", "--epochs", "1", "--batch-size", "8", "--seed", "0")
    printed = json.loads(proc.stdout)["rows"]  # one JSON document: rank 1 prints nothing
    assert {r["up_pool"] for r in printed} == {"max_unpool"} and {r["seed"] for r in printed} == {0}
    assert all(r["world_size"] == 2 and r["error"] == "" for r in printed)
    files = [f for f in (results / "segmentation").iterdir() if f.suffix == ".json"]
    assert len(files) == 1
    (info,) = [json.loads(p.read_text())["info"] for p in (cache / "checkpoints").glob("*.json")]
    assert info["world_size"] == 2 and info["epochs"] == 1
    assert len(list((cache / "checkpoints").glob("*.pt"))) == 1


def test_torchrun_writes_resume_checkpoints_together(tmp_path):
    """Resume checkpoints under DDP: every process takes part in each snapshot (their random
    states are gathered; rank 0's clock decides when, mid-epoch), rank 0 writes it."""
    proc, results, cache = _torchrun(
        tmp_path, "accuracy", "--pool", "max", "--train-size", "512", "--test-size", "64", "--epochs", "2",
        "--batch-size", "64", "--checkpoint-minutes", "1e-9", "--seeds", "1")
    (info,) = [json.loads(p.read_text())["info"] for p in (cache / "checkpoints").glob("*.json")]
    # 8 steps per epoch (256 images and 32 a batch per process): mid-epoch after each step but
    # the last (the divergence checks, every step on CPU), then the epoch end; none at the last
    # epoch's end (the model is cached instead)
    assert info["world_size"] == 2 and info["resume_checkpoints_written"] == 7 + 1 + 7
    assert [p["epoch"] for p in info["history"]] == [1, 2]
    assert not list((cache / "checkpoints").glob("*.state.pt"))


def test_torchrun_recipe_tuned_does_not_leave_rank_1_without_the_candidates_rows(tmp_path):
    """Regression: rank 1 got no rows back from the candidate trainings (rank 0 alone returns
    them), took them for unfinished Slurm jobs and exited while rank 0 waited at a barrier."""
    proc, results, cache = _torchrun(tmp_path, "accuracy", "--pool", "max", "--recipe", "tuned", *TINY)
    out = json.loads(proc.stdout)
    chosen = out["selection"]["chosen"]["max"]
    assert set(chosen["validation_error"]) == {"0.5", "1", "2"}
    assert {r["lr"] for r in out["rows"]} == {chosen["lr"]}
    choice = [json.loads(p.read_text()) for p in (results / "selection").glob("*.json")]
    assert len(choice) == 1   # the choice was recorded once, by rank 0
    assert all(r["world_size"] == 2 for r in out["rows"])
