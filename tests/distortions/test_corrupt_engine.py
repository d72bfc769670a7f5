"""The torch corruption engine: shapes, determinism (batch-independent, counter-based), the
random number generator against known moments, the engine choice, CUDA where available."""
import json
import math

import numpy as np
import pytest
import torch

from helpers import smooth_images
from poolbench.distortions import corruption_torch as E
from poolbench.distortions import corruptions as K
from poolbench.distortions.kernels import rng


def _channels(a, b, x, y):
    return np.sin(a * x + b * y), np.cos(b * x), np.sin(a * x * y)


def _images(n=4, size=32, seed=0):
    return smooth_images(n, size, seed, _channels, high=9, gain=110, jitter=30)


@pytest.mark.parametrize("params,size", [("cifar", 32), ("tinyimagenet", 64), ("imagenet", 40)])
def test_every_corruption_shape_dtype_and_batch_independence(params, size):
    imgs = _images(3, size)
    for c in E.IMPLEMENTED:
        for s in (1, 5):
            whole = E.corrupt_numpy(imgs, c, s, seed=4, params=params)
            assert whole.shape == imgs.shape and whole.dtype == np.uint8, (c, s)
            # image 2 alone, told its index, is the same bytes as in the batch
            alone = E.corrupt_numpy(imgs[2:], c, s, seed=4, params=params, start=2)
            np.testing.assert_array_equal(alone[0], whole[2], err_msg=f"{c} s{s}")


def test_seed_and_index_change_the_random_corruptions_only():
    imgs = _images(2)
    a = E.corrupt_numpy(imgs, "gaussian_noise", 3, seed=0, params="cifar")
    assert not np.array_equal(a, E.corrupt_numpy(imgs, "gaussian_noise", 3, seed=1, params="cifar"))
    assert not np.array_equal(a[1], E.corrupt_numpy(imgs[1:], "gaussian_noise", 3, 0, "cifar")[0])
    b = E.corrupt_numpy(imgs, "contrast", 3, seed=0, params="cifar")
    np.testing.assert_array_equal(b, E.corrupt_numpy(imgs, "contrast", 3, seed=9, params="cifar"))


def test_rng_moments_and_counter_independence():
    keys = rng.image_keys(0, "x", 1, range(4))
    u = rng.uniform(keys, (50000,), 1, dtype=torch.float64)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    z = rng.normal(keys, (50000,), 2, dtype=torch.float64)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    # streams and images are uncorrelated
    v = rng.uniform(keys, (50000,), 3, dtype=torch.float64)
    assert abs(float(torch.corrcoef(torch.stack([u[0], v[0]]))[0, 1])) < 0.02
    assert abs(float(torch.corrcoef(torch.stack([u[0], u[1]]))[0, 1])) < 0.02
    # the same key gives the same numbers whatever else is in the batch
    again = rng.uniform(rng.image_keys(0, "x", 1, [2]), (50000,), 1, dtype=torch.float64)
    assert torch.equal(again[0], u[2])


@pytest.mark.parametrize("lam", [0.3, 4.0, 9.9, 10.5, 60.0, 480.0])
def test_poisson_sampler_mean_variance_and_probabilities(lam):
    keys = rng.image_keys(1, "p", 1, range(2))
    k = rng.poisson(keys, torch.full((2, 40000), lam, dtype=torch.float64), 7).flatten()
    assert float(k.min()) >= 0 and torch.equal(k, k.round())
    se = np.sqrt(lam / len(k))
    assert abs(float(k.mean()) - lam) < 5 * se
    assert abs(float(k.var()) / lam - 1) < 0.04
    # P(K <= floor(lam)) against the Poisson CDF summed by hand
    m = int(lam)
    cdf = sum(math.exp(-lam + j * math.log(lam) - math.lgamma(j + 1)) for j in range(m + 1))
    assert abs(float((k <= m).double().mean()) - cdf) < 0.01


def test_engine_choice_and_cache_columns(tmp_path):
    assert K.engine_for("contrast", "auto") == "torch"
    assert K.engine_for("glass_blur", "auto") == "reference"   # an approximation: not the default
    assert K.engine_for("glass_blur", "torch") == "torch"       # asked for explicitly
    assert K.engine_for("spatter", "torch") == "reference"      # no torch version
    cs = K.generate_corrupted_set(_images(3), None, ["contrast", "spatter"], [2], seed=0,
                                  cache_dir=tmp_path, workers=0, progress=False, engine="auto")
    assert cs.engines == {"contrast": "torch", "spatter": "reference"}
    m = json.loads(cs.path(("contrast", 2)).with_suffix(".json").read_text())
    assert m["engine"] == "torch" and m["params"] == "cifar"
    assert cs.path(("contrast", 2)).name.startswith("cifar-torch-s2-")
    np.testing.assert_array_equal(cs.get("contrast", 2),
                                  E.corrupt_numpy(_images(3), "contrast", 2, 0, "cifar"))
    with pytest.raises(Exception, match="unknown corruption engine"):
        K.engine_for("contrast", "gpu")


def test_on_the_fly_sets_are_the_cached_bytes_and_store_nothing(tmp_path):
    imgs = _images(5)
    names, sev = ["gaussian_noise", "contrast", "impulse_noise"], [1, 4]
    cached = K.generate_corrupted_set(imgs, None, names, sev, seed=3, cache_dir=tmp_path / "c",
                                      workers=0, progress=False, engine="auto", chunk_size=2)
    live = K.generate_corrupted_set(imgs, None, names, sev, seed=3, cache_dir=tmp_path / "f",
                                    workers=0, progress=False, engine="auto", chunk_size=2,
                                    on_the_fly=True)
    assert live.engines == cached.engines and live.keys() == cached.keys()
    assert not (tmp_path / "f").exists()   # nothing generated ahead, nothing written
    for c in names:
        for s in sev:
            np.testing.assert_array_equal(live.get(c, s), cached.get(c, s), err_msg=f"{c} s{s}")
            assert live.path((c, s)) is None and live.manifest((c, s))["engine"] == cached.engines[c]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpu_bytes_up_to_float_rounding():
    imgs = _images(3, 64)
    for c in E.IMPLEMENTED:
        cpu = E.corrupt_numpy(imgs, c, 3, seed=2, params="tinyimagenet").astype(int)
        gpu = E.corrupt_numpy(imgs, c, 3, seed=2, params="tinyimagenet", device="cuda").astype(int)
        # same random numbers (counter-based); float32 kernels may differ by one grey level
        assert np.abs(cpu - gpu).max() <= 1 or (np.abs(cpu - gpu) > 1).mean() < 1e-3, c
