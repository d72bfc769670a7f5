"""LiftPool's native CPU kernel (``poolbench/pools/lift_native.py`` + ``lift_kernel.c``) against
the plain reference in float64 (the oracle): outputs, input and parameter gradients, auxiliary
losses, for every option the kernel takes; determinism across runs and thread counts; what it
refuses; the fallbacks (no compiler, a failed build, POOLBENCH_NATIVE=0) and the build cache."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from helpers import OPTION_GRID
from helpers import option_ids as _ids
from poolbench import auxiliary_loss, get_pool, implementations
from poolbench.pools import lift_native
from poolbench.pools.lift import LiftDownPool1d

# the kernel is built by the first test that asks for it (the native_kernel fixture in
# conftest.py), never while pytest collects
needs_kernel = pytest.mark.usefixtures("native_kernel")


class _Spy:
    """Counts the kernel's entry points while forwarding to the real library."""

    def __init__(self, lib):
        self.lib, self.calls = lib, {"lift_forward": 0, "lift_backward": 0}

    def __getattr__(self, name):
        fn = getattr(self.lib, name)
        if name not in self.calls:
            return fn

        def counted(*args):
            self.calls[name] += 1
            return fn(*args)
        return counted


@pytest.fixture
def spy(monkeypatch):
    s = _Spy(lift_native.library())
    monkeypatch.setitem(lift_native._state, "lib", s)
    return s


def _pools(channels, seed=0, **opts):
    """(float64 reference, float32 fast) with the same random (not initial) weights."""
    torch.manual_seed(seed)
    ref = get_pool("lift", channels, impl="reference", **opts).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    fast = get_pool("lift", channels, impl="fast", **opts)
    fast.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    return ref, fast


def _run(pool, x, g, train=True):
    pool.train(train)
    x = x.detach().requires_grad_()
    y = pool(x)
    total, terms = auxiliary_loss(pool)
    params = list(pool.parameters())
    grads = torch.autograd.grad((y * g).sum() + total, [x, *params], allow_unused=True)
    return y, [torch.zeros_like(t) if d is None else d for t, d in zip([x, *params], grads)], terms


def _assert_matches_reference(ref, fast, x, train=True):
    """fast (float32, on the kernel) against ref (float64) on the same data."""
    with torch.no_grad():
        shape = ref.eval()(x.double()).shape
    g = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    yr, gr, tr = _run(ref, x.double(), g, train)
    yf, gf, tf = _run(fast, x, g.float(), train)
    tol = dict(rtol=2e-4, atol=2e-5)
    torch.testing.assert_close(yf.double(), yr, **tol, msg=lambda m: f"output: {m}")
    for name, a, b in zip(["input"] + [n for n, _ in ref.named_parameters()], gr, gf):
        torch.testing.assert_close(b.double(), a, **tol, msg=lambda m: f"grad {name}: {m}")
    assert tf.keys() == tr.keys()
    for k in tr:
        assert tf[k] == pytest.approx(tr[k], rel=1e-4, abs=1e-6), k


# the fast path's option grid, less what the kernel leaves to the torch path, plus its longest K
NATIVE_GRID = [o for o in OPTION_GRID if not {"g1", "g2", "bias"} & o.keys()]
NATIVE_GRID.append(dict(kernel_size=16))


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("opts", NATIVE_GRID, ids=_ids)
def test_native_equals_reference_float64(spy, opts, layout):
    ref, fast = _pools(32, **opts)
    x = torch.randn(3, 32, 10, 14, generator=torch.Generator().manual_seed(3))
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    _assert_matches_reference(ref, fast, x)
    assert spy.calls["lift_forward"] >= 1 and spy.calls["lift_backward"] >= 1


@needs_kernel
@pytest.mark.parametrize("shape", [(2, 16, 2, 2), (5, 48, 7, 9), (1, 16, 4, 64), (17, 16, 6, 4)],
                         ids=lambda s: "x".join(map(str, s)))
def test_native_shapes_equal_reference(spy, shape):
    """Tiny maps (one position per half: reflect onto itself), odd sizes (cropped), long lines,
    more samples than threads."""
    ref, fast = _pools(shape[1])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    _assert_matches_reference(ref, fast, x)
    assert spy.calls["lift_forward"] >= 1


@needs_kernel
def test_native_1d_equals_reference(spy):
    torch.manual_seed(0)
    ref = LiftDownPool1d(16, impl="reference").double()
    fast = LiftDownPool1d(16, impl="fast")
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.5)
    fast.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    _assert_matches_reference(ref, fast, torch.randn(4, 16, 30))
    assert spy.calls["lift_backward"] >= 1


@needs_kernel
def test_native_inference_and_down_up_round_trip(spy):
    ref, fast = _pools(16)
    x = torch.randn(2, 16, 12, 12).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x).double(), ref.eval()(x.double()),
                                   rtol=2e-4, atol=2e-5)
        y, state = fast.down(x)            # the bands path (the state keeps them)
        back = fast.up(y, state)
    torch.testing.assert_close(back, x, rtol=1e-4, atol=1e-4)
    assert spy.calls["lift_forward"] == 2 and spy.calls["lift_backward"] == 0


@needs_kernel
def test_native_results_are_deterministic_and_thread_count_free():
    """A static partition of the samples: two runs agree to the bit; outputs and input
    gradients do not depend on the thread count (each sample is computed the same way)."""
    _, fast = _pools(32)
    x = torch.randn(9, 32, 16, 16).contiguous(memory_format=torch.channels_last)
    g = torch.randn(9, 32, 8, 8)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (2, 2, 1):
            torch.set_num_threads(threads)
            results.append(_run(fast, x, g))
    finally:
        torch.set_num_threads(before)
    (y2, g2, _), (y2b, g2b, _), (y1, g1, _) = results
    assert torch.equal(y2, y2b) and all(torch.equal(a, b) for a, b in zip(g2, g2b))
    assert torch.equal(y1, y2) and torch.equal(g1[0], g2[0])
    for a, b in zip(g1[1:], g2[1:]):   # parameter sums: per-thread partial sums, then added
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@needs_kernel
def test_native_is_first_order_only():
    _, fast = _pools(16)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="first-order"):
        torch.autograd.grad(fast.train()(x).square().sum(), x, create_graph=True)


@pytest.mark.parametrize("case", ["channels=24", "kernel_size=17", "g1=2", "bias", "float64",
                                  "bf16 autocast", "empty batch"])
def test_native_refuses_what_it_does_not_compute(case):
    channels, opts, x = 32, {}, torch.randn(2, 32, 8, 8)
    if case == "channels=24":
        channels, x = 24, torch.randn(2, 24, 8, 8)
    elif case == "kernel_size=17":
        opts = dict(kernel_size=17)
    elif case == "g1=2":
        opts = dict(g1=2)
    elif case == "bias":
        opts = dict(bias=True)
    elif case == "empty batch":
        x = torch.randn(0, 32, 8, 8)
    pool = get_pool("lift", channels, **opts)
    if case == "float64":
        pool, x = pool.double(), x.double()
    if case == "bf16 autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not lift_native.usable(x, pool.predictor, pool.updater)
        return
    assert not lift_native.usable(x, pool.predictor, pool.updater)


def _fresh_state(monkeypatch, tmp_path, **env):
    monkeypatch.setattr(lift_native, "_state", {})
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_missing_compiler_falls_back_with_one_warning(monkeypatch, tmp_path):
    _fresh_state(monkeypatch, tmp_path, CC=str(tmp_path / "no-such-cc"))
    with pytest.warns(RuntimeWarning, match="no C compiler.*install a C compiler"):
        assert lift_native.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # once per process, not per call
        ref, fast = _pools(32)
        _assert_matches_reference(ref, fast, torch.randn(2, 32, 8, 8))   # the torch fast path
    assert "no C compiler" in lift_native.why()


def test_full_cache_disk_names_the_space_not_the_compiler(monkeypatch, tmp_path):
    # regression: a build that failed for lack of space said "install a C compiler"
    _fresh_state(monkeypatch, tmp_path, CC="cc")
    monkeypatch.setattr(lift_native.shutil, "which", lambda name: "/usr/bin/cc")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(lift_native, "_build", full)
    with pytest.warns(RuntimeWarning, match="no space left in .*kernels.*free space") as caught:
        assert lift_native.library() is None
    assert "compiler" not in str(caught[0].message)


def test_disabled_kernel_is_silent(monkeypatch, tmp_path):
    _fresh_state(monkeypatch, tmp_path, POOLBENCH_NATIVE="0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lift_native.library() is None
        pool = get_pool("lift", 32)
        assert not lift_native.usable(torch.randn(1, 32, 4, 4), pool.predictor, pool.updater)


@needs_kernel
def test_failed_build_falls_back_and_names_the_compiler_error(monkeypatch, tmp_path):
    broken = tmp_path / "lift_kernel.c"
    broken.write_text("int lift_forward(void) { return }\n")
    _fresh_state(monkeypatch, tmp_path)
    monkeypatch.setattr(lift_native, "SOURCE", broken)
    with pytest.warns(RuntimeWarning, match="failed"):
        assert lift_native.library() is None
    assert not list((tmp_path / "kernels").glob("*.so"))      # no half-written library left


@pytest.mark.slow  # runs the C compiler twice
@needs_kernel
def test_build_is_cached_by_source_flags_and_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path))
    first = lift_native._build(["cc"], lift_native.FLAGS)
    mtime = first.stat().st_mtime_ns
    assert lift_native._build(["cc"], lift_native.FLAGS) == first
    assert first.stat().st_mtime_ns == mtime                        # not rebuilt
    other = lift_native._build(["cc"], lift_native.FLAGS + ("-DPOOLBENCH_TEST",))
    assert other != first and other.exists()
    built = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    assert built == sorted([first.name, other.name])


def _implementations(pool, x) -> str:
    before = implementations.mark()
    pool(x)
    return implementations.ran_since(before).get("lift", "")


@needs_kernel
def test_each_call_counts_the_implementation_that_computed_it():
    x = torch.randn(2, 32, 8, 8)
    assert _implementations(get_pool("lift", 32), x) == "native"
    assert _implementations(get_pool("lift", 32, impl="reference"), x) == "reference"
    assert _implementations(get_pool("lift", 3), torch.randn(2, 3, 8, 8)) == "torch"  # 3 % 16 != 0
    assert _implementations(get_pool("lift", 32).double(), x.double()) == "torch"
    before = implementations.mark()
    get_pool("lift", 32)(x), get_pool("lift", 32, impl="reference")(x)
    assert implementations.ran_since(before) == {"lift": "native+reference"}
    assert _implementations(get_pool("max", 32), x) == ""


def test_disabled_kernel_is_counted_as_the_torch_path(monkeypatch, tmp_path):
    _fresh_state(monkeypatch, tmp_path, POOLBENCH_NATIVE="0")
    assert _implementations(get_pool("lift", 32), torch.randn(2, 32, 8, 8)) == "torch"


# --- no side effects on the process ---------------------------------------------------------------

def _denormal_survives() -> bool:
    tiny = 1e-39  # below float32's smallest normal (1.18e-38): flushed to 0 under FTZ/DAZ
    return float(torch.tensor([tiny]) * 1.0) != 0.0 and float(np.float32(tiny) * np.float32(1.0)) != 0.0


@needs_kernel
def test_a_denormal_survives_a_lift_forward_on_the_native_kernel():
    """Regression: the kernel was linked with -ffast-math, whose crtfastmath.o turned on
    flush-to-zero for the whole process when the library loaded."""
    assert _denormal_survives()
    assert _implementations(get_pool("lift", 32), torch.randn(2, 32, 8, 8)) == "native"
    assert _denormal_survives()


_TRAIN_MAX = """
import hashlib, sys, torch
from poolbench import get_pool
from poolbench.config import TrainConfig
from poolbench.training.loop import load_bundle, train
torch.set_num_threads(1)
if sys.argv[1] == "lift-first":
    get_pool("lift", 32)(torch.randn(2, 32, 8, 8))
cfg = TrainConfig(pool="max", train_size=128, test_size=32, epochs=1, batch_size=32, lr=1e-4)
model = train(cfg, load_bundle(cfg), progress=False).model
digest = hashlib.sha256()
for name, t in sorted(model.state_dict().items()):
    digest.update(name.encode() + t.detach().contiguous().numpy().tobytes())
print(digest.hexdigest())
"""


@needs_kernel
@pytest.mark.slow  # trains in two fresh processes
def test_max_trains_to_the_same_bits_whether_or_not_lift_ran_first(tmp_path):
    env = {**os.environ, "POOLBENCH_CACHE": str(tmp_path)}
    digests = [subprocess.run([sys.executable, "-c", _TRAIN_MAX, order], env=env, capture_output=True,
                              text=True, check=True, timeout=600).stdout.strip()
               for order in ("max-only", "lift-first")]
    assert len(digests[0]) == 64 and digests[0] == digests[1]
