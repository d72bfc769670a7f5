"""The built-in generated data: shapes and shapes-seg."""
import numpy as np
import pytest
import torch

from helpers import BAD_GENERATOR_ARGUMENTS, refused_in_one_line, seeded_pair
from poolbench.data import load_dataset, load_segmentation_dataset, synthetic
from poolbench.data.synthetic import CLASS_NAMES, generate
from poolbench.errors import UsageError


def test_deterministic_for_a_seed_and_different_across_seeds():
    (_, a_y), (_, c_y) = seeded_pair(generate)
    assert not np.array_equal(a_y, c_y)


def test_splits_differ_and_small_sets_are_prefixes():
    train, _ = generate(1500, seed=0)
    small, _ = generate(700, seed=0)
    test, _ = generate(700, seed=0, split="test")
    assert np.array_equal(train[:700], small)
    assert not np.array_equal(small, test)


def test_shapes_dtypes_ranges_and_class_names():
    x, y = generate(100, seed=1)
    assert x.shape == (100, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (100,) and y.dtype == np.int64
    assert y.min() >= 0 and y.max() <= 9
    assert x.min() < 30 and x.max() > 225  # uses the range
    assert len(CLASS_NAMES) == 10 == len(set(CLASS_NAMES))
    x64, _ = generate(20, seed=1, image_size=64)
    assert x64.shape == (20, 64, 64, 3)


@pytest.mark.parametrize("n", [10, 37, 1000, 1234])
def test_any_prefix_is_class_balanced(n):
    _, y = generate(n, seed=5)
    counts = np.bincount(y, minlength=10)
    assert counts.max() - counts.min() <= 1
    assert counts.sum() == n


def test_masks_match_the_drawn_object():
    rng = np.random.default_rng(np.random.SeedSequence([0, 0, 0]))
    img, lab, mask, background, obj = synthetic._render_chunk(rng, 100, 32, layers=True)
    inside = mask.astype(bool)
    assert np.array_equal(img[~inside], background[~inside])  # background where mask == 0
    assert np.array_equal(img[inside], obj[inside])           # the object where mask == 1
    area = inside.sum(axis=(1, 2))
    assert area.min() >= 40 and area.max() < 32 * 32 * 0.7
    # the object stands out from what it covers
    diff = np.abs(obj.astype(int) - background.astype(int)).mean(axis=-1)
    assert all(diff[i][inside[i]].mean() > 20 for i in range(100))
    # generate() labels masks with class id + 1 and matches the mask-free images
    x, y, m = generate(200, seed=2, with_masks=True)
    x2, _ = generate(200, seed=2)
    assert np.array_equal(x, x2) and m.dtype == np.uint8 and m.shape == (200, 32, 32)
    for i in range(200):
        assert set(np.unique(m[i]).tolist()) == {0, int(y[i]) + 1}


def test_not_solvable_by_colour_statistics():
    """A nearest-class-mean on raw pixels stays near chance: the task needs shape and texture."""
    x, y = generate(2000, seed=0)
    xt, yt = generate(500, seed=0, split="test")
    feats = x.reshape(len(x), -1).astype(np.float32)
    means = np.stack([feats[y == c].mean(0) for c in range(10)])
    pred = ((xt.reshape(len(xt), -1)[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yt).mean() < 0.25


@pytest.mark.slow  # seconds of statistics on a 2-core machine
def test_default_bundle_completes_and_statistics_match():
    bundle = load_dataset("shapes")
    assert (len(bundle.train), len(bundle.test)) == (10_000, 2_000)
    assert bundle.num_classes == 10 and bundle.image_size == 32
    assert bundle.class_names == CLASS_NAMES
    x = bundle.train.images.astype(np.float32) / 255
    assert np.allclose(x.mean(axis=(0, 1, 2)), bundle.mean, atol=2e-3)
    assert np.allclose(x.std(axis=(0, 1, 2)), bundle.std, atol=2e-3)
    assert bundle.config == {"name": "shapes", "seed": 0, "train_size": 10_000, "test_size": 2_000,
                             "generator": "shapes-v1"}


def test_bundle_items_are_unnormalised_floats_and_match_eval_arrays():
    bundle = load_dataset("shapes", seed=1, train_size=50, test_size=30)
    torch.manual_seed(0)
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert isinstance(y, int)
    arrays = bundle.eval_arrays()
    assert arrays.images.shape == (30, 32, 32, 3) and arrays.images.dtype == np.uint8
    for i in (0, 17, 29):
        xt, yt = bundle.test[i]
        assert torch.equal(xt, torch.from_numpy(arrays.images[i]).permute(2, 0, 1).float() / 255)
        assert yt == arrays.labels[i]
    sub = bundle.eval_arrays(limit=10)
    assert np.array_equal(sub.images, arrays.images[sub.indices]) and len(sub.indices) == 10
    picked = bundle.eval_arrays(indices=[3, 5])
    assert np.array_equal(picked.labels, arrays.labels[[3, 5]])
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=16)
    xb, yb = next(iter(loader))
    assert xb.shape == (16, 3, 32, 32) and yb.dtype == torch.int64


def test_training_augmentation_is_random_crop_and_flip():
    bundle = load_dataset("shapes", seed=0, train_size=20, test_size=10)
    torch.manual_seed(0)
    views = [bundle.train[0][0] for _ in range(8)]
    assert any(not torch.equal(views[0], v) for v in views[1:])


def test_segmentation_bundle():
    seg = load_segmentation_dataset("shapes-seg", seed=0, train_size=40, test_size=20)
    assert seg.num_classes == 11 and seg.class_names[0] == "background"
    assert seg.class_names[1:] == CLASS_NAMES
    x, m = seg.test[0]
    assert x.shape == (3, 32, 32) and m.shape == (32, 32) and m.dtype == torch.int64
    arrays = seg.eval_arrays(limit=5)
    assert arrays.images.shape == (5, 32, 32, 3) and arrays.masks.shape == (5, 32, 32)
    # the same images as the classification set, masks labelled class + 1
    cls = load_dataset("shapes", seed=0, train_size=40, test_size=20).eval_arrays(limit=5)
    assert np.array_equal(arrays.images, cls.images)
    assert [int(a.max()) for a in arrays.masks] == [int(c) + 1 for c in cls.labels]


def test_segmentation_augmentation_moves_image_and_mask_together():
    from poolbench.data.arrays import SegArrayDataset

    _, y, masks = generate(10, seed=0, with_masks=True)
    images = np.repeat((masks * 20)[..., None], 3, axis=-1).astype(np.uint8)  # image encodes the mask
    ds = SegArrayDataset(images, masks, train=True)
    torch.manual_seed(1)
    for _ in range(20):
        x, m = ds[3]
        assert torch.equal(torch.round(x[0] * 255 / 20).long(), m)


@pytest.mark.parametrize("kwargs", BAD_GENERATOR_ARGUMENTS)
def test_bad_generator_arguments(kwargs):
    refused_in_one_line(generate, kwargs)


def test_bad_sizes_are_usage_errors():
    with pytest.raises(UsageError, match="train_size"):
        load_dataset("shapes", train_size=0)
    with pytest.raises(UsageError, match="seed"):
        load_dataset("shapes", seed=-1)
