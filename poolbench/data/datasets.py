"""Real datasets: where they live, their statistics, and CIFAR-10/100 (python pickle version).

Class-per-folder trees are ``poolbench.data.folders``; the built-in generated data
``poolbench.data.shapes``; the bundle every loader returns ``poolbench.data.bundles``
(conventions: float CHW in [0, 1], no normalisation) and the in-memory datasets and their
transforms ``poolbench.data.arrays``.

CIFAR files are read by this module, not by torchvision's CIFAR10 class: that class refuses
any file whose md5 differs from the official release (so a test cannot feed it small files
in the real format without switching its check off), while reading the python pickles
is twenty lines. The same reader serves users and tests, it checks the structure (keys,
shapes, label range) instead of checksums, and it unpickles through an allow-list that only
rebuilds numpy arrays, so a planted pickle cannot run code. Downloads still go through
torchvision (``download_and_extract_archive``, which verifies the archive's md5) and are
attempted only when files are missing. CIFAR transforms: train RandomCrop(32, padding=4) +
RandomHorizontalFlip; test: none.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError, one_line
from .arrays import ArrayDataset, small_train_transform
from .bundles import DatasetBundle, check_size, spread_indices

DATA_ROOT_ENV = "POOLBENCH_DATA_ROOT"
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_data_root() -> Path:
    """Where real datasets live when no root is given: $POOLBENCH_DATA_ROOT or ~/.cache/poolbench/data."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "poolbench" / "data"


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
    # imported on first use: torchvision would add about 1.4 s to every command's start
    from torchvision.datasets.utils import download_and_extract_archive  # noqa: PLC0415

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
        raise UsageError(f"{fmt.name} file {path} is corrupt ({one_line(err, with_type=True)}): "
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
        raise UsageError(f"{fmt.name} meta file {meta_path} is corrupt ({one_line(err, with_type=True)}): "
                         f"delete {folder} to download it again, or replace the file") from None
    return xtr, ytr, xte, yte, tuple(names)


def cifar_folder(name: str, root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder holding every CIFAR-10/-100 file, downloaded (torchvision) when files are
    missing and ``download`` is true; one line naming what is missing and the fix otherwise."""
    fmt = CIFAR_FORMATS[name]
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
            raise UsageError(f"{fmt.name} not found in {folder} and the download failed ({one_line(err, with_type=True)}): "
                             f"pass --data-root DIR with {_cifar_layout(fmt, 'DIR')}") from None
        missing = _missing(folder, fmt)
        if missing:
            raise UsageError(f"{fmt.name} download left {folder} without {', '.join(missing)}: "
                             f"pass --data-root DIR with {_cifar_layout(fmt, 'DIR')}")
    return folder


def cifar_files(name: str, root: str | os.PathLike | None = None, download: bool = True) -> list[Path]:
    """The batch and meta files of CIFAR-10/-100 (what its data fingerprint hashes)."""
    fmt = CIFAR_FORMATS[name]
    folder = cifar_folder(name, root, download)
    return [folder / n for n in (*fmt.train_files, fmt.test_file, fmt.meta_file)]


def load_cifar(name: str, *, root: str | os.PathLike | None = None, train_size: int | None = None,
               test_size: int | None = None, download: bool = True) -> DatasetBundle:
    """CIFAR-10 or CIFAR-100 from ``root/cifar-10-batches-py`` or ``root/cifar-100-python``.

    Downloads (through torchvision) only when files are missing and ``download`` is true.
    ``train_size``/``test_size`` keep that many evenly spaced images (quick runs).
    """
    fmt = CIFAR_FORMATS[name]
    train_size, test_size = check_size("train_size", train_size), check_size("test_size", test_size)
    folder = cifar_folder(name, root, download)
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
