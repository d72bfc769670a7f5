"""`--recipe tuned` on a real Slurm (tests/slurm/conftest.py): the candidates go out as one
array job; without --wait the choice waits for them in one line, and the same command collects
them, chooses and runs the final seeds."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts Slurm, submits jobs and trains

TINY = ["--train-size", "256", "--test-size", "64", "--epochs", "1", "--batch-size", "64", "--threads", "1"]
SLURM = ["--executor", "slurm", "--slurm-time", "10"]


def poolbench(*args):
    return subprocess.run([sys.executable, "-m", "poolbench.cli", *args], capture_output=True, text=True,
                          timeout=600)


def test_tuned_candidates_as_an_array_job_then_the_choice(slurm_cluster, tmp_path):
    res = tmp_path / "res"
    grid = ["accuracy", "--pool", "max", "--seed", "0", *TINY, *SLURM, "--results", str(res),
            "--recipe", "tuned"]
    out = poolbench("run", *grid, "--no-wait")
    assert out.returncode == 2, out.stderr
    assert "3 cells submitted as Slurm job" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        "poolbench: error: 3 candidate trainings of --recipe tuned are not finished")
    assert not (res / "selection").exists()                              # no choice without them
    shown = json.loads(poolbench("status", *grid, "--json").stdout)
    assert [r["cell"] for r in shown] == [f"max seed 1000 (validation, lr {lr})" for lr in (0.025, 0.05, 0.1)]
    assert all(r["job"] for r in shown)                                   # each with its Slurm task

    done = poolbench("run", *grid, "--json")                              # follows them, then the final seed
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["selection"]["chosen"]["max"]["lr"] in (0.025, 0.05, 0.1)
    assert [r["state"] for r in json.loads(poolbench("status", *grid, "--json").stdout)] == ["done"] * 4
