"""The built-in families against expectations built by hand, independently of their code."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import poolbench
from poolbench.errors import PoolOptionError, UsageError
from poolbench.pools.base import no_weight_decay_parameters
from poolbench.testing import count_parameters

FAMILIES = ("skip", "blur", "mixed", "gated", "gauss", "spectral", "wavelet", "dpp", "s3")
SIZES = [(2, 2), (3, 3), (2, 5), (5, 7), (6, 6), (8, 6), (9, 4)]


def pool(spec, channels=3, dtype=torch.float64, train=False, seed=0):
    torch.manual_seed(seed)
    return poolbench.get_pool(spec, channels).to(dtype).train(train)


def randn(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def windows(x):
    """(N, C, H, W) array -> (N, C, H//2, W//2, 4): the values of each 2x2 window."""
    n, c, h, w = x.shape
    x = np.asarray(x)[:, :, : h - h % 2, : w - w % 2]
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return x.reshape(n, c, h // 2, w // 2, 4)


# --- wavelet ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES + [(12, 10), (7, 12)])
def test_wavelet_haar_is_twice_the_average(size):
    x = randn(2, 3, *size)
    y = pool("wavelet")(x)
    torch.testing.assert_close(y, 2 * F.avg_pool2d(x, 2, 2), rtol=1e-12, atol=1e-12)


def periodic_lowpass(n, taps):
    """(n/2, n) matrix of the periodised orthonormal low-pass filter followed by decimation,
    aligned as PyWavelets' mode="periodization": output k's window starts at 2k - (L/2 - 1)."""
    a = np.zeros((n // 2, n))
    start = len(taps) // 2 - 1
    for k in range(n // 2):
        for j, t in enumerate(taps):
            a[k, (2 * k - start + j) % n] += t
    return a


@pytest.mark.parametrize("size", [(4, 4), (8, 12), (6, 10), (2, 6), (9, 7)])
def test_wavelet_db2_gives_the_level1_approximation(size):
    s3 = math.sqrt(3)
    taps = np.array([1 + s3, 3 + s3, 3 - s3, 1 - s3]) / (4 * math.sqrt(2))
    x = randn(1, 2, *size)
    xe = x[..., : size[0] // 2 * 2, : size[1] // 2 * 2].numpy()
    ah, aw = periodic_lowpass(xe.shape[-2], taps), periodic_lowpass(xe.shape[-1], taps)
    want = np.einsum("ih,nchw,jw->ncij", ah, xe, aw)
    y = pool("wavelet:wavelet=db2", channels=2)(x)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-10)


def test_wavelet_metadata_keeps_the_gain():
    assert poolbench.get_spec("wavelet").constant_gain == 2.0
    x = torch.full((1, 1, 6, 6), 1.5, dtype=torch.float64)
    y = pool("wavelet:wavelet=db2", 1)(x)
    torch.testing.assert_close(y, torch.full((1, 1, 3, 3), 3.0, dtype=torch.float64))


# --- spectral --------------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
def test_spectral_keeps_a_constant(size):
    x = torch.full((2, 3, *size), -2.5, dtype=torch.float64)
    y = pool("spectral")(x)
    torch.testing.assert_close(y, torch.full_like(y, -2.5), rtol=0, atol=1e-12)


@pytest.mark.parametrize("size,freq", [((16, 12), (3, 2)), ((9, 10), (1, -2)), ((8, 8), (0, 1))])
def test_spectral_reproduces_a_band_limited_cosine(size, freq):
    (h, w), (fh, fw) = size, freq
    ho, wo = h // 2, w // 2
    assert abs(fh) < ho / 2 and abs(fw) < wo / 2

    def cosine(hh, ww):
        i = torch.arange(hh, dtype=torch.float64)[:, None]
        j = torch.arange(ww, dtype=torch.float64)[None, :]
        return torch.cos(2 * math.pi * (fh * i / hh + fw * j / ww) + 0.3)

    x = 1.7 * cosine(h, w).expand(2, 3, h, w)
    y = pool("spectral")(x)
    torch.testing.assert_close(y, 1.7 * cosine(ho, wo).expand(2, 3, ho, wo), rtol=0, atol=1e-12)


def test_spectral_float32_under_autocast():
    x = randn(2, 3, 10, 6).float()
    ref = pool("spectral", dtype=torch.float32)(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = pool("spectral", dtype=torch.float32)(x)
        yh = pool("spectral", dtype=torch.float32)(x.bfloat16())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref)
    assert yh.dtype == torch.bfloat16 and yh.shape == ref.shape


def test_spectral_random_cutoff_is_off_by_default_and_seeded_when_on():
    x = randn(2, 3, 32, 32)
    plain = pool("spectral", train=True)
    torch.manual_seed(1)
    a = plain(x)
    torch.manual_seed(2)
    torch.testing.assert_close(plain(x), a, rtol=0, atol=0)
    torch.testing.assert_close(a, plain.eval()(x), rtol=0, atol=0)

    rand = pool("spectral:random_cutoff=true,min_cutoff=0.25", train=True)
    outs = []
    for seed in (1, 1, 2, 3, 4):
        torch.manual_seed(seed)
        outs.append(rand(x))
    assert torch.equal(outs[0], outs[1])
    assert any(not torch.allclose(outs[0], o) for o in outs[2:])
    # a cutoff never removes the mean, and eval ignores it
    torch.testing.assert_close(outs[2].mean((2, 3)), a.mean((2, 3)))
    torch.testing.assert_close(rand.eval()(x), a, rtol=0, atol=0)


# --- blur ------------------------------------------------------------------------------------

def binomial(k):
    row = np.array([math.comb(k - 1, i) for i in range(k)], dtype=np.float64)
    f = np.outer(row, row)
    return f / f.sum()


def pad_index(i, n, before, after):
    """Source index of padded position i (reflect, or replicate where n is too short)."""
    if max(before, after) < n:  # reflect without repeating the edge
        if i < 0:
            return -i
        return 2 * (n - 1) - i if i >= n else i
    return min(max(i, 0), n - 1)


def blur_reference(x, k):
    x = np.asarray(x)
    n, c, h, w = x.shape
    m = np.maximum(np.maximum(x[..., :-1, :-1], x[..., 1:, :-1]), np.maximum(x[..., :-1, 1:], x[..., 1:, 1:]))
    f, before, after = binomial(k), (k - 1) // 2, k // 2
    out = np.zeros((n, c, h // 2, w // 2))
    for i in range(h // 2):
        for j in range(w // 2):
            for a in range(k):
                for b in range(k):
                    r = pad_index(2 * i + a - before, h - 1, before, after)
                    s = pad_index(2 * j + b - before, w - 1, before, after)
                    out[:, :, i, j] += f[a, b] * m[:, :, r, s]
    return out


@pytest.mark.parametrize("k", range(1, 8))
@pytest.mark.parametrize("size", [(2, 2), (3, 3), (2, 7), (5, 9), (8, 6), (11, 4)])
def test_blur_is_binomial_filter_after_stride1_max(k, size):
    x = randn(2, 3, *size, seed=k)
    y = pool(f"blur:filter_size={k}")(x)
    assert tuple(y.shape) == (2, 3, size[0] // 2, size[1] // 2)
    np.testing.assert_allclose(y.numpy(), blur_reference(x, k), rtol=1e-12, atol=1e-12)


def test_blur_filter_is_a_buffer():
    p = pool("blur:filter_size=5", channels=4)
    assert count_parameters(p) == (0, 4 * 25)
    with pytest.raises(PoolOptionError):
        poolbench.get_pool("blur:filter_size=8", 3)


# --- gauss -----------------------------------------------------------------------------------

def test_gauss_parameter_count():
    assert count_parameters(poolbench.get_pool("gauss", 64))[0] == 6624


def test_gauss_eval_formula():
    c = 6
    p = pool("gauss", channels=c)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # move every BN away from the identity
        for bn in (p.reduce_bn, p.mean_bn, p.scale_bn):
            for t in (bn.weight, bn.bias, bn.running_mean):
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype))
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen, dtype=torch.float64) + 0.5)
    x = randn(3, c, 7, 8)
    y = p(x)

    def bn(v, m):
        return (v - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias

    def lin(v, conv):
        return v @ conv.weight[:, :, 0, 0].T + conv.bias

    xe = x[:, :, :6, :]
    g = xe.mean((2, 3))
    z = torch.clamp(bn(lin(g, p.reduce), p.reduce_bn), min=0)
    eta = torch.log1p(torch.exp(bn(lin(z, p.mean), p.mean_bn)))
    win = torch.from_numpy(windows(x.detach()))
    mu = win.mean(-1)
    sigma = torch.sqrt(torch.clamp((win ** 2).mean(-1) - mu ** 2, min=1e-6))
    torch.testing.assert_close(y, mu + eta[:, :, None, None] * sigma, rtol=1e-10, atol=1e-10)


def test_gauss_training_is_sampled_and_needs_a_batch():
    p = pool("gauss", channels=4, train=True)
    x = randn(4, 4, 8, 8)
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append(p(x))
    assert torch.equal(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])
    with pytest.raises(UsageError, match="batch size"):
        p(x[:1])
    assert p.eval()(x[:1]).shape == (1, 4, 4, 4)


# --- mixed, gated ----------------------------------------------------------------------------

def sigmoid(v):
    return 1 / (1 + np.exp(-v))


@pytest.mark.parametrize("per_channel", [False, True])
def test_mixed_formula(per_channel):
    c = 3
    p = pool(f"mixed:per_channel={per_channel}", channels=c)
    assert count_parameters(p)[0] == (c if per_channel else 1)
    theta = np.array([0.7, -1.2, 2.0][: c if per_channel else 1])
    with torch.no_grad():
        p.theta.copy_(torch.from_numpy(theta).view(p.theta.shape))
    x = randn(2, c, 7, 6)
    win = windows(x)
    a = sigmoid(theta).reshape(1, -1, 1, 1)
    want = a * win.max(-1) + (1 - a) * win.mean(-1)
    np.testing.assert_allclose(p(x).detach().numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("per_channel", [False, True])
def test_gated_formula(per_channel):
    c = 3
    p = pool(f"gated:per_channel={per_channel}", channels=c)
    assert count_parameters(p)[0] == (4 * c if per_channel else 4)
    mask = randn(c if per_channel else 1, 4, seed=9).numpy()
    with torch.no_grad():
        p.mask.copy_(torch.from_numpy(mask).view(p.mask.shape))
    x = randn(2, c, 6, 9)
    win = windows(x)
    masks = np.broadcast_to(mask, (c, 4))
    gate = sigmoid(np.einsum("ncijk,ck->ncij", win, masks))
    want = gate * win.max(-1) + (1 - gate) * win.mean(-1)
    np.testing.assert_allclose(p(x).detach().numpy(), want, rtol=1e-12, atol=1e-12)


def test_gated_mask_is_shared_by_channels():
    p = pool("gated", channels=3)
    x = randn(1, 1, 4, 4).expand(1, 3, 4, 4)
    y = p(x)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("spec", ["mixed", "mixed:per_channel=true", "gated", "gated:per_channel=true",
                                  "dpp", "dpp:variant=asymmetric"])
def test_convex_combinations_stay_in_the_window(spec, dtype):
    # parameters far from their initial values (dpp: exponents up to e^12 must not overflow)
    p = pool(spec, channels=4, dtype=dtype)
    gen = torch.Generator().manual_seed(11)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    for trial in range(3):
        with torch.no_grad():
            for prm in p.parameters():
                prm.copy_(4 * torch.randn(prm.shape, generator=gen, dtype=torch.float64))
        x = randn(2, 4, 9, 8, seed=trial) * 5
        y = p(x.to(dtype)).detach().double().numpy()
        win = windows(x.to(dtype).double())
        assert np.isfinite(y).all(), spec
        assert (y >= win.min(-1) - tol).all() and (y <= win.max(-1) + tol).all(), spec


# --- dpp -------------------------------------------------------------------------------------

def dpp_reference(x, t_lambda, t_alpha, asymmetric):
    win = windows(x)
    diff = win - win.mean(-1, keepdims=True)
    if asymmetric:
        diff = np.maximum(diff, 0)
    dev = diff ** 2 + 1e-3
    dev = dev / dev.mean(-1, keepdims=True)
    lam = np.exp(t_lambda).reshape(1, -1, 1, 1, 1)
    w = dev ** (lam / 2) + np.exp(t_alpha).reshape(1, -1, 1, 1, 1)
    return (win * w).sum(-1) / w.sum(-1)


@pytest.mark.parametrize("variant", ["symmetric", "asymmetric"])
def test_dpp_against_numpy(variant):
    c = 3
    p = pool(f"dpp:variant={variant}", channels=c)
    t_lambda, t_alpha = np.array([0.5, -1.0, 1.5]), np.array([-2.0, 0.3, 1.0])
    with torch.no_grad():
        p.t_lambda.copy_(torch.from_numpy(t_lambda).view(1, c, 1, 1))
        p.t_alpha.copy_(torch.from_numpy(t_alpha).view(1, c, 1, 1))
    x = randn(2, c, 7, 10)
    want = dpp_reference(x, t_lambda, t_alpha, variant == "asymmetric")
    np.testing.assert_allclose(p(x).detach().numpy(), want, rtol=1e-10, atol=1e-12)


def test_dpp_parameters_skip_weight_decay():
    p = poolbench.get_pool("dpp", 5)
    assert count_parameters(p) == (10, 0)
    assert sorted(p.no_weight_decay()) == ["t_alpha", "t_lambda"]
    assert sorted(no_weight_decay_parameters(torch.nn.Sequential(p))) == ["0.t_alpha", "0.t_lambda"]
    with pytest.raises(PoolOptionError):
        poolbench.get_pool("dpp:variant=full", 3)


# --- s3 --------------------------------------------------------------------------------------

def test_s3_eval_is_deterministic_and_matches_the_fixed_downsample():
    p = pool("s3")
    x = randn(2, 3, 9, 8)
    torch.manual_seed(1)
    a = p(x)
    torch.manual_seed(2)
    assert torch.equal(a, p(x))
    m = F.max_pool2d(x[:, :, :8, :8], 2, 1).numpy()  # 7 x 7

    def rows(i):  # padding 1, count_include_pad=False: positions 2i-1 and 2i that exist
        return [r for r in (2 * i - 1, 2 * i) if 0 <= r < 7]

    want = np.zeros((2, 3, 4, 4))
    for i in range(4):
        for j in range(4):
            want[:, :, i, j] = m[:, :, rows(i)][:, :, :, rows(j)].mean((2, 3))
    np.testing.assert_allclose(a.numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("spec", ["s3", "s3:grid_size=2", "s3:grid_size=4", "s3:grid_size=6"])
def test_s3_train_shape_and_seeded_draws(spec):
    p = pool(spec)
    for size in SIZES + [(16, 12), (32, 32)]:
        x = randn(2, 3, *size)
        with torch.no_grad():
            assert p.train()(x).shape == p.eval()(x).shape == (2, 3, size[0] // 2, size[1] // 2)
    p.train()
    x = randn(2, 3, 32, 32)
    outs = []
    for seed in (3, 3, 4, 5):
        torch.manual_seed(seed)
        outs.append(p(x))
    assert torch.equal(outs[0], outs[1])
    assert any(not torch.equal(outs[0], o) for o in outs[2:])


def test_s3_samples_rows_of_the_stride1_max_shared_over_batch_and_channels():
    p = pool("s3", train=True)
    base = randn(1, 1, 16, 16)
    x = base.expand(2, 3, 16, 16)
    torch.manual_seed(0)
    y = p(x)
    assert (y == y[:1, :1]).all()
    m = F.max_pool2d(base, 2, 1)[0, 0]  # 15 x 15
    # every output is a value of m, taken from sorted rows and columns
    rows = [int((m == v).nonzero()[0, 0]) for v in y[0, 0, :, 0]]
    assert rows == sorted(rows) and len(set(rows)) == 8


def test_s3_grids_default_to_half_the_map():
    from poolbench.pools.s3 import sample_positions

    for seed in range(5):
        torch.manual_seed(seed)
        pos = sample_positions(31, 0).tolist()  # H = 32: two grids of 16, keep 8 of each
        assert len(pos) == 16 and pos == sorted(set(pos))
        assert all(p < 16 for p in pos[:8]) and all(16 <= p < 31 for p in pos[8:])
        pos = sample_positions(15, 4).tolist()  # H = 16, g = 4: keep 2 of each 4
        assert [p // 4 for p in pos] == [0, 0, 1, 1, 2, 2, 3, 3]


# --- skip ------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [1, 3, 16])
def test_skip_parameters_and_formula(c):
    p = pool("skip", channels=c)
    assert count_parameters(p) == (9 * c * c + c, 0)
    x = randn(2, c, 7, 9)
    want = F.conv2d(x[:, :, :6, :8], p.conv.weight, p.conv.bias, stride=2, padding=1)
    torch.testing.assert_close(p(x), want)


# --- registry metadata -----------------------------------------------------------------------

EXPECTED = {
    # name: (stochastic, convex, constant_gain, options)
    "skip": (False, False, None, {}),
    "blur": (False, False, 1.0, {"filter_size": 4}),
    "mixed": (False, True, 1.0, {"per_channel": False}),
    "gated": (False, True, 1.0, {"per_channel": False}),
    "gauss": (True, False, None, {}),
    "spectral": (False, False, 1.0, {"random_cutoff": False, "min_cutoff": 0.5}),
    "wavelet": (False, False, 2.0, {"wavelet": "haar"}),
    "dpp": (False, True, 1.0, {"variant": "symmetric"}),
    "s3": (True, False, 1.0, {"grid_size": 0}),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_metadata(name):
    spec = poolbench.get_spec(name)
    stochastic, convex, gain, options = EXPECTED[name]
    assert (spec.stochastic, spec.convex, spec.constant_gain) == (stochastic, convex, gain)
    assert spec.options == options
    assert spec.source == "built-in" and not spec.invertible and spec.shape_policy == "floor"
    paper = spec.paper
    assert paper.authors and paper.title and paper.venue and 1989 <= paper.year <= 2025
    assert paper.url.startswith("https://")
    assert spec.display_name and spec.display_name != name


def test_only_s3_and_gauss_are_stochastic_among_the_families():
    families = set(FAMILIES) | {"max", "avg"}
    assert {n for n in families if poolbench.get_spec(n).stochastic} == {"s3", "gauss"}


@pytest.mark.parametrize("spec", ["spectral:min_cutoff=0.0", "s3:grid_size=-1", "wavelet:wavelet=db9",
                                  "mixed:per_channel=2"])
def test_bad_options_are_usage_errors(spec):
    with pytest.raises(PoolOptionError):
        poolbench.get_pool(spec, 3)


# --- beyond the twelve: float64 brute-force oracles -----------------------------------------

BEYOND = {
    # name: (stochastic, invertible, convex, constant_gain, options, year)
    "gfgp": (False, False, True, 1.0, {}, 2019),
    "softpool": (False, False, True, 1.0, {}, 2021),
    "lip": (False, False, True, 1.0, {}, 2019),
    "aps": (False, True, True, 1.0, {"filter_size": 1, "max_first": False}, 2021),
    "lps": (True, True, True, 1.0, {"hidden": 0, "tau": 1.0, "filter_size": 1, "max_first": False}, 2022),
    "asap": (False, False, False, 1.0, {"window": True}, 2023),
}


@pytest.mark.parametrize("name", sorted(BEYOND))
def test_beyond_metadata(name):
    spec = poolbench.get_spec(name)
    stochastic, invertible, convex, gain, options, year = BEYOND[name]
    assert (spec.stochastic, spec.invertible, spec.convex, spec.constant_gain) == (stochastic, invertible, convex, gain)
    assert spec.options == options and spec.source == "built-in" and spec.licence == "MIT"
    assert spec.paper.year == year and spec.paper.url.startswith("https://") and spec.paper.title
    assert spec.display_name != name and spec.notes


def softmax_mean(values, scale=1.0):
    """sum_i e^(scale v_i) v_i / sum_i e^(scale v_i) for a list of floats, by the definition."""
    top = max(scale * v for v in values)
    e = [math.exp(scale * v - top) for v in values]
    return sum(w * v for w, v in zip(e, values)) / sum(e)


def per_window(x, fn):
    """Apply fn(n, c, [4 window values]) to every 2x2 window, in Python loops."""
    win = windows(x)
    n, c, ho, wo, _ = win.shape
    out = np.zeros((n, c, ho, wo))
    for a in range(n):
        for b in range(c):
            for i in range(ho):
                for j in range(wo):
                    out[a, b, i, j] = fn(a, b, list(win[a, b, i, j]))
    return out


def perturb(module, seed=3, scale=1.0):
    """Every parameter and BN buffer moved to a random value (variances kept positive)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.is_floating_point():
                continue
            r = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
            t.copy_(r.abs() + 0.5 if name.endswith("running_var") else scale * r)


@pytest.mark.parametrize("size", SIZES)
def test_softpool_against_loops(size):
    x = randn(2, 3, *size) * 4
    want = per_window(x, lambda a, b, v: softmax_mean(v))
    np.testing.assert_allclose(pool("softpool")(x).numpy(), want, rtol=1e-12, atol=1e-12)


def test_gfgp_eval_formula():
    c = 6
    p = pool("gfgp", channels=c)
    perturb(p)
    x = randn(3, c, 7, 8)

    def bn(v, m):
        return (v - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias

    def lin(v, conv):
        return v @ conv.weight[:, :, 0, 0].T + conv.bias

    g = x[:, :, :6, :].mean((2, 3))                      # the odd last row is ignored
    z = torch.clamp(bn(lin(g, p.reduce), p.reduce_bn), min=0)
    lam = torch.sigmoid(bn(lin(z, p.expand), p.expand_bn)).detach().numpy()
    want = per_window(x, lambda a, b, v: softmax_mean(v, lam[a, b]))
    np.testing.assert_allclose(p(x).detach().numpy(), want, rtol=1e-10, atol=1e-12)


def test_gfgp_parameter_count_is_the_papers():
    # C^2 + 4.5C: 1x1 convs C->C/2 and C/2->C with bias, two affine BatchNorms
    for c in (8, 64, 128):
        assert count_parameters(poolbench.get_pool("gfgp", c))[0] == c * c + 9 * c // 2
    assert count_parameters(poolbench.get_pool("gfgp", 64))[0] == 4384


def conv3x3_zero_pad(x, weight):
    """Plain-loop 3x3 convolution, zero padding 1, no bias: (N, C, H, W) numpy."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, weight.shape[0], h, w))
    for i in range(h):
        for j in range(w):
            patch = xp[:, :, i:i + 3, j:j + 3]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, weight)
    return out


@pytest.mark.parametrize("size", [(6, 6), (7, 5), (4, 9)])
def test_lip_against_numpy(size):
    c = 3
    p = pool("lip", channels=c)
    perturb(p, scale=0.5)
    x = randn(2, c, *size)
    xe = x[..., : size[0] // 2 * 2, : size[1] // 2 * 2].numpy()
    z = conv3x3_zero_pad(xe, p.logit.weight.detach().numpy())
    mu, var = z.mean((2, 3), keepdims=True), z.var((2, 3), keepdims=True)
    gamma = p.norm.weight.detach().numpy().reshape(1, c, 1, 1)
    beta = p.norm.bias.detach().numpy().reshape(1, c, 1, 1)
    logits = 12 / (1 + np.exp(-((z - mu) / np.sqrt(var + p.norm.eps) * gamma + beta)))
    lw, xw = windows(logits), windows(xe)
    want = (np.exp(lw) * xw).sum(-1) / np.exp(lw).sum(-1)
    np.testing.assert_allclose(p(x).detach().numpy(), want, rtol=1e-10, atol=1e-12)


def components(x):
    """The four polyphase components x[..., i::2, j::2], cropped to even size, as a list."""
    h, w = x.shape[-2:]
    xe = x[..., : h // 2 * 2, : w // 2 * 2]
    return [xe[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]


@pytest.mark.parametrize("size", SIZES)
def test_aps_keeps_the_largest_component_of_each_sample(size):
    x = randn(4, 3, *size)
    comps = components(x)
    y = pool("aps")(x)
    for n in range(4):
        norms = [float((comp[n] ** 2).sum()) for comp in comps]
        torch.testing.assert_close(y[n], comps[int(np.argmax(norms))][n], rtol=0, atol=0)


def test_aps_blur_is_circular_binomial_before_the_choice():
    x = randn(2, 2, 8, 6)
    f = binomial(3)
    xn = x.numpy()
    blurred = np.zeros_like(xn)
    for i in range(8):
        for j in range(6):
            for a in range(3):
                for b in range(3):
                    blurred[:, :, i, j] += f[a, b] * xn[:, :, (i + a - 1) % 8, (j + b - 1) % 6]
    comps = components(torch.from_numpy(blurred))
    y = pool("aps:filter_size=3", channels=2)(x)
    for n in range(2):
        best = int(np.argmax([float((comp[n] ** 2).sum()) for comp in comps]))
        torch.testing.assert_close(y[n], comps[best][n], rtol=1e-12, atol=1e-12)


def test_aps_max_first_is_a_periodic_stride1_max_then_the_choice():
    x = randn(3, 2, 6, 8)
    xn = x.numpy()
    m = np.zeros_like(xn)
    for i in range(6):
        for j in range(8):
            m[:, :, i, j] = np.max([xn[:, :, (i + a) % 6, (j + b) % 8] for a in (0, 1) for b in (0, 1)], axis=0)
    comps = components(torch.from_numpy(m))
    y = pool("aps:max_first=true", channels=2)(x)
    for n in range(3):
        best = int(np.argmax([float((comp[n] ** 2).sum()) for comp in comps]))
        torch.testing.assert_close(y[n], comps[best][n], rtol=0, atol=0)


def test_lps_eval_keeps_the_best_scored_component():
    c = 3
    p = pool("lps", channels=c)
    x = randn(3, c, 8, 10)
    conv1, conv2 = p.score[0], p.score[2]
    with torch.no_grad():
        y = p(x)
        for n in range(3):
            scores = []
            for comp in components(x):
                hidden = F.conv2d(F.pad(comp[n:n + 1], (1, 1, 1, 1), mode="circular"), conv1.weight, conv1.bias)
                scores.append(float(F.conv2d(torch.relu(hidden), conv2.weight, conv2.bias).mean()))
            torch.testing.assert_close(y[n], components(x)[int(np.argmax(scores))][n], rtol=0, atol=0)


@pytest.mark.parametrize("size", SIZES + [(12, 10)])
def test_asap_against_a_dft_matrix(size):
    h, w = size
    ho, wo = h // 2, w // 2
    x = randn(2, 2, h, w).numpy()

    def signed(n):
        return np.array([k if k < (n + 1) // 2 else k - n for k in range(n)])

    def hamming(n):
        return 0.54 + 0.46 * np.cos(2 * np.pi * signed(n) / n)

    def kept(n, m):  # the m lowest frequencies of an n-point DFT, as spectral keeps them
        return [f for f in signed(n) if -(m // 2) <= f < (m + 1) // 2]

    fh, fw = kept(h, ho), kept(w, wo)
    want = np.zeros((2, 2, ho, wo))
    i, j = np.arange(h)[:, None], np.arange(w)[None, :]
    for u in fh:
        for v in fw:
            # forward DFT coefficient (1/HW), windowed, synthesised on the Ho x Wo grid
            coef = (x * np.exp(-2j * np.pi * (u * i / h + v * j / w))).sum((2, 3)) / (h * w)
            coef *= np.sqrt(hamming(h)[u % h] * hamming(w)[v % w])
            a, b = np.arange(ho)[:, None], np.arange(wo)[None, :]
            want += (coef[..., None, None] * np.exp(2j * np.pi * (u * a / ho + v * b / wo))).real
    np.testing.assert_allclose(pool("asap", channels=2)(torch.from_numpy(x)).numpy(), want, rtol=1e-9, atol=1e-10)


# --- regression: db2 was one input pixel off PyWavelets' periodization ---------------------------

def test_db2_analysis_is_aligned_with_pywavelets_periodization():
    from poolbench.pools.wavelet import _analysis, _dwt2, _filter_bank, _idwt2

    # PyWavelets' db2 decomposition filters (pywt.Wavelet("db2").dec_lo / .dec_hi), and its
    # periodization rule: output o sums dec[j] * x[(F/2 + 2o - j) mod N]
    dec_lo = [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025]
    dec_hi = [-0.48296291314469025, 0.836516303737469, -0.22414386804185735, -0.12940952255092145]
    x = torch.randn(1, 1, 1, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = _analysis(x, _filter_bank("db2"), -1)[0, :, 0]
    for band, dec in enumerate((dec_lo, dec_hi)):
        want = [sum(dec[j] * x[0, 0, 0, (2 + 2 * o - j) % 10].item() for j in range(4)) for o in range(5)]
        assert torch.allclose(got[band], torch.tensor(want, dtype=torch.float64), atol=1e-12)
    bank = _filter_bank("db2")
    image = torch.randn(2, 1, 8, 12, dtype=torch.float64)
    assert torch.allclose(_idwt2(_dwt2(image, bank), bank), image, atol=1e-12)   # still exactly invertible
