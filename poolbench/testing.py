"""The operator contract of docs/pools.md as reusable checks.

Plugin authors call ``check_pool("my_pool")`` (or the single checks) in their own tests;
poolbench's test-suite runs every check over every registered operator.
Each check raises AssertionError with a message naming the operator and what failed.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import nn

from .pools.base import count_parameters
from .registry import PoolSpec, get_pool, get_spec, parse_spec


def _build(spec: str, channels: int, dtype=torch.float32, **options) -> nn.Module:
    return get_pool(spec, channels, **options).to(dtype)


def _pool_spec(spec: str) -> PoolSpec:
    return get_spec(parse_spec(spec)[0])


@contextlib.contextmanager
def _seeded(seed: int):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def check_shapes(spec: str, channels: int = 3, sizes=range(2, 10)) -> None:
    """Output (N, C, H//2, W//2) for every H, W in ``sizes``, square and not, in train and eval."""
    with _seeded(0):
        pool = _build(spec, channels)
    for mode in ("eval", "train"):
        pool.train(mode == "train")
        for h in sizes:
            for w in sizes:
                x = torch.randn(2, channels, h, w)
                with _seeded(1), torch.no_grad():
                    y = pool(x)
                want = (2, channels, h // 2, w // 2)
                assert tuple(y.shape) == want, (
                    f"{spec}: input {tuple(x.shape)} in {mode} mode gave {tuple(y.shape)}, expected {want}"
                )


def check_dtype_device(spec: str, channels: int = 3) -> None:
    """float32 and float64 in, the same dtype and device out."""
    for dtype in (torch.float32, torch.float64):
        with _seeded(0):
            pool = _build(spec, channels, dtype).eval()
        x = torch.randn(2, channels, 8, 8, dtype=dtype)
        with torch.no_grad():
            y = pool(x)
        assert y.dtype == dtype, f"{spec}: {dtype} input gave {y.dtype} output"
        assert y.device == x.device, f"{spec}: output moved to {y.device}"


def check_channels_last(spec: str, channels: int = 4) -> None:
    """channels_last input is accepted and gives the same values as NCHW."""
    with _seeded(0):
        pool = _build(spec, channels).eval()
    x = torch.randn(2, channels, 8, 6)
    with torch.no_grad():
        a = pool(x)
        b = pool(x.contiguous(memory_format=torch.channels_last))
    assert a.shape == b.shape, f"{spec}: channels_last changed the output shape"
    torch.testing.assert_close(b.contiguous(), a, rtol=1e-4, atol=1e-5,
                               msg=lambda m: f"{spec}: channels_last output differs: {m}")


def check_bf16_autocast(spec: str, channels: int = 4, size: tuple[int, int] = (9, 7)) -> None:
    """Under CPU bf16 autocast, on an odd, non-square map, a float32 input and a bf16 one (as a
    bf16 conv hands it on) give the float32 output's shape, finite values within 5% of its
    largest magnitude, in float32 or bfloat16."""
    with _seeded(0):
        pool = _build(spec, channels).eval()
        x = torch.randn(2, channels, *size)
    with torch.no_grad():
        ref = pool(x)
        scale = float(ref.abs().max())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for inp in (x, x.bfloat16()):
                y = pool(inp)
                assert y.shape == ref.shape, f"{spec}: bf16 autocast changed the shape to {tuple(y.shape)}"
                assert y.dtype in (torch.float32, torch.bfloat16), f"{spec}: bf16 autocast gave {y.dtype}"
                assert torch.isfinite(y).all(), f"{spec}: bf16 autocast gave non-finite values"
                err = float((y.float() - ref).abs().max())
                assert err <= 0.05 * scale, f"{spec}: bf16 autocast error {err:.3g} of {scale:.3g}"


def check_compile(spec: str, channels: int = 4) -> None:
    """``torch.compile`` (graph breaks allowed, a failure is not) agrees with eager mode in eval
    and trains: a finite input gradient through the compiled module. Seconds per operator:
    not in ``CONTRACT_CHECKS``; run it with the slow tests (``SLOW_CHECKS``)."""
    with _seeded(0):
        pool = _build(spec, channels).eval()
        x = torch.randn(2, channels, 10, 6)
    compiled = torch.compile(pool)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), pool(x), rtol=1e-4, atol=1e-5,
                                   msg=lambda m: f"{spec}: torch.compile output differs: {m}")
    pool.train()
    with _seeded(3):
        y = compiled(x.requires_grad_())
        y.sum().backward()
    assert y.shape == (2, channels, 5, 3), f"{spec}: compiled output shape {tuple(y.shape)}"
    assert torch.isfinite(x.grad).all(), f"{spec}: no finite gradient through torch.compile"


def check_eval_deterministic(spec: str, channels: int = 3) -> None:
    """Two eval-mode calls on the same input agree exactly, whatever the RNG does between."""
    with _seeded(0):
        pool = _build(spec, channels).eval()
    x = torch.randn(2, channels, 8, 8)
    with torch.no_grad():
        torch.manual_seed(1)
        a = pool(x)
        torch.manual_seed(2)
        b = pool(x)
    assert torch.equal(a, b), f"{spec}: eval mode is not deterministic"


def check_train_seeded(spec: str, channels: int = 3) -> None:
    """Training-mode randomness comes from torch's RNG only: the same seed gives the same output."""
    with _seeded(0):
        pool = _build(spec, channels).train()
    x = torch.randn(4, channels, 8, 8)
    outs = []
    for _ in range(2):
        with _seeded(123), torch.no_grad():
            outs.append(pool(x))
    assert torch.equal(outs[0], outs[1]), f"{spec}: training mode is not reproducible from torch.manual_seed"


def check_gradcheck(spec: str, channels: int = 3, size=(2, 3, 6, 6)) -> None:
    """torch.autograd.gradcheck in float64 on a tiny input, in eval mode."""
    with _seeded(0):
        pool = _build(spec, channels, torch.float64).eval()
    n, _, h, w = size
    with _seeded(1):
        x = torch.randn(n, channels, h, w, dtype=torch.float64, requires_grad=True)
    ok = torch.autograd.gradcheck(lambda t: pool(t), (x,), eps=1e-6, atol=1e-5, rtol=1e-3)
    assert ok, f"{spec}: gradcheck failed"


def check_constant(spec: str, channels: int = 3, gain: float | None = None) -> None:
    """A constant map c becomes gain * c (gain from the spec's metadata unless given)."""
    gain = _pool_spec(spec).constant_gain if gain is None else gain
    if gain is None:
        return
    with _seeded(0):
        pool = _build(spec, channels, torch.float64).eval()
    for c in (0.0, 1.5, -3.25):
        x = torch.full((2, channels, 8, 8), c, dtype=torch.float64)
        with torch.no_grad():
            y = pool(x)
        torch.testing.assert_close(y, torch.full_like(y, gain * c), rtol=1e-6, atol=1e-6,
                                   msg=lambda m: f"{spec}: constant {c} not kept (gain {gain}): {m}")


def check_convex(spec: str, channels: int = 3) -> None:
    """Output of a convex-combination operator stays within each window's min and max."""
    if not _pool_spec(spec).convex:
        return
    with _seeded(0):
        pool = _build(spec, channels, torch.float64)
    # push learnable parameters away from their initial values: the bound must hold for any
    with _seeded(5), torch.no_grad():
        for p in pool.parameters():
            p.add_(torch.randn_like(p))
    for mode in (False, True):
        pool.train(mode)
        x = torch.randn(3, channels, 8, 8, dtype=torch.float64) * 3
        with _seeded(1), torch.no_grad():
            y = pool(x)
        lo = -torch.nn.functional.max_pool2d(-x, 2, 2)
        hi = torch.nn.functional.max_pool2d(x, 2, 2)
        tol = 1e-9
        assert bool((y >= lo - tol).all() and (y <= hi + tol).all()), (
            f"{spec}: output leaves the window's [min, max] in {'train' if mode else 'eval'} mode"
        )


def check_parameters_counted(spec: str, channels: int = 8) -> None:
    """Fixed tensors are buffers, not frozen parameters; counts are positive integers or zero."""
    with _seeded(0):
        pool = _build(spec, channels)
    frozen = [n for n, p in pool.named_parameters() if not p.requires_grad]
    assert not frozen, f"{spec}: frozen parameters {frozen} should be registered as buffers"
    params, buffers = count_parameters(pool)
    assert params >= 0 and buffers >= 0


def check_up_pooling(spec: str, channels: int = 3) -> None:
    """For invertible operators: ``down(x) -> (y, state)`` with y == forward(x), and
    ``up(y, state)`` restores the input's shape."""
    if not _pool_spec(spec).invertible:
        return
    with _seeded(0):
        pool = _build(spec, channels).eval()
    for h, w in ((8, 8), (6, 10)):
        x = torch.randn(2, channels, h, w)
        with torch.no_grad():
            y, state = pool.down(x)
            torch.testing.assert_close(y, pool(x), msg=lambda m: f"{spec}: down(x)[0] != forward(x): {m}")
            x_hat = pool.up(y, state)
        assert x_hat.shape == x.shape, f"{spec}: up(down(x)) has shape {tuple(x_hat.shape)}, expected {tuple(x.shape)}"


def check_backward(spec: str, channels: int = 3) -> None:
    """Gradients reach the input and every learnable parameter in training mode."""
    with _seeded(0):
        pool = _build(spec, channels).train()
    x = torch.randn(4, channels, 8, 8, requires_grad=True)
    with _seeded(1):
        y = pool(x)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), f"{spec}: no finite gradient for the input"
    missing = [n for n, p in pool.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{spec}: parameters {missing} receive no gradient"


CONTRACT_CHECKS: dict[str, Callable[..., Any]] = {
    "shapes": check_shapes,
    "dtype_device": check_dtype_device,
    "channels_last": check_channels_last,
    "bf16_autocast": check_bf16_autocast,
    "eval_deterministic": check_eval_deterministic,
    "train_seeded": check_train_seeded,
    "gradcheck": check_gradcheck,
    "constant": check_constant,
    "convex": check_convex,
    "parameters_counted": check_parameters_counted,
    "up_pooling": check_up_pooling,
    "backward": check_backward,
}


# checks that cost seconds per operator (a compilation): plugin authors run them in slow tests
SLOW_CHECKS: dict[str, Callable[..., Any]] = {"compile": check_compile}


def check_pool(spec: str) -> None:
    """Run every contract check on ``spec`` (a name or spec string); raises on the first failure."""
    for check in CONTRACT_CHECKS.values():
        check(spec)
