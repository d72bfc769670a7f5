"""The torch engine's entry points: ``corrupt`` (tensors) and ``corrupt_numpy`` (the cache's
uint8 NHWC arrays), the engine's version, and which corruptions it makes by default.

A batch is corrupted at once on its device; image i's random numbers depend only on (seed,
corruption, severity, its index in the whole set) through ``rng.image_keys``, so a set is the
same whatever the batch size, the order or the chunking. The result is truncated to uint8 as
the reference's ``np.uint8`` does. ``draws`` lets a caller (the equivalence tests) supply the
random state of a corruption (e.g. the reference's own motion-blur angles) instead of drawing
it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .corruption_params import check_params, constants, resolve_params
from .kernels import blur, digital, noise, weather
from .kernels.rng import image_keys

REVISION = 2  # bump when a change in this package changes the bytes

FUNCTIONS: dict[str, Callable] = {
    "gaussian_noise": noise.gaussian_noise, "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise, "speckle_noise": noise.speckle_noise,
    "defocus_blur": blur.defocus_blur, "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur, "zoom_blur": blur.zoom_blur,
    "gaussian_blur": blur.gaussian_blur, "snow": weather.snow, "frost": weather.frost,
    "fog": weather.fog, "brightness": digital.brightness, "contrast": digital.contrast,
    "saturate": digital.saturate, "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate, "jpeg_compression": digital.jpeg_compression,
}
IMPLEMENTED = tuple(FUNCTIONS)  # spatter: reference only (see weather.py)

# The corruptions whose equivalence with the reference is tested in
# tests/distortions/test_corrupt_equivalence.py (PSNR for the deterministic ones, distribution of the change
# for the random ones, at every parameter set): the default engine for these is torch.
# Left out: glass_blur (an approximation of a sequential shuffle; see blur.py) and spatter.
TORCH_DEFAULT = tuple(c for c in IMPLEMENTED if c != "glass_blur")


def version() -> str:
    return f"poolbench.corrupt torch r{REVISION} (torch {'.'.join(torch.__version__.split('.')[:2])})"


@dataclass
class Context:
    """What a corruption function sees besides the images and its constants."""

    keys: torch.Tensor
    params: str
    severity: int
    h: int
    w: int
    dtype: torch.dtype
    draws: dict = field(default_factory=dict)

    def draw(self, name: str, fn: Callable, c) -> dict:
        """The random state of ``name``: supplied by the caller, else drawn by ``fn``."""
        if name in self.draws:
            return self.draws[name]
        return fn(self, c)


def corrupt(images: torch.Tensor, corruption: str, severity: int, seed: int = 0,
            params: str = "auto", indices: Sequence[int] | None = None,
            draws: dict | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Corrupt uint8 (N, 3, H, W) images on their device; returns uint8 (N, 3, H, W).

    ``indices``: each image's index in the whole set (default 0..N-1), which with ``seed``
    fixes its random numbers. ``params``: auto | cifar | tinyimagenet | imagenet.
    """
    if corruption not in FUNCTIONS:
        raise ValueError(f"the torch engine has no {corruption!r}; use the reference engine")
    n, _, h, w = images.shape
    params = resolve_params(params, (h, w))
    idx = range(n) if indices is None else indices
    ctx = Context(keys=image_keys(seed, corruption, severity, idx, images.device),
                  params=check_params(params), severity=int(severity), h=h, w=w, dtype=dtype,
                  draws=dict(draws or {}))
    # contiguous planes: the filters run along rows and columns (an NHWC view made the
    # separable blurs 5-8x slower at 224 px)
    x = images.to(dtype, memory_format=torch.contiguous_format)
    out = FUNCTIONS[corruption](x, constants(params, corruption, severity), ctx)
    # np.uint8 after clipping truncates; a tiny negative rounding error must not wrap
    return torch.floor(torch.nan_to_num(out).clamp(0, 255)).to(torch.uint8)


def batch_size(h: int, w: int) -> int:
    """Images per batch: about 2 M pixels (bounded memory for the 41-tap blurs)."""
    return max(1, (2 << 20) // max(1, h * w))


def corrupt_numpy(images: np.ndarray, corruption: str, severity: int, seed: int, params: str,
                  start: int = 0, device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, H, W, 3); image k has index start + k in the set."""
    n, h, w, _ = images.shape
    out = np.empty_like(images)
    step = batch_size(h, w)
    with torch.inference_mode():
        for s in range(0, n, step):
            x = torch.from_numpy(np.ascontiguousarray(images[s:s + step])).permute(0, 3, 1, 2)
            y = corrupt(x.to(device), corruption, severity, seed, params,
                        indices=range(start + s, start + s + len(x)))
            out[s:s + step] = y.permute(0, 2, 3, 1).cpu().numpy()
    return out
