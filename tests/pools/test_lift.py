"""LiftPool (docs/liftpool.md): registration and options, shapes, identities, the LeGall 5/3 oracle,
exact inversion, parameters and the regularisation. Fast-vs-reference equivalence and gradcheck
are in test_lift_fast.py, the native kernel in test_lift_native.py, the benchmark harness in
tools/test_bench_lift.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poolbench import auxiliary_loss, get_pool, get_spec
from poolbench.errors import PoolOptionError
from poolbench.pools.lift import LiftDownPool1d, LiftDownPool2d, LiftState, LiftUpPool, parse_bands
from poolbench.pools.lift_ops import LiftingBranch, pad_axis
from poolbench.testing import check_pool, count_parameters

IMPLS = ("fast", "reference")


def _pool(spec="lift", channels=4, seed=0, dtype=torch.float64, **opts):
    torch.manual_seed(seed)
    return get_pool(spec, channels, **opts).to(dtype)


def _randomize(pool, seed=1, scale=1.0):
    """Weights far from their initialisation (and from zero), so nothing passes by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pool.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return pool


def _zero(pool):
    with torch.no_grad():
        for p in pool.parameters():
            p.zero_()
    return pool


# --- registration and options ----------------------------------------------------------------

def test_registered_with_metadata():
    spec = get_spec("lift")
    assert spec.invertible and not spec.stochastic
    assert spec.paper.year == 2021 and spec.paper.venue == "ICLR"
    assert "Zhao" in spec.paper.authors and "Snoek" in spec.paper.authors
    assert spec.paper.url and "LiftPool" in spec.paper.title
    assert spec.notes and spec.display_name
    opts = spec.options
    assert opts["kernel_size"] == 5 and opts["g1"] is None and opts["g2"] is None
    assert opts["padding_mode"] == "reflect" and opts["bands"] == "sum" and opts["odd"] == "crop"
    assert opts["loss"] == "mse" and opts["loss_on"] == "all" and opts["impl"] == "fast"
    assert opts["lambda_u"] == 0.01 and opts["lambda_p"] == 0.1
    assert opts["predictor"] is None and opts["updater"] is None


def test_spec_string_and_keywords():
    pool = get_pool("lift:bands=LL,kernel_size=7", 64)
    assert isinstance(pool, LiftDownPool2d)
    assert pool.kernel_size == 7 and pool.band_selection == ("LL",)
    assert pool.predictor.weight_k.shape == (64, 1, 7)
    pool = get_pool("lift:g1=none,g2=16,padding_mode=zeros,impl=reference,odd=pad", 64, lambda_u=0)
    assert pool.g1 == 64 and pool.g2 == 16 and pool.padding_mode == "zeros"
    assert pool.impl == "reference" and pool.odd == "pad" and pool.lambda_u == 0.0


@pytest.mark.parametrize("opts, accepted", [
    (dict(kernel_size=0), "positive integer"),
    (dict(g1=3), "divisor"),
    (dict(g2=0), "divisor"),
    (dict(padding_mode="mirror"), "'reflect', 'replicate', 'zeros', 'circular'"),
    (dict(bands="LX"), "'LL', 'LH', 'HL', 'HH'"),
    (dict(bands="LL+LL"), "'+'-joined"),
    (dict(bands=""), "'sum', 'concat'"),
    (dict(odd="floor"), "'crop', 'pad'"),
    (dict(loss="l1"), "'mse', 'l2'"),
    (dict(loss_on="last"), "'all', 'first'"),
    (dict(impl="slow"), "'fast', 'reference'"),
    (dict(lambda_u=-1.0), ">= 0"),
    (dict(lambda_p=float("nan")), ">= 0"),
    (dict(predictor=5), "callable"),
])
def test_bad_options_name_the_accepted_ones(opts, accepted):
    with pytest.raises(PoolOptionError) as err:
        get_pool("lift", 8, **opts)
    assert accepted in str(err.value)


def test_bad_option_type_through_spec_string():
    with pytest.raises(PoolOptionError):
        get_pool("lift:kernel_size=big", 8)
    with pytest.raises(PoolOptionError):
        get_pool("lift:colour=red", 8)


def test_parse_bands():
    assert parse_bands("sum") == ("sum", ("LL", "LH", "HL", "HH"))
    assert parse_bands("concat")[0] == "concat"
    assert parse_bands("hl+LL") == ("sum", ("LL", "HL"))
    assert parse_bands("HH") == ("sum", ("HH",))
    assert parse_bands("L+H", ("L", "H")) == ("sum", ("L", "H"))


# --- shapes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("odd", ["crop", "pad"])
def test_shapes_even_odd_non_square(impl, odd):
    pool = _pool(impl=impl, odd=odd, channels=3, dtype=torch.float32)
    for train in (False, True):
        pool.train(train)
        for h, w in [(8, 8), (7, 7), (6, 9), (9, 4), (2, 2), (3, 2), (2, 5), (1 if odd == "pad" else 2, 6)]:
            x = torch.randn(2, 3, h, w)
            y = pool(x)
            want = (h // 2, w // 2) if odd == "crop" else (math.ceil(h / 2), math.ceil(w / 2))
            assert y.shape == (2, 3, *want), (h, w, y.shape)
            y2, state = pool.down(x)
            assert torch.equal(y, y2)
            assert pool.up(y2, state).shape == x.shape


def test_concat_bands_have_four_times_the_channels():
    for impl in IMPLS:
        pool = _pool(impl=impl, bands="concat", channels=3)
        y = pool(torch.randn(2, 3, 8, 6, dtype=torch.float64))
        assert y.shape == (2, 12, 4, 3)


def test_empty_batch():
    for impl in IMPLS:
        pool = _pool(impl=impl)
        y, state = pool.down(torch.randn(0, 4, 8, 6, dtype=torch.float64))
        assert y.shape == (0, 4, 4, 3) and pool.up(y, state).shape == (0, 4, 8, 6)


def test_crop_rejects_maps_below_two():
    with pytest.raises(ValueError, match=">= 2"):
        _pool()(torch.randn(1, 4, 1, 6, dtype=torch.float64))


def test_wrong_channels_is_a_clear_error():
    with pytest.raises(ValueError, match="C=4"):
        _pool()(torch.randn(1, 3, 6, 6, dtype=torch.float64))


@pytest.mark.parametrize("impl", IMPLS)
def test_memory_format_dtype_preserved(impl):
    pool = _pool(impl=impl, dtype=torch.float32).eval()
    x = torch.randn(2, 4, 8, 10)
    y = pool(x)
    assert y.dtype == torch.float32 and y.is_contiguous()
    yc = pool(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(yc, y, rtol=1e-5, atol=1e-5)
    if impl == "fast":
        assert yc.is_contiguous(memory_format=torch.channels_last)


# --- identities ----------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_zeroed_branches_give_polyphase_components(impl):
    pool = _zero(_pool(impl=impl, bands="concat"))
    x = torch.randn(2, 4, 8, 10, dtype=torch.float64)
    ll, lh, hl, hh = pool(x).split(4, dim=1)
    torch.testing.assert_close(ll, x[..., 0::2, 0::2], rtol=0, atol=0)
    torch.testing.assert_close(lh, x[..., 1::2, 0::2], rtol=0, atol=0)
    torch.testing.assert_close(hl, x[..., 0::2, 1::2], rtol=0, atol=0)
    torch.testing.assert_close(hh, x[..., 1::2, 1::2], rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_zeroed_branches_sum_is_four_times_avg_pool(impl):
    pool = _zero(_pool(impl=impl))
    for shape in [(2, 4, 8, 10), (1, 4, 7, 9)]:
        x = torch.randn(shape, dtype=torch.float64)
        torch.testing.assert_close(pool(x), 4 * F.avg_pool2d(x, 2), rtol=1e-12, atol=1e-12)
    c = torch.full((1, 4, 6, 6), -2.5, dtype=torch.float64)
    torch.testing.assert_close(pool(c), torch.full((1, 4, 3, 3), -10.0, dtype=torch.float64))


# --- the classical LeGall 5/3 lifting as an oracle ------------------------------------------

def legall_1d(x):
    """Plain Python LeGall 5/3 (JPEG 2000) lifting of an even-length sequence, replicate
    padding: P(x_e)[k] = (x_e[k] + x_e[k+1]) / 2, U(d)[k] = (d[k-1] + d[k]) / 4."""
    xe, xo = list(x[0::2]), list(x[1::2])
    n = len(xe)
    d = [xo[k] - (xe[k] + xe[min(k + 1, n - 1)]) / 2 for k in range(n)]
    s = [xe[k] + (d[max(k - 1, 0)] + d[k]) / 4 for k in range(n)]
    return s, d


def legall_2d(x):
    """Rows then columns of a 2-D numpy array: (LL, LH, HL, HH)."""
    rows = [legall_1d(list(r)) for r in x]
    s = np.array([r[0] for r in rows])
    d = np.array([r[1] for r in rows])

    def columns(a):
        cols = [legall_1d(list(c)) for c in a.T]
        return np.array([c[0] for c in cols]).T, np.array([c[1] for c in cols]).T
    ll, lh = columns(s)
    hl, hh = columns(d)
    return ll, lh, hl, hh


def legall_p(t):
    """Injected predictor: centred 3-tap [0, 1/2, 1/2], replicate padding, along the last dim."""
    p = F.pad(t.reshape(-1, 1, t.shape[-1]), (1, 1), mode="replicate").reshape(*t.shape[:-1], -1)
    return 0.5 * p[..., 1:-1] + 0.5 * p[..., 2:]


def legall_u(t):
    """Injected updater: centred 3-tap [1/4, 1/4, 0], replicate padding, along the last dim."""
    p = F.pad(t.reshape(-1, 1, t.shape[-1]), (1, 1), mode="replicate").reshape(*t.shape[:-1], -1)
    return 0.25 * p[..., :-2] + 0.25 * p[..., 1:-1]


def test_oracle_known_answers():
    assert legall_1d([10, 20, 30, 40]) == ([10, 32.5], [0, 10])
    s, d = legall_1d([7.0] * 8)
    assert s == [7.0] * 4 and d == [0.0] * 4
    s, d = legall_1d(list(range(12)))
    assert d == [0, 0, 0, 0, 0, 1]
    assert s[:5] == [0, 2, 4, 6, 8] and s[5] == 10.25


@pytest.mark.parametrize("impl", IMPLS)
def test_legall_1d_known_answers(impl):
    pool = LiftDownPool1d(1, bands="concat", predictor=legall_p, updater=legall_u, impl=impl).double()
    cases = [([10, 20, 30, 40], [10, 32.5], [0, 10]),
             ([3.0] * 6, [3.0] * 3, [0.0] * 3),
             (list(range(12)), [0, 2, 4, 6, 8, 10.25], [0, 0, 0, 0, 0, 1])]
    for x, s, d in cases:
        y = pool(torch.tensor([[x]], dtype=torch.float64))
        assert y[0, 0].tolist() == s and y[0, 1].tolist() == d


@pytest.mark.parametrize("impl", IMPLS)
def test_legall_2d_band_by_band(impl):
    pool = LiftDownPool2d(1, bands="concat", predictor=legall_p, updater=legall_u, impl=impl).double()
    rng = np.random.default_rng(0)
    for h, w in [(4, 4), (6, 10), (8, 2)]:
        x = rng.standard_normal((h, w))
        bands = pool(torch.from_numpy(x)[None, None])[0]
        for got, want, name in zip(bands, legall_2d(x), ("LL", "LH", "HL", "HH")):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=1e-13, err_msg=name)
    # the ramp along W, constant along H: d = [0,...,0,1] in every row; LL's last value 10.25
    ramp = torch.arange(12, dtype=torch.float64).repeat(4, 1)[None, None]
    ll, lh, hl, hh = pool(ramp)[0]
    assert torch.equal(hl, torch.tensor([0, 0, 0, 0, 0, 1.0]).repeat(2, 1))
    assert torch.equal(ll[:, 5], torch.full((2,), 10.25, dtype=torch.float64))
    assert torch.equal(lh, torch.zeros_like(lh)) and torch.equal(hh, torch.zeros_like(hh))


def test_legall_inverse_is_exact():
    pool = LiftDownPool2d(3, predictor=legall_p, updater=legall_u).double()
    x = torch.randn(2, 3, 10, 6, dtype=torch.float64)
    y, state = pool.down(x)
    torch.testing.assert_close(pool.up(y, state), x, rtol=0, atol=1e-12)


def test_injected_branches_act_along_the_last_dimension():
    seen = []

    def spy(t):
        seen.append(tuple(t.shape))
        return torch.zeros_like(t)
    pool = LiftDownPool2d(2, predictor=spy, updater=spy).double()
    pool(torch.randn(1, 2, 8, 12, dtype=torch.float64))
    # horizontal: (N, C, H, W/2); vertical: (N, C, W/2, H/2) (H moved last)
    assert seen == [(1, 2, 8, 6)] * 2 + [(1, 2, 6, 4)] * 4


def test_injected_branch_of_wrong_shape_is_a_clear_error():
    pool = LiftDownPool2d(2, predictor=lambda t: t[..., :1]).double()
    with pytest.raises(ValueError, match="shape"):
        pool(torch.randn(1, 2, 4, 4, dtype=torch.float64))


# --- exact inversion ---------------------------------------------------------------------

INVERSE_CASES = [
    dict(),
    dict(kernel_size=3),
    dict(kernel_size=7),
    dict(kernel_size=2),
    dict(kernel_size=4, padding_mode="replicate"),
    dict(g1=1, g2=2),
    dict(g1=2, g2=1, padding_mode="zeros"),
    dict(padding_mode="circular", bias=True),
    dict(odd="pad"),
    dict(odd="pad", kernel_size=7, padding_mode="reflect"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("opts", INVERSE_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_up_down_is_identity(impl, opts):
    sizes = [(8, 10), (6, 6), (2, 4)]
    if opts.get("odd") == "pad":
        sizes += [(7, 9), (5, 4), (3, 3), (1, 5)]
    for seed in (0, 1, 2):
        pool = _randomize(_pool(impl=impl, seed=seed, **opts), seed=seed + 10)
        for train in (False, True):
            pool.train(train)
            for h, w in sizes:
                x = torch.randn(2, 4, h, w, dtype=torch.float64) * 3
                y, state = pool.down(x)
                torch.testing.assert_close(pool.up(y, state), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_up_down_float32(impl):
    pool = _randomize(_pool(impl=impl, dtype=torch.float32, channels=8, kernel_size=5), seed=3)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 8, 12, 14).contiguous(memory_format=layout)
        y, state = pool.down(x)
        torch.testing.assert_close(pool.up(y, state), x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("bands", ["sum", "LL", "concat", "LL+HL", "HL", "LH+HH"])
def test_up_conventions(bands):
    for impl in IMPLS:
        pool = _randomize(_pool(impl=impl, bands=bands), seed=4)
        x = torch.randn(2, 4, 6, 8, dtype=torch.float64)
        y, state = pool.down(x)
        torch.testing.assert_close(pool.up(y, state), x, rtol=0, atol=1e-12)


def test_segnet_convention_decoder_feature_takes_ll_place():
    """bands="LL": the decoder's feature replaces LL, with the encoder's LH, HL, HH."""
    for impl in IMPLS:
        pool = _randomize(_pool(impl=impl, bands="LL"), seed=5)
        full = _randomize(_pool(impl=impl, bands="concat"), seed=5)
        x = torch.randn(2, 4, 6, 8, dtype=torch.float64)
        ll, state = pool.down(x)
        assert set(state.details) == {"LH", "HL", "HH"}
        torch.testing.assert_close(ll, full(x)[:, :4])
        decoder = torch.randn_like(ll)
        # the same as inverting the concatenation with LL replaced
        bands = full(x).clone()
        bands[:, :4] = decoder
        want = full.up(bands, full.down(x)[1])
        torch.testing.assert_close(pool.up(decoder, state), want, rtol=0, atol=1e-12)


def test_sum_convention_subtracts_the_details():
    pool = _randomize(_pool(bands="sum"), seed=6)
    full = _randomize(_pool(bands="concat"), seed=6)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    y, state = pool.down(x)
    ll, lh, hl, hh = full(x).split(4, dim=1)
    torch.testing.assert_close(y, ll + lh + hl + hh)
    for name, band in zip(("LH", "HL", "HH"), (lh, hl, hh)):
        torch.testing.assert_close(state.details[name], band)
    assert state.size == (6, 6)


def test_crop_mode_restores_the_size_with_a_zero_row():
    pool = _randomize(_pool(), seed=7)
    x = torch.randn(1, 4, 7, 9, dtype=torch.float64)
    y, state = pool.down(x)
    x_hat = pool.up(y, state)
    assert x_hat.shape == x.shape
    torch.testing.assert_close(x_hat[..., :6, :8], x[..., :6, :8], rtol=0, atol=1e-12)
    assert torch.equal(x_hat[..., 6, :], torch.zeros_like(x_hat[..., 6, :]))
    assert torch.equal(x_hat[..., :, 8], torch.zeros_like(x_hat[..., :, 8]))


@pytest.mark.parametrize("impl", IMPLS)
def test_inverse_with_injected_nonlinear_branches(impl):
    torch.manual_seed(0)

    def p(t):
        return torch.sin(3 * t) + t.roll(1, -1) ** 2

    class U(nn.Module):  # a module: its parameters belong to the pool
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, (1, 3), padding=(0, 1), padding_mode="circular")

        def forward(self, t):
            return torch.tanh(self.conv(t)) * 2
    pool = LiftDownPool2d(4, predictor=p, updater=U(), impl=impl, odd="pad").double()
    assert any(n.startswith("updater.") for n, _ in pool.named_parameters())
    for h, w in [(8, 6), (5, 7)]:
        x = torch.randn(2, 4, h, w, dtype=torch.float64)
        y, state = pool.down(x)
        torch.testing.assert_close(pool.up(y, state), x, rtol=0, atol=1e-12)


def test_up_pool_module_shares_parameters():
    down = _pool()
    up = down.up_pool()
    assert isinstance(up, LiftUpPool)
    model = nn.ModuleList([down, up])
    assert count_parameters(model) == count_parameters(down)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    y, state = down.down(x)
    assert isinstance(state, LiftState)
    torch.testing.assert_close(up(y, state), x, rtol=0, atol=1e-12)


def test_up_gradient_reaches_encoder_details():
    pool = _randomize(_pool(bands="LL"), seed=8)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    ll, state = pool.down(x)
    out = pool.up(torch.zeros_like(ll), state)   # only the details carry x
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --- 1-D ------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_1d_shapes_inverse_and_zeroed_identity(impl):
    torch.manual_seed(0)
    pool = _randomize(LiftDownPool1d(3, impl=impl, odd="pad").double(), seed=2)
    for n in (8, 7, 2, 1):
        x = torch.randn(2, 3, n, dtype=torch.float64)
        y, state = pool.down(x)
        assert y.shape == (2, 3, math.ceil(n / 2))
        torch.testing.assert_close(pool.up(y, state), x, rtol=0, atol=1e-12)
    z = _zero(LiftDownPool1d(3, impl=impl, bands="concat").double())
    x = torch.randn(2, 3, 10, dtype=torch.float64)
    torch.testing.assert_close(z(x), torch.cat([x[..., 0::2], x[..., 1::2]], 1), rtol=0, atol=0)


# --- parameters -----------------------------------------------------------------------------

def test_one_predictor_and_one_updater_per_layer():
    c, k = 16, 5
    pool = get_pool("lift", c)
    names = {n for n, _ in pool.named_parameters()}
    assert names == {"predictor.weight_k", "predictor.weight_1", "updater.weight_k", "updater.weight_1"}
    assert count_parameters(pool) == (2 * (c * k + c), 0)   # C*K + C per branch (the paper)
    assert count_parameters(get_pool("lift:kernel_size=3,g1=1,g2=4", c)) == (2 * (c * c * 3 + c * 4), 0)
    assert count_parameters(get_pool("lift:bias=true", c)) == (2 * (c * k + c + 2 * c), 0)
    # the same P and U serve the three liftings: perturbing P changes all four bands
    pool = _pool(bands="concat", channels=2)
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    before = pool(x)
    with torch.no_grad():
        pool.predictor.weight_k.add_(0.5)
    changed = (pool(x) - before).abs().flatten(2).amax(-1)
    assert (changed > 0).all()


def test_layers_have_independent_parameters():
    a, b = get_pool("lift", 8), get_pool("lift", 8)
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    for name in pa:
        assert pa[name] is not pb[name]
        assert pa[name].data_ptr() != pb[name].data_ptr()
        assert not torch.equal(pa[name], pb[name])
    model = nn.Sequential(a, b)
    assert count_parameters(model)[0] == 2 * count_parameters(a)[0]


def test_lifting_branch_interface():
    br = LiftingBranch(3, kernel_size=5).double()
    t = torch.randn(2, 3, 9, dtype=torch.float64)
    out = br(t)
    assert out.shape == t.shape and (out.abs() <= 1).all()
    torch.testing.assert_close(br(t.unsqueeze(2)).squeeze(2), out)


def test_pad_axis_folds_for_short_maps():
    x = torch.arange(3.0).view(1, 1, 1, 3)
    assert pad_axis(x, 4, 4, "reflect", -1).flatten().tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2]
    assert pad_axis(x, 4, 4, "circular", -1).flatten().tolist() == [2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    one = torch.ones(1, 1, 1, 1)
    assert pad_axis(one, 2, 2, "reflect", -1).flatten().tolist() == [1.0] * 5
    assert pad_axis(x, 1, 2, "zeros", -2).shape == (1, 1, 4, 3)


# --- regularisation -------------------------------------------------------------------------

def _manual_losses(pool, x, kind, first_only=False):
    """c_u, c_p from the definitions, with the pool's own P and U applied step by step."""
    P, U = pool.predictor, pool.updater

    def lift(t, dim):
        e, o = (t[..., 0::2], t[..., 1::2]) if dim == -1 else (t[..., 0::2, :], t[..., 1::2, :])
        d = o - P.along(e, dim)
        s = e + U.along(d, dim)
        return s, d, o

    def dist(a, b):
        diff = a - b
        return diff.pow(2).mean() if kind == "mse" else diff.pow(2).sum().sqrt()
    s, d, o = lift(x, -1)
    cu, cp = dist(s, o), dist(d, 0 * d)
    if not first_only:
        for t in (s, d):
            s2, d2, o2 = lift(t, -2)
            cu, cp = cu + dist(s2, o2), cp + dist(d2, 0 * d2)
    return cu, cp


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("loss, loss_on", [("mse", "all"), ("l2", "all"), ("mse", "first"), ("l2", "first")])
def test_loss_values_match_the_formulas(impl, loss, loss_on):
    pool = _randomize(_pool(impl=impl, loss=loss, loss_on=loss_on, lambda_u=0.3, lambda_p=0.7), seed=9)
    x = torch.randn(2, 4, 8, 6, dtype=torch.float64)
    pool.train()
    pool(x)
    terms = pool.auxiliary_losses()
    assert set(terms) == {"lift_u", "lift_p"}
    cu, cp = _manual_losses(pool, x, loss, loss_on == "first")
    assert terms["lift_u"][0] == 0.3 and terms["lift_p"][0] == 0.7
    torch.testing.assert_close(terms["lift_u"][1], cu, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms["lift_p"][1], cp, rtol=1e-12, atol=1e-12)
    total, logged = auxiliary_loss(nn.Sequential(pool))
    torch.testing.assert_close(total, 0.3 * cu + 0.7 * cp)
    assert logged == pytest.approx({"lift_u": cu.item(), "lift_p": cp.item()})


def test_losses_only_in_training_and_summed_over_layers():
    a = _pool(lambda_u=0.01, lambda_p=0.1)
    b = _pool(seed=3)
    model = nn.Sequential(a, nn.Identity(), b)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    model.train()
    model(x)
    total, terms = auxiliary_loss(model)
    ua, pa = a.auxiliary_losses()["lift_u"][1], a.auxiliary_losses()["lift_p"][1]
    ub, pb = b.auxiliary_losses()["lift_u"][1], b.auxiliary_losses()["lift_p"][1]
    torch.testing.assert_close(total, 0.01 * (ua + ub) + 0.1 * (pa + pb))
    assert terms["lift_u"] == pytest.approx((ua + ub).item())
    model.eval()
    model(x)
    assert a.auxiliary_losses() == {} and b.auxiliary_losses() == {}
    total, terms = auxiliary_loss(model)
    assert float(total) == 0.0 and terms == {}


@pytest.mark.parametrize("impl", IMPLS)
def test_loss_gradients_flow_and_cp_ignores_u_in_1d(impl):
    torch.manual_seed(0)
    pool = _randomize(LiftDownPool1d(3, impl=impl).double(), seed=11).train()
    x = torch.randn(2, 3, 10, dtype=torch.float64)
    pool(x)
    c_p = pool.auxiliary_losses()["lift_p"][1]
    c_u = pool.auxiliary_losses()["lift_u"][1]
    gp = torch.autograd.grad(c_p, list(pool.updater.parameters()) + list(pool.predictor.parameters()),
                             allow_unused=True, retain_graph=True)
    for g in gp[:2]:
        assert g is None or torch.equal(g, torch.zeros_like(g))
    assert any(g is not None and g.abs().sum() > 0 for g in gp[2:])
    gu = torch.autograd.grad(c_u, list(pool.updater.parameters()))
    assert all(g.abs().sum() > 0 for g in gu)


def test_auxiliary_loss_backward_updates_branches():
    pool = _pool(impl="fast").train()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    pool(x)
    total, _ = auxiliary_loss(pool)
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pool.parameters())


# --- the operator contract ----------------------------------------------------------------

# the variants run the whole kit (about 1 s each): slow, so that the fast suite keeps its minute
@pytest.mark.parametrize("spec", ["lift"] + [pytest.param(s, marks=pytest.mark.slow) for s in (
    "lift:impl=reference", "lift:bands=LL,kernel_size=3", "lift:g1=1,padding_mode=zeros",
    "lift:loss=l2,bias=true")])
def test_contract_kit(spec):
    check_pool(spec)


def test_forward_is_tensor_to_tensor():
    """forward returns the pooled map alone (a plain tensor, not down()'s (map, state) pair)."""
    pool = _randomize(_pool(), seed=12)
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    for train in (True, False):
        pool.train(train)
        y = pool(x)
        assert type(y) is torch.Tensor and y.shape == (1, 4, 2, 2)
        torch.testing.assert_close(y, pool.down(x)[0], rtol=0, atol=0)
