"""The full-disk matrix of issue 24 (part 3) on small tmpfs mounts: results, the model cache, the
generated sets and the report each on a disk that fills. Each ends in one line naming the path,
exit 1, no traceback, no signal death, no temporary file left, and nothing finished lost: a
rerun with space reuses what was finished.

Mounting needs root; the tests skip with the reason where the mount fails. Slow: they train."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

POOLBENCH = str(Path(sys.executable).with_name("poolbench"))
TINY = ["--epochs", "1", "--train-size", "256", "--test-size", "64", "--batch-size", "64", "--seed", "0",
        "--threads", "1", "--executor", "sequential", "--no-progress"]


@pytest.fixture
def mount(tmp_path):
    """``mount(name, size)``: a tmpfs of ``size`` at tmp_path/name, unmounted after the test."""
    mounted = []

    def _mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield _mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """A filler file that leaves ``leave`` bytes free on ``folder``'s disk."""
    filler = folder / "filler"
    st = os.statvfs(folder)
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def run(*args, env):
    return subprocess.run([POOLBENCH, *args], capture_output=True, text=True, env=env, timeout=600)


def one_error_line(done, codes=(1,)) -> str:
    """The one error line of a failed run: exit 1, no traceback, not a signal."""
    err = done.stderr
    assert done.returncode in codes, (done.returncode, err)
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("poolbench: error:")]
    assert len(errors) == 1 and "no space left" in errors[0].lower(), err
    return errors[0]


def finished_models(cache: Path) -> list[Path]:
    return [p for p in (cache / "checkpoints").glob("*.pt") if not p.name.endswith(".state.pt")]


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "POOLBENCH_CACHE": str(tmp_path / "cache"), "POOLBENCH_THREADS": "1"}


def test_full_results_disk(tmp_path, mount, env):
    results = mount(tmp_path / "results", "256k")
    filler = fill(results)
    done = run("run", "accuracy", "--pool", "max", *TINY, "--results", str(results), env=env)
    line = one_error_line(done)
    assert str(results) in line and not temps(results)
    models = sorted((tmp_path / "cache" / "checkpoints").glob("*.pt"))
    assert len(models) == 1  # the model trained before the disk was found full is kept
    stamp = models[0].stat().st_mtime_ns
    filler.unlink()
    again = run("run", "accuracy", "--pool", "max", *TINY, "--results", str(results), env=env)
    assert again.returncode == 0, again.stderr
    assert models[0].stat().st_mtime_ns == stamp  # read from the cache, not trained again
    assert len(list((results / "accuracy").glob("*.json"))) == 1


def test_full_cache_when_the_trained_model_is_saved(tmp_path, mount, env):
    """Two epochs: the resume checkpoint of epoch 1 (model and momentum, ~0.8 MB) fits on 1 MB;
    the final model (~0.4 MB) beside it does not. The resume checkpoint stays, and the rerun
    continues from it instead of starting again."""
    cache = mount(tmp_path / "cache", "1m")
    recipe = [*TINY[:1], "2", *TINY[2:]]
    done = run("run", "accuracy", "--pool", "max", *recipe, "--results", str(tmp_path / "results"), env=env)
    line = one_error_line(done)
    assert ".pt" in line and "resume checkpoint" in line
    states = list((cache / "checkpoints").glob("*.state.pt"))
    assert len(states) == 1 and not temps(cache) and not finished_models(cache)
    roomy = tmp_path / "roomy"
    shutil.copytree(cache, roomy)
    again = run("run", "accuracy", "--pool", "max", *recipe, "--results", str(tmp_path / "results"),
                env={**env, "POOLBENCH_CACHE": str(roomy)})
    assert again.returncode == 0, again.stderr
    record = json.loads(finished_models(roomy)[0].with_suffix(".json").read_text())
    assert record["info"]["resumed_from"], record["info"]  # continued at epoch 1, not from scratch


def test_full_disk_while_corrupted_sets_are_generated(tmp_path, mount, env):
    """The cache of generated sets on a 64 kB disk; one corrupted array of 64 images is 196 kB.
    A sparse memory map would die of SIGBUS (exit 135) at the first page it cannot back."""
    sets = mount(tmp_path / "cache" / "corruptions", "64k")
    done = run("run", "robustness", "--pool", "max", *TINY, "--subset", "64", "--corruptions",
               "gaussian_noise", "--severities", "1", "--results", str(tmp_path / "results"), env=env)
    line = one_error_line(done)
    assert str(sets) in line and not temps(sets)
    assert len(list((tmp_path / "cache" / "checkpoints").glob("*.pt"))) == 1  # the model is kept


def test_full_disk_for_the_report(tmp_path, mount, env):
    results = tmp_path / "results"
    done = run("run", "accuracy", "--pool", "max", *TINY, "--results", str(results), env=env)
    assert done.returncode == 0, done.stderr
    out = mount(tmp_path / "report", "64k")
    fill(out)
    report = run("report", "--results", str(results), "--out", str(out / "r"), "--no-illustrations", env=env)
    assert str(out) in one_error_line(report)
    assert not temps(out) and len(list((results / "accuracy").glob("*.json"))) == 1
