"""Exact resume: a training run killed with SIGKILL anywhere (in a step, in the middle of writing
a checkpoint, before its rename) and run again ends with the weights of a run never interrupted,
bit for bit on CPU; what the resume leaves behind is the one cached model.

Each run is a fresh process (as after a crash) with one torch thread; the kills are deterministic
(the process kills itself with SIGKILL at a chosen point, so no cleanup code runs) except one at a
random moment chosen by the parent.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from poolbench.training import cache
from poolbench.training import checkpoint as ckpt
from poolbench.training.runtime import ResumableSampler

# a tiny LiftPool recipe (auxiliary losses, augmentation drawing from the global RNG, momentum,
# warm-up then cosine inside epochs): 2 epochs of 4 steps
CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    import poolbench.atomic as atomic
    import poolbench.training.checkpoint as C
    from poolbench.training import cache
    from poolbench.training import loop as T
    from poolbench.config import TrainConfig
    from poolbench.training.runtime import TrainSettings

    mode, minutes = sys.argv[1], float(sys.argv[2])
    cfg = TrainConfig(pool="lift", train_size=256, test_size=64, epochs=2, batch_size=64,
                      warmup_epochs=1, lr=0.05)
    bundle = T.load_bundle(cfg)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    kind, _, arg = mode.partition(":")
    if kind == "step":                     # in the n-th step, after its batch was drawn
        calls, real_lr = [0], T.lr_at
        def lr_at(c, e):
            calls[0] += 1
            if calls[0] == int(arg):
                die()
            return real_lr(c, e)
        T.lr_at = lr_at
    elif kind in ("partial", "rename"):    # in the n-th resume-checkpoint write
        writes, real_open, real_replace = [0], atomic.atomic_open, os.replace
        class Half:
            def __init__(self, fh):
                self.fh = fh
            def write(self, data):
                data = bytes(data)
                self.fh.write(data[: len(data) // 2])
                self.fh.flush()
                os.fsync(self.fh.fileno())
                die()
        import contextlib
        @contextlib.contextmanager
        def atomic_open(path, mode="w"):
            writes[0] += 1
            with real_open(path, mode) as fh:
                if writes[0] == int(arg):
                    if kind == "partial":
                        yield Half(fh)
                        return
                    os.replace = lambda *a: die()   # written and synced, not yet renamed
                yield fh
        C.atomic_open = atomic_open

    if mode == "plain":                    # no checkpoints at all: the reference
        result = T.train(cfg, bundle, progress=False)
        state = result.model.state_dict()
        info = result.info
    else:
        settings = TrainSettings(checkpoint_minutes=minutes)
        result = cache.get_trained_model(cfg, bundle, progress=False, settings=settings)
        state = result.model.state_dict()
        info = result.info
    torch.save({k: v.contiguous() for k, v in state.items()}, sys.argv[3])
    print(json.dumps({"resumed_from": info.get("resumed_from"), "from_cache": info.get("from_cache"),
                      "history": info["history"]}))
""")

EVERY_STEP = 1e-9   # minutes: a resume checkpoint after every step
EPOCH_ENDS = 0.0    # only at the end of each epoch


def _run(tmp_path, cache, mode, minutes, out, wait=True):
    env = {**os.environ, "POOLBENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", CHILD, mode, str(minutes), str(out)]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    proc = _run(tmp, tmp / "cache", "plain", EPOCH_ENDS, tmp / "ref.pt")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(tmp / "ref.pt", weights_only=True), json.loads(proc.stdout)


def _assert_same(weights, ref):
    assert weights.keys() == ref.keys()
    differ = [k for k in ref if not torch.equal(weights[k], ref[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def _assert_clean(cache):
    files = sorted(p.name for p in (cache / "checkpoints").iterdir())
    pts = [f for f in files if f.endswith(".pt")]
    assert len(pts) == 1 and not pts[0].endswith(ckpt.STATE_SUFFIX), files
    assert not [f for f in files if f.endswith(".tmp") or ".state" in f], files


@pytest.mark.slow
@pytest.mark.parametrize("mode,minutes,resumes_at", [
    ("step:6", EVERY_STEP, {"epoch": 1, "step": 1}),        # mid-epoch: 5 steps done and saved
    ("step:3", EPOCH_ENDS, None),                            # before the first checkpoint
    ("step:7", EPOCH_ENDS, {"epoch": 1, "step": 0}),         # from the epoch boundary
    ("partial:3", EVERY_STEP, {"epoch": 0, "step": 2}),      # half of checkpoint 3 written
    ("rename:4", EVERY_STEP, {"epoch": 0, "step": 3}),       # checkpoint 4 complete, not renamed
])
def test_killed_run_resumes_to_the_same_weights(tmp_path, reference, mode, minutes, resumes_at):
    ref, ref_out = reference
    cache = tmp_path / "cache"
    killed = _run(tmp_path, cache, mode, minutes, tmp_path / "never.pt")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "never.pt").exists()
    states = list((cache / "checkpoints").glob(f"*{ckpt.STATE_SUFFIX}"))
    assert bool(states) == (resumes_at is not None)
    if mode.startswith(("partial", "rename")):  # the killed write left its temporary file
        assert list((cache / "checkpoints").glob(".*.tmp"))

    again = _run(tmp_path, cache, "resume", minutes, tmp_path / "w.pt")
    assert again.returncode == 0, again.stderr[-3000:]
    out = json.loads(again.stdout)
    assert out["resumed_from"] == resumes_at
    _assert_same(torch.load(tmp_path / "w.pt", weights_only=True), ref)
    # the learning curve is the uninterrupted run's too (the epoch sums were in the checkpoint)
    assert out["history"] == ref_out["history"]
    _assert_clean(cache)

    if mode == "step:6":  # and the same command a third time loads the cached model
        third = _run(tmp_path, cache, "resume", minutes, tmp_path / "w3.pt")
        assert third.returncode == 0 and json.loads(third.stdout)["from_cache"] is True
        _assert_same(torch.load(tmp_path / "w3.pt", weights_only=True), ref)


@pytest.mark.slow
def test_kill_at_a_random_moment(tmp_path, reference):
    ref, _ = reference
    cache = tmp_path / "cache"
    rng = random.Random()
    for attempt in range(3):  # until the kill lands while training (not while importing)
        proc = _run(tmp_path, cache, "resume", EVERY_STEP, tmp_path / "w.pt", wait=False)
        deadline = time.monotonic() + 120
        while not list((cache / "checkpoints").glob(f"*{ckpt.STATE_SUFFIX}")) and time.monotonic() < deadline \
                and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        if proc.returncode == -signal.SIGKILL:
            break
    again = _run(tmp_path, cache, "resume", EVERY_STEP, tmp_path / "w.pt")
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_same(torch.load(tmp_path / "w.pt", weights_only=True), ref)
    _assert_clean(cache)


# --- the pieces, in process ----------------------------------------------------------------------

def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    import numpy as np

    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    state = ckpt.rng_state()
    expected = (random.random(), np.random.normal(), float(torch.rand(())))
    path = tmp_path / "s.pt"
    ckpt.write_state(path, {"rng": state})
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    ckpt.set_rng_state(ckpt.read_state(path)["rng"])
    assert (random.random(), np.random.normal(), float(torch.rand(()))) == expected


def test_unreadable_or_foreign_state_is_not_resumed(tmp_path):
    path = tmp_path / "x.state.pt"
    path.write_bytes(b"not a checkpoint")
    assert ckpt.read_state(path) is None
    torch.save({"format": 999}, path)
    assert ckpt.read_state(path) is None
    assert ckpt.read_state(tmp_path / "missing.pt") is None


def test_remove_state_takes_the_leftovers_of_killed_writes(tmp_path):
    path = tmp_path / "abc.state.pt"
    path.write_bytes(b"x")
    (tmp_path / ".abc.state.pt.123.tmp").write_bytes(b"half")
    (tmp_path / "abc.pt").write_bytes(b"model")
    ckpt.remove_state(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abc.pt"]


def test_resumable_sampler_replays_the_rest_of_an_epoch():
    data = list(range(20))
    gen = torch.Generator().manual_seed(1)
    start = gen.get_state()
    sampler = ResumableSampler(torch.utils.data.RandomSampler(data, generator=gen))
    full = list(sampler)
    gen.set_state(start)
    sampler.skip = 8
    assert len(sampler) == 12
    assert list(sampler) == full[8:]
    assert len(sampler) == 20  # the skip applies to one epoch only


def test_save_now_writes_only_between_steps(tmp_path):
    saver = ckpt.Saver(tmp_path / "a.state.pt", 10, lambda: {"x": torch.ones(2)})
    with ckpt.live(saver):
        assert ckpt.save_now() is False          # in the middle of a step
        saver.safe = True
        assert ckpt.save_now() is True
    assert torch.equal(ckpt.read_state(tmp_path / "a.state.pt")["x"], torch.ones(2))
    assert ckpt.save_now() is False              # no training running
    collective = ckpt.Saver(tmp_path / "b.state.pt", 10, lambda: {}, collective=True)
    collective.safe = True
    with ckpt.live(collective):
        assert ckpt.save_now() is False          # a torchrun snapshot needs every process


@pytest.mark.slow
def test_a_state_that_does_not_fit_the_model_is_started_over(tmp_path, monkeypatch):
    from poolbench.config import TrainConfig
    from poolbench.training import loop as T

    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(train_size=128, test_size=32, epochs=1, batch_size=64)
    path = ckpt.state_path(cache.checkpoint_path(cfg))
    ckpt.write_state(path, {"model": {"nope": torch.zeros(1)}, "optimizer": {}, "world": 1,
                            "threads": torch.get_num_threads()})
    result = cache.get_trained_model(cfg, T.load_bundle(cfg), progress=False)
    assert result.info["resumed_from"] is None and not path.exists()
