"""The torch engine against the reference engine (imagecorruptions at ImageNet parameters, the
project's numpy generator at CIFAR-10-C's and Tiny-ImageNet-C's), on natural photographs
(scikit-image's) and on generated test patterns, at each set's native size.

- deterministic corruptions: PSNR >= 40 dB per image and severity (measured: 51 dB or more);
- random corruptions whose randomness is a few draws (motion blur's angle, frost's crop, the fog
  fractal, the snow layer and angle, the elastic fields): the reference's own draws fed to the
  torch application, PSNR >= 40 dB (measured: 52 dB or more);
- every random corruption with the engine's own draws: the mean absolute change per image equal
  to the reference's within 4 standard errors of the paired per-image differences (40 images
  per set and severity: differences of 0.1-3% at the noises, up to 8% at the few-draw ones),
  the noise's lag-1 autocorrelation (its spectrum is white) within 0.03;
- glass blur is not matched (the reference's sequential pixel swaps): up to 15% less change at
  ImageNet severities 3-5, so the reference stays its default engine; spatter has no torch
  version.
"""
import numpy as np
import pytest
import torch
from imagecorruptions import corruptions as L

from helpers import pattern, photos, psnr
from poolbench.distortions import corruption_reference as R
from poolbench.distortions import corruption_torch as E
from poolbench.distortions.cache import item_seed
from poolbench.distortions.corruption_params import constants
from poolbench.distortions.kernels import weather

# ImageNet's 224x224 cases take a few seconds each: slow
SETS = [("cifar", 32), ("tinyimagenet", 64), pytest.param("imagenet", 224, marks=pytest.mark.slow)]
DETERMINISTIC = ("gaussian_blur", "defocus_blur", "zoom_blur", "contrast", "brightness", "saturate",
                 "pixelate", "jpeg_compression")
WITH_DRAWS = ("motion_blur", "frost", "fog", "snow", "elastic_transform")
NOISE = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")




def _torch(img, c, s, params, draws=None):
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    return E.corrupt(x, c, s, 0, params, draws=None if draws is None else {c: draws})[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("params,size", SETS)
def test_deterministic_corruptions_match_to_40_db(params, size):
    imgs = np.concatenate([photos(size, 1 if size > 100 else 3), pattern(size)])
    for c in DETERMINISTIC:
        for s in (1, 2, 3, 4, 5):
            for img in imgs:
                ref = np.uint8(R.corrupt(img, c, s, params))
                assert psnr(ref, _torch(img, c, s, params)) >= 40, (params, c, s)


def _reference_draws(c, params, s, h, w, seed):
    """The draws the reference makes after np.random.seed(seed), in its order."""
    np.random.seed(seed)
    k = constants(params, c, s)
    if c == "motion_blur":
        return {"angle": torch.tensor([np.random.uniform(-45, 45)], dtype=torch.float64)}
    if c == "frost":
        i, x0, y0 = R.frost_draw(params, h, w)
        return {"index": torch.tensor([i]), "x0": torch.tensor([x0]), "y0": torch.tensor([y0])}
    if c == "fog":
        return {"fractal": torch.from_numpy(L.plasma_fractal(L.next_power_of_2(max(h, w)), k[1]))[None]}
    if c == "snow":
        layer = np.random.normal(size=(h, w), loc=k[0], scale=k[1])
        angle = np.random.uniform(-135, -45)
        return {"layer": torch.from_numpy(layer).float()[None, None],
                "angle": torch.tensor([angle], dtype=torch.float64)}
    m, dx, dy = R.elastic_draw(params, s, h, w)
    return {"matrix": None if m is None else torch.from_numpy(m)[None],
            "dx": torch.from_numpy(dx)[None], "dy": torch.from_numpy(dy)[None]}


@pytest.mark.parametrize("params,size", SETS)
def test_random_corruptions_given_the_reference_draws_match_to_40_db(params, size):
    imgs = np.concatenate([photos(size, 1 if size > 100 else 2), pattern(size)])
    for c in WITH_DRAWS:
        for s in (1, 3, 5):
            for k, img in enumerate(imgs):
                np.random.seed(50 + k)
                ref = np.uint8(R.corrupt(img, c, s, params))
                draws = _reference_draws(c, params, s, size, size, 50 + k)
                assert psnr(ref, _torch(img, c, s, params, draws)) >= 40, (params, c, s)


def _reference_set(imgs, c, s, params):
    out = []
    for k, img in enumerate(imgs):
        seed = item_seed(0, c, s, k)
        np.random.seed(seed)
        with np.errstate(all="ignore"):
            out.append(np.uint8(np.nan_to_num(R.corrupt(img, c, s, params, seed=seed))))
    return np.stack(out)


@pytest.mark.slow  # seconds of statistics on a 2-core machine
@pytest.mark.parametrize("params,size", [("cifar", 32), ("tinyimagenet", 64)])
def test_random_corruptions_match_in_distribution(params, size):
    imgs = np.repeat(np.concatenate([photos(size, 4), pattern(size)]), 8, axis=0)  # 40 images
    for c in NOISE + WITH_DRAWS:
        for s in (1, 3, 5):
            ref = _reference_set(imgs, c, s, params).astype(np.float64)
            ours = E.corrupt_numpy(imgs, c, s, 0, params).astype(np.float64)
            d = np.abs(ours - imgs).mean((1, 2, 3)) - np.abs(ref - imgs).mean((1, 2, 3))
            se = d.std(ddof=1) / np.sqrt(len(d))
            assert abs(d.mean()) <= 4 * se + 0.01, (params, c, s, d.mean(), se)
            if c in NOISE:  # white: neighbouring pixels' changes uncorrelated, as the reference's
                def lag1(a):
                    d = (a - imgs)[:, :, :-1].ravel(), (a - imgs)[:, :, 1:].ravel()
                    return np.corrcoef(*d)[0, 1]
                assert abs(lag1(ours) - lag1(ref)) < 0.03, (params, c, s)


def test_fog_fractal_matches_the_reference_in_distribution():
    n, size = 64, 64
    ctx = E.Context(keys=torch.arange(n), params="tinyimagenet", severity=1, h=size, w=size,
                    dtype=torch.float32)
    for decay in (1.75, 3.0):
        ours = weather.plasma_fractal(ctx, size, decay).numpy()
        np.random.seed(0)
        ref = np.stack([L.plasma_fractal(size, decay) for _ in range(n)])
        for stat in (np.mean, np.std):
            assert abs(stat(ours) - stat(ref)) < 0.1 * stat(ref), (decay, stat)
        # the same spectrum: mean squared difference of neighbours (roughness)
        rough = lambda a: np.mean(np.diff(a, axis=2) ** 2)  # noqa: E731
        assert abs(rough(ours) - rough(ref)) < 0.15 * rough(ref), decay


@pytest.mark.slow  # seconds of statistics on a 2-core machine
def test_glass_blur_is_an_approximation_left_to_the_reference():
    size, params = 64, "tinyimagenet"
    imgs = np.repeat(photos(size, 4), 4, axis=0)
    ref = _reference_set(imgs, "glass_blur", 5, params).astype(np.float64)
    ours = E.corrupt_numpy(imgs, "glass_blur", 5, 0, params).astype(np.float64)
    dr, dt = np.abs(ref - imgs).mean(), np.abs(ours - imgs).mean()
    assert 0.05 < abs(dt - dr) / dr < 0.25  # measured 10.5% (11-15% at ImageNet s3, s5)
    assert "glass_blur" not in E.TORCH_DEFAULT and "spatter" not in E.IMPLEMENTED
