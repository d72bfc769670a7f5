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
    return PadCropFlip(size, size // 8)


class PadCropFlip:
    """torchvision's ``v2.Compose([RandomCrop(size, padding=pad), RandomHorizontalFlip(),
    ToDtype(float32, scale=True)])`` on a uint8 CHW image, draw for draw: the same three draws
    from the global generator per image (top, left, flip), the same pixels, the same float
    scaling (tests/data/test_data_datasets.py checks it against torchvision itself).

    Why not torchvision's: its per-image dispatch costs 158 us an image against 61 here, 0.8 s
    of every epoch of 8,000 images on one core, and importing it 1.4 s of every process
    (docs/measurements.md, "Evaluation and augmentation on the CPU").
    """

    def __init__(self, size: int, pad: int):
        self.size, self.pad = int(size), int(pad)

    def __repr__(self) -> str:
        return f"PadCropFlip(size={self.size}, pad={self.pad})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        size, pad = self.size, self.pad
        h, w = x.shape[-2:]
        # the order and calls of RandomCrop.make_params, then RandomHorizontalFlip's draw
        top = int(torch.randint(0, h + 2 * pad - size + 1, size=()))
        left = int(torch.randint(0, w + 2 * pad - size + 1, size=()))
        flip = bool(torch.rand(1) < 0.5)
        y0, x0 = top - pad, left - pad                      # the crop's corner in x's pixels
        sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y0 + size, h), min(x0 + size, w)
        out = x.new_zeros((x.shape[0], size, size))          # the zero padding
        out[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = x[:, sy0:sy1, sx0:sx1]
        if flip:
            out = out.flip(-1)
        return out.to(torch.float32).mul_(1.0 / 255)         # ToDtype(scale=True): times 1/255


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
        return self.transform(self._chw[i]), int(self.labels[i])

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
