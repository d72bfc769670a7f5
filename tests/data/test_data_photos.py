"""The built-in ``photos`` dataset: crops of scikit-image's bundled photographs."""
import json

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from helpers import BAD_GENERATOR_ARGUMENTS, refused_in_one_line, seeded_pair
from poolbench.cli import main
from poolbench.data import dataset_fingerprint, list_datasets, load_dataset, photos
from poolbench.data.photos import CLASS_NAMES, crop_boxes, generate
from poolbench.errors import UsageError


def _coverage(boxes, labels, shape_of):
    """Per photo, a boolean mask of every pixel that some box of that photo covers."""
    masks = [np.zeros(shape_of(p), bool) for p in range(10)]
    for (top, left, side), p in zip(boxes, labels):
        masks[p][top:top + side, left:left + side] = True
    return masks


def test_deterministic_for_a_seed_prefix_stable_and_splits_differ():
    (a_x, _), _ = seeded_pair(generate)
    big, _ = generate(1500, seed=3)
    assert np.array_equal(big[:300], a_x)  # a smaller set is a prefix of a larger one
    test, _ = generate(300, seed=3, split="test")
    assert not np.array_equal(test, a_x)


def test_shapes_dtypes_ranges_and_class_names():
    x, y = generate(200, seed=1)
    assert x.shape == (200, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (200,) and y.dtype == np.int64 and set(y.tolist()) == set(range(10))
    assert x.min() < 20 and x.max() > 235
    assert len(CLASS_NAMES) == 10 == len(set(CLASS_NAMES))
    # the grey photographs (grass, gravel, brick) have equal channels, the colour ones do not
    grey = np.all((x[..., 0] == x[..., 1]) & (x[..., 1] == x[..., 2]), axis=(1, 2))
    assert np.array_equal(grey, y >= 7)


@pytest.mark.parametrize("n", [10, 37, 1000, 2345])
def test_any_prefix_is_class_balanced(n):
    y, _, _ = crop_boxes(n, seed=5)
    counts = np.bincount(y, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == n


def test_test_crops_never_touch_a_training_pixel():
    """No test box overlaps the training region (the training cells) of its photograph,
    nor any training box of the default set of two seeds; every box lies inside its photo."""
    shape_of = lambda p: photos.photographs()[p].shape[:2]  # noqa: E731
    y_te, b_te, _ = crop_boxes(2000, seed=0, split="test")
    test_cov = _coverage(b_te, y_te, shape_of)
    for seed in (0, 1):
        y_tr, b_tr, _ = crop_boxes(10_000, seed=seed, split="train")
        for boxes, labels in ((b_tr, y_tr), (b_te, y_te)):
            h = np.array([shape_of(p)[0] for p in labels])
            w = np.array([shape_of(p)[1] for p in labels])
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] >= 32).all()
            assert (boxes[:, 0] + boxes[:, 2] <= h).all() and (boxes[:, 1] + boxes[:, 2] <= w).all()
        train_cov = _coverage(b_tr, y_tr, shape_of)
        for p in range(10):
            assert not (train_cov[p] & test_cov[p]).any(), CLASS_NAMES[p]
    for p in range(10):
        region = np.zeros(shape_of(p), bool)
        for top, left in photos.cells(p, "train"):
            region[top:top + photos.CELL, left:left + photos.CELL] = True
        assert not (region & test_cov[p]).any(), CLASS_NAMES[p]
        # both splits draw from a real share of the photograph
        assert 0.15 < test_cov[p].sum() / (test_cov[p].sum() + region.sum()) < 0.5


def test_pixels_are_the_area_average_of_the_box():
    """Each image is the box of its photograph resized by OpenCV's INTER_AREA (and mirrored)."""
    x, y = generate(60, seed=2, split="test")
    labels, boxes, flips = crop_boxes(60, seed=2, split="test")
    assert np.array_equal(labels, y) and flips.any() and not flips.all()
    for img, p, (top, left, side), flip in zip(x, labels, boxes, flips):
        src = np.asarray(photos.photographs()[p][top:top + side, left:left + side])
        want = cv2.resize(src, (32, 32), interpolation=cv2.INTER_AREA)
        want = want[:, ::-1] if flip else want
        assert np.abs(img.astype(int) - want.astype(int)).max() <= 1
    # the photographs are skimage's own pixels
    assert np.array_equal(photos.photographs()[1], skimage.data.chelsea())
    assert np.array_equal(photos.photographs()[8][..., 2], skimage.data.gravel())


def _spectrum_slope(images: np.ndarray) -> float:
    """Slope of log power against log frequency of the radially averaged power spectrum."""
    g = images.astype(np.float64).mean(-1)
    g -= g.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(g)) ** 2).mean(0)
    n = g.shape[-1]
    f = np.minimum(np.arange(n), n - np.arange(n))
    radius = np.rint(np.hypot(f[:, None], f[None, :])).astype(int)
    radial = np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel())
    k = np.arange(1, n // 2 + 1)
    return float(np.polyfit(np.log(k), np.log(radial[k]), 1)[0])


@pytest.mark.slow  # seconds of statistics on a 2-core machine
def test_test_images_have_a_one_over_f_spectrum():
    bundle = load_dataset("photos")
    slope = _spectrum_slope(bundle.test.images)
    assert -3.0 < slope < -1.0, slope
    noise = np.random.default_rng(0).integers(0, 256, (500, 32, 32, 3))
    assert abs(_spectrum_slope(noise)) < 0.2  # the measure itself: white noise is flat


def test_default_bundle_statistics_and_registration():
    bundle = load_dataset("photos")
    assert (len(bundle.train), len(bundle.test)) == (10_000, 2_000)
    assert bundle.num_classes == 10 and bundle.image_size == 32 and bundle.class_names == CLASS_NAMES
    # exact statistics from each channel's histogram of the 10,000 x 32 x 32 values
    values = np.arange(256) / 255
    for c, (mean, std) in enumerate(zip(bundle.mean, bundle.std)):
        hist = np.bincount(bundle.train.images[..., c].ravel(), minlength=256) / (10_000 * 32 * 32)
        m = hist @ values
        assert abs(m - mean) < 1e-4 and abs(np.sqrt(hist @ (values - m) ** 2) - std) < 1e-4
    assert bundle.mean == photos.MEAN and bundle.std == photos.STD
    assert bundle.config == {"name": "photos", "seed": 0, "train_size": 10_000, "test_size": 2_000,
                             "generator": "photos-v1"}
    assert "photos" in list_datasets() and dataset_fingerprint("photos") == "photos-v1"
    again = load_dataset("photos", seed=0, train_size=10_000)
    assert np.array_equal(again.test.images, bundle.test.images)


def test_bundle_items_match_eval_arrays():
    bundle = load_dataset("photos", seed=1, train_size=40, test_size=30)
    torch.manual_seed(0)
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    arrays = bundle.eval_arrays()
    for i in (0, 29):
        xt, yt = bundle.test[i]
        assert torch.equal(xt, torch.from_numpy(arrays.images[i]).permute(2, 0, 1).float() / 255)
        assert yt == arrays.labels[i]


@pytest.mark.parametrize("kwargs", BAD_GENERATOR_ARGUMENTS)
def test_bad_generator_arguments(kwargs):
    refused_in_one_line(generate, kwargs)
    with pytest.raises(UsageError, match="train_size"):
        load_dataset("photos", train_size=0)


@pytest.mark.slow  # trains
def test_accuracy_runs_end_to_end_on_photos(tmp_path, capsys):
    code = main(["run", "accuracy", "--dataset", "photos", "--seeds", "1", "--epochs", "1", "--train-size", "512",
                 "--test-size", "128", "--pool", "max", "--no-progress",
                 "--results", str(tmp_path / "results")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert any(ln.startswith("| max") for ln in out.splitlines()), out
    (stored,) = (tmp_path / "results" / "accuracy").glob("*.json")
    doc = json.loads(stored.read_text())
    assert doc["cell"]["train"]["dataset"] == "photos" and doc["cell"]["train"]["train_size"] == 512
    (top1,) = [r for r in doc["rows"] if r["metric"] == "top1_error"]
    assert top1["data_fingerprint"] == "photos-v1" and top1["n"] == 128 and 0 <= top1["value"] <= 100
