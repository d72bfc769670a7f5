"""Datasets: one entry point for the built-in generated data and real datasets.

    bundle = load_dataset("shapes", seed=0)            # built-in, nothing to download
    bundle = load_dataset("photos", seed=0)            # built-in crops of skimage.data photographs
    bundle = load_dataset("cifar10", root="~/data")    # root/cifar-10-batches-py/
    bundle = load_dataset("imagefolder:/data/imagenet")  # train/ + val/ class folders
    seg = load_segmentation_dataset("shapes-seg")

Items are float tensors in [0, 1] without normalisation; ``bundle.mean``/``bundle.std`` are
for the model wrapper. ``bundle.eval_arrays(limit)`` gives the evaluation images as uint8
HxWx3 arrays (after the deterministic eval geometry) with labels, for robustness suites.
See ``poolbench.data.synthetic`` (the ten ``shapes`` classes), ``poolbench.data.bundles`` (the
conventions), ``poolbench.data.datasets`` (CIFAR), ``poolbench.data.folders`` (folder layouts
and transforms) and ``poolbench.data.arrays`` (in-memory sets, small-image transforms).
"""
from __future__ import annotations

import difflib
import os

from ..errors import UsageError
from .arrays import ArrayDataset
from .bundles import (
    HOLDOUT_SPLIT,
    DatasetBundle,
    EvalArrays,
    SegEvalArrays,
    SegmentationBundle,
    hold_out,
    holdout_indices,
    spread_indices,
)
from .datasets import cifar_files, default_data_root, load_cifar
from .fingerprint import files_fingerprint, folder_fingerprint, held_out_fingerprint, tree_fingerprint
from .folders import load_imagefolder
from .photos import GENERATOR as PHOTOS_GENERATOR
from .photos import HOLDOUT_SPLIT as PHOTOS_HOLDOUT_SPLIT
from .photos import load_photos
from .shapes import load_shapes, load_shapes_seg
from .synthetic import CLASS_NAMES as SHAPES_CLASS_NAMES
from .synthetic import GENERATOR as SHAPES_GENERATOR

DEFAULT_DATASET = "shapes"
DEFAULT_SEGMENTATION_DATASET = "shapes-seg"

# name -> one-line description (``imagefolder`` takes a path: ``imagefolder:PATH``)
CLASSIFICATION_DATASETS = {
    "shapes": "built-in generated 32x32, 10 classes (5 shapes x 2 stripe orientations), nothing to download",
    "photos": "built-in 32x32 crops of scikit-image's photographs, 10 classes (the source photo), nothing to download",
    "cifar10": "CIFAR-10, 32x32, 10 classes (torchvision download when missing)",
    "cifar100": "CIFAR-100, 32x32, 100 fine classes (torchvision download when missing)",
    "imagefolder": "imagefolder:PATH, a class-per-folder tree (ImageNet, Tiny-ImageNet, ...)",
}
SEGMENTATION_DATASETS = {
    "shapes-seg": "built-in generated 32x32 with masks, 11 classes (background + the 10 shapes classes)",
}
_ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100", "cifar_10": "cifar10", "cifar_100": "cifar100",
            "shapes_seg": "shapes-seg", "image-folder": "imagefolder", "image_folder": "imagefolder"}


def list_datasets(task: str = "classification") -> list[str]:
    """Dataset names for ``task`` ("classification" or "segmentation")."""
    return list(_table(task))


def describe_datasets(task: str = "classification") -> dict[str, str]:
    """Dataset names with a one-line description each."""
    return dict(_table(task))


def _table(task: str) -> dict[str, str]:
    if task == "classification":
        return CLASSIFICATION_DATASETS
    if task == "segmentation":
        return SEGMENTATION_DATASETS
    raise UsageError(f"unknown dataset task {task!r}: use 'classification' or 'segmentation'")


def _split_name(name) -> tuple[str, str | None]:
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"dataset name must be a non-empty string, got {name!r}: "
                         f"use one of {', '.join(CLASSIFICATION_DATASETS)}")
    text = name.strip()
    key, sep, arg = text.partition(":")
    key = key.strip().lower()
    key = _ALIASES.get(key, key)
    return key, (arg.strip() if sep else None)


def _unknown(key: str, task: str) -> UsageError:
    known = _table(task)
    other = SEGMENTATION_DATASETS if task == "classification" else CLASSIFICATION_DATASETS
    if key in other:
        fn = "load_segmentation_dataset" if task == "classification" else "load_dataset"
        return UsageError(f"{key!r} is a {'segmentation' if task == 'classification' else 'classification'} "
                          f"dataset: load it with {fn}(), or pick one of {', '.join(known)}")
    close = difflib.get_close_matches(key, list(known) + list(_ALIASES), n=3, cutoff=0.5)
    close = list(dict.fromkeys(_ALIASES.get(c, c) for c in close))
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return UsageError(f"unknown {task} dataset {key!r}: {hint}known: {', '.join(known)}")


def load_dataset(
    name: str = DEFAULT_DATASET,
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
    image_size: int | None = None,
    download: bool = True,
    holdout: int = 0,
) -> DatasetBundle:
    """Load a classification dataset by name.

    name: "shapes" or "photos" (built-in), "cifar10", "cifar100" or "imagefolder:PATH".
    root: directory holding real datasets (default $POOLBENCH_DATA_ROOT or
        ~/.cache/poolbench/data); ignored by shapes, photos and imagefolder (the path is in the name).
    seed: generator seed for shapes and photos (real datasets do not depend on it).
    train_size / test_size: shapes, photos: how many images to generate (default 10,000 / 2,000);
        real datasets: keep that many evenly spaced images (default: all).
    image_size: imagefolder only (default 224; below 128 uses the small-image transforms).
    download: CIFAR only; try torchvision's download when files are missing.
    holdout: training images held out as a validation split drawn by ``seed``: the bundle
        trains on the rest and its ``test`` is the held-out images, with the test transform;
        0 (the default): the test split. ``photos`` holds out crops of cells of their own
        (``photos.load_photos``), every other dataset images of its training set
        (``bundles.hold_out``).
    """
    return _load(name, root, seed, train_size, test_size, image_size, download, holdout)


def _load(name, root, seed, train_size, test_size, image_size, download, holdout) -> DatasetBundle:
    key, arg = _split_name(name)
    if key not in CLASSIFICATION_DATASETS:
        raise _unknown(key, "classification")
    if image_size is not None and key != "imagefolder":
        raise UsageError(f"image_size applies to imagefolder datasets only; {key} has a fixed size: "
                         f"drop image_size")
    if arg is not None and key != "imagefolder":
        raise UsageError(f"dataset {key!r} takes no ':' argument (got {str(name)!r}): use {key!r}")
    if key == "photos":  # by region: a held-out crop of a training cell is nearly a training crop
        return load_photos(seed=seed, train_size=train_size, test_size=test_size, holdout=holdout)
    if key == "shapes":
        bundle = load_shapes(seed=seed, train_size=train_size, test_size=test_size)
    elif key in ("cifar10", "cifar100"):
        bundle = load_cifar(key, root=root, train_size=train_size, test_size=test_size, download=download)
    elif not arg:
        raise UsageError("imagefolder needs a path: use imagefolder:PATH with PATH/train/<class>/ "
                         "and PATH/val/<class>/ (or a single PATH/<class>/ tree)")
    else:
        bundle = load_imagefolder(arg, image_size=224 if image_size is None else image_size,
                                  train_size=train_size, test_size=test_size)
    return hold_out(bundle, holdout, seed)


def dataset_fingerprint(name: str, root: str | os.PathLike | None = None, *, download: bool = True,
                        holdout: int = 0) -> str:
    """What ``name`` (under ``root``) holds, as a short digest (``poolbench.data.fingerprint``);
    with a ``holdout``, the digest of that and of the validation split drawn from it.

    Checked before any stored result is looked up: data that is missing fails here, in one
    line, even when results of a dataset of that name are stored.
    """
    whole = _fingerprint(name, root, download)
    if not holdout:
        return whole
    split = PHOTOS_HOLDOUT_SPLIT if _split_name(name)[0] == "photos" else HOLDOUT_SPLIT
    return held_out_fingerprint(whole, holdout, split)


def _fingerprint(name, root, download) -> str:
    key, arg = _split_name(name)
    if key == "shapes" or key in SEGMENTATION_DATASETS:
        return SHAPES_GENERATOR
    if key == "photos":
        return PHOTOS_GENERATOR
    if key in ("cifar10", "cifar100"):
        return files_fingerprint(cifar_files(key, root, download))
    if key == "imagefolder":
        if not arg:
            raise UsageError("imagefolder needs a path: use imagefolder:PATH")
        return tree_fingerprint(arg, "imagefolder path")
    raise _unknown(key, "classification")


def load_segmentation_dataset(
    name: str = DEFAULT_SEGMENTATION_DATASET,
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
) -> SegmentationBundle:
    """Load a segmentation dataset: items are (float image CHW in [0, 1], int64 mask HxW).

    Only the built-in "shapes-seg" exists for now (0 = background, class id + 1 on the object).
    """
    key, arg = _split_name(name)
    if key not in SEGMENTATION_DATASETS:
        raise _unknown(key, "segmentation")
    if arg is not None:
        raise UsageError(f"dataset {key!r} takes no ':' argument (got {str(name)!r}): use {key!r}")
    return load_shapes_seg(seed=seed, train_size=train_size, test_size=test_size)


__all__ = [
    "ArrayDataset", "DatasetBundle", "EvalArrays", "SegEvalArrays", "SegmentationBundle",
    "SHAPES_CLASS_NAMES", "DEFAULT_DATASET", "DEFAULT_SEGMENTATION_DATASET", "default_data_root",
    "dataset_fingerprint", "describe_datasets", "folder_fingerprint", "hold_out", "holdout_indices",
    "list_datasets", "load_dataset", "load_segmentation_dataset", "spread_indices",
]
