"""The fault matrix: bad input, kill -9, read-only and shared stores, a shadowing working
directory, changed data, failing plugins, unsafe checkpoints.

Every test is named after the defect it guards against (issue 11). Each asserts the exit code,
the one-line message, and that no finished cell was lost.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

import poolbench
from helpers import write_cifar10, write_tree
from poolbench import api, registry
from poolbench.atomic import remove_stale_temps, temp_prefix
from poolbench.data import dataset_fingerprint
from poolbench.errors import PoolbenchError, UsageError
from poolbench.lifeline import alive
from poolbench.suites.robustness import RobustnessSuite

POOLBENCH = str(Path(sys.executable).with_name("poolbench"))
TINY = ["--epochs", "1", "--train-size", "256", "--test-size", "64", "--batch-size", "64", "--seeds", "1"]
ROBUST = ["run", "robustness", "--pool", "avg", *TINY, "--subset", "32",
          "--corruptions", "gaussian_noise,glass_blur,fog", "--severities", "1,2"]


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("poolbench: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache of this test's own: "nothing was trained" must not see other tests' checkpoints."""
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "own-cache"))


def _checkpoints() -> list[Path]:
    return list((Path(os.environ["POOLBENCH_CACHE"]) / "checkpoints").glob("*"))


# --- 2. validate before working ----------------------------------------------------------------

BAD_INPUT = [
    (["run", "accuracy", "--epochs", "0"], "epochs must be in [1, 10000], got 0 (--epochs)"),
    (["run", "accuracy", "--batch-size", "0"], "batch_size must be >= 1, got 0 (--batch-size)"),
    (["run", "accuracy", "--lr", "-1"], "lr must be > 0, got -1.0 (--lr)"),
    (["run", "robustness", "--subset", "-5"], "subset must be >= 0, got -5 (--subset)"),
    (["run", "perturbation", "--subset", "-5"], "subset must be >= 0, got -5 (--subset)"),
    (["run", "accuracy", "--train-size", "20"], "lower --batch-size to 20 or less"),
    (["run", "accuracy", "--test-size", "0"], "test_size must be >= 1, got 0 (--test-size)"),
    (["run", "accuracy", "--seed", "-1"], "seed must be >= 0, got -1 (--seed)"),
    (["run", "accuracy", "--workers", "0"], "workers must be >= 1, got 0 (--workers)"),
    (["run", "accuracy", "--threads", "0"], "threads must be >= 1, got 0 (--threads)"),
    (["run", "efficiency", "--repeats", "0"], "repeats must be >= 1, got 0 (--repeats)"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT, ids=[" ".join(a[1:]) for a, _ in BAD_INPUT])
def test_bad_option_is_refused_in_one_line_before_training(cli, tmp_path, args, message):
    code, out, err = cli(*args, "--results", str(tmp_path / "results"), "--no-progress")
    assert code == 2 and out == ""
    assert message in error_line(err)
    assert not _checkpoints() and not (tmp_path / "results" / args[1]).exists()


def test_bad_preset_value_is_refused_like_the_flag(cli, tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text("[train]\nepochs = 0\n")
    code, _, err = cli("run", "accuracy", "--config", str(preset), "--results", str(tmp_path / "r"))
    assert code == 2 and f"epochs must be in [1, 10000], got 0 (key epochs in [train] of {preset})" in error_line(err)
    preset.write_text("[robustness]\nsubset = -5\n")
    code, _, err = cli("run", "robustness", "--config", str(preset), "--results", str(tmp_path / "r"))
    assert code == 2 and "subset must be >= 0, got -5" in error_line(err)


def test_bad_python_argument_is_refused_like_the_flag():
    for kwargs, message in (({"epochs": 0}, r"epochs must be in \[1, 10000\]"), ({"lr": -1.0}, "lr must be > 0"),
                            ({"subset": -5}, "subset must be >= 0"), ({"workers": 0}, "workers must be >= 1")):
        suite = "robustness" if "subset" in kwargs else "accuracy"
        with pytest.raises(UsageError, match=message):
            poolbench.run(suite, **kwargs)
    assert not _checkpoints()


# --- 1. results must know their data -----------------------------------------------------------

def _train_cell(dataset: str) -> dict:
    return {"train": {"dataset": dataset, "pool": "max"}}


def test_another_cifar_folder_is_other_data(tmp_path, monkeypatch):
    from poolbench.data import datasets as ds

    monkeypatch.setattr(ds, "_download", lambda *a: (_ for _ in ()).throw(OSError("no network")))
    write_cifar10(tmp_path / "a", seed=0)
    write_cifar10(tmp_path / "b", seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "copy-of-a")
    prints = {k: dataset_fingerprint("cifar10", tmp_path / k) for k in ("a", "b", "copy-of-a")}
    assert prints["a"] != prints["b"] and prints["a"] == prints["copy-of-a"]
    cells = {k: api.with_data([_train_cell("cifar10")], str(tmp_path / k), {}) for k in ("a", "b")}
    assert cells["a"][0]["train"]["data_fingerprint"] == prints["a"]
    from poolbench.runner import cell_hash
    assert cell_hash("accuracy", cells["a"][0]) != cell_hash("accuracy", cells["b"][0])


def test_image_added_to_a_folder_is_other_data(tmp_path):
    write_tree(tmp_path / "tree")
    before = dataset_fingerprint(f"imagefolder:{tmp_path / 'tree'}")
    shutil.copy(next((tmp_path / "tree" / "cat").iterdir()), tmp_path / "tree" / "cat" / "added.png")
    assert dataset_fingerprint(f"imagefolder:{tmp_path / 'tree'}") != before
    (tmp_path / "tree" / "cat" / "added.png").unlink()
    assert dataset_fingerprint(f"imagefolder:{tmp_path / 'tree'}") == before


def test_official_corruption_folder_is_in_the_cell(tmp_path):
    import numpy as np

    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    np.save(root / "fog.npy", np.zeros((5, 32, 32, 3), np.uint8))
    a = api.with_data([{"x": 1}], None, {"corruption_data": str(root)})[0]["corruption_data_fingerprint"]
    np.save(root / "fog.npy", np.ones((5, 32, 32, 3), np.uint8))
    b = api.with_data([{"x": 1}], None, {"corruption_data": str(root)})[0]["corruption_data_fingerprint"]
    assert a != b


def test_missing_data_root_fails_even_when_a_cell_is_stored(tmp_path, monkeypatch, cli):
    from poolbench.data import datasets as ds

    monkeypatch.setattr(ds, "_download", lambda *a: (_ for _ in ()).throw(OSError("no network")))
    monkeypatch.setattr(api, "run_cells", lambda *a, **k: pytest.fail("looked up cells without data"))
    code, _, err = cli("run", "accuracy", "--dataset", "cifar10", "--data-root", str(tmp_path / "nowhere"),
                       "--results", str(tmp_path / "r"))
    assert code == 2 and "cifar10 not found" in error_line(err) and "--data-root" in err


# --- 4. error rows always render ---------------------------------------------------------------

def test_table_of_failed_cells_says_so_instead_of_keyerror_corruption(cli, tmp_path, monkeypatch):
    def fail(self, cell, ctx):
        raise PoolbenchError("generator workers could not start")

    monkeypatch.setattr(RobustnessSuite, "run_cell", fail)
    code, out, err = cli("run", "robustness", "--pool", "avg", "--results", str(tmp_path / "r"), "--no-progress")
    assert code == 1 and "Traceback" not in err
    assert "generator workers could not start" in out and "| error" in out
    assert "poolbench: avg: generator workers could not start" in err


# --- 6. plugins that fail say so ---------------------------------------------------------------

def test_failed_plugin_is_named_when_its_pool_is_asked_for(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(registry, "_FAILURES", [])
    plugin = tmp_path / "brokenpool.py"
    plugin.write_text("import a_module_that_is_not_installed\n")
    registry.load_plugin(str(plugin))
    registry.load_plugin(str(plugin))  # loaded once: warned once
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(warned) == 1 and "brokenpool" in warned[0] and "a_module_that_is_not_installed" in warned[0]
    with pytest.raises(UsageError) as info:
        registry.get_spec("broken")
    message = str(info.value)
    assert "unknown pool 'broken'" in message and "plugin brokenpool" in message
    assert "ModuleNotFoundError: No module named 'a_module_that_is_not_installed'" in message


# --- 7. safe refusals read safely --------------------------------------------------------------

class _Opaque:
    pass


def test_pickle_checkpoint_refusal_does_not_advise_disabling_the_check(cli, tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "model": _Opaque()}, path)
    code, _, err = cli("run", "accuracy", "--checkpoint", str(path), "--results", str(tmp_path / "r"), *TINY)
    line = error_line(err)
    assert code == 2 and "weights_only" not in line and "never unpickles" in line
    assert "torch.save(model.state_dict(), FILE)" in line


# --- 3. temporary files and workers of a killed run --------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_file_of_a_killed_writer_is_removed_and_a_live_ones_kept(tmp_path):
    dead = tmp_path / f"{temp_prefix('cell.json').replace(str(os.getpid()), str(_dead_pid()))}x1.tmp"
    live = tmp_path / f"{temp_prefix('cell.json')}x2.tmp"
    foreign = tmp_path / ".cell.json.otherhost-1.x3.tmp"
    data = tmp_path / "cell.json"
    for p in (dead, live, foreign, data):
        p.write_text("{}")
    assert remove_stale_temps(tmp_path) == 1
    assert not dead.exists() and live.exists() and foreign.exists() and data.exists()
    old = time.time() - 2 * 86400
    os.utime(foreign, (old, old))
    assert remove_stale_temps(tmp_path) == 1 and not foreign.exists()


@pytest.mark.slow  # spawns processes
def test_worker_exits_within_seconds_of_its_runs_kill_9(tmp_path):
    pidfile = tmp_path / "worker.pid"
    script = tmp_path / "run.py"  # a file, not -c: spawn workers import the task from __main__
    script.write_text(f"""
import concurrent.futures, multiprocessing, os, time
from poolbench.lifeline import exit_with_parent

def work(path):
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx, initializer=exit_with_parent,
                                                initargs=(os.getpid(),)) as pool:
        pool.submit(work, {str(pidfile)!r}).result()
""")
    run = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    while not pidfile.exists() or not pidfile.read_text():
        assert time.time() < deadline and run.poll() is None
        time.sleep(0.1)
    worker = int(pidfile.read_text())
    run.send_signal(signal.SIGKILL)
    run.wait()
    t0 = time.time()
    while alive(worker) and time.time() - t0 < 10:
        time.sleep(0.1)
    assert not alive(worker), "the worker outlived its run by 10 s"
    assert time.time() - t0 < 5


def _marked(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (a run and everything it started)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/environ").read_bytes() and alive(int(entry)):
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


# --- 8. kill -9 at three points, then a rerun ---------------------------------------------------

# Stalls the Nth write into the result store just before its rename, so that a kill lands
# while a cell is being written (the rename itself is atomic, too short to hit by chance).
STALL_WRITE = """
import os, sys, time
real, count = os.replace, [0]
def replace(src, dst, *a, **k):
    if os.path.basename(os.path.dirname(str(dst))) == "robustness" and str(dst).endswith(".json"):
        count[0] += 1
        if count[0] == int(os.environ["STALL_WRITE"]):
            open(os.environ["STALL_MARK"], "w").close()
            time.sleep(120)
    return real(src, dst, *a, **k)
os.replace = replace
from poolbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Trial:
    """A `poolbench` command in its own cache and store, with a marker in its environment that
    every process it starts inherits (to find orphans)."""

    def __init__(self, root: Path):
        self.root, self.marker = root, f"trial-{uuid.uuid4().hex}"
        self.results, self.cache = root / "results", root / "cache"
        self.env = {**os.environ, "POOLBENCH_CACHE": str(self.cache), "POOLBENCH_FAULT_TRIAL": self.marker,
                    "OMP_NUM_THREADS": "1", "STALL_MARK": str(root / "stalled")}
        self.log = root / "stderr.txt"

    def command(self, args, stall_write: int | None = None) -> list[str]:
        if stall_write is None:
            return [POOLBENCH, *args, "--results", str(self.results)]
        self.env["STALL_WRITE"] = str(stall_write)
        return [sys.executable, "-c", STALL_WRITE, *args, "--results", str(self.results)]

    def start(self, args, cwd=None, stall_write=None) -> subprocess.Popen:
        return subprocess.Popen(self.command(args, stall_write), env=self.env, cwd=cwd or self.root,
                                stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))

    def run(self, args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
        env = {k: v for k, v in self.env.items() if k != "STALL_WRITE"}
        return subprocess.run([POOLBENCH, *args, "--results", str(self.results)], env=env,
                              cwd=cwd or self.root, capture_output=True, text=True, timeout=timeout)

    def stored(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.results.glob("*/*.json")}

    def temp_files(self) -> list[Path]:
        return [p for base in (self.results, self.cache, Path(os.environ.get("TMPDIR", "/tmp")))
                for p in base.rglob(".*") if p.is_file() and (p.name.endswith(".tmp") or "poolbench-images" in p.name)
                and (base != Path(os.environ.get("TMPDIR", "/tmp")) or self.marker in p.name)]

    def orphans(self, wait_s: float = 30.0) -> list[int]:
        deadline = time.time() + wait_s
        while _marked(self.marker) and time.time() < deadline:
            time.sleep(0.2)
        return _marked(self.marker)


def _wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}"
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def kill_trial(root: Path, phase: str) -> dict:
    """kill -9 a robustness run during ``phase`` (training | generation | writing), rerun it;
    returns what was left: orphans, temporary files, finished cells lost, the rerun's code."""
    trial = Trial(root)
    if phase == "writing":
        proc = trial.start(ROBUST, stall_write=2)  # the reference's cell is written, the pool's stalls
        _wait_for(proc, (root / "stalled").exists, "the second cell write")
    else:
        proc = trial.start(ROBUST)  # progress bars on: they say which phase runs
        needle = {"training": "train ", "generation": "corrupting"}[phase]
        _wait_for(proc, lambda: needle in trial.log.read_text(errors="replace"), phase)
        time.sleep(0.5)
    finished = trial.stored()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    orphans = trial.orphans()
    for pid in orphans:  # never leave them to the next test
        os.kill(pid, signal.SIGKILL)
    rerun = trial.run([*ROBUST, "--no-progress"])
    after = trial.stored()
    lost = [name for name, data in finished.items() if after.get(name) != data]
    return {"phase": phase, "orphans": len(orphans), "temp_files": len(trial.temp_files()),
            "cells_lost": len(lost), "finished_before_kill": len(finished), "cells_after": len(after),
            "rerun_rc": rerun.returncode, "rerun_err": rerun.stderr[-2000:]}


@pytest.mark.slow  # trains and spawns processes
@pytest.mark.parametrize("phase", ["training", "generation", "writing"])
def test_kill_9_leaves_no_orphans_no_temp_files_and_loses_no_cell(tmp_path, phase):
    outcome = kill_trial(tmp_path, phase)
    assert outcome["rerun_rc"] == 0, outcome["rerun_err"]
    assert outcome["orphans"] == 0 and outcome["temp_files"] == 0 and outcome["cells_lost"] == 0, outcome
    assert outcome["cells_after"] == 2
    if phase == "writing":
        assert outcome["finished_before_kill"] == 1


# --- 4, 5, 1 end to end --------------------------------------------------------------------------

@pytest.mark.slow  # trains and spawns generator workers
def test_workers_import_the_installed_package_not_a_poolbench_folder_in_cwd(tmp_path):
    shadow = tmp_path / "clone-parent"
    (shadow / "poolbench" / "poolbench").mkdir(parents=True)  # a clone named poolbench/, seen from above
    trial = Trial(tmp_path)
    done = trial.run([*ROBUST, "--no-progress"], cwd=shadow)
    assert done.returncode == 0, done.stderr
    assert "| avg" in done.stdout and "error" not in done.stdout


def _read_only(command: list[str], folder: Path) -> list[str]:
    """``command`` with ``folder`` mounted read-only (root ignores permission bits)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        for p in folder.rglob("*"):
            p.chmod(0o555 if p.is_dir() else 0o444)
        return command
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare to make a read-only folder as root")
    quoted = " ".join(f"'{c}'" for c in command)
    return ["unshare", "-m", "sh", "-c", f"mount --bind '{folder}' '{folder}' && "
            f"mount -o remount,ro,bind '{folder}' && exec {quoted}"]


@pytest.mark.slow  # trains
def test_read_only_store_prints_its_table_and_refuses_new_work_in_one_line(tmp_path):
    trial = Trial(tmp_path)
    args = ["run", "accuracy", "--pool", "avg", *TINY, "--no-progress"]
    first = trial.run(args)
    assert first.returncode == 0, first.stderr
    stored = trial.stored()
    env = {k: v for k, v in trial.env.items() if k != "STALL_WRITE"}
    again = subprocess.run(_read_only([POOLBENCH, *args, "--results", str(trial.results)], trial.results),
                           env=env, capture_output=True, text=True, timeout=300)
    if "Operation not permitted" in again.stderr or "unshare:" in again.stderr:
        pytest.skip("this machine does not allow a private read-only mount")
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout and "not recorded in commands.log" in again.stderr
    more = subprocess.run(_read_only([POOLBENCH, *args, "--pool", "max", "--results", str(trial.results)],
                                     trial.results), env=env, capture_output=True, text=True, timeout=300)
    assert more.returncode == 2 and "1 of 2 accuracy cells must be computed" in error_line(more.stderr)
    assert trial.stored() == stored and not _checkpoints_in(trial.cache, "max")


def _checkpoints_in(cache: Path, pool: str) -> list[Path]:
    return [p for p in (cache / "checkpoints").glob("*.json") if f'"pool": "{pool}"' in p.read_text()]


@pytest.mark.slow  # trains in two processes
def test_two_identical_commands_at_once_compute_each_cell_once(tmp_path):
    trial = Trial(tmp_path)
    args = ["run", "accuracy", "--pool", "avg", "--pool", "max", *TINY, "--no-progress"]
    procs = [subprocess.Popen(trial.command(args), env=trial.env, cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]
    counts = [tuple(map(int, re.search(r"\((\d+) computed, (\d+) from the store\)", err).groups()))
              for _, err in outs]
    # the cells are locked one by one, so the runs may split them (each trains one and waits for
    # the other's): what must hold is that every cell was trained by exactly one of them
    computed, read = (sum(c[k] for c in counts) for k in (0, 1))
    assert (computed, read) == (2, 2), [err for _, err in outs]


@pytest.mark.slow  # trains
def test_changed_image_folder_is_trained_again_not_answered_from_the_store(tmp_path):
    write_tree(tmp_path / "tree", per_class=10)
    trial = Trial(tmp_path)
    args = ["run", "accuracy", "--dataset", f"imagefolder:{tmp_path / 'tree'}", "--epochs", "1",
            "--batch-size", "8", "--seeds", "1", "--no-progress"]
    first = trial.run(args)
    assert first.returncode == 0 and "1 computed" in first.stderr, first.stderr
    assert "1 from the store" in trial.run(args).stderr
    write_tree(tmp_path / "tree2", per_class=10, seed=1)
    for src in (tmp_path / "tree2").rglob("*.png"):
        shutil.copy(src, tmp_path / "tree" / src.relative_to(tmp_path / "tree2").parent / f"new-{src.name}")
    changed = trial.run(args)
    assert changed.returncode == 0 and "1 computed" in changed.stderr, changed.stderr
    rows = [json.loads(p.read_text())["rows"] for p in (trial.results / "accuracy").glob("*.json")]
    assert len({r[0]["data_fingerprint"] for r in rows}) == 2
