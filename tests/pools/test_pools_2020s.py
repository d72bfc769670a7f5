"""The eight operators of issue 28 (docs/pools.md, "Beyond eighteen"), each against a float64
brute-force oracle written from its paper's equations in Python/numpy loops, independently of
the operator's code. The contract is in test_pool_contract.py, conformance in test_conformance.py."""
import doctest
import importlib
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import poolbench
from poolbench.errors import PoolOptionError
from poolbench.pool_table import pool_rows
from poolbench.testing import count_parameters

NEW = ("tips", "adapool", "hwd", "diffstride", "pasa", "nlp", "fractional", "lppool")
META = {
    # name: (stochastic, invertible, convex, constant_gain, year, parameters at C = 64)
    "tips": (True, False, True, 1.0, 2025, 64 * 9 + 64),
    "adapool": (False, True, True, 1.0, 2023, 64),
    "hwd": (False, False, False, None, 2023, 4 * 64 * 64 + 64 + 2 * 64),
    "diffstride": (False, False, False, 1.0, 2022, 2),
    "pasa": (False, False, False, 1.0, 2020, 64 * 18 * 9 + 2 * 18),
    "nlp": (False, False, True, 1.0, 2023, (64 * 16 * 4 + 16 + 2 * 16) + (4 * 16 * 16 + 4 * 16) + (16 * 64 + 64 + 2 * 64)),
    "fractional": (True, False, False, 1.0, 2014, 0),
    "lppool": (False, False, False, None, 2012, 0),
}


def pool(spec, channels=3, train=False, seed=0):
    torch.manual_seed(seed)
    return poolbench.get_pool(spec, channels).to(torch.float64).train(train)


def randn(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def perturb(module, seed=3):
    """Every parameter and BN buffer moved to a random value (variances kept positive)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if t.is_floating_point():
                r = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
                t.copy_(r.abs() + 0.5 if name.endswith("running_var") else r)


def windows(x):
    """(N, C, H, W) -> numpy (N, C, H//2, W//2, 4): each 2x2 window as [a, b, c, d] (row-major)."""
    x = np.asarray(x)
    n, c, h, w = x.shape
    out = np.zeros((n, c, h // 2, w // 2, 4))
    for i in range(h // 2):
        for j in range(w // 2):
            out[:, :, i, j] = np.stack([x[:, :, 2 * i, 2 * j], x[:, :, 2 * i, 2 * j + 1],
                                        x[:, :, 2 * i + 1, 2 * j], x[:, :, 2 * i + 1, 2 * j + 1]], -1)
    return out


def softmax(v):
    e = np.exp(np.asarray(v, dtype=np.float64) - np.max(v))
    return e / e.sum()


# --- the listing and the metadata ------------------------------------------------------------

def test_26_builtins_each_with_paper_licence_and_shift_column():
    rows = {r["name"]: r for r in pool_rows() if r["source"] == "built-in"}
    assert len(rows) == 26 and set(NEW) <= set(rows)
    for name in NEW:
        assert rows[name]["status"] == "ok" and rows[name]["licence"] == "MIT" and rows[name]["paper"]


@pytest.mark.parametrize("name", NEW)
def test_metadata_and_parameter_count(name):
    spec = poolbench.get_spec(name)
    stochastic, invertible, convex, gain, year, params = META[name]
    assert (spec.stochastic, spec.invertible, spec.convex, spec.constant_gain) == (stochastic, invertible, convex, gain)
    assert spec.paper.year == year and spec.paper.url.startswith("https://") and spec.notes
    assert spec.source == "built-in" and spec.licence == "MIT" and spec.display_name != name
    assert count_parameters(poolbench.get_pool(name, 64))[0] == params


@pytest.mark.parametrize("module", ["fractional", "lppool", "hwd", "adapool"])
def test_docstring_examples_hold(module):
    mod = importlib.import_module(f"poolbench.pools.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("spec,message", [
    ("fractional:kernel_size=4", "kernel_size must be 2"), ("fractional:eval_sample=1.0", "eval_sample"),
    ("lppool:p=0", "p must be > 0"), ("adapool:beta_init=1.5", "beta_init"),
    ("tips:kernel_size=2", "odd"), ("diffstride:smoothness=4", "smoothness must be in"),
    ("diffstride:stride_init=0.5", "stride_init"), ("pasa:kernel_size=4", "kernel_size"),
    ("nlp:heads=0", ">= 1"),
])
def test_bad_options_are_one_clear_line(spec, message):
    with pytest.raises(PoolOptionError, match=message) as info:
        poolbench.get_pool(spec, 4)
    assert "\n" not in str(info.value)


def test_builtin_lppool_and_the_plugin_are_two_operators():
    assert poolbench.get_spec("lppool").source == "built-in"
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64)
    # the built-in sums over the window, the plugin averages: a factor 4^(1/p) apart at p = 2
    if "lppool_learned" in poolbench.list_pools():
        torch.testing.assert_close(pool("lppool", 2)(x), 2 * pool("lppool_learned", 2)(x))


# --- fractional --------------------------------------------------------------------------------

def fmp_starts(u, n_in, n_out, k):
    """Torch's pseudo-random start positions of fractional max-pooling (one axis)."""
    if n_out == 1:
        return [n_in - k]
    alpha = (n_in - k) / (n_out - 1)
    return [int((i + u) * alpha) - int(u * alpha) for i in range(n_out - 1)] + [n_in - k]


def fmp_oracle(x, u, k):
    """u: (N, C, 2) numbers, [..., 0] for the columns and [..., 1] for the rows."""
    x = np.asarray(x)
    n, c, h, w = x.shape
    ho, wo = h // 2, w // 2
    out = np.zeros((n, c, ho, wo))
    for a in range(n):
        for b in range(c):
            rows = fmp_starts(float(u[a, b, 1]), h, ho, k)
            cols = fmp_starts(float(u[a, b, 0]), w, wo, k)
            for i, r in enumerate(rows):
                for j, s in enumerate(cols):
                    out[a, b, i, j] = x[a, b, r:r + k, s:s + k].max()
    return out


@pytest.mark.parametrize("size", [(8, 8), (9, 7), (12, 6)])
def test_fractional_against_the_pseudo_random_sequence(size):
    x = randn(2, 3, *size)
    p = pool("fractional", train=True)
    p.reseed(7)
    y = p(x)
    u = torch.rand((2, 3, 2), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    np.testing.assert_allclose(y.numpy(), fmp_oracle(x, u, 3), rtol=0, atol=0)
    # eval: one fixed draw, u = 0.5
    np.testing.assert_allclose(p.eval()(x).numpy(), fmp_oracle(x, np.full((2, 3, 2), 0.5), 3), rtol=0, atol=0)


def test_fractional_draws_vary_and_k2_is_max_pooling_at_ratio_half():
    x = randn(4, 3, 16, 16)
    p = pool("fractional", train=True)
    assert not torch.equal(p(x), p(x))                   # k = 3: another draw, other windows
    two = pool("fractional:kernel_size=2", train=True)
    torch.testing.assert_close(two(x), F.max_pool2d(x, 2), rtol=0, atol=0)


# --- lppool -------------------------------------------------------------------------------------

@pytest.mark.parametrize("p_norm", [2.0, 3.0, 1.5, 1.0])
def test_lppool_against_loops(p_norm):
    x = randn(2, 3, 7, 6)
    if p_norm == 1.5:
        x = x.abs()                 # x^1.5 needs x >= 0
    win = windows(x)
    s = (win ** p_norm).sum(-1)
    want = np.sign(s) * np.abs(s) ** (1 / p_norm)
    np.testing.assert_allclose(pool(f"lppool:p={p_norm}")(x).numpy(), want, rtol=1e-12, atol=1e-12)


def test_lppool_matches_torch_where_torch_is_finite_and_not_where_it_is_nan():
    x = randn(2, 3, 8, 8).abs()
    torch.testing.assert_close(pool("lppool:p=2.5")(x), F.lp_pool2d(x, 2.5, 2, 2))
    neg = -torch.ones(1, 1, 2, 2, dtype=torch.float64)
    assert torch.isnan(F.lp_pool2d(neg, 3.0, 2, 2)).all()             # torch: a negative sum is NaN
    torch.testing.assert_close(pool("lppool:p=3", 1)(neg), -torch.full((1, 1, 1, 1), 4.0 ** (1 / 3), dtype=torch.float64))
    zero = torch.zeros(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    y = pool("lppool", 1)(zero)
    y.sum().backward()
    assert y.item() == 0.0 and torch.equal(zero.grad, torch.zeros_like(zero))


# --- hwd ----------------------------------------------------------------------------------------

def test_hwd_against_haar_bands_conv_bn_relu():
    x = randn(2, 3, 7, 6)
    p = pool("hwd")
    perturb(p)
    win = windows(x)
    a, b, c, d = (win[..., i] for i in range(4))
    bands = [(a + b + c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2]
    stacked = np.concatenate(bands, axis=1)                      # (N, 4C, h, w): LL of all, then LH ...
    wt = p.mix.weight.detach().numpy()[:, :, 0, 0]
    z = np.einsum("oi,nihw->nohw", wt, stacked) + p.mix.bias.detach().numpy()[None, :, None, None]
    bn = p.norm
    mean, var = bn.running_mean.numpy(), bn.running_var.numpy()
    z = (z - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + bn.eps)
    z = z * bn.weight.detach().numpy()[None, :, None, None] + bn.bias.detach().numpy()[None, :, None, None]
    np.testing.assert_allclose(p(x).detach().numpy(), np.maximum(z, 0), rtol=1e-10, atol=1e-10)


def test_hwd_bands_keep_the_energy():
    # the orthonormal transform: the four bands carry exactly the window's energy (no loss)
    from poolbench.pools.hwd import haar_bands
    x = randn(2, 3, 6, 4)
    torch.testing.assert_close(haar_bands(x).pow(2).sum(), x.pow(2).sum())


# --- adapool ------------------------------------------------------------------------------------

def adapool_window(v, beta):
    mean = sum(v) / 4
    dsc = [1.0 if a == 0 and mean == 0 else 2 * a * mean / (a * a + mean * mean) for a in v]
    w_dsc, w_em = softmax(dsc), softmax(v)
    return w_dsc, w_em, beta * float(w_dsc @ v) + (1 - beta) * float(w_em @ v)


def test_adapool_and_adaunpool_against_loops():
    x = randn(2, 3, 7, 6) * 2
    p = pool("adapool")
    with torch.no_grad():
        p.beta.copy_(torch.tensor([0.0, 0.3, 1.0]))
    y, state = p.down(x)
    win = windows(x)
    want = np.zeros(y.shape)
    up = np.zeros(x.shape)
    for n in range(2):
        for c in range(3):
            beta = float(p.beta[c].detach())
            for i in range(3):
                for j in range(3):
                    w_dsc, w_em, want[n, c, i, j] = adapool_window(list(win[n, c, i, j]), beta)
                    split = float(y[n, c, i, j].detach()) * (beta * w_dsc + (1 - beta) * w_em)
                    up[n, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2] = split.reshape(2, 2)
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p.up(y, state).detach().numpy(), up, rtol=1e-12, atol=1e-12)


def test_adapool_beta_is_clamped_and_its_ends_are_edscw_and_softpool():
    x = randn(1, 2, 4, 4)
    p = pool("adapool", 2)
    with torch.no_grad():
        p.beta.copy_(torch.tensor([-3.0, 7.0]))       # clamped to 0 (eM) and 1 (eDSCW)
    y = p(x)
    torch.testing.assert_close(y[:, :1], pool("softpool", 1)(x[:, :1]))
    w = windows(x)
    want = [adapool_window(list(w[0, 1, i, j]), 1.0)[2] for i in range(2) for j in range(2)]
    np.testing.assert_allclose(y[0, 1].detach().numpy().ravel(), want, rtol=1e-12)


# --- tips ---------------------------------------------------------------------------------------

def depthwise_conv(x, weight):
    """'same' depthwise convolution with zero padding, by loops: x (N, C, H, W), weight (C, k, k)."""
    n, c, h, w = x.shape
    k = weight.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = (xp[:, :, i:i + k, j:j + k] * weight[None]).sum((-1, -2))
    return out


def test_tips_against_the_equations():
    x = randn(2, 3, 9, 6)
    p = pool("tips", train=True)
    perturb(p)
    p.reseed(11)
    y = p(x)
    xe = x[..., :8, :6].numpy()
    psi = np.maximum(depthwise_conv(xe, p.feature.weight.detach().numpy()[:, 0]), 0)
    quads = np.stack([psi[..., :4, :3].mean((-1, -2)), psi[..., :4, 3:].mean((-1, -2)),
                      psi[..., 4:, :3].mean((-1, -2)), psi[..., 4:, 3:].mean((-1, -2))], -1)
    logits = quads * p.score.weight.detach().numpy().reshape(1, 3, 1)
    tau = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)          # (N, C, 4)
    comps = [xe[..., 0::2, 0::2], xe[..., 0::2, 1::2], xe[..., 1::2, 0::2], xe[..., 1::2, 1::2]]
    want = sum(tau[..., k, None, None] * comps[k] for k in range(4))
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-10, atol=1e-12)
    # the two regularisers of the last training-mode forward
    dy, dx = torch.randint(-2, 3, (2,), generator=torch.Generator().manual_seed(11)).tolist()
    shifted = np.zeros_like(xe)
    for i in range(8):
        for j in range(6):
            if 0 <= i - dy < 8 and 0 <= j - dx < 6:
                shifted[..., i, j] = xe[..., i - dy, j - dx]
    aux = p.auxiliary_losses()
    assert aux["tips_tau"][0] == pytest.approx(1 / 0.65) and aux["tips_shift"][0] == pytest.approx(0.35 / 0.65)
    assert float(aux["tips_tau"][1].detach()) == pytest.approx(np.mean(1 - np.sqrt((tau ** 2).sum(-1))), rel=1e-10)
    assert float(aux["tips_shift"][1].detach()) == pytest.approx(np.mean((psi - shifted) ** 2), rel=1e-10)
    p.eval()(x)
    assert p.auxiliary_losses() == {}


def test_tips_losses_reach_the_model_total():
    model = torch.nn.Sequential(poolbench.get_pool("tips", 2)).train()
    model(torch.randn(2, 2, 8, 8))
    total, terms = poolbench.auxiliary_loss(model)
    assert set(terms) == {"tips_tau", "tips_shift"} and total.requires_grad


# --- diffstride ---------------------------------------------------------------------------------

def dft_matrix(n):
    k = np.arange(n)
    return np.exp(-2j * np.pi * np.outer(k, k) / n)


def kept_frequencies(n_out):
    """Signed frequencies of the n_out kept DFT bins: 0, 1, ..., then the negative ones."""
    return [f if f < (n_out + 1) // 2 else f - n_out for f in range(n_out)]


def ramp(n_in, stride, freqs, r):
    c = max(n_in / stride, 2.0) / 2
    return np.array([min(max((c - abs(f)) / r + 0.5, 0.0), 1.0) for f in freqs])


@pytest.mark.parametrize("size,strides", [((8, 8), (2.0, 2.0)), ((10, 7), (2.7, 3.4)), ((12, 9), (1.2, 5.0))])
def test_diffstride_against_dft_matrices(size, strides):
    h, w = size
    x = randn(2, 3, h, w)
    p = pool("diffstride:smoothness=1.5")
    with torch.no_grad():
        p.strides.copy_(torch.tensor(strides, dtype=torch.float64))
    ho, wo = h // 2, w // 2
    fh, fw = kept_frequencies(ho), kept_frequencies(wo)
    spec = np.einsum("ih,nchw,jw->ncij", dft_matrix(h), x.numpy(), dft_matrix(w)) / (h * w)
    kept = spec[:, :, [f % h for f in fh]][:, :, :, [f % w for f in fw]]
    kept = kept * np.outer(ramp(h, strides[0], fh, 1.5), ramp(w, strides[1], fw, 1.5))
    want = np.einsum("ih,nchw,jw->ncij", dft_matrix(ho).conj(), kept, dft_matrix(wo).conj()).real
    np.testing.assert_allclose(p(x).detach().numpy(), want, rtol=1e-10, atol=1e-12)


def test_diffstride_strides_learn_from_the_first_step():
    p = pool("diffstride", train=True)
    y = p(randn(2, 3, 16, 16))
    (y * randn(*y.shape, seed=4)).sum().backward()
    assert (p.strides.grad.abs() > 0).all()


# --- pasa ---------------------------------------------------------------------------------------

def reflect_pad(x, pad):
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")


@pytest.mark.parametrize("size,groups,max_first", [((8, 6), 2, True), ((7, 9), 3, False)])
def test_pasa_against_loops(size, groups, max_first):
    x = randn(2, 4, *size)
    p = pool(f"pasa:groups={groups},max_first={str(max_first).lower()}", 4)
    perturb(p)
    xe = x[..., : size[0] // 2 * 2, : size[1] // 2 * 2].numpy()
    if max_first:
        h, w = xe.shape[-2:]
        xe = np.array([[[[xe[a, b, i:i + 2, j:j + 2].max() for j in range(w - 1)] for i in range(h - 1)]
                        for b in range(4)] for a in range(2)])
    n, c, h, w = xe.shape
    xp = reflect_pad(xe, 1)
    wt = p.predict.weight.detach().numpy()                        # (G*9, C, 3, 3)
    bn = p.norm
    group = [ch * groups // c for ch in range(c)]
    out = np.zeros((n, c, (h + 1) // 2, (w + 1) // 2))
    for a in range(n):
        for i in range(0, h, 2):
            for j in range(0, w, 2):
                patch = xp[a, :, i:i + 3, j:j + 3]                 # (C, 3, 3)
                z = (wt * patch[None]).sum((1, 2, 3))
                z = (z - bn.running_mean.numpy()) / np.sqrt(bn.running_var.numpy() + bn.eps)
                z = z * bn.weight.detach().numpy() + bn.bias.detach().numpy()
                filters = [softmax(z[g * 9:(g + 1) * 9]) for g in range(groups)]
                for ch in range(c):
                    out[a, ch, i // 2, j // 2] = filters[group[ch]] @ patch[ch].ravel()
    np.testing.assert_allclose(p(x).detach().numpy(), out, rtol=1e-10, atol=1e-12)


# --- nlp ----------------------------------------------------------------------------------------

def batch_norm(z, bn):
    """Eval-mode BatchNorm over axis 0 of z (channels first)."""
    shape = (-1,) + (1,) * (z.ndim - 1)
    mean, var = bn.running_mean.numpy().reshape(shape), bn.running_var.numpy().reshape(shape)
    return ((z - mean) / np.sqrt(var + bn.eps) * bn.weight.detach().numpy().reshape(shape)
            + bn.bias.detach().numpy().reshape(shape))


def bilinear(grid, h, w):
    """align_corners=False bilinear resize of (C, th, tw) to (C, h, w), by the definition."""
    _, th, tw = grid.shape
    out = np.zeros((grid.shape[0], h, w))
    for i in range(h):
        for j in range(w):
            sy = max((i + 0.5) * th / h - 0.5, 0.0)
            sx = max((j + 0.5) * tw / w - 0.5, 0.0)
            y0, x0 = min(int(sy), th - 1), min(int(sx), tw - 1)
            y1, x1 = min(y0 + 1, th - 1), min(x0 + 1, tw - 1)
            fy, fx = sy - y0, sx - x0
            out[:, i, j] = ((1 - fy) * (1 - fx) * grid[:, y0, x0] + (1 - fy) * fx * grid[:, y0, x1]
                            + fy * (1 - fx) * grid[:, y1, x0] + fy * fx * grid[:, y1, x1])
    return out


def position_code(th, tw, d):
    q = d // 4
    freqs = [math.exp(-math.log(10000.0) * i / q) for i in range(q)]
    code = np.zeros((th * tw, d))
    for r in range(th):
        for s in range(tw):
            code[r * tw + s] = ([math.sin(r * f) for f in freqs] + [math.cos(r * f) for f in freqs]
                                + [math.sin(s * f) for f in freqs] + [math.cos(s * f) for f in freqs])
    return code


def test_nlp_against_the_equations():
    x = randn(2, 8, 8, 6)
    p = pool("nlp:reduction=1", 8)                 # d = 8, 2 heads of 4, 2x2 patches: 4 x 3 tokens
    perturb(p)
    n, c, h, w = x.shape
    out = np.zeros((n, c, h // 2, w // 2))
    e_w, e_b = p.embed.weight.detach().numpy(), p.embed.bias.detach().numpy()
    att = p.attention
    wq, wk, wv = np.split(att.in_proj_weight.detach().numpy(), 3)
    bq, bk, bv = np.split(att.in_proj_bias.detach().numpy(), 3)
    wo, bo = att.out_proj.weight.detach().numpy(), att.out_proj.bias.detach().numpy()
    for a in range(n):
        xa = x[a].numpy()
        tokens = np.array([[(e_w * xa[None, :, 2 * r:2 * r + 2, 2 * s:2 * s + 2]).sum((1, 2, 3)) + e_b
                            for s in range(3)] for r in range(4)])            # (4, 3, d)
        tokens = np.maximum(batch_norm(tokens.transpose(2, 0, 1), p.embed_norm), 0)
        seq = tokens.reshape(8, 12).T + position_code(4, 3, 8)
        q, k, v = seq @ wq.T + bq, seq @ wk.T + bk, seq @ wv.T + bv
        heads = []
        for hd in range(2):
            sl = slice(4 * hd, 4 * hd + 4)
            scores = q[:, sl] @ k[:, sl].T / math.sqrt(4)
            attn = np.exp(scores - scores.max(1, keepdims=True))
            heads.append(attn / attn.sum(1, keepdims=True) @ v[:, sl])
        attended = np.concatenate(heads, 1) @ wo.T + bo
        grid = bilinear(attended.T.reshape(8, 4, 3), h, w)
        z = np.einsum("oi,ihw->ohw", p.restore.weight.detach().numpy()[:, :, 0, 0], grid)
        z += p.restore.bias.detach().numpy()[:, None, None]
        score = 1 / (1 + np.exp(-batch_norm(z, p.restore_norm)))
        sw, xw = windows(score[None])[0], windows(xa[None])[0]
        for ch in range(c):
            for i in range(h // 2):
                for j in range(w // 2):
                    e = np.exp(sw[ch, i, j])
                    out[a, ch, i, j] = (e * xw[ch, i, j]).sum() / e.sum()
    np.testing.assert_allclose(p(x).detach().numpy(), out, rtol=1e-9, atol=1e-11)


def test_nlp_at_patch_1_restores_without_interpolation():
    # one token per pixel: the restoration is the identity, as in the authors' code
    p = pool("nlp:patch=1", 4)
    x = randn(1, 4, 6, 4)
    assert p.scores(x).shape == x.shape and p(x).shape == (1, 4, 3, 2)


def test_the_operators_table_lists_every_builtin_with_its_measured_count():
    table = {}
    for line in (Path(__file__).parents[2] / "docs" / "operators.md").read_text().splitlines():
        m = re.match(r"\| `([a-z0-9_]+)` \|", line)
        if m:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            table[m.group(1)] = int(cells[4].split(" ")[0].replace(",", ""))
    rows = {r["name"]: r for r in pool_rows() if r["source"] == "built-in"}
    assert set(table) == set(rows)
    for name, params in table.items():
        assert params == rows[name]["params"], name
