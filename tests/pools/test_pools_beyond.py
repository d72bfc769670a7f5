"""The operators beyond the LiftPool paper's twelve (docs/pools.md, "Beyond the twelve"): properties
their papers claim, each checked against an expectation built independently of the operator's code.
The float64 brute-force oracles are in test_pool_reference.py; the contract in test_pool_contract.py."""
import doctest
import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import poolbench
from poolbench import cli
from poolbench.errors import UsageError
from poolbench.models import create_model
from poolbench.models.segnet import create_segnet, resolve_variant
from poolbench.pool_table import pool_rows
from poolbench.testing import CONTRACT_CHECKS, count_parameters

NEW = ("gfgp", "softpool", "lip", "aps", "lps", "asap")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def pool(spec, channels=3, dtype=torch.float64, train=False, seed=0):
    torch.manual_seed(seed)
    return poolbench.get_pool(spec, channels).to(dtype).train(train)


def randn(*shape, seed=1, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def rolls(y):
    """Every circular shift of y over its last two axes."""
    h, w = y.shape[-2:]
    return [torch.roll(y, (a, b), dims=(-2, -1)) for a in range(h) for b in range(w)]


# --- the listing ---------------------------------------------------------------------------

def test_at_least_18_builtins_each_with_paper_year_and_licence():
    rows = [r for r in pool_rows() if r["source"] == "built-in"]
    assert len(rows) >= 18 and set(NEW) <= {r["name"] for r in rows}
    for r in rows:
        assert r["status"] == "ok", r
        assert r["paper"] and 1989 <= r["year"] <= 2025 and r["licence"] == "MIT", r


def test_softpool_is_builtin_and_the_plugin_is_another_operator():
    assert poolbench.get_spec("softpool").source == "built-in"
    # the example plugin's rows (not other tests' deliberately broken plugins) load cleanly
    plugin = [r for r in pool_rows() if r["source"] == "poolbench-lppool"]
    assert plugin and all(r["status"] == "ok" for r in plugin), "the example plugin clashes with a built-in"


@pytest.mark.parametrize("module", ["softpool", "gfgp", "lip", "polyphase", "asap", "base"])
def test_docstring_examples_hold(module):
    mod = importlib.import_module(f"poolbench.pools.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --- softpool --------------------------------------------------------------------------------

def test_softpool_equals_a_hand_written_loop():
    x = randn(2, 3, 6, 4) * 3
    y = pool("softpool")(x)
    for n in range(2):
        for c in range(3):
            for i in range(3):
                for j in range(2):
                    vals = [float(x[n, c, 2 * i + a, 2 * j + b]) for a in (0, 1) for b in (0, 1)]
                    num = sum(math.exp(v) * v for v in vals)
                    den = sum(math.exp(v) for v in vals)
                    assert float(y[n, c, i, j]) == pytest.approx(num / den, rel=1e-12, abs=1e-12)


def test_softpool_does_not_overflow_in_float32():
    # exp(100) overflows float32: a softmax without max-subtraction returns nan here
    x = torch.tensor([[[[100.0, 99.0], [-50.0, 100.0]]]])
    y = pool("softpool", 1, torch.float32)(x)
    e = [math.exp(v - 100.0) for v in (100.0, 99.0, -50.0, 100.0)]
    want = sum(w * v for w, v in zip(e, (100.0, 99.0, -50.0, 100.0))) / sum(e)
    assert torch.isfinite(y).all() and y.item() == pytest.approx(want, rel=1e-6)


# --- lip -------------------------------------------------------------------------------------

def test_lip_starts_as_avg_pooling():
    x = randn(2, 4, 9, 6)
    torch.testing.assert_close(pool("lip", 4)(x), F.avg_pool2d(x, 2, 2), rtol=1e-12, atol=1e-12)


def test_lip_equals_avg_whenever_the_logits_are_constant():
    # a random conv, but InstanceNorm with zero scale: every logit is 12 sigmoid(beta_c)
    p = pool("lip", 4)
    with torch.no_grad():
        p.logit.weight.normal_()
        p.norm.weight.zero_()
        p.norm.bias.copy_(torch.tensor([-3.0, 0.0, 1.0, 5.0]))
    x = randn(2, 4, 8, 8)
    torch.testing.assert_close(p(x), F.avg_pool2d(x, 2, 2), rtol=1e-12, atol=1e-12)
    # ... and not otherwise: with the scale back the weights depend on the input
    with torch.no_grad():
        p.norm.weight.fill_(1.0)
    assert not torch.allclose(p(x), F.avg_pool2d(x, 2, 2), atol=1e-3)


def test_lip_parameters_and_float16_weights_do_not_overflow():
    assert count_parameters(poolbench.get_pool("lip", 64)) == (9 * 64 * 64 + 2 * 64, 0)
    p = pool("lip", 2, torch.float32)
    with torch.no_grad():
        p.norm.bias.fill_(20.0)   # logits at their ceiling, 12: e^12 > the float16 maximum
    x = randn(1, 2, 4, 4, dtype=torch.float32)
    torch.testing.assert_close(p.half()(x.half()).float(), F.avg_pool2d(x, 2), rtol=2e-3, atol=2e-3)


# --- gfgp ------------------------------------------------------------------------------------

def test_gfgp_parameter_count_as_the_spec_states():
    assert count_parameters(poolbench.get_pool("gfgp", 64)) == (4384, 192)   # 64^2 + 4.5 * 64


def test_gfgp_small_temperature_is_the_mean_and_training_needs_a_batch():
    p = pool("gfgp", 4)
    with torch.no_grad():
        p.expand_bn.bias.fill_(-40.0)   # lam = sigmoid(-40) ~ 4e-18: e^(lam x) ~ 1
    x = randn(2, 4, 6, 6)
    torch.testing.assert_close(p(x), F.avg_pool2d(x, 2), rtol=1e-12, atol=1e-12)
    with pytest.raises(UsageError, match="batch size"):
        p.train()(x[:1])
    assert p.eval()(x[:1]).shape == (1, 4, 3, 3)


# --- asap and the frequency low cut ------------------------------------------------------------

SIZES = [(2, 2), (3, 5), (6, 6), (8, 12), (9, 7), (16, 10)]


@pytest.mark.parametrize("size", SIZES)
def test_asap_keeps_a_constant(size):
    x = torch.full((2, 3, *size), -1.75, dtype=torch.float64)
    torch.testing.assert_close(pool("asap")(x), torch.full((2, 3, size[0] // 2, size[1] // 2), -1.75,
                                                           dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [(8, 8), (12, 6), (16, 20)])
def test_asap_removes_a_nyquist_checkerboard(size):
    i = torch.arange(size[0])[:, None]
    j = torch.arange(size[1])[None, :]
    board = ((-1.0) ** (i + j)).to(torch.float64).expand(1, 2, *size)
    y = pool("asap", 2)(3.0 + board)
    torch.testing.assert_close(y, torch.full_like(y, 3.0), rtol=0, atol=1e-12)
    # max pooling keeps it as a constant offset, avg removes it too: the test can tell them apart
    assert float((F.max_pool2d(3.0 + board, 2) - 3.0).abs().max()) == 1.0


def test_asap_tapers_a_band_limited_cosine_by_the_hamming_response():
    h, w, f = 16, 16, 3                      # kept (3 < 8/2) but away from DC
    i = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    x = torch.cos(2 * math.pi * f * i / h).expand(1, 1, h, w)
    gain = math.sqrt(0.54 + 0.46 * math.cos(2 * math.pi * f / h))   # sqrt(w_H(f) * w_W(0))
    a = torch.arange(h // 2, dtype=torch.float64)[:, None].expand(h // 2, w // 2)
    want = gain * torch.cos(2 * math.pi * f * a / (h // 2))
    torch.testing.assert_close(pool("asap", 1)(x)[0, 0], want, rtol=0, atol=1e-12)
    torch.testing.assert_close(pool("spectral", 1)(x)[0, 0], want / gain, rtol=0, atol=1e-12)


def flc(x):
    """The frequency low cut (Grabinski et al., ECCV 2022) as its paper states it: fftshift the
    spectrum, keep the centre H/2 x W/2 block, shift back, inverse FFT (scaled to keep a constant)."""
    h, w = x.shape[-2:]
    spec = np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))
    centre = spec[..., h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2]
    return np.fft.ifft2(np.fft.ifftshift(centre, axes=(-2, -1))).real / 4


@pytest.mark.parametrize("size", [(4, 4), (8, 12), (16, 8), (32, 32)])
def test_the_frequency_low_cut_equals_spectral_pooling(size):
    x = randn(2, 3, *size)
    np.testing.assert_allclose(pool("spectral")(x).numpy(), flc(x.numpy()), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(pool("asap:window=false")(x), pool("spectral")(x), rtol=0, atol=1e-12)


def test_the_low_cuts_differ_where_half_the_size_is_odd():
    # H = 6: the fftshift centre keeps frequencies -2..0, spectral keeps -1..1; both alias-free
    x = randn(1, 1, 6, 6)
    assert not np.allclose(pool("spectral", 1)(x).numpy(), flc(x.numpy()), atol=1e-6)


# --- aps and lps: circular-shift equivariance ----------------------------------------------------

def eval_pools():
    return ["aps", "aps:filter_size=3", "aps:max_first=true", "lps", "lps:filter_size=3,hidden=4",
            "lps:max_first=true,hidden=2"]


@pytest.mark.parametrize("spec", eval_pools())
def test_polyphase_pools_are_equivariant_to_every_circular_shift(spec):
    p = pool(spec, 3)
    x = randn(2, 3, 8, 6)
    y = p(x)
    for a in range(8):
        for b in range(6):
            ys = p(torch.roll(x, (a, b), dims=(2, 3)))
            # sample by sample: each may have chosen another phase
            for n in range(2):
                assert any(torch.allclose(ys[n], r, rtol=0, atol=1e-12) for r in rolls(y[n])), (spec, a, b, n)


def test_a_strided_pool_is_not_equivariant_to_odd_shifts():
    # the negative control of the test above: the same check rejects max pooling
    x = randn(1, 3, 8, 6)
    y = F.max_pool2d(x, 2)
    ys = F.max_pool2d(torch.roll(x, (1, 0), dims=(2, 3)), 2)
    assert not any(torch.allclose(ys[0], r, atol=1e-6) for r in rolls(y[0]))


@pytest.mark.parametrize("spec", eval_pools())
def test_down_then_up_commutes_with_circular_shifts(spec):
    p = pool(spec, 2)
    x = randn(2, 2, 8, 8)
    y, state = p.down(x)
    back = p.up(y, state)
    for a, b in [(1, 0), (0, 1), (3, 5), (2, 2), (7, 7)]:
        xs = torch.roll(x, (a, b), dims=(2, 3))
        ys, ss = p.down(xs)
        torch.testing.assert_close(p.up(ys, ss), torch.roll(back, (a, b), dims=(2, 3)), rtol=0, atol=1e-12)


def test_aps_up_puts_the_component_back_at_its_phase():
    p = pool("aps", 1)
    x = randn(3, 1, 6, 8)
    y, state = p.down(x)
    back = p.up(y, state)
    for n in range(3):
        phase = int(state["weights"][n].argmax())
        i, j = divmod(phase, 2)
        torch.testing.assert_close(back[n, :, i::2, j::2], x[n, :, i::2, j::2], rtol=0, atol=0)
        mask = torch.ones(6, 8, dtype=torch.bool)
        mask[i::2, j::2] = False
        assert (back[n, :, mask] == 0).all()
    assert p.up(*p.down(randn(1, 1, 7, 5))).shape == (1, 1, 7, 5)   # odd sizes: zeros at the end


def test_aps_up_with_a_blur_keeps_a_constant():
    p = pool("aps:filter_size=3", 2)
    x = torch.full((1, 2, 8, 8), 1.25, dtype=torch.float64)
    torch.testing.assert_close(p.up(*p.down(x)), x, rtol=0, atol=1e-12)


def test_lps_training_is_a_seeded_gumbel_mix_and_a_flat_one_at_high_temperature():
    x = randn(4, 3, 8, 8)
    p = pool("lps", 3, train=True)
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append(p(x))
    assert torch.equal(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])
    # tau -> infinity: all four components weigh 1/4, i.e. the 2x2 average
    hot = pool("lps:tau=1e9", 3, train=True)
    torch.testing.assert_close(hot(x), F.avg_pool2d(x, 2), rtol=1e-6, atol=1e-7)
    # the up-pool spreads y over the phases with the same weights (LPU in training)
    torch.manual_seed(0)
    y, state = p.down(x)
    w = state["weights"]
    assert torch.allclose(w.sum(1), torch.ones(4, dtype=w.dtype)) and (w > 0).all()
    back = p.up(y, state)
    torch.testing.assert_close(back[:, :, 1::2, 0::2], w[:, 2, None, None, None] * y)


# --- circular padding in the backbones -----------------------------------------------------------

def test_padding_flag_sets_the_model_option(monkeypatch, tmp_path):
    seen = {}

    class Stop(Exception):
        pass

    def fake_run_cells(suite, cells, ctx, executor, log=None):
        seen.update(model=cells[0]["train"]["model"], suite=suite)
        raise Stop

    monkeypatch.setattr(cli.api, "run_cells", fake_run_cells)
    store = ["--results", str(tmp_path)]
    with pytest.raises(Stop):
        cli.main(["run", "shift", "--pool", "aps", "--padding", "circular", *store])
    assert seen["model"] == "convnet:padding=circular"        # the quick preset's model
    with pytest.raises(Stop):
        cli.main(["run", "accuracy", "--model", "resnet18_cifar", "--padding", "circular", *store])
    assert seen["model"] == "resnet18_cifar:padding=circular"
    with pytest.raises(Stop):
        cli.main(["run", "accuracy", "--model", "convnet:padding=circular", "--padding", "zeros", *store])
    assert seen["model"] == "convnet"


@pytest.mark.parametrize("pool_name", ["aps", "lps"])
def test_circular_backbone_with_polyphase_pools_is_shift_invariant(pool_name):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32)
    circ = create_model("convnet:padding=circular", 10, pool=pool_name).eval()
    zero = create_model("convnet", 10, pool=pool_name).eval()
    maxp = create_model("convnet:padding=circular", 10, pool="max").eval()
    with torch.no_grad():
        ref = {"circ": circ(x), "zero": zero(x), "max": maxp(x)}
        worst = {k: 0.0 for k in ref}
        for a in range(-3, 3):
            for b in range(-3, 3):
                xs = torch.roll(x, (a, b), dims=(2, 3))
                for k, model in (("circ", circ), ("zero", zero), ("max", maxp)):
                    worst[k] = max(worst[k], float((model(xs) - ref[k]).abs().max()))
    scale = float(ref["circ"].abs().max())
    assert worst["circ"] <= 1e-5 * scale
    # neither zero padding nor max pooling gives it
    assert worst["zero"] > 1e-3 * float(ref["zero"].abs().max())
    assert worst["max"] > 1e-3 * float(ref["max"].abs().max())


@pytest.mark.slow  # trains three small models
def test_shift_suite_aps_and_lps_reach_100_percent_circular_consistency(tmp_path, monkeypatch):
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    run = poolbench.run("shift", pools=["aps", "lps", "max"], model="convnet:padding=circular",
                        epochs=2, train_size=1024, test_size=512, subset=512, passes=3,
                        results=str(tmp_path / "results"), progress=False)
    rows = [r for r in run.rows if r["metric"] == "consistency" and r["shift_kind"] == "circular"]
    got = {r["pool"]: r["value"] for r in rows}
    assert {r["model"] for r in rows} == {"convnet:padding=circular"}
    assert got["aps"] == 100.0 and got["lps"] == 100.0, got
    assert got["max"] < 100.0, got


# --- segmentation partners -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["aps", "lps"])
def test_polyphase_pools_are_segmentation_variants_with_their_partners(name):
    v = resolve_variant(name)
    assert (v.name, v.pool, v.upsample) == (name, name, "paired")
    torch.manual_seed(0)
    net = create_segnet(4, name, widths=(4, 8)).eval()
    assert net(torch.rand(2, 3, 12, 12)).shape == (2, 4, 12, 12)


# --- the contract on CUDA -------------------------------------------------------------------------

@CUDA
@pytest.mark.parametrize("name", NEW)
def test_new_operators_on_cuda_match_cpu(name):
    cpu = pool(name, 3, torch.float32)
    gpu = pool(name, 3, torch.float32).cuda()
    x = randn(2, 3, 8, 10, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-4, atol=1e-5)
    for check in ("shapes", "dtype_device", "gradcheck", "constant", "convex"):
        CONTRACT_CHECKS[check](name)


@pytest.mark.parametrize("spec", ["aps:filter_size=7", "lps:filter_size=5,hidden=2"])
def test_polyphase_blur_wraps_on_maps_smaller_than_the_filter(spec):
    p = pool(spec, 2)
    for size in [(2, 2), (3, 2), (2, 5)]:
        x = randn(1, 2, *size)
        y, state = p.down(x)
        assert y.shape == (1, 2, size[0] // 2, size[1] // 2) and p.up(y, state).shape == x.shape
    # a circular blur of a 2x2 map with 7 taps is the 7x7 filter folded onto the 2x2 period
    x = randn(1, 1, 2, 2)
    f = torch.tensor([1, 6, 15, 20, 15, 6, 1], dtype=torch.float64) / 64
    fold = torch.stack([f[(torch.arange(7) - 3) % 2 == r].sum() for r in (0, 1)])   # offsets 0 and 1
    blurred = sum(fold[a] * fold[b] * torch.roll(x, (-a, -b), dims=(2, 3)) for a in (0, 1) for b in (0, 1))
    want = blurred.flatten()[blurred.flatten().abs().argmax()]   # one pixel per phase: the largest
    assert float(pool("aps:filter_size=7", 1)(x)) == pytest.approx(float(want), rel=1e-12)
