"""LiftPool's fast path (impl="fast") against the plain reference (impl="reference"): forward,
backward (input and every parameter), auxiliary losses, inference mode, NCHW and channels_last;
float64 gradcheck of both. The benchmark harness (``poolbench bench lift``) is tested in
tools/test_bench_lift.py, the timers in measure/test_timing.py."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch.func import functional_call

from helpers import OPTION_GRID
from helpers import option_ids as _ids
from poolbench import auxiliary_loss, get_pool
from poolbench.pools.lift import LiftDownPool1d


def _pair(channels=4, dtype=torch.float64, seed=0, scale=None, **opts):
    """(reference, fast) pools with the same weights."""
    torch.manual_seed(seed)
    ref = get_pool("lift", channels, impl="reference", **opts).to(dtype)
    fast = get_pool("lift", channels, impl="fast", **opts).to(dtype)
    if scale is not None:
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for p in ref.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * scale)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _run(pool, x, g, train=True):
    """Output, gradients (input, then parameters) of (y * g).sum() + auxiliary loss, and the
    logged auxiliary terms."""
    pool.train(train)
    x = x.detach().requires_grad_()
    y = pool(x)
    total, terms = auxiliary_loss(pool)
    params = [p for p in pool.parameters()]
    grads = torch.autograd.grad((y * g).sum() + total, [x, *params], allow_unused=True)
    grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip([x, *params], grads)]
    return y, grads, terms


def _assert_same(ref, fast, x, train=True, rtol=1e-10, atol=1e-10, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        shape = ref.eval()(x).shape
    g = torch.randn(shape, dtype=x.dtype).to(x.device)
    yr, gr, tr = _run(ref, x, g, train)
    yf, gf, tf = _run(fast, x, g, train)
    torch.testing.assert_close(yf, yr, rtol=rtol, atol=atol, msg=lambda m: f"output: {m}")
    names = ["input"] + [n for n, _ in ref.named_parameters()]
    for name, a, b in zip(names, gr, gf):
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol, msg=lambda m: f"grad {name}: {m}")
    assert tr.keys() == tf.keys()
    for k in tr:
        assert tf[k] == pytest.approx(tr[k], rel=max(rtol, 1e-12), abs=atol)


@pytest.mark.parametrize("opts", OPTION_GRID, ids=_ids)
def test_fast_equals_reference_float64(opts):
    ref, fast = _pair(scale=0.7, **opts)
    for shape, cl in itertools.product([(2, 4, 8, 10), (1, 4, 7, 5), (2, 4, 2, 6)], (False, True)):
        x = torch.randn(shape, dtype=torch.float64)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        for train in (True, False):
            _assert_same(ref, fast, x, train)


@pytest.mark.parametrize("opts", [dict(), dict(g1=2, g2=4, bias=True, padding_mode="zeros"),
                                  dict(bands="concat", loss="l2"), dict(odd="pad", kernel_size=7)],
                         ids=_ids)
def test_fast_equals_reference_float32(monkeypatch, opts):
    """float32 at a size where mkldnn's channels_last kernels run, in batch chunks of 3."""
    import poolbench.pools.lift_fast as lift_fast
    monkeypatch.setattr(lift_fast, "CHUNK_BYTES", 3 * 16 * 24 * 19 * 4)
    ref, fast = _pair(channels=16, dtype=torch.float32, **opts)
    for cl in (False, True):
        x = torch.randn(5, 16, 24, 19)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        _assert_same(ref, fast, x, train=True, rtol=2e-4, atol=2e-5)


def test_fast_with_zero_and_negative_1x1_weights():
    """Folding 2|w1| into the K-tap kernel needs w1 != 0: a zero weight takes the plain path,
    and its gradient must still be right (initialising P and U at zero is natural)."""
    for w1 in ([0.0, 0.5, -0.3, 1.2], [-1.0, -0.5, -0.3, -2.0], [0.0] * 4):
        ref, fast = _pair(scale=0.8)
        with torch.no_grad():
            for pool in (ref, fast):
                pool.predictor.weight_1.copy_(torch.tensor(w1).view(4, 1))
                pool.updater.weight_1.copy_(torch.tensor(w1[::-1]).view(4, 1))
        _assert_same(ref, fast, torch.randn(2, 4, 8, 8, dtype=torch.float64))


def test_inference_path_equals_reference():
    """No grad needed: the fast path reuses buffers in place; the same values (and losses in
    training mode)."""
    for opts in (dict(), dict(g2=2), dict(bias=True), dict(bands="concat", odd="pad")):
        ref, fast = _pair(scale=0.6, **opts)
        for train, cl in itertools.product((False, True), (False, True)):
            x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            ref.train(train), fast.train(train)
            with torch.no_grad():
                yr, yf = ref(x), fast(x)
            torch.testing.assert_close(yf, yr, rtol=1e-10, atol=1e-10)
            assert ref.auxiliary_losses().keys() == fast.auxiliary_losses().keys()
            for k, (w, v) in ref.auxiliary_losses().items():
                torch.testing.assert_close(fast.auxiliary_losses()[k][1], v)


@pytest.mark.parametrize("opts", [dict(), dict(loss="l2"), dict(loss="l2", loss_on="first", bands="HH"),
                                  dict(bands="concat", g2=2, bias=True)], ids=_ids)
def test_fast_in_batch_chunks_equals_reference(monkeypatch, opts):
    """The fast path runs the batch in chunks (lift_fast.CHUNK_BYTES): one sample per chunk,
    with loss sums (and the plain norms) accumulated across chunks."""
    import poolbench.pools.lift_fast as lift_fast
    monkeypatch.setattr(lift_fast, "CHUNK_BYTES", 1)
    ref, fast = _pair(scale=0.6, **opts)
    for cl in (False, True):
        x = torch.randn(3, 4, 6, 8, dtype=torch.float64)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        _assert_same(ref, fast, x, train=True)
        _assert_same(ref, fast, x, train=False)
    torch.manual_seed(0)
    r1 = LiftDownPool1d(3, impl="reference", loss="l2").double()
    f1 = LiftDownPool1d(3, impl="fast", loss="l2").double()
    f1.load_state_dict(r1.state_dict())
    x = torch.randn(4, 3, 10, dtype=torch.float64)
    g = torch.randn(4, 3, 5, dtype=torch.float64)
    (yr, gr, tr), (yf, gf, tf) = _run(r1, x, g), _run(f1, x, g)
    torch.testing.assert_close(yf, yr)
    for a, b in zip(gr, gf):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    assert tf == pytest.approx(tr)


def test_fast_up_equals_reference_up():
    ref, fast = _pair(scale=0.9, bands="LL")
    x = torch.randn(2, 4, 8, 6, dtype=torch.float64)
    (yr, sr), (yf, sf) = ref.down(x), fast.down(x)
    torch.testing.assert_close(yf, yr, rtol=1e-12, atol=1e-12)
    z = torch.randn_like(yr, requires_grad=True)
    ur, uf = ref.up(z, sr), fast.up(z, sf)
    torch.testing.assert_close(uf, ur, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ur)
    gr = torch.autograd.grad((ur * g).sum(), [z, *ref.parameters()])
    gf = torch.autograd.grad((uf * g).sum(), [z, *fast.parameters()])
    for a, b in zip(gr, gf):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_1d_fast_equals_reference():
    for opts in (dict(), dict(bands="H", loss="l2"), dict(odd="pad", kernel_size=3, g1=1)):
        torch.manual_seed(0)
        ref = LiftDownPool1d(3, impl="reference", **opts).double()
        fast = LiftDownPool1d(3, impl="fast", **opts).double()
        fast.load_state_dict(ref.state_dict())
        x = torch.randn(2, 3, 11, dtype=torch.float64)
        g = torch.randn(ref(x).shape, dtype=torch.float64)
        yr, gr, tr = _run(ref, x, g)
        yf, gf, tf = _run(fast, x, g)
        torch.testing.assert_close(yf, yr)
        for a, b in zip(gr, gf):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
        assert tf == pytest.approx(tr)


# --- gradcheck -----------------------------------------------------------------------------

def _gradcheck(pool, x, train, fast_mode):
    """gradcheck of (output, c_u, c_p) with respect to the input and every parameter."""
    names = [n for n, _ in pool.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in pool.parameters()]
    pool.train(train)

    def fn(x, *ps):
        y = functional_call(pool, dict(zip(names, ps)), (x,))
        aux = pool.auxiliary_losses()
        return (y,) + tuple(aux[k][1] for k in sorted(aux))
    x = x.detach().requires_grad_()
    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-4,
                                    fast_mode=fast_mode)


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("opts, train, fast_mode", [
    (dict(), True, False),
    (dict(), False, True),
    (dict(kernel_size=3, g1=1, g2=2, bias=True, padding_mode="replicate"), True, True),
    (dict(loss="l2", loss_on="first", bands="LH+HH", padding_mode="circular"), True, True),
    (dict(odd="pad", kernel_size=4, padding_mode="zeros", bands="concat"), True, True),
], ids=["default-train", "default-eval", "groups-bias", "l2-first", "pad-k4-concat"])
def test_gradcheck_float64(impl, opts, train, fast_mode):
    torch.manual_seed(0)
    pool = get_pool("lift", 2, impl=impl, **opts).double()
    x = torch.randn(1, 2, 6, 5 if opts.get("odd") == "pad" else 6, dtype=torch.float64)
    _gradcheck(pool, x, train, fast_mode)


def test_gradcheck_fast_with_a_zero_1x1_weight():
    torch.manual_seed(0)
    pool = get_pool("lift", 2).double()
    with torch.no_grad():
        pool.predictor.weight_1[0] = 0.0
    _gradcheck(pool, torch.randn(1, 2, 6, 6, dtype=torch.float64), True, True)


def test_fast_is_first_order_only():
    pool = get_pool("lift", 2).double().train()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="first-order"):
        torch.autograd.grad(pool(x).sum(), x, create_graph=True)
    # the reference supports double backward, and its second derivatives are right
    ref = get_pool("lift:impl=reference", 2).double().train()
    assert torch.autograd.gradgradcheck(lambda t: ref(t).pow(2), (x,), eps=1e-6, atol=1e-6,
                                        rtol=1e-4, fast_mode=True)


# --- mixed precision, torch.compile, the fused path ------------------------------------------------

def _conv_lift(impl, seed=0, channels=16):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, channels, 3, padding=1),
                               get_pool("lift", channels, impl=impl)).train()


def _step_grads(model, x):
    y = model(x)
    loss = y.float().pow(2).mean() + auxiliary_loss(model)[0]
    return y, loss, torch.autograd.grad(loss, list(model.parameters()))


def test_fast_path_under_cpu_bf16_autocast_matches_the_reference():
    """Under autocast the pool sees bfloat16 activations: the fast path computes in them (the
    unfused kernels; oneDNN's fused one is float32 only) and agrees with the reference under
    the same autocast to bfloat16 precision; parameter gradients stay float32."""
    ref, fast = _conv_lift("reference"), _conv_lift("fast")
    x = torch.rand(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    out = {}
    for name, model in (("reference", ref), ("fast", fast)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out[name] = _step_grads(model, x)
    (yr, lr_, gr), (yf, lf, gf) = out["reference"], out["fast"]
    assert yf.dtype == yr.dtype == torch.bfloat16
    torch.testing.assert_close(yf.float(), yr.float(), rtol=3e-2, atol=3e-2)
    assert float(lf.detach()) == pytest.approx(float(lr_.detach()), rel=2e-2)
    assert all(g.dtype == torch.float32 for g in gf)
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-3 * float(b.abs().max()))


@pytest.mark.slow  # compiles
def test_fast_path_under_torch_compile_runs_eagerly_and_matches():
    """torch.compile of a model with the fast path: the pool runs as an eager graph break
    (``lift_fast._eager``) and gives the eager model's output and gradients."""
    eager, compiled = _conv_lift("fast"), _conv_lift("fast")
    x = torch.rand(2, 3, 12, 12).contiguous(memory_format=torch.channels_last)
    ye, le, ge = _step_grads(eager, x)
    yc, lc, gc = _step_grads(torch.compile(compiled), x)
    torch.testing.assert_close(yc, ye, rtol=1e-5, atol=1e-6)
    assert float(lc.detach()) == pytest.approx(float(le.detach()), rel=1e-5)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_float32_cpu_training_takes_the_fused_tanh_kernel():
    from poolbench.pools import lift_fast

    if lift_fast._POINTWISE is None:
        pytest.skip("torch built without oneDNN's fused convolution")
    pool = get_pool("lift", 8)
    prepared = lift_fast.prepare(pool.predictor, -1.0, torch.float32, torch.device("cpu"))
    assert prepared.fold and prepared.tanh
    bf16 = lift_fast.prepare(pool.predictor, -1.0, torch.bfloat16, torch.device("cpu"))
    assert not bf16.tanh  # the sigmoid formulation in the activations' dtype
    unfused = lift_fast.prepare(pool.predictor, -1.0, torch.float32, torch.device("cpu"), fused=False)
    assert not unfused.tanh  # up-pooling under autograd: no autograd formula for the fused op


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_path_on_cuda_matches_the_reference():
    ref, fast = _pair(channels=16, dtype=torch.float32)
    ref, fast = ref.cuda(), fast.cuda()
    x = torch.randn(4, 16, 24, 24, device="cuda").contiguous(memory_format=torch.channels_last)
    _assert_same(ref, fast, x, train=True, rtol=2e-4, atol=2e-5)
