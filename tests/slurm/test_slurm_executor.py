"""`--executor slurm` against a real slurmctld (tests/slurm/conftest.py): a grid as one array
job, `poolbench status`, --no-wait and collecting, partial failure and requeue. The commands are
the ones docs/scale-out.md shows, with a tiny training."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch

from poolbench import api
from poolbench.slurm import manifest_tasks, queue_states
from poolbench.training import checkpoint as ckpt

pytestmark = pytest.mark.slow  # starts Slurm, submits jobs and trains

ROOT = Path(__file__).resolve().parents[2]

TINY = ["--train-size", "256", "--test-size", "64", "--epochs", "1", "--batch-size", "64", "--threads", "1"]
SLURM = ["--executor", "slurm", "--slurm-time", "10"]
BOOM = '''
import torch
from poolbench.registry import register_pool

class Boom(torch.nn.MaxPool2d):
    def forward(self, x):
        raise RuntimeError("boom pool raised on purpose")

@register_pool("test_boom", paper="test", licence="MIT")
def boom(channels=None, kernel_size=2, stride=2, **kw):
    return Boom(kernel_size, stride)
'''

# max pooling that sleeps in training inside a Slurm job only: the training then lasts long enough
# for a requeue or a time limit to interrupt it, however fast the machine, while the same training
# outside Slurm (the uninterrupted reference) runs at full speed; sleeping changes no number
SLOW = '''
import os
import time

import torch
from poolbench.registry import register_pool

class SlowMax(torch.nn.MaxPool2d):
    def forward(self, x):
        if self.training and os.environ.get("SLURM_JOB_ID"):
            time.sleep(DELAY)
        return super().forward(x)

@register_pool("test_slow", paper="test", licence="MIT")
def slow(channels=None, kernel_size=2, stride=2, **kw):
    return SlowMax(kernel_size, stride)
'''


def slow_plugin(tmp_path: Path, delay: float) -> Path:
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW.replace("DELAY", repr(delay)))
    return plugin


def poolbench(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "poolbench.cli", *args], capture_output=True, text=True,
                          timeout=600, **kwargs)


def started(*args):
    return subprocess.Popen([sys.executable, "-m", "poolbench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def submitted_job(stderr: str) -> str:
    line = next(ln for ln in stderr.splitlines() if "submitted as Slurm job" in ln)
    return line.split("Slurm job ")[1].split()[0].rstrip(",")


def status(*args) -> list[dict]:
    out = poolbench("status", *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for(predicate, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def start_held(job: str) -> bool:
    """Slurm holds a requeued job back for two minutes (its begin time): start it now instead,
    once it is held; True if it was."""
    reason = subprocess.run(["squeue", "-h", "-j", job, "-o", "%r"], capture_output=True, text=True).stdout
    if reason.strip() != "BeginTime":
        return False
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    return True


def top1(results: Path) -> dict:
    rows = [r for p in (results / "accuracy").glob("*.json") for r in json.loads(p.read_text())["rows"]]
    return {(r["pool"], r["seed"]): r["value"] for r in rows if r["metric"] == "top1_error"}


def documented_commands(results: Path) -> list[list[str]]:
    """The poolbench lines of the README's Slurm block (docs/scale-out.md shows the same), with
    the store moved to ``results``."""
    blocks = [next(b for b in re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), flags=re.S)
                   if "--executor slurm" in b) for doc in ("README.md", "docs/scale-out.md")]
    assert blocks[0] == blocks[1], "the README and docs/scale-out.md show different Slurm commands"
    commands = [shlex.split(line)[1:] for line in blocks[0].splitlines() if line.startswith("poolbench ")]
    for args in commands:
        args[args.index("--results") + 1] = str(results)
    return commands


def test_grid_is_one_array_job(slurm_cluster, tmp_path, monkeypatch):
    res = tmp_path / "res"
    (run_args, status_args) = documented_commands(res)
    grid = ["accuracy", "--pool", "max", "--pool", "avg", "--seeds", "2", *TINY]
    assert run_args == ["run", *grid, *SLURM, "--slurm-array-parallelism", "2", "--results", str(res)]
    out = poolbench(*run_args)
    assert out.returncode == 0, out.stderr
    job = submitted_job(out.stderr)
    assert "4 cells submitted as Slurm job" in out.stderr and "2 at once" in out.stderr
    records = slurm_cluster.records(job)
    print("\n".join(slurm_cluster.record_lines(job)))  # the job records, for the note
    assert sorted(int(r["ArrayTaskId"]) for r in records) == [0, 1, 2, 3]
    assert {r["JobState"] for r in records} == {"COMPLETED"}
    # the cap: never more than 2 tasks of the array at once
    spans = [(datetime.fromisoformat(r["StartTime"]), datetime.fromisoformat(r["EndTime"])) for r in records]
    assert max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans) <= 2
    assert len(top1(res)) == 4

    # the same rows as this process computes with its own cache
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache-here"))
    here = api.run("accuracy", ["max", "avg"], seeds=2, train_size=256, test_size=64, epochs=1,
                   batch_size=64, threads=1, executor="sequential", results=str(tmp_path / "here"),
                   progress=False, log=lambda m: None)
    assert here.computed == 4 and top1(res) == top1(tmp_path / "here")

    jobs_before = len(slurm_cluster.records())
    again = poolbench(*run_args)
    assert again.returncode == 0, again.stderr
    assert "4 of 4 cells already in" in again.stderr and "submitted" not in again.stderr
    assert len(slurm_cluster.records()) == jobs_before
    assert [r["state"] for r in status(*status_args[1:])] == ["done"] * 4
    shown = poolbench(*status_args)
    assert shown.returncode == 0 and "4 cells: 4 done, 0 running, 0 failed, 0 missing" in shown.stderr


def test_no_wait_then_status_then_collect(slurm_cluster, tmp_path):
    res = tmp_path / "res"
    grid = ["accuracy", "--pool", "max", "--pool", "avg", "--seed", "0", *TINY, *SLURM,
            "--slurm-array-parallelism", "1", "--results", str(res)]
    out = poolbench("run", *grid, "--no-wait")
    assert out.returncode == 0, out.stderr
    job = submitted_job(out.stderr)
    assert "not waiting" in out.stderr and not top1(res)
    shown = status(*grid)
    assert [(r["cell"], r["job"]) for r in shown] == [("max seed 0", f"{job}_0"), ("avg seed 0", f"{job}_1")]
    # with a cap of 1, the second waits for the first
    assert {r["state"] for r in shown} <= {"running", "done"}
    assert shown[1]["detail"] in ("PENDING", "RUNNING") or shown[1]["state"] == "done"

    collected = poolbench("run", *grid)  # the same command follows the queued tasks
    assert collected.returncode == 0, collected.stderr
    assert "submitted" not in collected.stderr
    assert "following them" in collected.stderr or "already in" in collected.stderr
    assert sorted(top1(res)) == [("avg", 0), ("max", 0)]
    assert [r["state"] for r in status(*grid)] == ["done", "done"]
    assert {r["ArrayJobId"] for r in slurm_cluster.records(job)} == {job}


def test_partial_failure_keeps_the_others_and_reruns_only_the_failed(slurm_cluster, tmp_path):
    res = tmp_path / "res"
    plugin = tmp_path / "boom.py"
    plugin.write_text(BOOM)
    grid = ["--plugin", str(plugin), "run", "accuracy", "--pool", "max", "--pool", "test_boom",
            "--pool", "avg",
            "--seed", "0", *TINY[:4], "--epochs", "3", *TINY[6:], *SLURM, "--slurm-array-parallelism", "1",
            "--results", str(res)]
    run = started(*grid)
    # the avg task (the third) is killed with scancel while it runs
    tasks = wait_for(lambda: manifest_tasks(res / ".slurm"), "the submission")
    avg = next(t["job_id"] for t in tasks.values() if t["cell"] == "avg seed 0")
    wait_for(lambda: (queue_states([avg]) or {}).get(avg) == "RUNNING", "the avg task to run")
    subprocess.run(["scancel", avg], check=True)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr
    assert "test_boom seed 0: Slurm task" in stderr and "RuntimeError: boom pool raised on purpose" in stderr
    assert "avg seed 0: Slurm task" in stderr and "CANCELLED" in stderr
    assert sorted(top1(res)) == [("max", 0)]
    shown = {r["cell"]: r for r in status("--results", str(res))}
    assert shown["max seed 0"]["state"] == "done"
    assert shown["test_boom seed 0"]["state"] == "failed"
    assert "RuntimeError: boom pool raised on purpose" in shown["test_boom seed 0"]["detail"]
    assert shown["avg seed 0"]["state"] == "failed" and "CANCELLED" in shown["avg seed 0"]["detail"]
    assert Path(shown["avg seed 0"]["log"]).exists()

    again = poolbench(*grid)
    assert again.returncode == 1  # the boom pool fails again
    assert "accuracy: 1 of 3 cells already in" in again.stderr
    assert "2 cells submitted as Slurm job" in again.stderr
    assert sorted(top1(res)) == [("avg", 0), ("max", 0)]


def test_requeued_task_resumes_to_the_uninterrupted_weights(slurm_cluster, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("POOLBENCH_CACHE", str(cache))
    res = tmp_path / "res"
    plugin = slow_plugin(tmp_path, 0.3)     # 24 steps: at least 7 s per pooling layer
    recipe = {"train_size": 512, "test_size": 64, "epochs": 3, "batch_size": 64}
    run = started("--plugin", str(plugin), "run", "accuracy", "--pool", "test_slow", "--seed", "0",
                  *flags(recipe), "--threads", "1", "--checkpoint-minutes", "1e-9", *SLURM,
                  "--results", str(res))
    tasks = wait_for(lambda: manifest_tasks(res / ".slurm"), "the submission")
    (job,) = [t["job_id"] for t in tasks.values()]
    wait_for(lambda: list((cache / "checkpoints").glob(f"*{ckpt.STATE_SUFFIX}")), "a resume checkpoint")
    subprocess.run(["scontrol", "requeue", job], check=True)
    wait_for(lambda: start_held(job), "the requeued job to be held")
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    records = [r for r in slurm_cluster.records() if r["JobId"] == job]
    assert len(records) >= 2 and records[-1]["JobState"] == "COMPLETED", records
    assert_resumed_to_the_uninterrupted_weights(cache, plugin, recipe, tmp_path)


def test_task_at_its_time_limit_requeues_and_resumes(slurm_cluster, tmp_path, monkeypatch):
    """A 2-minute limit and a training of about 110 s on one thread of a quiet machine (longer on
    a busy one): Slurm's USR2 comes 40 s before the limit, submitit's handler saves the training
    and requeues the task, which resumes, as often as it takes."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("POOLBENCH_CACHE", str(cache))
    res = tmp_path / "res"
    recipe = {"train_size": 12288, "test_size": 64, "epochs": 6, "batch_size": 64}
    run = started("run", "accuracy", "--pool", "max", "--seed", "0", *flags(recipe), "--threads", "1",
                  "--checkpoint-minutes", "0", "--executor", "slurm", "--slurm-time", "2",
                  "--results", str(res))
    tasks = wait_for(lambda: manifest_tasks(res / ".slurm"), "the submission")
    ((job, log),) = [(t["job_id"], Path(t["log"])) for t in tasks.values()]
    while run.poll() is None:  # each time the task requeues itself, start it without the hold
        start_held(job)
        time.sleep(0.5)
    _, stderr = run.communicate()
    assert run.returncode == 0, stderr
    text = log.read_text() + log.with_suffix(".out").read_text()
    assert "this job is timed-out" in text and "Requeued job" in text, text[-3000:]
    assert_resumed_to_the_uninterrupted_weights(cache, None, recipe, tmp_path)


def flags(recipe: dict) -> list[str]:
    return [x for k, v in recipe.items() for x in ("--" + k.replace("_", "-"), str(v))]


def assert_resumed_to_the_uninterrupted_weights(cache: Path, plugin: Path | None, recipe: dict,
                                                tmp_path: Path) -> None:
    """The cached model of the one seed-0 cell (test_slow from ``plugin``, else max) continued an
    interrupted run, and its weights are the ones an uninterrupted training of the same recipe
    ends with, bit for bit (the reference trained by the same command outside Slurm, into its
    own cache)."""
    (info_file,) = (cache / "checkpoints").glob("*.json")
    assert json.loads(info_file.read_text())["info"]["resumed_from"] is not None
    assert not list((cache / "checkpoints").glob(f"*{ckpt.STATE_SUFFIX}"))
    reference = tmp_path / "reference-cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    pool = ["--plugin", str(plugin), "run", "accuracy", "--pool", "test_slow"] if plugin else \
        ["run", "accuracy", "--pool", "max"]
    done = poolbench(*pool, "--seed", "0",
                     *flags(recipe), "--threads", "1", "--executor", "sequential",
                     "--results", str(tmp_path / "reference-res"), env={**env, "POOLBENCH_CACHE": str(reference)})
    assert done.returncode == 0, done.stderr

    def weights(folder: Path) -> dict:
        (model_file,) = [p for p in (folder / "checkpoints").glob("*.pt")]
        return torch.load(model_file, weights_only=True)["state_dict"]
    got, expected = weights(cache), weights(reference)
    assert model_name(cache) == model_name(reference)     # the same recipe, so the same cell
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)


def model_name(folder: Path) -> str:
    (model_file,) = [p for p in (folder / "checkpoints").glob("*.pt")]
    return model_file.name