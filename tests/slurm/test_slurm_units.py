"""The Slurm pieces that need no cluster: squeue's answers read, a preset's [slurm] table checked,
and `poolbench status` sorting cells from a store and a manifest (squeue's answer given)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess

import pytest

from poolbench import slurm, status
from poolbench.errors import UsageError
from poolbench.options import build_options
from poolbench.store import ResultStore


def answer(stdout="", returncode=0, stderr=""):
    def run(command, **kwargs):
        return subprocess.CompletedProcess(command, returncode, stdout, stderr)
    return run


def test_queue_states_keep_the_tasks_still_in_the_queue(monkeypatch):
    queue = "7_0|RUNNING\n7_1|PENDING\n7_2|COMPLETING\n7_3|COMPLETED\n"
    monkeypatch.setattr(slurm.subprocess, "run", answer(queue))
    assert slurm.queue_states(["7_0", "7_1", "7_2", "7_3"]) == {"7_0": "RUNNING", "7_1": "PENDING",
                                                                  "7_2": "COMPLETING"}
    # a job the controller forgot is no longer queued; a controller that does not answer is unknown
    forgot = "slurm_load_jobs error: Invalid job id specified"
    monkeypatch.setattr(slurm.subprocess, "run", answer(returncode=1, stderr=forgot))
    assert slurm.queue_states(["7_0"]) == {}
    away = "Unable to contact slurm controller"
    monkeypatch.setattr(slurm.subprocess, "run", answer(returncode=1, stderr=away))
    assert slurm.queue_states(["7_0"]) is None


def test_a_preset_slurm_table_is_checked_like_the_flags():
    opts = build_options(slurm.SlurmOptions, slurm.preset_options({"partition": "gpu", "time": 240}), "slurm")
    assert (opts.slurm_partition, opts.slurm_time, opts.wait) == ("gpu", 240, True)
    with pytest.raises(UsageError, match=r"slurm_time must be >= 1, got 0 \(--slurm-time\)"):
        build_options(slurm.SlurmOptions, slurm.preset_options({"time": 0}), "slurm")


def test_status_sorts_cells_into_done_running_failed_and_missing(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    cell = {"train": {"pool": "max", "seed": 0}}
    store.write("accuracy", "a" * 64, cell, [{"pool": "max", "metric": "top1_error", "value": 50.0}])
    store.write("accuracy", "b" * 64, {"train": {"pool": "lift", "seed": 0}},
                [{"pool": "lift", "error": "Slurm task 9_1 failed: RuntimeError: boom\nmore"}])
    (tmp_path / ".slurm").mkdir()
    tasks = [{"suite": "accuracy", "hash": h * 64, "cell": c, "job_id": f"9_{i}", "log": f"/logs/9_{i}.err"}
             for i, (h, c) in enumerate([("a", "max seed 0"), ("b", "lift seed 0"), ("c", "avg seed 0")])]
    (tmp_path / ".slurm" / "9.manifest.json").write_text(json.dumps({"submitted": 1.0, "tasks": tasks}))
    monkeypatch.setattr(slurm, "queue_states", lambda ids: {"9_2": "PENDING"})
    records = status.cell_status(str(tmp_path))
    got = {r["cell"]: (r["state"], r["job"], r["detail"]) for r in records}
    assert got == {"max seed 0": ("done", "9_0", ""),
                   "lift seed 0": ("failed", "9_1", "Slurm task 9_1 failed: RuntimeError: boom"),
                   "avg seed 0": ("running", "9_2", "PENDING")}
    assert status.summary(records) == "3 cells: 1 done, 1 running, 1 failed, 0 missing"
    # a command's cells: one the store and the manifests never saw is missing
    monkeypatch.setattr(status, "cell_hash", lambda suite, c: c["hash"])
    asked = [("accuracy", {"hash": "a" * 64, "train": {"pool": "max", "seed": 0}}),
             ("accuracy", {"hash": "d" * 64, "train": {"pool": "max", "seed": 1}})]
    assert [(r["cell"], r["state"]) for r in status.cell_status(str(tmp_path), asked)] == \
        [("max seed 0", "done"), ("max seed 1", "missing")]


@pytest.mark.skipif(shutil.which("srun") is None or importlib.util.find_spec("submitit") is None,
                    reason="submitit's Slurm executor needs srun and submitit (apt-get install slurm-wlm)")
def test_the_options_size_every_task_of_the_batch_script(tmp_path):
    opts = slurm.SlurmOptions(slurm_partition="gpu", slurm_time=2, slurm_mem_gb=2.5, slurm_cpus_per_task=4,
                              slurm_setup="module load cuda; source venv/bin/activate")
    script = slurm.executor(tmp_path, opts, "cuda")._make_submission_file_text("CMD", "ID").splitlines()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=2", "#SBATCH --mem=2560M",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --gpus-per-task=1",  # --device cuda: one GPU
                 "#SBATCH --signal=USR2@40",  # 2 min: the signal 40 s before, at most 60 s earlier still
                 "module load cuda; source venv/bin/activate"):
        assert line in script
    cpu = slurm.executor(tmp_path, slurm.SlurmOptions(), "cpu")._make_submission_file_text("CMD", "ID")
    assert "--gpus" not in cpu and "--mem" not in cpu and "#SBATCH --signal=USR2@90" in cpu
