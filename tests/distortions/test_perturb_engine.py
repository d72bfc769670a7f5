"""The torch perturbation engine (``poolbench.distortions.perturbation_torch``) against the numpy generator
(``poolbench.distortions.perturbation_reference``), on scikit-image photographs and a generated pattern at each
schedule's native size, and its wiring (generate_perturbed_set, the perturbation suite, the CLI).

- deterministic perturbations: PSNR >= 40 dB per sequence (measured: translate, brightness,
  motion_blur and gaussian_blur the same bytes; rotate, shear and tilt 87 dB or more, zoom_blur
  80 dB, scale 73 dB: at most 0.3 % of pixels one grey level apart);
- random perturbations fed the reference's own draws: PSNR >= 40 dB (measured: snow 78 dB or
  more, the noises 97 dB or more, shot noise the same bytes);
- random perturbations with the engine's own draws: the mean absolute change of every frame
  equal to the reference's within 4 standard errors of the paired per-image differences
  (measured: within 2.8 standard errors, differences under 0.9 % for the noises and 1.3 % for
  snow); the noise of two frames uncorrelated and spatially white, as the reference's
  (measured |r| < 0.006 for both);
- hand-computed frames: translate = a zero-filled np.roll; brightness of constant images from
  the HSV definition; identity frames are the input bytes.
"""
import numpy as np
import pytest
import torch

import poolbench
from helpers import pattern, photos, psnr
from poolbench import api
from poolbench.cli import main
from poolbench.distortions import perturbation_torch as E
from poolbench.distortions import perturbations as P
from poolbench.distortions.cache import item_seed
from poolbench.distortions.perturbation_reference import _perturb_chunk, _rngs
from poolbench.distortions.perturbation_schedules import PARAMS, SCHEDULE_LEVEL
from poolbench.errors import UsageError
from poolbench.runner import RunReport
from poolbench.suites.perturbation import SUITE, PerturbationOptions

torch.set_num_threads(1)

SMALL = [("cifar", 32), ("tinyimagenet", 64)]
SETS = SMALL + [pytest.param("imagenet", 224, marks=pytest.mark.slow)]  # seconds per case
DETERMINISTIC = ("brightness", "translate", "rotate", "tilt", "scale", "shear", "zoom_blur",
                 "motion_blur", "gaussian_blur")
RANDOM = ("gaussian_noise", "shot_noise", "speckle_noise", "snow")
NOISE = RANDOM[:3]




def _nchw(imgs):
    return torch.from_numpy(imgs).permute(0, 3, 1, 2)


# --- shapes, determinism, batch independence ---------------------------------------------------

@pytest.mark.parametrize("schedule,size", SMALL)
def test_shapes_and_batch_independence(schedule, size, monkeypatch):
    imgs = np.concatenate([photos(size, 2), pattern(size)])
    x = _nchw(imgs)
    for p in E.IMPLEMENTED:
        batch = E.perturb(x, p, seed=3, schedule=schedule)
        assert batch.shape == (3, P.frame_count(p, schedule), 3, size, size), p
        assert batch.dtype == torch.uint8, p
        alone = E.perturb(x[1:2], p, seed=3, schedule=schedule, indices=[1])
        assert torch.equal(alone[0], batch[1]), p
        # the numpy entry point, from image 1 on, in batches of one image
        with monkeypatch.context() as m:
            m.setattr(E, "batch_size", lambda h, w, frames: 1)
            tail = E.perturb_numpy(imgs[1:], p, 3, schedule, start=1)
        np.testing.assert_array_equal(tail, batch[1:].permute(0, 1, 3, 4, 2).numpy(), err_msg=p)
    for p in RANDOM:  # the index and the seed, not the position, draw the numbers
        twice = E.perturb(x[[0, 0]], p, seed=3, schedule=schedule)
        assert not torch.equal(twice[0], twice[1]), p
        assert not torch.equal(E.perturb(x[:1], p, seed=4, schedule=schedule)[0], twice[0]), p
        assert torch.equal(E.perturb(x[:1], p, seed=3, schedule=schedule)[0], twice[0]), p


def test_bad_inputs_are_one_line_usage_errors():
    x = _nchw(photos(32, 1))
    cases = [((x.float(), "rotate"), "uint8 tensor"), ((x[:, :2], "rotate"), r"\(N, 3, H, W\)"),
             ((x[..., :4, :4], "rotate"), "at least 8x8"), ((x, "rotat"), "rotat"),
             ((x, "spatter"), "no spatter"), ((x, "rotate", -1), "non-negative"),
             ((x, "rotate", 0, "tiny"), "schedule")]
    for args, needle in cases:
        with pytest.raises(UsageError, match=needle) as info:
            E.perturb(*args)
        assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="2 indices for 1 images"):
        E.perturb(x, "rotate", indices=[0, 1])
    assert "spatter" not in E.IMPLEMENTED and set(E.TORCH_DEFAULT) <= set(E.IMPLEMENTED)
    assert E.version().startswith(f"poolbench.corrupt.perturb torch r{E.REVISION} (torch ")


# --- against the numpy generator -----------------------------------------------------------------

@pytest.mark.parametrize("schedule,size", SETS)
def test_deterministic_perturbations_match_the_numpy_generator(schedule, size):
    imgs = np.concatenate([photos(size, 1 if size > 100 else 2), pattern(size)])
    for p in DETERMINISTIC:
        ref = _perturb_chunk(imgs, 0, p, schedule, 0)
        ours = E.perturb_numpy(imgs, p, 0, schedule)
        assert ours.shape == ref.shape, p
        if p == "translate":
            np.testing.assert_array_equal(ours, ref)
        for k in range(len(imgs)):
            assert psnr(ref[k], ours[k]) >= 40, (schedule, p, k, psnr(ref[k], ours[k]))


def _reference_draws(p, schedule, imgs):
    """The numpy generator's own draws of every image (its first and only draw), in the
    engine's layout: noise (N, frames - 1, 3, H, W), snow layer (N, 1, H, W)."""
    q, (n, h, w, _) = PARAMS[schedule][p], imgs.shape
    rngs = _rngs(0, p, schedule, 0, n)
    if p == "snow":
        return np.stack([r.normal(q["loc"], q["scale"], (h, w)) for r in rngs])[:, None]
    size = (q["frames"] - 1, h, w, 3)
    if p == "shot_noise":
        draws = [r.poisson(img / 255.0 * q["rate"], size) for r, img in zip(rngs, imgs)]
    else:
        draws = [r.normal(0.0, q["sigma"], size) for r in rngs]
    return np.stack(draws).transpose(0, 1, 4, 2, 3).astype(np.float64)


@pytest.mark.parametrize("schedule,size", SETS)
def test_random_perturbations_given_the_reference_draws_match_to_40_db(schedule, size, monkeypatch):
    imgs = np.concatenate([photos(size, 1 if size > 100 else 2), pattern(size)])
    level = SCHEDULE_LEVEL[schedule]
    for p in RANDOM:
        draws = torch.from_numpy(_reference_draws(p, schedule, imgs))
        row = {item_seed(0, p, level, k): k for k in range(len(imgs))}

        def given(keys, *args, dtype=torch.float64, **kw):
            return draws[[row[int(k)] for k in keys]].to(dtype)

        with monkeypatch.context() as m:
            m.setattr(E.rng, "poisson" if p == "shot_noise" else "normal", given)
            ours = E.perturb_numpy(imgs, p, 0, schedule)
        ref = _perturb_chunk(imgs, 0, p, schedule, 0)
        for k in range(len(imgs)):
            assert psnr(ref[k], ours[k]) >= 40, (schedule, p, k, psnr(ref[k], ours[k]))


# 64 px: 6 s of sampling, so slow; the 32 px case keeps the check in the fast suite
@pytest.mark.parametrize("schedule,size", [("cifar", 32),
                                           pytest.param("tinyimagenet", 64, marks=pytest.mark.slow)])
def test_random_perturbations_match_in_distribution(schedule, size):
    copies = 8 if size <= 32 else 5  # 40 and 25 images: seconds on a 2-core machine
    imgs = np.repeat(np.concatenate([photos(size, 4), pattern(size)]), copies, axis=0)
    clean = imgs[:, None].astype(np.float64)
    for p in RANDOM:
        ref = _perturb_chunk(imgs, 0, p, schedule, 0).astype(np.float64)
        ours = E.perturb_numpy(imgs, p, 0, schedule).astype(np.float64)
        # per image and frame: the mean absolute change, ours minus the reference's
        d = np.abs(ours - clean).mean((2, 3, 4)) - np.abs(ref - clean).mean((2, 3, 4))
        se = d.std(0, ddof=1) / np.sqrt(len(d))
        for i in range(1 if p in NOISE else 0, d.shape[1]):
            assert abs(d[:, i].mean()) <= 4 * se[i] + 0.01, (schedule, p, i, d[:, i].mean(), se[i])
        if p in NOISE:
            np.testing.assert_array_equal(ours[:, 0], clean[:, 0])
            for e in (ours - clean, ref - clean):
                frames = np.corrcoef(e[:, 1].ravel(), e[:, 2].ravel())[0, 1]
                far = np.corrcoef(e[:, 1].ravel(), e[:, -1].ravel())[0, 1]
                lag1 = np.corrcoef(e[:, 1:, ..., :-1].ravel(), e[:, 1:, ..., 1:].ravel())[0, 1]
                assert max(abs(frames), abs(far), abs(lag1)) < 0.02, (schedule, p, frames, far, lag1)


# --- hand-computed frames --------------------------------------------------------------------------

@pytest.mark.parametrize("schedule,size,centre", [("cifar", 32, 7), ("tinyimagenet", 64, 15)])
def test_translate_is_a_zero_filled_shift(schedule, size, centre):
    imgs = np.concatenate([photos(size, 1), pattern(size)])
    seq = E.perturb_numpy(imgs, "translate", 0, schedule)
    for i in range(seq.shape[1]):
        d = i - centre
        expected = np.roll(imgs, d, axis=2)
        if d > 0:
            expected[:, :, :d] = 0
        elif d < 0:
            expected[:, :, d:] = 0
        np.testing.assert_array_equal(seq[:, i], expected, err_msg=f"frame {i}")


def test_brightness_of_constant_images_follows_hsv():
    # grey 100: V = 100/255, S = 0, so every channel is V' = clip(V + c); (180, 120, 60): V =
    # 180/255, S = 2/3, hue 1/12 (sector 0, f = 1/2), so RGB = V' (1, 1 - S (1 - f), 1 - S)
    grey = np.full((1, 16, 16, 3), 100, np.uint8)
    colour = np.empty((1, 16, 16, 3), np.uint8)
    colour[...] = (180, 120, 60)
    for schedule, step in (("cifar", 0.015), ("tinyimagenet", 0.02)):
        seq = E.perturb_numpy(grey, "brightness", 0, schedule)
        for i in range(31):
            v = np.rint(np.clip(100 / 255 + (i - 15) * step, 0, 1) * 255)
            assert (seq[0, i] == v).all(), (schedule, i)
    seq = E.perturb_numpy(colour, "brightness", 0, "cifar")
    for i in range(31):
        v = np.clip(180 / 255 + (i - 15) * 0.015, 0, 1)
        expected = np.rint(255 * v * np.array([1, 2 / 3, 1 / 3]))
        assert (seq[0, i] == expected).all(), (i, seq[0, i, 0, 0], expected)


@pytest.mark.parametrize("schedule,size", SMALL)
def test_identity_frames_are_the_input(schedule, size):
    imgs = np.concatenate([photos(size, 1), pattern(size)])
    identity = {"rotate": 0.0, "tilt": 0.0, "shear": 0.0, "brightness": 0.0, "translate": 0.0,
                "scale": 1.0}
    for p, value in identity.items():
        i = P.frame_parameters(p, schedule).index(value)
        np.testing.assert_array_equal(E.perturb_numpy(imgs, p, 0, schedule)[:, i], imgs, err_msg=p)
    for p in NOISE + ("zoom_blur",):
        np.testing.assert_array_equal(E.perturb_numpy(imgs, p, 0, schedule)[:, 0], imgs, err_msg=p)


# --- wiring -------------------------------------------------------------------------------------------

def test_generated_sets_record_their_engine_and_never_share_a_cache_entry(tmp_path):
    imgs = photos(32, 2)
    names = ["translate", "gaussian_noise", "spatter"]
    kw = dict(seed=1, cache_dir=tmp_path, dataset="unit", workers=0, progress=False)
    auto = P.generate_perturbed_set(imgs, None, names, engine="auto", **kw)
    assert auto.engines == {"translate": "torch", "gaussian_noise": "torch", "spatter": "reference"}
    ref = P.generate_perturbed_set(imgs, None, names, engine="reference", **kw)
    assert set(ref.engines.values()) == {"reference"}
    for p in names:
        key = (p, "cifar")
        assert auto.manifest(key)["engine"] == auto.engines[p]
        assert (auto.path(key) == ref.path(key)) == (p == "spatter"), p
        assert auto.path(key).name.startswith(f"cifar-{auto.engines[p]}-seed1-"), p
    assert auto.manifest(("translate", "cifar"))["generator"] == E.version()
    np.testing.assert_array_equal(auto.get("translate"), ref.get("translate"))
    np.testing.assert_array_equal(auto.get("gaussian_noise"),
                                  E.perturb_numpy(imgs, "gaussian_noise", 1, "cifar"))
    forced = P.generate_perturbed_set(imgs, None, ["spatter"], engine="torch", workers=0, progress=False)
    assert forced.engines == {"spatter": "reference"}  # no torch version: the reference
    with pytest.raises(UsageError, match="unknown perturbation engine 'numpy'"):
        P.generate_perturbed_set(imgs, None, names, engine="numpy", workers=0, progress=False)


def test_perturbation_suite_cells_carry_the_resolved_engines(tmp_path):
    opts = PerturbationOptions(perturbations=("translate", "spatter"))
    assert opts.perturbation_engine == "auto"
    assert SUITE.cell_options(opts)["perturbation_engines"] == {"translate": "torch", "spatter": "reference"}
    ref = PerturbationOptions(perturbations=("translate", "spatter"), perturbation_engine="reference")
    assert SUITE.cell_options(ref)["perturbation_engines"] == {"translate": "reference", "spatter": "reference"}
    official = PerturbationOptions(perturbations=("translate",), perturbation_data=str(tmp_path))
    assert "perturbation_engines" not in SUITE.cell_options(official)
    with pytest.raises(UsageError, match="perturbation option perturbation_engine must be one of auto, reference, torch, got 'numpy'"):
        PerturbationOptions(perturbation_engine="numpy")


def test_the_engine_reaches_the_cells_from_the_api_and_the_cli(monkeypatch, tmp_path):
    seen = []

    def fake_run_cells(suite, cells, ctx, executor="sequential", log=None):
        seen.append(cells)
        return RunReport(rows=[], computed=len(cells), skipped=0, failed=0)

    monkeypatch.setattr(api, "run_cells", fake_run_cells)
    poolbench.run("perturbation", ["avg"], results=str(tmp_path / "r"), perturbations=["scale"],
                  perturbation_engine="reference", progress=False)
    assert {c["perturbation_engines"]["scale"] for c in seen[-1]} == {"reference"}
    assert main(["run", "perturbation", "--pool", "avg", "--perturbations", "scale", "--no-progress",
                 "--results", str(tmp_path / "r")]) == 0
    assert {c["perturbation_engines"]["scale"] for c in seen[-1]} == {"torch"}
    assert main(["run", "perturbation", "--pool", "avg", "--perturbations", "scale", "--no-progress",
                 "--perturbation-engine", "reference", "--results", str(tmp_path / "r")]) == 0
    assert {c["perturbation_engines"]["scale"] for c in seen[-1]} == {"reference"}
