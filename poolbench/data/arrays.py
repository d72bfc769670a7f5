"""In-memory uint8 datasets (shapes, CIFAR) and their small-image training transform.

Transforms: train RandomCrop(S, padding=S/8) + RandomHorizontalFlip; test: none.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UsageError


def small_train_transform(size: int = 32) -> Callable[[torch.Tensor], torch.Tensor]:
    """RandomCrop(size, padding=size/8) + RandomHorizontalFlip, then uint8 -> float [0, 1]."""
    # imported on first use: torchvision would add about 1.4 s to every command's start
    from torchvision.transforms import v2  # noqa: PLC0415

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

    def split(self, keep, held, evaluation: ArrayDataset) -> tuple[ArrayDataset, ArrayDataset]:
        """(the images at ``keep`` with this set's transform, those at ``held`` with the
        transform of ``evaluation``): a validation split (``bundles.hold_out``)."""
        images = self.images
        return (ArrayDataset(images[keep], self.labels[keep], self.transform),
                ArrayDataset(images[held], self.labels[held], evaluation.transform))


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
