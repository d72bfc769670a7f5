"""The fast path of LiftDownPool (``impl="fast"``): the same function as the reference
(``lift.py``, ``impl="reference"``), computed with far fewer memory passes.

On CPU in float32 with the default branch structure, ``lift_down`` and ``lift_sum`` hand the
call to the native kernel (``lift_native.py``); the torch implementation below runs for
everything else (CUDA, bf16 under autocast, grouped or biased branches, a missing compiler)
and for the up-pooling.

Design; every choice was measured on the CPU this was written on (1 thread, thread CPU time,
``poolbench bench lift`` and the experiments summarised in the report):

* ONE autograd Function for the whole layer (``_LiftPoolFn``) with a hand-written backward, run
  over the batch in chunks of ``CHUNK_BYTES`` of input: each chunk goes through all its
  liftings (forward, then backward in the same order) while its intermediates are in cache.
  Per sample this was ~2x faster than running each op over the whole batch at 32x64x56x56.
* channels_last inside: a depthwise K-tap conv is several times faster on it than on NCHW. An
  NCHW input is converted chunk by chunk (small copies, then in cache) and its gradient goes
  back NCHW the same way; reading NCHW halves with strides in every op cost more.
* tanh(u) = 2 sigmoid(2u) - 1: torch's CPU tanh is ~10x slower than its sigmoid. 2 sg - 1 is
  exact in floating point (Sterbenz), so the branch output carries only the sigmoid's absolute
  rounding (~1e-7 in float32, where the reference's tanh is relatively exact near 0): a
  float-tolerance difference. With channel-wise 1x1 weights w1 (g2 = C, no bias, every
  w1 != 0: the default) the factor 2|w1| is folded into the K-tap kernel and sign(w1) taken out
  of the odd tanh, which drops the 1x1 pass; a zero w1 (e.g. P and U initialised at zero) takes
  the plain path, so that its gradient stays exact.
* float32 on CPU (oneDNN): the K-tap conv runs with oneDNN's fused tanh
  (``mkldnn._convolution_pointwise``) on taps scaled by |w1|, then a ReLU:
  tanh(|w1| relu(z)) = relu(tanh(|w1| z)); no sigmoid pass, no 2 sg - 1 passes, and no ReLU
  output kept (t > 0 is the mask). Other dtypes (bf16 under autocast) and autograd-tracked
  up-pooling take the sigmoid formulation above.
* the two vertical liftings run as ONE lifting over a batch of 2B: the horizontal lifting
  writes s and d into the two batch halves of one buffer (no copy; stacking after the fact
  costs a copy that loses on CPU; channel halves would be strided views, 2-4x slower to reduce).
  That buffer has room for the padding along W, and each d is written straight into the
  interior of U's padded input, so U needs no padding copy; padding is one copy of the interior
  plus border columns (torch's reflection kernel was 1.5-2x slower on channels_last).
* under torch.compile the fast path runs eagerly, as a graph break (``_eager``).
* backward: saved per branch are the padded input, the ReLU output (its mask) and t; the 1x1
  weight is folded into the kernel of the transposed conv (g_z = w1 * mask * g_m) and its
  gradient comes from the K-tap weight gradient G for free (sum(g_m relu(z)) = <Wk, G>); the
  input gradient of the depthwise conv is a plain conv with the flipped kernel (2x faster than
  convolution_backward here) and its weight gradient along W is taken on a free (N*H, C, W, 1)
  view so that the kernel runs along H (5x faster in mkldnn); the padding backward touches only
  the border columns; the gradients of x_e and x_o are written straight into the interleaved
  input gradient; c_u and c_p are added in the same passes; parameter gradients are summed raw
  over chunks and finished once.
* without autograd (inference) the same code reuses its buffers in place.
* weights are prepared once per call (``prepare``) and shared by the liftings.

The backward is first-order: with create_graph=True it raises (use impl="reference" for double
backward) instead of silently treating the gradient as constant. Injected predictor/updater
callables are not fused: the reference algorithm runs for them.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..implementations import record
from . import lift_native
from .lift_ops import _pad_index

CL = torch.channels_last
W_DIM, H_DIM = 3, 2


def ran(implementation: str) -> None:
    """A LiftDownPool call computed by ``implementation`` ("native", "torch", "reference"):
    result rows name it (``poolbench.implementations``), since the native kernel agrees with the
    torch paths only to float rounding, and its speed differs."""
    record("lift", implementation)


def _pointwise_conv():
    """oneDNN's convolution with a fused elementwise op (what Inductor's CPU fusion calls), or
    None where torch was built without it."""
    try:
        return torch.ops.mkldnn._convolution_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


_POINTWISE = _pointwise_conv()


def _eager(fn):
    """``torch.compiler.disable(fn)``: under torch.compile the fast path runs eagerly, as its
    own graph break (dynamo cannot trace its hand-written Function: data-dependent weight
    folding, non-tensor state; Inductor failed on it); the compiled model around it keeps its
    graphs (tests/pools/test_lift_fast.py). Made at the first call with dynamo loaded, not at
    import: ``disable`` imports dynamo, 1.5-3 s of the start of every process, and a process
    that has not loaded dynamo is compiling nothing."""
    disabled = []

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if not disabled:
            disabled.append(torch.compiler.disable(fn))
        return disabled[0](*args, **kwargs)

    return call


def _is_cl(t: Tensor) -> bool:
    return t.is_contiguous(memory_format=CL)


# --- padding -----------------------------------------------------------------------------------

def _pad_cl(x: Tensor, before: int, after: int, mode: str, dim: int,
            out: Tensor | None = None, interior_done: bool = False) -> Tensor:
    """``pad_axis`` of lift_ops with the same values, written into a new (or the given) dense
    channels_last tensor whatever ``x``'s layout (a strided view of an NCHW input is transposed
    on the fly). ``interior_done``: ``x`` is already ``out``'s interior; only the borders are
    written."""
    n = x.shape[dim]
    b, a = before, after
    # one copy of the interior and a few border columns: 1.5-2x faster than torch's padding
    # kernels on channels_last here (F.pad reflect), also for a strided x_e
    shape = list(x.shape)
    shape[dim] += before + after
    if out is None:
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=CL)
    interior = out.narrow(dim, before, n)
    if not interior_done:
        interior.copy_(x)
    if not (b or a):
        return out
    if mode == "zeros":
        out.narrow(dim, 0, b).zero_()
        out.narrow(dim, b + n, a).zero_()
    elif mode == "reflect" and max(b, a) < n:      # x[-j] = x[j], x[n-1+j] = x[n-1-j]
        for j in range(b):                           # column copies beat index_copy_ here
            out.narrow(dim, j, 1).copy_(interior.narrow(dim, b - j, 1))
        for j in range(a):
            out.narrow(dim, b + n + j, 1).copy_(interior.narrow(dim, n - 2 - j, 1))
    elif mode == "replicate":
        left, right = out.narrow(dim, 0, b), out.narrow(dim, b + n, a)
        left.copy_(interior.narrow(dim, 0, 1).expand_as(left))
        right.copy_(interior.narrow(dim, n - 1, 1).expand_as(right))
    elif mode == "circular" and max(b, a) <= n:
        out.narrow(dim, 0, b).copy_(interior.narrow(dim, n - b, b))
        out.narrow(dim, b + n, a).copy_(interior.narrow(dim, 0, a))
    else:  # maps shorter than the padding: gather with the explicit source index
        idx = _pad_index(n, b, a, mode, x.device)
        out.narrow(dim, 0, b).copy_(interior.index_select(dim, idx[:b]))
        out.narrow(dim, b + n, a).copy_(interior.index_select(dim, idx[b + n:]))
    return out


def _unpad_grad(gp: Tensor, before: int, after: int, mode: str, n: int, dim: int) -> Tensor:
    """Backward of ``_pad_cl``: the gradient of the unpadded input, a view of ``gp``'s interior
    into which the border gradients have been accumulated (``gp``'s border columns only)."""
    b, a = before, after
    interior = gp.narrow(dim, b, n)
    if not (b or a) or mode == "zeros":
        return interior
    left, right = gp.narrow(dim, 0, b), gp.narrow(dim, b + n, a)
    if mode == "reflect" and max(b, a) < n:       # x[-j] = x[j], x[n-1+j] = x[n-1-j]
        for j in range(b):                         # column adds: flip is slow on these views
            interior.narrow(dim, b - j, 1).add_(left.narrow(dim, j, 1))
        for j in range(a):
            interior.narrow(dim, n - 2 - j, 1).add_(right.narrow(dim, j, 1))
    elif mode == "replicate":
        interior.narrow(dim, 0, 1).add_(left.sum(dim, keepdim=True))
        interior.narrow(dim, n - 1, 1).add_(right.sum(dim, keepdim=True))
    elif mode == "circular" and max(b, a) <= n:
        interior.narrow(dim, n - b, b).add_(left)
        interior.narrow(dim, 0, a).add_(right)
    else:
        idx = _pad_index(n, b, a, mode, gp.device)
        src = torch.cat([idx[:b], idx[b + n:]])
        interior.index_add_(dim, src, torch.cat([left, right], dim=dim))
    return interior


def _as_vertical(t: Tensor) -> Tensor:
    """A free view of the dense channels_last (N, C, H, W) tensor as the channels_last
    (N*H, C, W, 1) one: a kernel along W becomes a kernel along H."""
    n, c, h, w = t.shape
    return t.as_strided((n * h, c, w, 1), (w * c, 1, c, c))


# --- prepared weights --------------------------------------------------------------------------

def _oriented(w: Tensor, dim: int) -> Tensor:
    """(C, C/g, K) taps as a conv2d kernel running along ``dim``."""
    return w.unsqueeze(2) if dim == W_DIM else w.unsqueeze(3)


@dataclass
class Prepared:
    """One learned branch ready for the fast kernels, for the role ``sign`` (-1: P, subtracted;
    +1: U, added)."""

    channels: int
    kernel_size: int
    groups1: int
    groups2: int
    depthwise: bool
    before: int
    after: int
    mode: str
    fold: bool
    tanh: bool             # folded, and the conv runs with oneDNN's fused tanh (``_POINTWISE``)
    kernel: dict           # dim -> forward K-tap kernel (folded when ``fold``)
    bias_k: Tensor | None  # forward conv bias (folded when ``fold``)
    post: Tensor | None    # not folded: 2*w1 as (1, C, 1, 1), or 2*W1 as a 1x1 conv kernel
    post_bias: Tensor | None
    coef: dict             # +-1 -> a: base + coef * branch = base + a * t
    # for the backward
    sign: float
    raw: tuple             # (wk, w1, bk, b1)
    grad_kernel: dict | None  # dim -> kernel of the input-gradient conv (w1 folded, flipped)
    w_scale: Tensor | None    # (C, 1, 1): sign * w1 (g2 = C)
    post_grad: Tensor | None  # g2 < C: sign * W1 as a 1x1 kernel


def prepare(branch, sign: float, dtype, device, backward: bool = True, fused: bool = True) -> Prepared:
    """Derive every tensor the fast kernels need from a LiftingBranch's parameters (under the
    caller's grad mode: ``down`` prepares without grad, its Function computes the parameter
    gradients itself; ``up`` prepares with grad and relies on autograd). ``fused``: the forward
    runs without autograd, so that oneDNN's fused conv+tanh (which has none) may be used."""
    c, k = branch.channels, branch.kernel_size
    cast = lambda t: None if t is None else t.to(dtype=dtype, device=device)  # noqa: E731
    wk, w1, bk, b1 = (cast(t) for t in (branch.weight_k, branch.weight_1, branch.bias_k,
                                        branch.bias_1))
    channelwise = branch.g2 == c
    fold = channelwise and b1 is None and device.type == "cpu" and bool((w1 != 0).all())
    post = post_bias = None
    tanh = fold and fused and _POINTWISE is not None and dtype == torch.float32
    if fold:
        # |w1| folded into the taps: tanh(|w1| relu(z)) = relu(tanh(|w1| z)), one fused op;
        # else 2|w1|, for tanh(u) = 2 sigmoid(2u) - 1
        scale = (1 if tanh else 2) * w1.abs().view(c, 1, 1)
        k_taps, bias_k = wk * scale, None if bk is None else bk * scale.view(c)
        sgn = torch.sign(w1).view(1, c, 1, 1)
        coef = {1.0: sgn, -1.0: -sgn}
    else:
        k_taps, bias_k = wk, bk
        if channelwise:
            post = (2 * w1).view(1, c, 1, 1)
            post_bias = None if b1 is None else (2 * b1).view(1, c, 1, 1)
        else:
            post = (2 * w1)[:, :, None, None]
            post_bias = None if b1 is None else 2 * b1
        coef = {1.0: 1.0, -1.0: -1.0}
    kernel = {W_DIM: _oriented(k_taps, W_DIM), H_DIM: _oriented(k_taps, H_DIM)}
    depthwise = branch.g1 == c
    grad_kernel = w_scale = post_grad = None
    if backward:
        if channelwise:
            w_scale = sign * w1.view(c, 1, 1)
            w_eff = wk * w_scale
        else:
            post_grad = (sign * w1)[:, :, None, None]
            w_eff = wk
        grad_kernel = {}
        for dim in (W_DIM, H_DIM):
            kern = _oriented(w_eff, dim)
            grad_kernel[dim] = kern.flip(dim) if depthwise else kern
    return Prepared(c, k, branch.g1, branch.g2, depthwise,
                    branch.padding[0], branch.padding[1], branch.padding_mode, fold, tanh, kernel,
                    bias_k, post, post_bias, coef, sign, (wk, w1, bk, b1), grad_kernel, w_scale,
                    post_grad)


# --- one branch ----------------------------------------------------------------------------------

def _branch_forward(pb: Prepared, a: Tensor, dim: int, pad_buffer: Tensor | None = None,
                    inplace: bool = False, padded: bool = False):
    """t such that branch(a) = sign * t (``sign`` per channel when folded, else 1), and what the
    backward needs (padded input, ReLU output or None, t). ``inplace`` (no backward to come): t
    overwrites the ReLU output, and the padded input may be written into ``pad_buffer``.
    ``padded``: ``a`` is the padded input already."""
    ap = a if padded else _pad_cl(a, pb.before, pb.after, pb.mode, dim, pad_buffer)
    if pb.tanh:  # no ReLU output kept: t > 0 is its mask (tanh keeps the sign)
        t = _POINTWISE(ap, pb.kernel[dim], pb.bias_k, [0, 0], [1, 1], [1, 1], pb.groups1, "tanh",
                       [], "").relu_()
        return t, (ap, None, t)
    r = F.conv2d(ap, pb.kernel[dim], pb.bias_k, groups=pb.groups1).relu_()
    if pb.fold:
        sg = r.sigmoid_() if inplace else torch.sigmoid(r)
    elif inplace and pb.groups2 == pb.channels:
        sg = (r.mul_(pb.post) if pb.post_bias is None else
              torch.addcmul(pb.post_bias, r, pb.post, out=r)).sigmoid_()
    else:
        if pb.groups2 == pb.channels:      # channel-wise 1x1
            v = torch.mul(r, pb.post) if pb.post_bias is None else torch.addcmul(
                pb.post_bias, r, pb.post)
        else:
            v = F.conv2d(r, pb.post, pb.post_bias, groups=pb.groups2)
        sg = v.sigmoid_()
    if torch.is_grad_enabled() and sg.requires_grad:   # ``unlift`` runs under autograd
        t = sg.mul(2.0).sub_(1.0)
    else:
        t = sg.mul_(2.0).sub_(1.0)    # exact (Sterbenz), and in cache right after the sigmoid
    return t, (ap, r, t)


def _add_branch(base: Tensor, t: Tensor, pb: Prepared, coef: float, out: Tensor | None = None):
    """base + coef * branch = base + coef * sign * t, one pass, into ``out`` (channels_last, new
    if None). Out-of-place under autograd, where ``out=`` is not allowed."""
    a = pb.coef[coef]
    if torch.is_grad_enabled() and (base.requires_grad or t.requires_grad or (
            isinstance(a, Tensor) and a.requires_grad)):
        return torch.addcmul(base, t, a) if isinstance(a, Tensor) else torch.add(base, t, alpha=a)
    if out is None:
        out = torch.empty_like(t)
    if isinstance(a, Tensor):
        return torch.addcmul(base, t, a, out=out)
    return torch.add(base, t, alpha=a, out=out)


def _branch_backward(pb: Prepared, saved, g_out: Tensor, dim: int, n: int, need_params: bool):
    """Backward of the term ``pb.sign * branch(a)`` given its gradient ``g_out``.

    Returns (gradient of the unpadded input ``a``, a view; raw parameter-gradient sums, linear
    in ``g_out``, to be added over chunks and liftings and turned into gradients once by
    ``_finish_param_grads``)."""
    ap, r, t = saved
    r = t if r is None else r   # the ReLU mask: z > 0 where t > 0
    # branch = tanh(m + b1), m = w1 * relu(z) (or the 1x1 conv), z = conv_k(pad(a)) + bk:
    # dL/dm = sign * hv with hv = g_out * (1 - t^2). (Folded or not: the same, since 1 - t^2 is
    # even in t and the ReLU mask is that of z.)
    hv = torch.ops.aten.tanh_backward(g_out, t)
    want_bk = need_params and pb.raw[2] is not None
    want_b1 = need_params and pb.raw[3] is not None
    raw = None
    if pb.w_scale is not None:                       # channel-wise 1x1 (g2 = C)
        hv_sum = hv.sum(dim=(0, 2, 3)) if want_b1 else None
        # dL/dz = w_scale * hz, hz = hv * (z > 0), written over hv (our own buffer)
        hz = torch.ops.aten.threshold_backward.grad_input(hv, r, 0, grad_input=hv)
        gap, gk, gkb = _conv_k_backward(pb, hz, ap, dim, need_params, want_bk)
        if need_params:
            raw = [gk, gkb, hv_sum, None]
    else:                                            # grouped 1x1 conv (w1 scaled by sign)
        g_r, g1w, g1b = torch.ops.aten.convolution_backward(
            hv, r, pb.post_grad, [pb.channels] if want_b1 else None, [1, 1], [0, 0], [1, 1],
            False, [0, 0], pb.groups2, [True, need_params, want_b1])
        hz = torch.ops.aten.threshold_backward.grad_input(g_r, r, 0, grad_input=g_r)
        gap, gk, gkb = _conv_k_backward(pb, hz, ap, dim, need_params, want_bk)
        if need_params:
            raw = [gk, gkb, g1b, g1w]
    return _unpad_grad(gap, pb.before, pb.after, pb.mode, n, dim), raw


def _finish_param_grads(pb: Prepared, raw) -> list:
    """[g_wk, g_w1, g_bk, g_b1] from the summed raw sums of ``_branch_backward``."""
    if raw is None:
        return [None] * 4
    wk, w1, bk, b1 = pb.raw
    gk, gkb, hb, g1w = raw
    scale = pb.sign
    if pb.w_scale is not None:
        # G = corr(pad(a), hz) is the K-tap weight gradient up to w_scale, and
        # sum(hv * relu(z)) = sum(hz * z) = <Wk, G> + bk * sum(hz): the 1x1 weight gradient
        inner = (wk * gk).sum(dim=(1, 2))
        if bk is not None:
            inner = inner + bk * gkb
        g_w1 = (scale * inner).view_as(w1)
        g_wk = gk * pb.w_scale
        g_bk = None if bk is None else gkb * pb.w_scale.view(-1)
        g_b1 = None if b1 is None else scale * hb
        return [g_wk, g_w1, g_bk, g_b1]
    g_w1 = scale * g1w.view_as(w1)
    return [gk, g_w1, gkb, None if b1 is None else scale * hb]


def _conv_k_backward(pb: Prepared, hz: Tensor, ap: Tensor, dim: int, want_w: bool, want_b: bool):
    """Backward of the K-tap conv: (dL/d pad(a), corr(pad(a), hz) as (C, C/g1, K), sum(hz))."""
    k = pb.kernel_size
    if pb.depthwise:  # a conv with the flipped kernel on the zero-padded gradient
        pad = (0, k - 1) if dim == W_DIM else (k - 1, 0)
        gap = F.conv2d(hz, pb.grad_kernel[dim], padding=pad, groups=pb.groups1)
    else:
        gap = F.conv_transpose2d(hz, pb.grad_kernel[dim], groups=pb.groups1)
    if not (want_w or want_b):
        return gap, None, None
    rc = pb.channels
    args = ([rc] if want_b else None, [1, 1], [0, 0], [1, 1], False, [0, 0], pb.groups1,
            [False, want_w, want_b])
    if dim == W_DIM and _is_cl(hz) and _is_cl(ap):
        _, gk, gb = torch.ops.aten.convolution_backward(
            _as_vertical(hz), _as_vertical(ap), pb.kernel[H_DIM], *args)
        return gap, (gk.squeeze(3) if want_w else None), gb
    _, gk, gb = torch.ops.aten.convolution_backward(hz, ap, pb.kernel[dim], *args)
    return gap, (gk.squeeze(2 if dim == W_DIM else 3) if want_w else None), gb


# --- one lifting ---------------------------------------------------------------------------------

def _split(x: Tensor, dim: int):
    if dim == W_DIM:
        return x[..., 0::2], x[..., 1::2]
    return x[:, :, 0::2], x[:, :, 1::2]


def _sumsq(t: Tensor, groups: int, kind: str) -> Tensor:
    """Sum of squares of ``t``: one value (mse: only the total is needed) or one per batch
    group (the plain norm of each stacked lifting)."""
    if kind == "mse" or groups == 1:
        return torch.linalg.vector_norm(t).square().reshape(1)
    return torch.stack([torch.linalg.vector_norm(p).square() for p in t.chunk(groups, dim=0)])


def _losses(ss: Tensor, numel: int, kind: str) -> Tensor:
    """sum over groups of dist from the accumulated sums of squares (numel: of one group)."""
    if kind == "mse":
        return ss.sum() / numel
    return ss.sqrt().sum()


def _loss_scale(ss: Tensor, numel: int, grad: Tensor, kind: str, batch: int) -> Tensor:
    """k with d loss / d t = k * t: a scalar, or (l2 of several groups) one value per sample of
    the stacked batch, shape (groups * batch, 1, 1, 1)."""
    if kind == "mse":
        return (grad * (2.0 / numel)).reshape(())
    norm = ss.sqrt()   # the plain L2 norm: t / ||t|| (0 where the norm is 0, as torch does)
    k = torch.where(norm > 0, grad / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)
    if k.numel() == 1:
        return k.reshape(())
    return k.repeat_interleave(batch).view(-1, 1, 1, 1)


@dataclass
class _StepState:
    """What one lifting keeps for its backward (all tensors internal to the fast path)."""

    dim: int
    n: int                # length of one half along dim
    shape: tuple          # of the input
    x_cl: bool
    saved_p: tuple        # (padded x_e, ReLU output, t) of P
    saved_u: tuple        # (padded d, ReLU output, t) of U; d is the padded buffer's interior
    diff: Tensor | None   # s - x_o, for c_u
    pb_u: Prepared

    @property
    def d(self) -> Tensor:
        return self.saved_u[0].narrow(self.dim, self.pb_u.before, self.n)


def _padded_half(x: Tensor, dim: int, pb: Prepared, batch: int = 1) -> Tensor:
    """A new channels_last buffer of ``batch`` times x's batch and half of x along ``dim``,
    with room for ``pb``'s padding along ``dim``."""
    shape = list(x.shape)
    shape[dim] = shape[dim] // 2 + pb.before + pb.after
    shape[0] *= batch
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=CL)


def _step_forward(x: Tensor, dim: int, pb_p: Prepared, pb_u: Prepared, loss: str | None,
                  groups: int, out: Tensor | None, keep: bool, x_cl: bool | None = None):
    """One 1-D lifting of the 4-D tensor ``x`` along ``dim``: d = x_o - P(x_e), s = x_e + U(d).

    ``out``: a (2B, ...) buffer padded along ``dim`` (``_padded_half``) receiving [s; d] in the
    interiors of its halves (else new tensors). d is written straight into the interior of U's
    padded input (no padding copy for U). Returns (s, d, sumsq(s - x_o), sumsq(d), state);
    ``keep=False`` (no backward to come) reuses buffers in place and returns no state.
    ``x_cl``: the layout of x's gradient (default: x's own)."""
    e, o = _split(x, dim)
    n = e.shape[dim]
    t_p, saved_p = _branch_forward(pb_p, e, dim, inplace=not keep)
    if out is not None:
        s_buf, d_buf = out.chunk(2, dim=0)
        s_out = s_buf.narrow(dim, pb_u.before, n)
    else:
        d_buf, s_out = _padded_half(x, dim, pb_u), None
    d = _add_branch(o, t_p, pb_p, -1.0, d_buf.narrow(dim, pb_u.before, n))  # d = x_o - P(x_e)
    _pad_cl(d, pb_u.before, pb_u.after, pb_u.mode, dim, d_buf, interior_done=True)
    t_u, saved_u = _branch_forward(pb_u, d_buf, dim, inplace=not keep, padded=True)
    s_out = s_out if (keep or out is not None) else t_u
    s = _add_branch(e, t_u, pb_u, 1.0, s_out)                    # s = x_e + U(d)
    ss_u = ss_p = diff = None
    if loss is not None:
        diff = torch.sub(s, o)
        ss_u, ss_p = _sumsq(diff, groups, loss), _sumsq(d, groups, loss)
    state = None
    if keep:
        state = _StepState(dim, n, tuple(x.shape), _is_cl(x) if x_cl is None else x_cl, saved_p,
                           saved_u, diff, pb_u)
    return s, d, ss_u, ss_p, state


def _step_backward(st: _StepState, pb_p: Prepared, pb_u: Prepared, gs, gd, k_u, k_p,
                   need_p: bool, need_u: bool, gx: Tensor | None = None):
    """Backward of one lifting given the gradients of s and d (None: zero) and the loss scales
    k_u (of s - x_o) and k_p (of d). Returns (gradient of x, P's and U's raw parameter sums)."""
    dim, n = st.dim, st.n
    ref = st.saved_u[2]
    if gs is not None and not _is_cl(gs):
        gs = gs.contiguous(memory_format=CL)
    if gd is not None and not _is_cl(gd):
        gd = gd.contiguous(memory_format=CL)
    if gx is None:  # the input's gradient in the input's layout, written half by half
        gx = torch.empty(st.shape, dtype=ref.dtype, device=ref.device,
                         memory_format=CL if st.x_cl else torch.contiguous_format)
    gx_e, gx_o = _split(gx, dim)
    diff = st.diff
    # total gradient of s (c_u = dist(s, x_o) adds k_u * diff), accumulated in place in gx_e,
    # which later receives P's contribution
    gs_in_gx = False
    if k_u is not None:
        if gs is None:
            gs = torch.mul(diff, k_u, out=gx_e) if st.x_cl else torch.mul(diff, k_u)
        else:
            gs = torch.addcmul(gs, diff, k_u, out=gx_e) if st.x_cl else torch.addcmul(gs, diff, k_u)
        gs_in_gx = st.x_cl
    elif gs is None:
        gs = torch.zeros_like(ref)
    # U: s = x_e + U(d); d's gradient: a view of a buffer of ours, accumulated in place
    g_d, u_raw = _branch_backward(pb_u, st.saved_u, gs, dim, n, need_u)
    o_written = False
    if gd is not None:
        if st.x_cl and k_u is None and k_p is None:
            g_d = torch.add(gd, g_d, out=gx_o)       # the gradient of d is that of x_o
            o_written = True
        else:
            g_d.add_(gd)
    if k_p is not None:
        g_d.addcmul_(st.d, k_p)                      # c_p = dist(d, 0)
    if not o_written:
        if k_u is not None:                          # c_u depends on x_o too
            torch.addcmul(g_d, diff, k_u, value=-1.0, out=gx_o)
        else:
            gx_o.copy_(g_d)
    # P: d = x_o - P(x_e)
    g_e, p_raw = _branch_backward(pb_p, st.saved_p, g_d, dim, n, need_p)
    if gs_in_gx:
        gx_e.add_(g_e)
    else:
        torch.add(gs, g_e, out=gx_e)
    return gx, p_raw, u_raw


# --- the pooling layer: liftings over batch chunks ---------------------------------------------

CHUNK_BYTES = 3 << 20
"""Input bytes per batch chunk on CPU (a tunable; at least one sample per chunk). Each chunk
runs all its liftings while its intermediates are still in cache. Measured here (1 thread,
2 MiB L2, 32 MiB L3): 1.6-3.2 MiB chunks were best at 32x64x56x56, 32x256x14x14 and
8x128x28x28; the whole batch at once was ~2x slower for forward+backward (memory traffic, and
fresh large allocations whose page faults are expensive). Other devices: one chunk."""


def _chunks(x: Tensor):
    """(start, size) of balanced batch chunks of at most ``CHUNK_BYTES`` (one sample at least)."""
    batch = x.shape[0]
    step = batch
    if x.device.type == "cpu":
        step = max(1, min(batch, CHUNK_BYTES // max(1, x[0].numel() * x.element_size())))
    count = -(-batch // step)
    bounds = [batch * j // count for j in range(count + 1)]
    return [(bounds[j], bounds[j + 1] - bounds[j]) for j in range(count)]


def _accumulate(acc: list, grads) -> None:
    if grads is None:
        return
    for j, g in enumerate(grads):
        if g is not None:
            acc[j] = g if acc[j] is None else acc[j].add_(g)


class _LiftPoolFn(torch.autograd.Function):
    """LiftDownPool on a channels_last input, one Function for all its liftings:
    2-D: x -> (LL, LH, HL, HH[, c_u, c_p]); 1-D ((N, C, 1, L) input): x -> (s, d[, c_u, c_p]).

    The batch is processed in chunks (``CHUNK_BYTES``), each running the horizontal lifting and
    then ONE vertical lifting of [s; d] stacked along the batch (no copy: the horizontal lifting
    writes into that buffer) while its data is in cache; the backward runs chunk by chunk too.
    """

    @staticmethod
    def forward(ctx, x, two_d, pb_p, pb_u, loss, loss_vertical, *params):
        return _lift_pool_forward(ctx, x, two_d, pb_p, pb_u, loss, loss_vertical)

    @staticmethod
    def backward(ctx, *grads):
        if torch.is_grad_enabled():  # create_graph=True: refuse rather than be silently wrong
            raise RuntimeError(
                "LiftPool impl='fast' computes first-order gradients only (its backward is "
                "hand-written); for double backward / create_graph=True use impl='reference'")
        nb = 4 if ctx.two_d else 2
        band_grads, (gcu, gcp) = grads[:nb], (grads[nb:] + (None, None))[:2]
        pb_p, pb_u, loss = ctx.pb_p, ctx.pb_u, ctx.loss
        need_x = ctx.needs_input_grad[0]
        need_p = any(ctx.needs_input_grad[6:10])
        need_u = any(ctx.needs_input_grad[10:14])
        k = {}
        if loss is not None:
            for key, grad in (("hu", gcu), ("hp", gcp), ("vu", gcu), ("vp", gcp)):
                if grad is not None and key in ctx.ss:
                    k[key] = (ctx.numel[key[0]], grad)
        same = ctx.two_d and band_grads[1] is band_grads[0] and band_grads[3] is band_grads[2]
        # the input's gradient in the input's layout (an NCHW input was converted chunk by
        # chunk; its gradient is converted back chunk by chunk, from cache)
        gx = torch.empty(ctx.x_shape, dtype=ctx.dtype, device=ctx.device,
                         memory_format=CL if ctx.x_cl else torch.contiguous_format)
        p_acc, u_acc = [None] * 4, [None] * 4
        scales: dict = {}

        def scale(key, batch):   # the same for every chunk of a given size
            if key not in k:
                return None
            if (key, batch) not in scales:
                numel, grad = k[key]
                scales[(key, batch)] = _loss_scale(ctx.ss[key], numel, grad, loss, batch)
            return scales[(key, batch)]
        for (i, b), (h_st, v_st) in zip(ctx.chunks, ctx.states):
            if ctx.two_d:
                g = [None if t is None else t.narrow(0, i, b) for t in band_grads]
                gs_v = _stack_pair(g[0], g[2])          # [LL; HL]
                gd_v = gs_v if same else _stack_pair(g[1], g[3])     # [LH; HH]
                g_buf, pg, ug = _step_backward(v_st, pb_p, pb_u, gs_v, gd_v, scale("vu", b),
                                               scale("vp", b), need_p, need_u)
                _accumulate(p_acc, pg), _accumulate(u_acc, ug)
                gs, gd = g_buf.chunk(2, dim=0)
            else:
                gs, gd = (None if t is None else t.narrow(0, i, b) for t in band_grads)
            gx_c, pg, ug = _step_backward(h_st, pb_p, pb_u, gs, gd, scale("hu", b),
                                          scale("hp", b), need_p, need_u,
                                          gx.narrow(0, i, b) if ctx.x_cl else None)
            if not ctx.x_cl:
                gx.narrow(0, i, b).copy_(gx_c)
            _accumulate(p_acc, pg), _accumulate(u_acc, ug)
        p_grads = _finish_param_grads(pb_p, p_acc if need_p else None)
        u_grads = _finish_param_grads(pb_u, u_acc if need_u else None)
        return (gx if need_x else None, None, None, None, None, None, *p_grads, *u_grads)


def _stack_pair(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """[a; b] along the batch, a missing gradient as zeros (None if both are missing)."""
    if a is None and b is None:
        return None
    ref = a if a is not None else b
    a = torch.zeros_like(ref) if a is None else a
    b = torch.zeros_like(ref) if b is None else b
    return torch.cat([a, b], dim=0)


def _lift_pool_forward(ctx, x, two_d, pb_p, pb_u, loss, loss_vertical):
    """The forward of ``_LiftPoolFn``; with ``ctx`` None (no gradient wanted) the buffers are
    reused in place and nothing is kept."""
    keep = ctx is not None
    n_batch = x.shape[0]
    chunks = _chunks(x)
    bands = None
    ss: dict = {}
    states = []
    loss_v = loss if loss_vertical else None
    x_cl = _is_cl(x)
    if not (x_cl or x.is_contiguous()):
        x = x.contiguous()
    for i, b in chunks:
        xc = x.narrow(0, i, b)
        if not x_cl:  # one transposing copy per chunk, small and then in cache
            xc = xc.contiguous(memory_format=CL)
        buf = _padded_half(xc, W_DIM, pb_u, batch=2)   # [s; d], padded along W for U
        s, d, ss_u, ss_p, h_st = _step_forward(xc, W_DIM, pb_p, pb_u, loss, 1, buf, keep)
        if two_d:   # the vertical lifting of [s; d] (a view of the buffer's interior)
            sd = buf.narrow(W_DIM, pb_u.before, xc.shape[W_DIM] // 2)
            s_v, d_v, vs_u, vs_p, v_st = _step_forward(sd, H_DIM, pb_p, pb_u, loss_v, 2, None,
                                                       keep, x_cl=True)
            parts = (s_v[:b], d_v[:b], s_v[b:], d_v[b:])       # LL, LH, HL, HH
        else:
            v_st, vs_u, vs_p = None, None, None
            parts = (s, d)
        if bands is None:
            bands = [torch.empty((n_batch, *p.shape[1:]), dtype=p.dtype, device=p.device,
                                 memory_format=CL) for p in parts]
        for band, part in zip(bands, parts):
            band.narrow(0, i, b).copy_(part)
        for key, val in (("hu", ss_u), ("hp", ss_p), ("vu", vs_u), ("vp", vs_p)):
            if val is not None:
                ss[key] = val if key not in ss else ss[key] + val
        states.append((h_st, v_st))
    outputs = tuple(bands)
    c_u = c_p = None
    numel = {"h": x.numel() // 2, "v": x.numel() // 4}
    if loss is not None:
        c_u = _losses(ss["hu"], numel["h"], loss)
        c_p = _losses(ss["hp"], numel["h"], loss)
        if "vu" in ss:
            c_u = c_u + _losses(ss["vu"], numel["v"], loss)
            c_p = c_p + _losses(ss["vp"], numel["v"], loss)
    if keep:
        ctx.two_d, ctx.pb_p, ctx.pb_u, ctx.loss = two_d, pb_p, pb_u, loss
        ctx.chunks, ctx.states, ctx.ss = chunks, states, ss
        ctx.numel = numel
        ctx.x_shape, ctx.dtype, ctx.device, ctx.x_cl = tuple(x.shape), x.dtype, x.device, x_cl
        ctx.set_materialize_grads(False)
    return outputs if loss is None else (*outputs, c_u, c_p)


def branch_params(branch) -> tuple:
    return (branch.weight_k, branch.weight_1, branch.bias_k, branch.bias_1)


@_eager
def lift_sum(x: Tensor, predictor, updater, loss: str | None, loss_vertical: bool, sel: int,
             out_cl: bool):
    """LiftDownPool-2D's output when it is the sum of the bands selected by the bits of ``sel``
    (1 LL, 2 LH, 4 HL, 8 HH), without materialising the bands: (y, c_u, c_p), y in the
    requested layout. The native kernel only: None where it does not apply (lift_down and
    combine compute the same)."""
    if not lift_native.usable(x, predictor, updater):
        return None
    params = (*branch_params(predictor), *branch_params(updater))
    need = torch.is_grad_enabled() and (x.requires_grad or any(
        p is not None and p.requires_grad for p in params))
    ran("native")
    (y,), c_u, c_p = lift_native.lift_down(x, predictor, updater, loss, loss_vertical, True,
                                           params, need, sel)
    return (y if out_cl else y.contiguous()), c_u, c_p


@_eager
def lift_down(x: Tensor, predictor, updater, loss: str | None, loss_vertical: bool = True,
              two_d: bool = True):
    """LiftDownPool-2D (``two_d``; x is (N, C, H, W)) or -1D (x is (N, C, 1, L)), NCHW or
    channels_last: (bands, c_u, c_p), bands (LL, LH, HL, HH) or (s, d), channels_last."""
    params = (*branch_params(predictor), *branch_params(updater))
    need = torch.is_grad_enabled() and (x.requires_grad or any(
        p is not None and p.requires_grad for p in params))
    if lift_native.usable(x, predictor, updater):
        ran("native")
        return lift_native.lift_down(x, predictor, updater, loss, loss_vertical, two_d, params,
                                     need)
    ran("torch")
    with torch.no_grad():
        pb_p = prepare(predictor, -1.0, x.dtype, x.device, need)
        pb_u = prepare(updater, 1.0, x.dtype, x.device, need)
    if need:
        out = _LiftPoolFn.apply(x, two_d, pb_p, pb_u, loss, loss_vertical, *params)
    else:
        with torch.no_grad():
            out = _lift_pool_forward(None, x, two_d, pb_p, pb_u, loss, loss_vertical)
    nb = 4 if two_d else 2
    bands = out[:nb]
    if loss is None:
        return bands, None, None
    return bands, out[nb], out[nb + 1]


class _Combine(torch.autograd.Function):
    """The pooled output from the (channels_last) bands: their sum, or their concatenation
    along the channels, written straight into the caller's memory format. The gradient goes
    back converted to channels_last once, the same tensor for every summed band."""

    @staticmethod
    def forward(ctx, out_cl, concat, *bands):
        fmt = CL if out_cl else torch.contiguous_format
        b0 = bands[0]
        ctx.concat, ctx.count = concat, len(bands)
        if concat:
            c = b0.shape[1]
            shape = (b0.shape[0], c * len(bands), *b0.shape[2:])
            out = torch.empty(shape, dtype=b0.dtype, device=b0.device, memory_format=fmt)
            for i, b in enumerate(bands):
                out.narrow(1, i * c, c).copy_(b)
            return out
        out = torch.empty(b0.shape, dtype=b0.dtype, device=b0.device, memory_format=fmt)
        if len(bands) == 1:
            return out.copy_(b0)
        torch.add(b0, bands[1], out=out)
        for b in bands[2:]:
            out.add_(b)
        return out

    @staticmethod
    def backward(ctx, g):  # linear and made of differentiable ops: double backward works
        g = g.contiguous(memory_format=CL)
        if ctx.concat:
            c = g.shape[1] // ctx.count
            return (None, None, *(g.narrow(1, i * c, c) for i in range(ctx.count)))
        return (None, None, *([g] * ctx.count))


@_eager
def combine(bands, concat: bool, out_cl: bool) -> Tensor:
    """Sum (or channel concatenation) of ``bands`` in the requested layout: a new tensor."""
    return _Combine.apply(out_cl, concat, *bands)


@_eager
def unlift(s: Tensor, d: Tensor, dim: int, predictor, updater) -> Tensor:
    """Inverse 1-D lifting with the fast primitives, autograd-tracked, channels_last output:
    x_e = s - U(d), x_o = d + P(x_e), interleaved along ``dim``."""
    graph = torch.is_grad_enabled() and (s.requires_grad or d.requires_grad or any(
        p is not None and p.requires_grad for b in (predictor, updater) for p in branch_params(b)))
    pb_p = prepare(predictor, -1.0, s.dtype, s.device, backward=False, fused=not graph)
    pb_u = prepare(updater, 1.0, s.dtype, s.device, backward=False, fused=not graph)
    s, d = s.contiguous(memory_format=CL), d.contiguous(memory_format=CL)
    t_u, _ = _branch_forward(pb_u, d, dim)
    e = _add_branch(s, t_u, pb_u, -1.0)            # x_e = s - U(d)
    t_p, _ = _branch_forward(pb_p, e, dim)
    o = _add_branch(d, t_p, pb_p, 1.0)             # x_o = d + P(x_e)
    shape = list(e.shape)
    shape[dim] *= 2
    x = torch.empty(shape, dtype=e.dtype, device=e.device, memory_format=CL)
    _split(x, dim)[0].copy_(e)
    _split(x, dim)[1].copy_(o)  # views taken after the first write (autograd's view tracking)
    return x
