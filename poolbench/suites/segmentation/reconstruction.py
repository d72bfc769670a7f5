"""Reconstruction without training: down-pool an image, up-pool it back, measure what was lost.

The LiftPool paper's point (Sec. 4.4): LiftUpPool inverts LiftDownPool exactly for ANY P and U
(here random, untrained ones), while MaxUnpool puts each kept maximum back at its position and
leaves zeros (holes) at the other three of every 2x2 window; a blur after it spreads the kept
values but cannot bring back the lost ones; bilinear upsampling of a max- or average-pooled
image is smooth but loses every detail finer than the pooled grid.

Methods (``METHODS``; the names are the segmentation variants, ``poolbench.models.segnet``):

- ``lift``: LiftDownPool keeping LL (``bands=LL``, random P/U seeded by ``seed``) -> LiftUpPool
  with the recorded LH/HL/HH: exact (float64 PSNR > 200 dB, float32 > 100 dB);
- ``max_unpool``: max pooling with indices -> MaxUnpool (holes);
- ``max_unpool_blur``: MaxUnpool then the 3x3 binomial blur of ``max:up=unpool_blur``, exactly
  the registered up-pool's output (no gain: it spreads one kept pixel in four, so the image
  comes back about four times darker where it is flat; that is what a SegNet decoder receives
  and its convolutions must rescale);
- ``bilinear``: max pooling -> bilinear x2 upsampling; ``bilinear_avg``: average pooling ->
  bilinear x2 upsampling.

Any pool spec is accepted as a method too, by the rule of ``resolve_variant`` (an invertible
pool uses its own up-pool, another pool is followed by bilinear upsampling). ``levels`` > 1
down-pools that many times (each level its own operator, as in an encoder) and goes back up in
reverse order.

Images: ``load_sample_image(name)`` reads the natural images that scikit-image ships
(``SAMPLE_IMAGES``), float64 in [0, 1], grayscale (H, W) or RGB (H, W, 3) as shipped.
``reconstruct`` crops an image to sides that are multiples of 2**levels and returns the
reconstruction of the crop, in the image's layout; PSNR compares it with that crop.
"""
from __future__ import annotations

import numpy as np
import skimage.data
import torch

from ...errors import UsageError, one_line
from ...metrics import psnr
from ...models.segnet import BilinearUp, resolve_variant
from ...registry import get_pool

SAMPLE_IMAGES = ("astronaut", "camera", "coffee", "chelsea")
METHODS = ("lift", "max_unpool", "max_unpool_blur", "bilinear", "bilinear_avg")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def load_sample_image(name: str, gray: bool = False) -> np.ndarray:
    """A scikit-image sample image as float64 in [0, 1]: (H, W) grayscale or (H, W, 3) RGB."""
    loader = getattr(skimage.data, str(name), None)
    if name not in SAMPLE_IMAGES and not callable(loader):
        raise UsageError(f"unknown sample image {name!r}; choose one of {', '.join(SAMPLE_IMAGES)} "
                         "(or another skimage.data image)")
    try:
        image = np.asarray(loader())
    except Exception as exc:
        raise UsageError(f"scikit-image could not load sample image {name!r} ({one_line(exc)}); "
                         f"choose one of {', '.join(SAMPLE_IMAGES)}") from exc
    image = _as_float(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if gray and image.ndim == 3:
        image = image @ np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray's weights
    return image


def _as_float(image) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype == bool:
        return a.astype(np.float64)
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise UsageError(f"image dtype {a.dtype} is not numeric; pass uint8 or floats in [0, 1]")
    return a.astype(np.float64)


def crop_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """The top-left crop of ``image`` (H, W[, C]) whose sides are multiples of ``multiple``."""
    h, w = image.shape[:2]
    hh, ww = h - h % multiple, w - w % multiple
    if hh == 0 or ww == 0:
        raise UsageError(f"image of size {h}x{w} is smaller than {multiple} pixels per side; "
                         "use a larger image or fewer levels")
    return image[:hh, :ww]


def _check_image(image) -> np.ndarray:
    a = _as_float(image)
    if a.ndim not in (2, 3):
        raise UsageError(f"image must be (H, W) or (H, W, C); got shape {a.shape}")
    if not np.isfinite(a).all():
        raise UsageError("image holds NaN or infinite values")
    return a


def build_pools(method: str, channels: int, levels: int = 1, seed: int = 0,
                dtype: torch.dtype = torch.float64, upsample: str | None = None) -> list:
    """``levels`` down/up operators for ``method``, in eval mode, with weights drawn from
    ``seed`` (the same seed gives the same random LiftPool P/U)."""
    variant = resolve_variant(method, upsample)
    pools = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(levels):
            pool = get_pool(variant.pool, channels)
            if variant.upsample == "bilinear":
                pool = BilinearUp(pool)
            pools.append(pool.to(dtype).eval())
    return pools


@torch.no_grad()
def reconstruct(image, method: str = "lift", *, levels: int = 1, dtype: str = "float64",
                seed: int = 0, upsample: str | None = None) -> np.ndarray:
    """Down-pool ``image`` ``levels`` times with ``method``'s operator, up-pool back, and return
    the reconstruction (float64, the layout of ``image``, cropped to multiples of 2**levels).

    ``image``: (H, W) or (H, W, C), uint8 or floats in [0, 1]. ``method``: a name of ``METHODS``
    or a pool spec; ``upsample`` ("paired"/"bilinear") as in ``resolve_variant``. No clipping.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise UsageError(f"levels must be a positive integer, got {levels!r}")
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    a = crop_to_multiple(_check_image(image), 2 ** levels)
    gray = a.ndim == 2
    x = torch.from_numpy(a[None] if gray else np.moveaxis(a, -1, 0)).unsqueeze(0).to(DTYPES[dtype])
    pools = build_pools(method, x.shape[1], levels, seed, DTYPES[dtype], upsample)
    states = []
    for pool in pools:
        x, state = pool.down(x)
        states.append(state)
    for pool, state in zip(reversed(pools), reversed(states)):
        x = pool.up(x, state)
    out = x[0].double().numpy()
    return out[0] if gray else np.moveaxis(out, 0, -1).copy()


def reconstruction_psnr(image, method: str = "lift", **kwargs) -> tuple[float, np.ndarray]:
    """(PSNR in dB against the cropped ``image`` with data range 1, the reconstruction)."""
    a = _check_image(image)
    out = reconstruct(a, method, **kwargs)
    return psnr(a[: out.shape[0], : out.shape[1]], out, data_range=1.0), out
