"""Perturbation sequences (CIFAR-P / ImageNet-P schedules), their cache, and the CIFAR-P loader."""
import numpy as np
import pytest

from helpers import smooth_images
from poolbench.distortions import perturbations as P
from poolbench.errors import UsageError
from poolbench.metrics import ALL_PERTURBATIONS, CIFAR_P_TEST_PERTURBATIONS


def _channels(a, b, x, y):
    return np.sin(a * x), np.cos(b * y), np.sin(a * x * y)


def _images(n=2, size=32, seed=0):
    return smooth_images(n, size, seed, _channels, high=8, gain=100, jitter=50)


CIFAR_FRAMES = {"translate": 16, "motion_blur": 21}
IMAGENET_FRAMES = {"translate": 41}


def test_frame_counts_per_schedule():
    for p in ALL_PERTURBATIONS:
        assert P.frame_count(p, "cifar") == CIFAR_FRAMES.get(p, 31), p
        assert P.frame_count(p, "imagenet") == IMAGENET_FRAMES.get(p, 31), p
    imgs = _images(1)
    for p in ALL_PERTURBATIONS:
        seq = P.perturb_sequences(imgs, p, seed=0)  # auto -> cifar at 32x32
        assert seq.shape == (1, CIFAR_FRAMES.get(p, 31), 32, 32, 3) and seq.dtype == np.uint8, p
    assert P.resolve_schedule("auto", (32, 32)) == "cifar"
    assert P.resolve_schedule("auto", (224, 224)) == "imagenet"


def test_schedule_parameters():
    assert P.frame_parameters("translate", "cifar") == list(range(-7, 9))
    assert P.frame_parameters("translate", "imagenet") == list(range(-20, 21))
    scale = P.frame_parameters("scale", "cifar")        # (2i + 70) / 100
    assert scale[0] == 0.7 and scale[15] == 1.0 and scale[30] == 1.3
    scale = P.frame_parameters("scale", "imagenet")     # (2.5i + 40) / 100
    assert scale[0] == 0.4 and scale[24] == 1.0 and scale[30] == 1.15
    bright = P.frame_parameters("brightness", "cifar")  # (i - 15) * 0.015
    assert bright[0] == pytest.approx(-0.225) and bright[15] == 0 and bright[30] == pytest.approx(0.225)
    assert P.frame_parameters("brightness", "imagenet")[30] == pytest.approx(0.3)
    assert P.frame_parameters("rotate")[0] == -15 and P.frame_parameters("tilt")[0] == -11.25
    assert P.frame_parameters("motion_blur")[0] == -180 and P.frame_parameters("motion_blur")[20] == 0
    assert P.frame_parameters("gaussian_blur")[30] == pytest.approx(0.75)
    assert P.frame_parameters("zoom_blur")[30] == pytest.approx(1.12)


def test_frames_that_the_schedule_makes_the_original():
    imgs = _images(2)
    seq = lambda p, sched="cifar": P.perturb_sequences(imgs, p, seed=0, schedule=sched)  # noqa: E731
    identity = {"translate": 7, "brightness": 15, "rotate": 15, "tilt": 15, "shear": 15,
                "scale": 15, "gaussian_noise": 0, "shot_noise": 0, "speckle_noise": 0,
                "zoom_blur": 0}
    for p, i in identity.items():
        s = seq(p)
        np.testing.assert_array_equal(s[:, i], imgs, err_msg=p)
        assert not np.array_equal(s[:, i + 1], imgs), p  # and the next frame is perturbed
    # ImageNet-P schedules (forced on small images)
    np.testing.assert_array_equal(seq("translate", "imagenet")[:, 20], imgs)
    np.testing.assert_array_equal(seq("scale", "imagenet")[:, 24], imgs)
    np.testing.assert_array_equal(seq("brightness", "imagenet")[:, 15], imgs)
    # translate frame 8 moves the image 1 px right with a zero column on the left
    t8 = seq("translate")[:, 8]
    np.testing.assert_array_equal(t8[:, :, 1:], imgs[:, :, :-1])
    assert (t8[:, :, 0] == 0).all()
    # weather and motion frames are never the original; sigma 0.3 (frame 0) barely blurs
    for p in ("motion_blur", "snow"):
        assert not np.array_equal(seq(p)[:, 0], imgs), p
    assert not np.array_equal(seq("gaussian_blur")[:, 30], imgs)


def test_noise_frames_are_independent_draws():
    imgs = _images(1)
    s = P.perturb_sequences(imgs, "gaussian_noise", seed=0)[0]
    assert not np.array_equal(s[1], s[2])
    # sigma 0.02 on [0, 1]: about 0.02 * 255 = 5.1 grey levels of spread
    assert np.std(s[1:].astype(float) - s[0]) == pytest.approx(5.1, rel=0.15)


def test_determinism_per_seed_and_index_based_seeding():
    imgs = _images(3)
    for p in ("gaussian_noise", "shot_noise", "speckle_noise", "snow", "spatter"):
        a = P.perturb_sequences(imgs, p, seed=1)
        np.testing.assert_array_equal(a, P.perturb_sequences(imgs, p, seed=1), err_msg=p)
        assert not np.array_equal(a, P.perturb_sequences(imgs, p, seed=2)), p
    # deterministic perturbations do not depend on the seed
    np.testing.assert_array_equal(P.perturb_sequences(imgs, "rotate", seed=1),
                                  P.perturb_sequences(imgs, "rotate", seed=2))
    # chunking does not change the bytes: each image is seeded by its index
    ps = P.generate_perturbed_set(imgs, None, ["snow", "gaussian_noise"], seed=1, workers=0,
                                  chunk_size=2, progress=False)
    np.testing.assert_array_equal(ps.get("snow"), P.perturb_sequences(imgs, "snow", seed=1))
    np.testing.assert_array_equal(ps.get("gaussian_noise"),
                                  P.perturb_sequences(imgs, "gaussian_noise", seed=1))


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])  # 2: processes
def test_generated_set_is_cached(tmp_path, workers):
    imgs = _images(3)
    ps = P.generate_perturbed_set(imgs, np.arange(3), ["translate", "shot_noise"], seed=4,
                                  cache_dir=tmp_path, dataset="unit", subset="val", workers=workers,
                                  chunk_size=1, progress=False)
    assert ps.schedule == "cifar" and ps.noise("shot_noise") and not ps.noise("translate")
    path = ps.path(("shot_noise", "cifar"))
    assert path.parent == tmp_path / "perturbations" / "unit" / "val" / "shot_noise"
    assert path.name.startswith("cifar-reference-seed4-") and path.with_suffix(".json").exists()
    np.testing.assert_array_equal(ps.get("shot_noise"), P.perturb_sequences(imgs, "shot_noise", seed=4))
    assert ps.get("translate", mmap=True).shape == (3, 16, 32, 32, 3)
    assert ps.manifest(("translate", "cifar"))["frames"] == 16
    assert not list(tmp_path.rglob("*.tmp"))
    again = P.generate_perturbed_set(imgs, None, ["translate"], seed=4, cache_dir=tmp_path,
                                     dataset="unit", subset="val", workers=0, progress=False)
    assert again.path(("translate", "cifar")) == ps.path(("translate", "cifar"))


def test_bad_inputs():
    with pytest.raises(UsageError, match="did you mean 'rotate'"):
        P.perturb_sequences(_images(1), "rotat", seed=0)
    with pytest.raises(UsageError, match="schedule"):
        P.perturb_sequences(_images(1), "rotate", seed=0, schedule="tiny")
    with pytest.raises(UsageError, match="uint8"):
        P.perturb_sequences(_images(1).astype(float), "rotate", seed=0)


# ----------------------------------------------------------------------------- official CIFAR-P

def _write(root, name, shape, dtype=np.uint8):
    root.mkdir(parents=True, exist_ok=True)
    arr = np.zeros(shape, dtype)
    arr[:, :, 0, 0, 0] = np.arange(shape[1])  # frame index in a pixel
    np.save(root / f"{name}.npy", arr)


def test_load_cifar_p(tmp_path):
    _write(tmp_path, "translate", (4, 16, 32, 32, 3))
    _write(tmp_path, "motion_blur", (4, 21, 32, 32, 3))
    _write(tmp_path, "gaussian_noise_2", (4, 31, 32, 32, 3))
    ps = P.load_cifar_p(tmp_path, ["translate", "motion_blur", "gaussian_noise_2"], labels=np.arange(4))
    t = ps.get("translate")
    assert t.shape == (4, 16, 32, 32, 3) and t[0, 9, 0, 0, 0] == 9
    assert ps.get("gaussian_noise_2").shape[1] == 31
    assert ps.noise("gaussian_noise_2") and not ps.noise("translate")


def test_load_cifar_p_errors(tmp_path):
    _write(tmp_path, "translate", (4, 16, 32, 32, 3))
    with pytest.raises(UsageError, match=r"rotate\.npy is missing"):
        P.load_cifar_p(tmp_path, ["rotate"])
    _write(tmp_path, "rotate", (4, 16, 32, 32, 3))  # wrong frame count
    with pytest.raises(UsageError, match=r"\(N, 31, 32, 32, 3\)"):
        P.load_cifar_p(tmp_path, ["rotate"])
    _write(tmp_path, "rotate", (4, 31, 32, 32, 3), np.float32)
    with pytest.raises(UsageError, match="float32"):
        P.load_cifar_p(tmp_path, ["rotate"])
    _write(tmp_path, "rotate", (5, 31, 32, 32, 3))
    with pytest.raises(UsageError, match="5 sequences but 4"):
        P.load_cifar_p(tmp_path, ["translate", "rotate"])
    with pytest.raises(UsageError, match="3 labels for 4"):
        P.load_cifar_p(tmp_path, ["translate"], labels=[0, 1, 2])
    assert P.load_cifar_p(tmp_path, ["translate"]).perturbations == ("translate",)
    assert CIFAR_P_TEST_PERTURBATIONS[4] == "spatter"


def test_tinyimagenet_schedule_at_64x64():
    # make_tinyimagenet_p.py: 31 frames everywhere, translate i-15 px, motion blur (i-30)*5 deg
    assert P.resolve_schedule("auto", (64, 64)) == "tinyimagenet"
    assert P.resolve_schedule("auto", (45, 45)) == "cifar"
    assert all(P.frame_count(p, "tinyimagenet") == 31 for p in ALL_PERTURBATIONS)
    assert P.frame_parameters("translate", "tinyimagenet") == list(range(-15, 16))
    assert P.frame_parameters("motion_blur", "tinyimagenet")[0] == -150
    assert P.frame_parameters("gaussian_blur", "tinyimagenet")[30] == pytest.approx(0.35 + 0.42)
    seq = P.perturb_sequences(_images(1, size=64), "scale", seed=0)  # auto -> tinyimagenet
    assert seq.shape == (1, 31, 64, 64, 3)
    np.testing.assert_array_equal(seq[0, 24], _images(1, size=64)[0])  # scale (2.5*24+40)/100 = 1
