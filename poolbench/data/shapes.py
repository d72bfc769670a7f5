"""The built-in generated ``shapes`` and ``shapes-seg`` datasets (see ``poolbench.data.synthetic``)."""
from __future__ import annotations

import functools

from . import synthetic
from .arrays import ArrayDataset, SegArrayDataset, small_train_transform
from .bundles import DatasetBundle, SegmentationBundle, check_size


@functools.lru_cache(maxsize=4)
def _generated(n: int, seed: int, split: str, with_masks: bool):
    arrays = synthetic.generate(n, seed=seed, split=split, with_masks=with_masks)
    for a in arrays:
        a.flags.writeable = False  # cached: shared between bundles
    return arrays


def _shapes_config(name, seed, train_size, test_size):
    train_size = check_size("train_size", train_size) or synthetic.DEFAULT_TRAIN_SIZE
    test_size = check_size("test_size", test_size) or synthetic.DEFAULT_TEST_SIZE
    synthetic._check_int("seed", seed, minimum=0)
    return {"name": name, "seed": int(seed), "train_size": train_size, "test_size": test_size,
            "generator": synthetic.GENERATOR}


def load_shapes(*, seed: int = 0, train_size: int | None = None, test_size: int | None = None) -> DatasetBundle:
    """The built-in ``shapes`` classification set (see poolbench.data.synthetic)."""
    config = _shapes_config("shapes", seed, train_size, test_size)
    xtr, ytr = _generated(config["train_size"], config["seed"], "train", False)
    xte, yte = _generated(config["test_size"], config["seed"], "test", False)
    return DatasetBundle(
        name="shapes",
        train=ArrayDataset(xtr, ytr, small_train_transform(synthetic.IMAGE_SIZE)),
        test=ArrayDataset(xte, yte),
        num_classes=synthetic.NUM_CLASSES, image_size=synthetic.IMAGE_SIZE,
        mean=synthetic.MEAN, std=synthetic.STD, class_names=synthetic.CLASS_NAMES,
        config=config, source="generated",
    )


def load_shapes_seg(*, seed: int = 0, train_size: int | None = None,
                    test_size: int | None = None) -> SegmentationBundle:
    """``shapes-seg``: the shapes generator with masks (0 background, class id + 1 on the object)."""
    config = _shapes_config("shapes-seg", seed, train_size, test_size)
    xtr, _, mtr = _generated(config["train_size"], config["seed"], "train", True)
    xte, _, mte = _generated(config["test_size"], config["seed"], "test", True)
    return SegmentationBundle(
        name="shapes-seg",
        train=SegArrayDataset(xtr, mtr, train=True), test=SegArrayDataset(xte, mte),
        num_classes=len(synthetic.SEG_CLASS_NAMES), image_size=synthetic.IMAGE_SIZE,
        mean=synthetic.MEAN, std=synthetic.STD, class_names=synthetic.SEG_CLASS_NAMES,
        config=config, source="generated",
    )
