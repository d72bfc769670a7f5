"""The corruption parameter sets of the benchmarks' authors, one per resolution.

| set            | native size | constants from (github.com/hendrycks/robustness)                  |
|----------------|-------------|-------------------------------------------------------------------|
| ``cifar``        | 32x32       | ``ImageNet-C/create_c/make_cifar_c.py`` (CIFAR-10-C / CIFAR-100-C)   |
| ``tinyimagenet`` | 64x64       | ``ImageNet-C/create_c/make_tinyimagenet_c.py`` (Tiny-ImageNet-C)    |
| ``imagenet``     | 224x224     | ``imagecorruptions`` 1.1.5 (``make_imagenet_c.py``'s constants; its |
|                |             | own elastic, pixelate and motion blur, see docs/protocols.md)          |

``PARAMS[set][corruption]`` is the list of the five severities' constants, in the order the
authors' functions unpack them (e.g. snow: loc, scale, zoom, threshold, blur radius, blur sigma,
mix). The formulas beside the numbers differ a little between the sets and are named in
``VARIANTS``; both the numpy reference (``poolbench.distortions.corruption_reference``) and the torch engine
read them from here, so there is one table. ``params_for_size`` picks the set whose native
size is nearest (in log scale) to an image's shorter side.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import UsageError

PARAM_SETS = ("cifar", "tinyimagenet", "imagenet")
NATIVE_SIZE = {"cifar": 32, "tinyimagenet": 64, "imagenet": 224}
SOURCES = {
    "cifar": "hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py",
    "tinyimagenet": "hendrycks/robustness ImageNet-C/create_c/make_tinyimagenet_c.py",
    "imagenet": "imagecorruptions (make_imagenet_c.py constants)",
}


def _zooms(stop: float, step: float) -> tuple[float, ...]:
    # np.arange(1, stop, step) exactly as the authors wrote it: its float count rule keeps
    # the end point in some cases (arange(1, 1.06, 0.01) has 7 values)
    return tuple(float(z) for z in np.arange(1, stop, step))


_SMALL_ZOOMS = [_zooms(1.06, .01), _zooms(1.11, .01), _zooms(1.16, .01), _zooms(1.21, .01),
                _zooms(1.26, .01)]

PARAMS: dict[str, dict[str, list]] = {
    "cifar": {
        "gaussian_noise": [0.04, 0.06, .08, .09, .10],
        "shot_noise": [500, 250, 100, 75, 50],
        "impulse_noise": [.01, .02, .03, .05, .07],
        "speckle_noise": [.06, .1, .12, .16, .2],
        "gaussian_blur": [.4, .6, 0.7, .8, 1],
        "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
        "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
        "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
        "zoom_blur": _SMALL_ZOOMS,
        "fog": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
        "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
        "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                 (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                 (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
        "spatter": [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                    (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                    (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
        "contrast": [.75, .5, .4, .3, 0.15],
        "brightness": [.05, .1, .15, .2, .3],
        "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
        "jpeg_compression": [80, 65, 58, 50, 40],
        "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
        # (alpha, sigma, affine jitter) as fractions of the image size (the authors' IMSIZE * c)
        "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                              (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
    },
    "tinyimagenet": {
        "gaussian_noise": [0.04, 0.08, .12, .15, .18],
        "shot_noise": [250, 100, 50, 30, 15],
        "impulse_noise": [.01, .02, .05, .08, .14],
        "speckle_noise": [.15, .2, 0.25, 0.3, 0.35],
        "gaussian_blur": [.5, .75, 1, 1.25, 1.5],
        "glass_blur": [(0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)],
        "defocus_blur": [(0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)],
        "motion_blur": [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],
        "zoom_blur": _SMALL_ZOOMS,
        "fog": [(.4, 3), (.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)],
        "frost": [(1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)],
        "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
                 (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
                 (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)],
        "spatter": [(0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0),
                    (0.65, 0.3, 1, 0.69, 0.6, 0), (0.65, 0.1, 0.7, 0.68, 0.6, 1),
                    (0.65, 0.1, 0.5, 0.67, 0.6, 1)],
        "contrast": [.4, .3, .2, .1, 0.05],
        "brightness": [.1, .2, .3, .4, .5],
        "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)],
        "jpeg_compression": [65, 58, 50, 40, 25],
        "pixelate": [0.9, 0.8, 0.7, 0.6, 0.5],
        "elastic_transform": [(0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06),
                              (0.1, 0.03, 0.03), (0.16, 0.03, 0.02)],
    },
    "imagenet": {
        "gaussian_noise": [.08, .12, 0.18, 0.26, 0.38],
        "shot_noise": [60, 25, 12, 5, 3],
        "impulse_noise": [.03, .06, .09, 0.17, 0.27],
        "speckle_noise": [.15, .2, 0.35, 0.45, 0.6],
        "gaussian_blur": [1, 2, 3, 4, 6],
        "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
        "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
        "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
        "zoom_blur": [_zooms(1.11, .01), _zooms(1.16, .01), _zooms(1.21, .02), _zooms(1.26, .02),
                      _zooms(1.31, .03)],
        "fog": [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)],
        "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
        "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                 (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                 (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
        "spatter": [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                    (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                    (0.67, 0.4, 1, 0.65, 1.5, 1)],
        "contrast": [0.4, .3, .2, .1, .05],
        "brightness": [.1, .2, .3, .4, .5],
        "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
        "jpeg_compression": [25, 18, 15, 10, 7],
        "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
        # (alpha, relative sigma, relative max displacement): imagecorruptions' own elastic
        "elastic_transform": [(250 * 0.05, 0.01, 0.005), (250 * 0.065, 0.01, 0.005),
                              (250 * 0.085, 0.01, 0.005), (250 * 0.1, 0.01, 0.005),
                              (250 * 0.12, 0.01, 0.005)],
    },
}

# Where the formulas differ between the sets (the constants aside).
VARIANTS: dict[str, dict[str, object]] = {
    # the authors' small-image scripts trim a zoomed image about its centre; imagecorruptions
    # keeps its top-left corner
    "zoom_trim": {"cifar": "center", "tinyimagenet": "center", "imagenet": "topleft"},
    # pixelate: BOX down, then BOX (authors, small) or NEAREST (imagecorruptions) back up
    "pixelate_up": {"cifar": "box", "tinyimagenet": "box", "imagenet": "nearest"},
    # frost: the authors resize the frost photographs by a fixed factor (0.2 at 32, 0.3 at 64,
    # bilinear) and draw from the first five; imagecorruptions fits them to the image (bicubic)
    # and draws from all six
    "frost_resize": {"cifar": 0.2, "tinyimagenet": 0.3, "imagenet": "fit"},
    "frost_files": {"cifar": 5, "tinyimagenet": 5, "imagenet": 6},
    # elastic: the authors' small-image version warps by a random affine map first and scales
    # every constant by the image size; imagecorruptions has no affine step
    "elastic": {"cifar": "affine", "tinyimagenet": "affine", "imagenet": "plain"},
    # snow: the authors quantise the layer to 8 bits before the motion blur (a PNG for
    # ImageMagick); imagecorruptions blurs the float layer
    "snow_quantise_first": {"cifar": True, "tinyimagenet": True, "imagenet": False},
}


def check_params(name: str) -> str:
    if name in PARAM_SETS:
        return name
    raise UsageError(f"unknown corruption parameter set {name!r}; use auto or one of "
                     f"{', '.join(PARAM_SETS)}")


def params_for_size(height: int, width: int) -> str:
    """The set whose native size is nearest to the shorter side (log scale): up to 45 px
    cifar, up to 119 px tinyimagenet, above imagenet."""
    side = max(1, min(int(height), int(width)))
    return min(PARAM_SETS, key=lambda s: abs(math.log(side / NATIVE_SIZE[s])))


def resolve_params(name: str | None, image_shape: Sequence[int] | None = None) -> str:
    """``auto`` (or None) -> the set for the image size; else the named set, checked."""
    if name in (None, "", "auto"):
        if image_shape is None:
            raise UsageError("corruption parameters 'auto' need the image size; name a set: "
                             f"{', '.join(PARAM_SETS)}")
        return params_for_size(image_shape[0], image_shape[1])
    return check_params(str(name).strip().lower())


def constants(params: str, corruption: str, severity: int):
    return PARAMS[check_params(params)][corruption][int(severity) - 1]
