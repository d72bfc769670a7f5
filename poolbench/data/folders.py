"""Class-per-folder trees (ImageNet, Tiny-ImageNet, anything ImageFolder reads).

Transforms
- at image_size >= 128 (ImageNet): train RandomResizedCrop(S) + flip; test Resize(S * 256 / 224)
  + CenterCrop(S) (Resize(256) + CenterCrop(224) at S = 224).
- at image_size < 128 (e.g. Tiny-ImageNet at 64): train Resize(S) + CenterCrop(S) +
  RandomCrop(S, padding=S/8) + flip; test Resize(S) + CenterCrop(S) (identity on SxS files).

torchvision is imported on first use in this module: it would add about 1.4 s to every
command's start.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UsageError, one_line
from .arrays import to_unit_float
from .bundles import DatasetBundle, check_size, spread_indices
from .datasets import IMAGENET_MEAN, IMAGENET_STD

HOLDOUT_FRACTION = 0.2  # single class-per-folder tree: share of each class held out for test


def folder_transforms(image_size: int):
    """(train transform, eval geometry) for a folder tree at ``image_size``; see module doc."""
    from torchvision import transforms as T  # noqa: PLC0415 - slow, see the module doc

    if image_size >= 128:
        geometry = T.Compose([T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size)])
        train = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor()])
    else:
        geometry = T.Compose([T.Resize(image_size), T.CenterCrop(image_size)])
        train = T.Compose([T.Resize(image_size), T.CenterCrop(image_size),
                           T.RandomCrop(image_size, padding=image_size // 8),
                           T.RandomHorizontalFlip(), T.ToTensor()])
    return train, geometry


def load_image(path: str):
    """An RGB PIL image; an unreadable file is a UsageError naming it."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except Exception as err:
        raise UsageError(f"cannot read image {path} ({one_line(err, with_type=True)}): remove or replace the file") from None


class ImageListDataset(Dataset):
    """(path, label) samples read with PIL. Train: ``transform``; eval: ``geometry`` + ToTensor."""

    def __init__(self, samples: list[tuple[str, int]], *, transform: Callable | None = None,
                 geometry: Callable | None = None):
        if (transform is None) == (geometry is None):
            raise ValueError("give exactly one of transform (training) or geometry (evaluation)")
        self.samples = samples
        self.targets = [t for _, t in samples]
        self.transform, self.geometry = transform, geometry

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, target = self.samples[i]
        img = load_image(path)
        if self.geometry is not None:
            chw = np.asarray(self.geometry(img), dtype=np.uint8).transpose(2, 0, 1).copy()
            return to_unit_float(torch.from_numpy(chw)), target
        return self.transform(img), target

    def split(self, keep, held, evaluation: ImageListDataset) -> tuple[ImageListDataset, ImageListDataset]:
        """(the files at ``keep`` with this set's transform, those at ``held`` with the
        evaluation geometry of ``evaluation``): a validation split (``bundles.hold_out``)."""
        return (ImageListDataset([self.samples[i] for i in keep], transform=self.transform),
                ImageListDataset([self.samples[i] for i in held], geometry=evaluation.geometry))

    def uint8_arrays(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.geometry is None:
            raise UsageError("uint8 arrays come from the evaluation split only: use bundle.eval_arrays()")
        images = [np.asarray(self.geometry(load_image(self.samples[i][0])), dtype=np.uint8) for i in indices]
        if not images:
            return np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0, np.int64)
        return np.stack(images), np.asarray([self.samples[i][1] for i in indices], dtype=np.int64)


def _layout_hint(root) -> str:
    return (f"use {root}/train/<class>/<image> and {root}/val/<class>/<image> "
            f"(or one {root}/<class>/<image> tree, split "
            f"{1 - HOLDOUT_FRACTION:.0%}/{HOLDOUT_FRACTION:.0%} per class)")


def _scan(directory: Path, class_to_idx: dict[str, int] | None,
          root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset  # noqa: PLC0415

    try:
        classes = find_classes(str(directory))[0] if class_to_idx is None else sorted(class_to_idx)
        if class_to_idx is None:
            class_to_idx = {c: i for i, c in enumerate(classes)}
        samples = make_dataset(str(directory), class_to_idx, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"no usable class-per-folder tree at {directory} ({one_line(err, with_type=True)}): "
                         f"{_layout_hint(root)}") from None
    return classes, samples


def _tiny_imagenet_val(val_dir: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """Tiny-ImageNet's flat val/images/ with val/val_annotations.txt (file<TAB>wnid<TAB>box)."""
    samples = []
    ann = val_dir / "val_annotations.txt"
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in class_to_idx:
            raise UsageError(f"{ann} line {n} names no class of train/ ({line[:60]!r}): fix or remove the line")
        path = val_dir / "images" / parts[0]
        if not path.is_file():
            raise UsageError(f"{ann} line {n} names a missing image {path}: restore it or remove the line")
        samples.append((str(path), class_to_idx[parts[1]]))
    return samples


def _holdout(samples: list[tuple[str, int]]) -> tuple[list, list]:
    """Deterministic per-class split of a single tree: evenly spaced files (by sorted path) go to test."""
    by_class: dict[int, list] = {}
    for s in samples:
        by_class.setdefault(s[1], []).append(s)
    train, test = [], []
    for _, items in sorted(by_class.items()):
        n = len(items)
        k = max(1, round(n * HOLDOUT_FRACTION)) if n >= 2 else 0
        held = set(spread_indices(n, k).tolist()) if k else set()
        for i, s in enumerate(items):
            (test if i in held else train).append(s)
    return train, test


def load_imagefolder(path: str | os.PathLike, *, image_size: int = 224, train_size: int | None = None,
                     test_size: int | None = None) -> DatasetBundle:
    """A class-per-folder tree: ``PATH/train`` + ``PATH/val``, or one tree split per class.

    Layouts, tried in this order:
    1. ``PATH/train/<class>/...`` and ``PATH/val/<class>/...`` (ImageNet after the usual
       valprep; any ImageFolder tree). Classes come from train/; val/ may hold fewer.
    2. ``PATH/train/<wnid>/images/*`` and Tiny-ImageNet's flat ``PATH/val/images/*`` with
       ``PATH/val/val_annotations.txt``.
    3. ``PATH/<class>/...`` alone: each class's files sorted by path, 20% of them (evenly
       spaced) held out for test. The split never depends on the seed.
    Mean/std are ImageNet's. Class names are the folder names.
    """
    image_size = check_size("image_size", image_size)
    train_size, test_size = check_size("train_size", train_size), check_size("test_size", test_size)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UsageError(f"imagefolder path {root} is not a directory: {_layout_hint('PATH')}")
    train_dir, val_dir = root / "train", root / "val"
    if train_dir.is_dir() and val_dir.is_dir():
        classes, train_samples = _scan(train_dir, None, root)
        class_to_idx = {c: i for i, c in enumerate(classes)}
        if (val_dir / "val_annotations.txt").is_file() and (val_dir / "images").is_dir():
            layout, test_samples = "tiny-imagenet", _tiny_imagenet_val(val_dir, class_to_idx)
        else:
            from torchvision.datasets.folder import find_classes  # noqa: PLC0415

            try:
                val_classes = find_classes(str(val_dir))[0]
            except FileNotFoundError as err:
                raise UsageError(f"no class folders in {val_dir} ({one_line(err, with_type=True)}): "
                                 f"{_layout_hint(root)}") from None
            unknown = sorted(set(val_classes) - set(classes))
            if unknown:
                raise UsageError(f"{val_dir} has classes missing from {train_dir} ({', '.join(unknown[:5])}): "
                                 f"the two trees must use the same class folder names")
            layout = "train/val"
            _, test_samples = _scan(val_dir, {c: class_to_idx[c] for c in val_classes}, root)
    elif train_dir.is_dir() or val_dir.is_dir():
        have, lack = ("train", "val") if train_dir.is_dir() else ("val", "train")
        raise UsageError(f"{root} has {have}/ but no {lack}/: add {root}/{lack}/<class>/..., "
                         f"or point imagefolder: at a single class-per-folder tree")
    else:
        classes, samples = _scan(root, None, root)
        layout = "single-tree"
        train_samples, test_samples = _holdout(samples)
    if not train_samples or not test_samples:
        raise UsageError(f"{root} gives {len(train_samples)} training and {len(test_samples)} test images: "
                         f"{_layout_hint(root)}")
    train_samples = [train_samples[i] for i in spread_indices(len(train_samples), train_size)]
    test_samples = [test_samples[i] for i in spread_indices(len(test_samples), test_size)]
    train_tf, geometry = folder_transforms(image_size)
    return DatasetBundle(
        name=f"imagefolder:{root}",
        train=ImageListDataset(train_samples, transform=train_tf),
        test=ImageListDataset(test_samples, geometry=geometry),
        num_classes=len(classes), image_size=image_size,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=tuple(classes),
        config={"name": "imagefolder", "dir": root.name, "layout": layout, "image_size": image_size,
                "num_classes": len(classes), "train_images": len(train_samples),
                "test_images": len(test_samples), "train_size": train_size, "test_size": test_size},
        source=str(root),
    )
