"""Dataset bundles: the built-in generated ``shapes``, CIFAR-10/100 and class-per-folder trees.

Convention: every dataset yields ``(image, label)`` with ``image`` a float32 CHW tensor in
[0, 1] (ToTensor scale) and NO normalisation; the bundle carries ``mean`` and ``std`` and the
model wrapper normalises. Corruption, perturbation and shift suites therefore work on [0, 1]
images, or on the uint8 arrays from ``bundle.eval_arrays()`` (HxWx3, after the deterministic
evaluation geometry; ``bundle.test[i]`` is exactly ``eval_arrays().images[i] / 255``).

Transforms
- shapes, CIFAR: train RandomCrop(32, padding=4) + RandomHorizontalFlip; test: none.
- class-per-folder trees at image_size >= 128 (ImageNet): train RandomResizedCrop(S) + flip;
  test Resize(S * 256 / 224) + CenterCrop(S) (Resize(256) + CenterCrop(224) at S = 224).
- trees at image_size < 128 (e.g. Tiny-ImageNet at 64): train Resize(S) + CenterCrop(S) +
  RandomCrop(S, padding=S/8) + flip; test Resize(S) + CenterCrop(S) (identity on SxS files).

CIFAR files are read by this module, not by torchvision's CIFAR10 class: that class refuses
any file whose md5 differs from the official release (so a test cannot feed it small files
in the real format without switching its check off), while reading the python pickles
is twenty lines. The same reader serves users and tests, it checks the structure (keys,
shapes, label range) instead of checksums, and it unpickles through an allow-list that only
rebuilds numpy arrays, so a planted pickle cannot run code. Downloads still go through
torchvision (``download_and_extract_archive``, which verifies the archive's md5) and are
attempted only when files are missing.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import os
import pickle
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UsageError
from . import synthetic

DATA_ROOT_ENV = "POOLBENCH_DATA_ROOT"
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HOLDOUT_FRACTION = 0.2  # single class-per-folder tree: share of each class held out for test


# ------------------------------------------------------------------------------------------
# bundles
# ------------------------------------------------------------------------------------------
class EvalArrays(NamedTuple):
    images: np.ndarray   # uint8 (N, H, W, 3), after the deterministic eval geometry
    labels: np.ndarray   # int64 (N,)
    indices: np.ndarray  # int64 (N,), positions in bundle.test


class SegEvalArrays(NamedTuple):
    images: np.ndarray   # uint8 (N, H, W, 3)
    masks: np.ndarray    # uint8 (N, H, W), 0 = background
    indices: np.ndarray  # int64 (N,)


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetBundle:
    """A classification dataset ready for training and evaluation.

    ``config`` holds the fields that change a result (for the store's config hash): never a
    path. ``source`` says where the data came from (a path, or "generated").
    """

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""

    def eval_indices(self, limit: int | None = None) -> np.ndarray:
        """Positions in ``test`` of an evaluation subset: all, or ``limit`` evenly spaced ones.

        Evenly spaced (not the first ``limit``) so that a class-sorted test set (any folder
        tree) stays balanced; deterministic and independent of the run seed.
        """
        return spread_indices(len(self.test), limit)

    def eval_arrays(self, limit: int | None = None, *, indices: Sequence[int] | None = None) -> EvalArrays:
        """The evaluation images as uint8 HxWx3 arrays with their labels (and positions)."""
        idx = self._indices(limit, indices)
        images, labels = self.test.uint8_arrays(idx)
        return EvalArrays(images, labels, idx)

    def _indices(self, limit, indices) -> np.ndarray:
        if indices is None:
            return self.eval_indices(limit)
        if limit is not None:
            raise UsageError("eval_arrays takes limit or indices, not both: drop one of them")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self.test)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise UsageError(f"eval indices must lie in 0..{n - 1} for {self.name}'s {n} test images")
        return idx


@dataclasses.dataclass(frozen=True, eq=False)
class SegmentationBundle(DatasetBundle):
    """A segmentation dataset: items are ``(image, mask)``, mask int64 HxW, 0 = background."""

    def eval_arrays(self, limit: int | None = None, *, indices: Sequence[int] | None = None) -> SegEvalArrays:
        idx = self._indices(limit, indices)
        images, masks = self.test.uint8_arrays(idx)
        return SegEvalArrays(images, masks, idx)


def spread_indices(n: int, limit: int | None) -> np.ndarray:
    """``limit`` evenly spaced positions out of ``n`` (all of them when limit is None or >= n)."""
    if limit is None:
        return np.arange(n, dtype=np.int64)
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise UsageError(f"limit must be a positive integer, got {limit!r}")
    if limit >= n:
        return np.arange(n, dtype=np.int64)
    return np.floor((np.arange(limit) + 0.5) * (n / limit)).astype(np.int64)


def default_data_root() -> Path:
    """Where real datasets live when no root is given: $POOLBENCH_DATA_ROOT or ~/.cache/poolbench/data."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "poolbench" / "data"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _check_size(what: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UsageError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------
# in-memory uint8 datasets (shapes, CIFAR)
# ------------------------------------------------------------------------------------------
def small_train_transform(size: int = 32) -> Callable[[torch.Tensor], torch.Tensor]:
    """RandomCrop(size, padding=size/8) + RandomHorizontalFlip, then uint8 -> float [0, 1]."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomCrop(size, padding=size // 8),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
    ])


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 CHW -> float32 in [0, 1], exactly as ToTensor scales."""
    return x.to(torch.float32).div_(255)


def _hwc(chw: torch.Tensor, indices) -> np.ndarray:
    """uint8 (N, H, W, 3) copy of the selected images of a (N, 3, H, W) tensor."""
    return np.ascontiguousarray(chw[torch.as_tensor(indices, dtype=torch.int64)].numpy().transpose(0, 2, 3, 1))


def _chw_tensor(images: np.ndarray) -> torch.Tensor:
    """A private contiguous uint8 (N, 3, H, W) copy of (N, H, W, 3) images."""
    return torch.from_numpy(np.array(np.asarray(images).transpose(0, 3, 1, 2), dtype=np.uint8, order="C"))


class ArrayDataset(Dataset):
    """Images held in memory as uint8 (N, H, W, 3); items are (float CHW in [0, 1], label).

    ``transform`` receives the uint8 CHW tensor and must return a float [0, 1] tensor
    (default: plain scaling). Also used by the robustness suites to wrap corrupted arrays.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise UsageError(f"ArrayDataset needs uint8 images of shape (N, H, W, 3), "
                             f"got {images.dtype} {images.shape}")
        labels = np.asarray(labels).astype(np.int64, copy=False)
        if len(labels) != len(images):
            raise UsageError(f"ArrayDataset got {len(images)} images but {len(labels)} labels")
        self._chw = _chw_tensor(images)  # one private copy, CHW for fast items
        self.labels = np.array(labels)
        self._targets = torch.from_numpy(self.labels)
        self.transform = transform or to_unit_float

    @property
    def images(self) -> np.ndarray:
        """The uint8 (N, H, W, 3) images (a read-only view)."""
        view = self._chw.numpy().transpose(0, 2, 3, 1)
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return len(self._chw)

    def __getitem__(self, i):
        return self.transform(self._chw[i]), int(self._targets[i])

    def uint8_arrays(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _hwc(self._chw, indices), self.labels[indices]


class SegArrayDataset(Dataset):
    """Images uint8 (N, H, W, 3) and masks uint8 (N, H, W); items are (float CHW, int64 HxW mask).

    ``train=True`` applies the same random crop (padding S/8: image zeros, mask background)
    and horizontal flip to image and mask.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, *, train: bool = False):
        if len(images) != len(masks) or images.shape[1:3] != masks.shape[1:]:
            raise UsageError(f"SegArrayDataset got images {images.shape} but masks {masks.shape}")
        self._chw = _chw_tensor(images)
        self.masks = np.array(masks, dtype=np.uint8)
        self._masks = torch.from_numpy(self.masks)
        self.train = train

    def __len__(self) -> int:
        return len(self._chw)

    def __getitem__(self, i):
        x, m = to_unit_float(self._chw[i]), self._masks[i].to(torch.int64)
        if self.train:
            size = x.shape[-1]
            pad = size // 8
            x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            m = torch.nn.functional.pad(m, (pad, pad, pad, pad))
            top, left = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
            x = x[:, top:top + size, left:left + size]
            m = m[top:top + size, left:left + size]
            if torch.rand(()) < 0.5:
                x, m = x.flip(-1), m.flip(-1)
        return x, m

    def uint8_arrays(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _hwc(self._chw, indices), self.masks[indices]


# ------------------------------------------------------------------------------------------
# shapes (built-in generated)
# ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _generated(n: int, seed: int, split: str, with_masks: bool):
    arrays = synthetic.generate(n, seed=seed, split=split, with_masks=with_masks)
    for a in arrays:
        a.flags.writeable = False  # cached: shared between bundles
    return arrays


def _shapes_config(name, seed, train_size, test_size):
    train_size = _check_size("train_size", train_size) or synthetic.DEFAULT_TRAIN_SIZE
    test_size = _check_size("test_size", test_size) or synthetic.DEFAULT_TEST_SIZE
    synthetic._check_int("seed", seed, minimum=0)
    return {"name": name, "seed": int(seed), "train_size": train_size, "test_size": test_size,
            "generator": "shapes-v1"}


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


# ------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickle version)
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CifarFormat:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    url: str
    archive: str
    archive_md5: str


CIFAR10 = CifarFormat(
    "cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
    "batches.meta", "labels", "label_names", 10, CIFAR10_MEAN, CIFAR10_STD,
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
)
CIFAR100 = CifarFormat(
    "cifar100", "cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names",
    100, CIFAR100_MEAN, CIFAR100_STD,
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
    "eb9058c3a382ffc7106e4002c42a8d85",
)
CIFAR_FORMATS = {f.name: f for f in (CIFAR10, CIFAR100)}

# numpy's array-rebuilding functions under the names old (python 2, numpy 1) and new pickles use
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR file")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        obj = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"expected a dict, found {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_layout(fmt: CifarFormat, where: Path) -> str:
    return (f"{where}/{fmt.folder}/ holding {', '.join(fmt.train_files)}, {fmt.test_file} and "
            f"{fmt.meta_file} (the python version from https://www.cs.toronto.edu/~kriz/cifar.html)")


def _cifar_dir(fmt: CifarFormat, root: Path) -> Path:
    """root/<folder>, or root itself when the user pointed at the folder."""
    if root.name == fmt.folder and not (root / fmt.folder).is_dir():
        return root
    return root / fmt.folder


def _missing(folder: Path, fmt: CifarFormat) -> list[str]:
    return [n for n in (*fmt.train_files, fmt.test_file, fmt.meta_file) if not (folder / n).is_file()]


def _download(url: str, root: Path, filename: str, md5: str) -> None:
    """Download and unpack an archive (torchvision's helper checks the md5)."""
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(url, str(root), filename=filename, md5=md5)


def _read_cifar_file(path: Path, fmt: CifarFormat) -> tuple[np.ndarray, np.ndarray]:
    try:
        entry = _load_pickle(path)
        data = np.asarray(entry["data"])
        labels = np.asarray(entry[fmt.label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
        if labels.shape != (len(data),):
            raise ValueError(f"{len(labels)} labels for {len(data)} images")
        if labels.size and (labels.min() < 0 or labels.max() >= fmt.num_classes):
            raise ValueError(f"labels outside 0..{fmt.num_classes - 1}")
    except KeyError as err:
        raise UsageError(f"{fmt.name} file {path} lacks the key {err}: it is not the python version; "
                         f"replace it (delete {path.parent} to download again)") from None
    except Exception as err:  # unpickling errors come in many types
        raise UsageError(f"{fmt.name} file {path} is corrupt ({_one_line(err)}): "
                         f"delete {path.parent} to download it again, or replace the file") from None
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar(fmt: CifarFormat, folder: Path):
    """Read train, test and class names from a CIFAR python-version folder."""
    parts = [_read_cifar_file(folder / n, fmt) for n in fmt.train_files]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _read_cifar_file(folder / fmt.test_file, fmt)
    meta_path = folder / fmt.meta_file
    try:
        raw = _load_pickle(meta_path)[fmt.names_key]
        names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in raw]
        if len(names) != fmt.num_classes:
            raise ValueError(f"{len(names)} class names, expected {fmt.num_classes}")
    except Exception as err:
        raise UsageError(f"{fmt.name} meta file {meta_path} is corrupt ({_one_line(err)}): "
                         f"delete {folder} to download it again, or replace the file") from None
    return xtr, ytr, xte, yte, tuple(names)


def load_cifar(name: str, *, root: str | os.PathLike | None = None, train_size: int | None = None,
               test_size: int | None = None, download: bool = True) -> DatasetBundle:
    """CIFAR-10 or CIFAR-100 from ``root/cifar-10-batches-py`` or ``root/cifar-100-python``.

    Downloads (through torchvision) only when files are missing and ``download`` is true.
    ``train_size``/``test_size`` keep that many evenly spaced images (quick runs).
    """
    fmt = CIFAR_FORMATS[name]
    train_size, test_size = _check_size("train_size", train_size), _check_size("test_size", test_size)
    base = Path(root).expanduser() if root is not None else default_data_root()
    folder = _cifar_dir(fmt, base)
    missing = _missing(folder, fmt)
    if missing:
        target = folder.parent
        if not download:
            raise UsageError(f"{fmt.name} not found (missing {', '.join(missing)} in {folder}): "
                             f"pass --data-root DIR with {_cifar_layout(fmt, 'DIR')}")
        try:
            target.mkdir(parents=True, exist_ok=True)
            _download(fmt.url, target, fmt.archive, fmt.archive_md5)
        except Exception as err:
            raise UsageError(f"{fmt.name} not found in {folder} and the download failed ({_one_line(err)}): "
                             f"pass --data-root DIR with {_cifar_layout(fmt, 'DIR')}") from None
        missing = _missing(folder, fmt)
        if missing:
            raise UsageError(f"{fmt.name} download left {folder} without {', '.join(missing)}: "
                             f"pass --data-root DIR with {_cifar_layout(fmt, 'DIR')}")
    xtr, ytr, xte, yte, names = read_cifar(fmt, folder)
    tr, te = spread_indices(len(xtr), train_size), spread_indices(len(xte), test_size)
    return DatasetBundle(
        name=fmt.name,
        train=ArrayDataset(xtr[tr], ytr[tr], small_train_transform(32)),
        test=ArrayDataset(xte[te], yte[te]),
        num_classes=fmt.num_classes, image_size=32, mean=fmt.mean, std=fmt.std, class_names=names,
        config={"name": fmt.name, "train_size": train_size, "test_size": test_size},
        source=str(folder),
    )


# ------------------------------------------------------------------------------------------
# class-per-folder trees (ImageNet, Tiny-ImageNet, anything ImageFolder reads)
# ------------------------------------------------------------------------------------------
def folder_transforms(image_size: int):
    """(train transform, eval geometry) for a folder tree at ``image_size``; see module doc."""
    from torchvision import transforms as T

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
    from PIL import Image

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except Exception as err:
        raise UsageError(f"cannot read image {path} ({_one_line(err)}): remove or replace the file") from None


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
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes = find_classes(str(directory))[0] if class_to_idx is None else sorted(class_to_idx)
        if class_to_idx is None:
            class_to_idx = {c: i for i, c in enumerate(classes)}
        samples = make_dataset(str(directory), class_to_idx, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"no usable class-per-folder tree at {directory} ({_one_line(err)}): "
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
    image_size = _check_size("image_size", image_size)
    train_size, test_size = _check_size("train_size", train_size), _check_size("test_size", test_size)
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
            from torchvision.datasets.folder import find_classes

            try:
                val_classes = find_classes(str(val_dir))[0]
            except FileNotFoundError as err:
                raise UsageError(f"no class folders in {val_dir} ({_one_line(err)}): "
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
