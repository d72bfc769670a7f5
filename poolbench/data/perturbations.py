"""Perturbation sequences (ImageNet-P / CIFAR-P style): generated, or the official CIFAR-P.

A sequence is frames x_0..x_{n-1} of one image under a growing (or moving) perturbation;
``perturb_sequences`` returns uint8 (N, frames, H, W, 3). Two schedules (``spec/protocols.md``
and the authors' generation scripts ``make_cifar_p.py`` / ``make_imagenet_p.py``), frame i:

| perturbation   | cifar (32x32)                         | imagenet (224x224)                    |
|----------------|---------------------------------------|---------------------------------------|
| gaussian_noise | 31: x0 clean, x + N(0, 0.02)          | 31: x0 clean, x + N(0, 0.03)          |
| shot_noise     | 31: x0 clean, poisson(700 x) / 700    | 31: x0 clean, poisson(300 x) / 300    |
| speckle_noise  | 31: x0 clean, x + x N(0, 0.05)        | same                                  |
| brightness     | 31: HSV V += (i-15) * 0.015           | 31: V += (i-15) * 0.02                |
| translate      | 16: i-7 px right, zero fill           | 41: i-20 px                           |
| rotate         | 31: i-15 degrees, bilinear            | same                                  |
| tilt           | 31: 0.75 (i-15) degrees perspective   | 31: i-15 degrees                      |
| scale          | 31: (2i + 70) / 100                   | 31: (2.5i + 40) / 100                 |
| zoom_blur      | 31: mean of zooms 1 + 0.004k, k <= i  | same                                  |
| motion_blur    | 21: radius 6, sigma 1.8, (i-20)*9 deg | 31: radius 10, sigma 3, (i-30)*4 deg  |
| gaussian_blur  | 31: sigma 0.3 + 0.015i (truncate 7)   | 31: sigma 0.25 + 0.035i (truncate 6)  |
| shear          | 31: i-15 degrees                      | same                                  |
| snow           | 31: a snow layer (zoom 2) motion-     | zoom 3, radius 14, sigma 4            |
|                |     blurred radius 10, sigma 2 at     |                                       |
|                |     angle 4i - 150                    |                                       |
| spatter        | 31: a liquid layer that drips down    | loc 0.65, sigma 3.7, threshold 0.69,  |
|                |     (loc 0.6, sigma 1.75, threshold   | drip kernel (.05, .1, .15, .7)        |
|                |     0.7, drip kernel (0.2, 0.8))      |                                       |

The spec lists only the translate, brightness, scale and noise-sigma differences for 224x224;
the authors' ImageNet-P script also differs in shot noise (300), motion blur, tilt, Gaussian
blur, snow and spatter, as in the table. ``schedule="auto"`` picks ``cifar`` for images up to
64x64 and ``imagenet`` above.

This is our own code, not the authors': geometric frames use OpenCV warps about the image
centre with bilinear sampling and zero fill (frames with a zero parameter are the original
image exactly); motion blur is a one-sided Gaussian line kernel (ImageMagick's motion blur,
as re-implemented by ``imagecorruptions``) with edge replication; the snow and spatter layers
follow the authors' recipe. Differences from the official files: the ImageNet-P frames were
made from the Resize(256) image and centre-cropped, so content moved in from outside the crop,
while here the border fills with zeros; frames are rounded to uint8 (the authors truncated);
the official sets were stored as MP4 video (ImageNet-P), this never is. Every image's
randomness comes from ``SeedSequence([seed, perturbation, schedule, index])``.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..metrics import (
    ALL_PERTURBATIONS,
    CIFAR_P_TEST_PERTURBATIONS,
    NOISE_PERTURBATIONS,
    P_TEST_PERTURBATIONS,
    P_VALIDATION_PERTURBATIONS,
    is_noise_perturbation,
)
from . import cache as _cache

SCHEDULES = ("cifar", "imagenet")
GENERATOR_REVISION = 1  # bump when a change here changes the bytes
_SCHEDULE_LEVEL = {"cifar": 0, "imagenet": 1}
MIN_SIZE = 8

__all__ = [
    "ALL_PERTURBATIONS", "CIFAR_P_TEST_PERTURBATIONS", "NOISE_PERTURBATIONS",
    "P_TEST_PERTURBATIONS", "P_VALIDATION_PERTURBATIONS", "SCHEDULES", "PerturbedSet",
    "frame_count", "frame_parameters", "generate_perturbed_set", "is_noise_perturbation",
    "load_cifar_p", "perturb_sequences", "resolve_schedule",
]

# Per schedule: frames and the constants of each perturbation.
_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "cifar": {
        "gaussian_noise": {"frames": 31, "sigma": 0.02},
        "shot_noise": {"frames": 31, "rate": 700.0},
        "speckle_noise": {"frames": 31, "sigma": 0.05},
        "brightness": {"frames": 31, "step": 0.015, "center": 15},
        "translate": {"frames": 16, "center": 7},
        "rotate": {"frames": 31, "step": 1.0, "center": 15},
        "tilt": {"frames": 31, "step": 0.75, "center": 15},
        "scale": {"frames": 31, "a": 2.0, "b": 70.0},
        "zoom_blur": {"frames": 31, "step": 0.004},
        "motion_blur": {"frames": 21, "radius": 6, "sigma": 1.8, "step": 9.0, "center": 20},
        "gaussian_blur": {"frames": 31, "sigma0": 0.3, "step": 0.015, "truncate": 7.0},
        "shear": {"frames": 31, "step": 1.0, "center": 15},
        "snow": {"frames": 31, "loc": 0.05, "scale": 0.3, "zoom": 2.0, "threshold": 0.5,
                 "radius": 10, "sigma": 2.0, "mix": 0.85},
        "spatter": {"frames": 31, "loc": 0.6, "scale": 0.265, "blur": 1.75, "threshold": 0.7,
                    "drip": (0.2, 0.8), "strength": 0.6},
    },
    "imagenet": {
        "gaussian_noise": {"frames": 31, "sigma": 0.03},
        "shot_noise": {"frames": 31, "rate": 300.0},
        "speckle_noise": {"frames": 31, "sigma": 0.05},
        "brightness": {"frames": 31, "step": 0.02, "center": 15},
        "translate": {"frames": 41, "center": 20},
        "rotate": {"frames": 31, "step": 1.0, "center": 15},
        "tilt": {"frames": 31, "step": 1.0, "center": 15},
        "scale": {"frames": 31, "a": 2.5, "b": 40.0},
        "zoom_blur": {"frames": 31, "step": 0.004},
        "motion_blur": {"frames": 31, "radius": 10, "sigma": 3.0, "step": 4.0, "center": 30},
        "gaussian_blur": {"frames": 31, "sigma0": 0.25, "step": 0.035, "truncate": 6.0},
        "shear": {"frames": 31, "step": 1.0, "center": 15},
        "snow": {"frames": 31, "loc": 0.05, "scale": 0.3, "zoom": 3.0, "threshold": 0.5,
                 "radius": 14, "sigma": 4.0, "mix": 0.85},
        "spatter": {"frames": 31, "loc": 0.65, "scale": 0.27, "blur": 3.7, "threshold": 0.69,
                    "drip": (0.05, 0.1, 0.15, 0.7), "strength": 0.6},
    },
}


# --------------------------------------------------------------------------- names and schedules

def check_perturbation(name: str) -> str:
    if name in ALL_PERTURBATIONS:
        return name
    close = difflib.get_close_matches(str(name), ALL_PERTURBATIONS, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"choose from {', '.join(ALL_PERTURBATIONS)}"
    raise UsageError(f"unknown perturbation '{name}'; {hint}")


def resolve_schedule(schedule: str, image_shape: Sequence[int] | None = None) -> str:
    """'cifar' or 'imagenet'; 'auto' picks cifar for images up to 64x64."""
    if schedule == "auto":
        if image_shape is None:
            raise UsageError("schedule='auto' needs the image size; pass schedule='cifar' or 'imagenet'")
        return "cifar" if max(image_shape[0], image_shape[1]) <= 64 else "imagenet"
    if schedule not in SCHEDULES:
        raise UsageError(f"unknown schedule '{schedule}'; use 'cifar', 'imagenet' or 'auto'")
    return schedule


def frame_count(perturbation: str, schedule: str = "cifar") -> int:
    """Number of frames per sequence."""
    return int(_PARAMS[resolve_schedule(schedule)][check_perturbation(perturbation)]["frames"])


def frame_parameters(perturbation: str, schedule: str = "cifar") -> list[float]:
    """The schedule's parameter at each frame (pixels, degrees, factors, sigmas, brightness
    offsets; noise sigma or rate for frames 1.., 0 for the clean frame 0; the zoom of the newest
    layer for zoom_blur; the snow angle; the number of drip steps for spatter)."""
    p = check_perturbation(perturbation)
    q = _PARAMS[resolve_schedule(schedule)][p]
    i = np.arange(q["frames"], dtype=np.float64)
    if p in ("gaussian_noise", "speckle_noise"):
        v = np.where(i == 0, 0.0, q["sigma"])
    elif p == "shot_noise":
        v = np.where(i == 0, 0.0, q["rate"])
    elif p == "brightness":
        v = (i - q["center"]) * q["step"]
    elif p == "translate":
        v = i - q["center"]
    elif p in ("rotate", "tilt", "shear", "motion_blur"):
        v = (i - q["center"]) * q["step"]
    elif p == "scale":
        v = (q["a"] * i + q["b"]) / 100.0
    elif p == "zoom_blur":
        v = 1.0 + q["step"] * i
    elif p == "gaussian_blur":
        v = q["sigma0"] + q["step"] * i
    elif p == "snow":
        v = 4.0 * i - 150.0
    else:  # spatter
        v = i
    return [float(round(x, 10)) for x in v]


# --------------------------------------------------------------------------- image helpers

def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _warp(images: np.ndarray, matrix: np.ndarray, perspective: bool = False) -> np.ndarray:
    """Warp uint8 (n, H, W, 3) images with one 2x3 affine or 3x3 perspective matrix
    (bilinear, zero fill), one OpenCV call per image (about 15 us at 32x32). Stacking images
    along channels would be faster, but OpenCV's path for more than 4 channels interpolates
    differently (up to 5 grey levels apart), so results would depend on the chunking."""
    import cv2  # noqa: PLC0415 - a dependency of imagecorruptions

    n, h, w, _ = images.shape
    out = np.empty_like(images)
    kw = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    fn = cv2.warpPerspective if perspective else cv2.warpAffine
    for k in range(n):
        out[k] = fn(np.ascontiguousarray(images[k]), matrix, (w, h), **kw)
    return out


def _center(h: int, w: int) -> tuple[float, float]:
    return (w - 1) / 2.0, (h - 1) / 2.0


def _affine(h: int, w: int, angle: float = 0.0, scale: float = 1.0, shear: float = 0.0) -> np.ndarray:
    """2x3 matrix: rotate by ``angle`` degrees (counter-clockwise), scale, and shear x by
    ``shear`` degrees, about the image centre."""
    cx, cy = _center(h, w)
    a = math.radians(angle)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) * scale
    sh = np.array([[1.0, math.tan(math.radians(shear))], [0.0, 1.0]])
    lin = rot @ sh
    c = np.array([cx, cy])
    t = c - lin @ c
    return np.hstack([lin, t[:, None]]).astype(np.float64)


def _tilt_matrix(h: int, w: int, degrees: float) -> np.ndarray:
    """Perspective of a plane turned by ``degrees`` about both the x and y axes (authors' model:
    focal length sqrt(w^2 + h^2), centre of the image)."""
    phi = theta = math.radians(degrees)
    f = math.hypot(w, h)
    p1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]], dtype=np.float64)
    rx = np.array([[1, 0, 0, 0], [0, math.cos(theta), -math.sin(theta), 0],
                   [0, math.sin(theta), math.cos(theta), 0], [0, 0, 0, 1]])
    ry = np.array([[math.cos(phi), 0, -math.sin(phi), 0], [0, 1, 0, 0],
                   [math.sin(phi), 0, math.cos(phi), 0], [0, 0, 0, 1]])
    t = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]], dtype=np.float64)
    p2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]], dtype=np.float64)
    return p2 @ t @ rx @ ry @ p1


def _motion_kernel(radius: int, sigma: float, angle: float, h: int, w: int) -> np.ndarray:
    """The line kernel of ``_motion_blur`` for cv2.filter2D (anchor at the centre)."""
    width = 2 * int(radius) + 1
    k = np.arange(width, dtype=np.float64)
    weights = np.exp(-(k ** 2) / (2.0 * sigma ** 2))
    weights /= weights.sum()
    s, c = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    size = 2 * (width - 1) + 1
    kernel = np.zeros((size, size))
    for i in range(width):
        dy, dx = -math.ceil(i * s - 0.5), -math.ceil(i * c - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break  # the streak left the image
        kernel[width - 1 - dy, width - 1 - dx] += weights[i]
    return kernel


def _motion_blur(a: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """One-sided Gaussian line blur of float (n, H, W[, C]) along ``angle`` degrees: the sum
    over i of weight_i * (the image shifted i pixels along the angle), edges replicated."""
    import cv2  # noqa: PLC0415

    h, w = a.shape[1], a.shape[2]
    kernel = _motion_kernel(radius, sigma, angle, h, w)
    out = np.empty(a.shape, np.float64)
    for k in range(a.shape[0]):
        out[k] = cv2.filter2D(np.ascontiguousarray(a[k], dtype=np.float64), cv2.CV_64F, kernel,
                              borderType=cv2.BORDER_REPLICATE)
    return out


def _gray(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114])


def _clipped_zoom(layer: np.ndarray, factor: float) -> np.ndarray:
    """Zoom (n, H, W) layers by ``factor`` about the centre, keeping H x W (bilinear)."""
    from scipy.ndimage import zoom  # noqa: PLC0415

    n, h, w = layer.shape
    ch, cw = int(math.ceil(h / factor)), int(math.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    z = zoom(layer[:, top:top + ch, left:left + cw], (1, factor, factor), order=1)
    t, l = (z.shape[1] - h) // 2, (z.shape[2] - w) // 2
    return z[:, t:t + h, l:l + w]


def _drip(layer: np.ndarray, kernel: Sequence[float]) -> np.ndarray:
    """np.convolve(column, kernel, mode='same') down every column of (H, W): the liquid runs down."""
    h = layer.shape[0]
    m = len(kernel)
    full = np.zeros((h + m - 1,) + layer.shape[1:])
    for j, wgt in enumerate(kernel):
        full[j:j + h] += wgt * layer
    off = (m - 1) // 2
    return full[off:off + h]


def _spatter_frame(x: np.ndarray, layer: np.ndarray, strength: float) -> np.ndarray:
    """One spatter frame of float image x (H, W, 3) under the liquid layer (H, W)."""
    import cv2  # noqa: PLC0415

    liquid = np.clip(layer * 255.0, 0, 255).astype(np.uint8)
    dist = 255 - cv2.Canny(liquid, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
    dist = cv2.filter2D(dist, cv2.CV_8U, ker)
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    m = liquid.astype(np.float32) * dist
    peak = float(m.max())
    m = m / peak * strength if peak > 0 else np.zeros_like(m)
    color = np.array([175, 238, 238], dtype=np.float64) / 255.0  # pale turquoise water
    return np.clip(x + m[..., None] * color, 0.0, 1.0)


# --------------------------------------------------------------------------- generators

def _rngs(seed: int, perturbation: str, schedule: str, start: int, n: int) -> list[np.random.Generator]:
    level = _SCHEDULE_LEVEL[schedule]
    return [np.random.default_rng(_cache.item_seed(seed, perturbation, level, start + k))
            for k in range(n)]


def _perturb_chunk(images: np.ndarray, start: int, perturbation: str, schedule: str,
                   seed: int) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n, frames, H, W, 3) uint8; image k has index start + k."""
    q = _PARAMS[schedule][perturbation]
    frames = q["frames"]
    n, h, w, _ = images.shape
    out = np.empty((n, frames, h, w, 3), np.uint8)
    params = frame_parameters(perturbation, schedule)
    p = perturbation

    if p in ("gaussian_noise", "shot_noise", "speckle_noise"):
        x = images.astype(np.float64) / 255.0
        for k, rng in enumerate(_rngs(seed, p, schedule, start, n)):
            out[k, 0] = images[k]
            size = (frames - 1, h, w, 3)
            if p == "gaussian_noise":
                z = x[k] + rng.normal(0.0, q["sigma"], size)
            elif p == "shot_noise":
                z = rng.poisson(x[k] * q["rate"], size) / q["rate"]
            else:
                z = x[k] + x[k] * rng.normal(0.0, q["sigma"], size)
            out[k, 1:] = _to_uint8(z)
    elif p == "brightness":
        from skimage.color import hsv2rgb, rgb2hsv  # noqa: PLC0415

        hsv = rgb2hsv(images.astype(np.float64) / 255.0)
        for i, c in enumerate(params):
            if c == 0:
                out[:, i] = images
                continue
            z = hsv.copy()
            z[..., 2] = np.clip(z[..., 2] + c, 0.0, 1.0)
            out[:, i] = _to_uint8(hsv2rgb(z))
    elif p == "translate":
        for i, d in enumerate(params):
            d = int(d)
            frame = np.zeros_like(images)
            if d >= 0:
                frame[:, :, d:] = images[:, :, : w - d]
            else:
                frame[:, :, : w + d] = images[:, :, -d:]
            out[:, i] = frame
    elif p in ("rotate", "scale", "shear"):
        for i, v in enumerate(params):
            if (p == "scale" and v == 1.0) or (p != "scale" and v == 0.0):
                out[:, i] = images
                continue
            m = (_affine(h, w, angle=v) if p == "rotate" else
                 _affine(h, w, scale=v) if p == "scale" else _affine(h, w, shear=v))
            out[:, i] = _warp(images, m)
    elif p == "tilt":
        for i, v in enumerate(params):
            out[:, i] = images if v == 0.0 else _warp(images, _tilt_matrix(h, w, v), perspective=True)
    elif p == "zoom_blur":
        acc = images.astype(np.float64)
        out[:, 0] = images
        for i in range(1, frames):
            acc += _warp(images, _affine(h, w, scale=params[i])).astype(np.float64)
            out[:, i] = np.rint(acc / (i + 1)).astype(np.uint8)
    elif p == "motion_blur":
        x = images.astype(np.float64)
        for i, angle in enumerate(params):
            out[:, i] = np.rint(np.clip(_motion_blur(x, q["radius"], q["sigma"], angle), 0, 255))
    elif p == "gaussian_blur":
        from scipy.ndimage import gaussian_filter  # noqa: PLC0415

        x = images.astype(np.float64) / 255.0
        for i, s in enumerate(params):
            out[:, i] = _to_uint8(gaussian_filter(x, sigma=(0, s, s, 0), mode="nearest",
                                                  truncate=q["truncate"]))
    elif p == "snow":
        rngs = _rngs(seed, p, schedule, start, n)
        layer = np.stack([r.normal(q["loc"], q["scale"], (h, w)) for r in rngs])
        layer = _clipped_zoom(layer, q["zoom"])
        layer[layer < q["threshold"]] = 0
        layer = np.rint(np.clip(layer, 0, 1) * 255) / 255.0  # the authors' 8-bit snow layer
        x = images.astype(np.float64) / 255.0
        base = q["mix"] * x + (1 - q["mix"]) * np.maximum(x, _gray(x)[..., None] * 1.5 + 0.5)
        for i, angle in enumerate(params):
            moving = np.rint(np.clip(_motion_blur(layer, q["radius"], q["sigma"], angle), 0, 1) * 255) / 255.0
            snow = moving + np.rot90(moving, k=2, axes=(1, 2))
            out[:, i] = _to_uint8(base + snow[..., None])
    elif p == "spatter":
        from scipy.ndimage import gaussian_filter  # noqa: PLC0415

        x = images.astype(np.float64) / 255.0
        for k, rng in enumerate(_rngs(seed, p, schedule, start, n)):
            layer = gaussian_filter(rng.normal(q["loc"], q["scale"], (h, w)), q["blur"], mode="nearest")
            layer[layer < q["threshold"]] = 0
            for i in range(frames):
                out[k, i] = _to_uint8(_spatter_frame(x[k], layer, q["strength"]))
                layer = _drip(layer, q["drip"])
    else:  # pragma: no cover - names are checked before
        raise UsageError(f"unknown perturbation '{p}'")
    return out


def perturb_sequences(images: np.ndarray, perturbation: str, seed: int = 0,
                      schedule: str = "auto") -> np.ndarray:
    """Sequences of uint8 (N, H, W, 3) images in this process: uint8 (N, frames, H, W, 3)."""
    images = _cache.check_images(images, MIN_SIZE)
    schedule = resolve_schedule(schedule, images.shape[1:3])
    return _perturb_chunk(images, 0, check_perturbation(perturbation), schedule,
                          _cache.check_seed(seed))


class PerturbedSet(_cache.ArraySet):
    """Perturbation sequences of one image set: ``get(perturbation) -> uint8 (N, frames, H, W, 3)``."""

    def __init__(self, labels, sources, perturbations, schedule, seed=None, source="generated"):
        super().__init__(kind="perturbed", labels=None if labels is None else np.asarray(labels),
                         _sources=sources)
        self.perturbations = tuple(perturbations)
        self.schedule = schedule
        self.seed = seed
        self.source = source

    def get(self, perturbation: str, mmap: bool = False) -> np.ndarray:
        return self._get((perturbation, self.schedule), mmap)

    @staticmethod
    def noise(perturbation: str) -> bool:
        """Whether FP/T5D compare with the first frame for this perturbation."""
        return is_noise_perturbation(perturbation)

    def __repr__(self) -> str:
        return (f"PerturbedSet({self.source}, {list(self.perturbations)}, schedule={self.schedule}, "
                f"seed={self.seed})")


def _names(perturbations) -> tuple[str, ...]:
    if isinstance(perturbations, str):
        perturbations = (perturbations,)
    names = tuple(dict.fromkeys(check_perturbation(p) for p in perturbations))
    if not names:
        raise UsageError("no perturbations given; pass at least one, e.g. CIFAR_P_TEST_PERTURBATIONS")
    return names


def generate_perturbed_set(images: np.ndarray, labels: Any = None,
                           perturbations: Sequence[str] = CIFAR_P_TEST_PERTURBATIONS,
                           seed: int = 0, cache_dir: str | os.PathLike | None = None, *,
                           schedule: str = "auto", dataset: str = "custom", subset: str = "test",
                           workers: int | None = None, chunk_size: int = 128,
                           progress: bool = True, mp_context: str | None = None) -> PerturbedSet:
    """Produce every perturbation's sequences of ``images`` once and return them lazily.

    Cached like the corrupted sets: ``<cache_dir>/perturbations/<dataset>/<subset>/
    <perturbation>/<schedule>-seed<seed>-<digest>.npy`` + JSON manifest, written atomically,
    generated in ``workers`` processes with a progress bar on stderr; in memory without
    ``cache_dir``. Note the size: 10,000 CIFAR images x 31 frames is 950 MB per perturbation
    (``get(..., mmap=True)`` maps it instead of reading it). With ``workers > 1`` a calling
    script needs ``if __name__ == "__main__":`` (worker processes re-import it).
    """
    images = _cache.check_images(images, MIN_SIZE)
    if labels is not None and len(labels) != len(images):
        raise UsageError(f"{len(labels)} labels for {len(images)} images; pass one label per image")
    names, seed = _names(perturbations), _cache.check_seed(seed)
    schedule = resolve_schedule(schedule, images.shape[1:3])
    fingerprint = _cache.images_fingerprint(images)
    sources: dict = {}
    jobs = []
    for p in names:
        frames = _PARAMS[schedule][p]["frames"]
        manifest = {
            "kind": "perturbation", "dataset": str(dataset), "subset": str(subset),
            "perturbation": p, "schedule": schedule, "frames": frames, "seed": seed,
            "generator": f"poolbench.data.perturbations r{GENERATOR_REVISION}",
            "format": _cache.FORMAT_VERSION, "images": fingerprint, "num_images": len(images),
            "image_shape": list(images.shape[1:]),
        }
        path = None
        if cache_dir is not None:
            path = _cache.entry_path(cache_dir, "perturbations", dataset, subset, p, schedule,
                                     seed, _cache.digest(manifest))
            if path.exists():
                sources[(p, schedule)] = _cache._Cached(path)
                continue
        jobs.append(_cache.Job(key=(p, schedule), func=_perturb_chunk,
                               params={"perturbation": p, "schedule": schedule, "seed": seed},
                               item_shape=(frames, *images.shape[1:]), path=path, manifest=manifest))
    if jobs:
        done = _cache.run_jobs(jobs, images, workers=workers, chunk_size=chunk_size,
                               progress=progress, desc=f"perturbing {dataset}/{subset}",
                               mp_context=mp_context,
                               scratch_dir=None if cache_dir is None else Path(cache_dir))
        for key, result in done.items():
            sources[key] = _cache._Cached(result) if isinstance(result, Path) else result
    ordered = {(p, schedule): sources[(p, schedule)] for p in names}
    return PerturbedSet(labels, ordered, names, schedule, seed=seed, source=f"{dataset}/{subset}")


# --------------------------------------------------------------------------- official CIFAR-P

_CIFAR_P_HINT = ("download CIFAR-10-P (https://zenodo.org/record/2535967) or CIFAR-100-P "
                 "(https://zenodo.org/record/3565846) and unpack it there")
_VARIANT = re.compile(r"^(gaussian_noise|shot_noise|speckle_noise)_[23]$")


def load_cifar_p(root: str | os.PathLike,
                 perturbations: Sequence[str] = CIFAR_P_TEST_PERTURBATIONS,
                 num_sequences: int | None = None, labels: Any = None) -> PerturbedSet:
    """Official CIFAR-10-P / CIFAR-100-P: ``<root>/<perturbation>.npy`` uint8
    (N, frames, 32, 32, 3), validated now (headers only) and read lazily on ``get``.

    Frame counts are checked against the CIFAR-P schedule (translate 16, motion_blur 21,
    others 31). The harder noise variants (``gaussian_noise_2``...) are accepted too.
    ``labels`` (the clean test labels, in order) are attached when given.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"CIFAR-P folder {root} does not exist; {_CIFAR_P_HINT}")
    if isinstance(perturbations, str):
        perturbations = (perturbations,)
    names = []
    for p in perturbations:
        names.append(p if _VARIANT.match(str(p)) else check_perturbation(p))
    if not names:
        raise UsageError("no perturbations given; pass at least one, e.g. CIFAR_P_TEST_PERTURBATIONS")
    sources = {}
    count = None if num_sequences is None else int(num_sequences)
    for p in dict.fromkeys(names):
        path = root / f"{p}.npy"
        if not path.exists():
            raise UsageError(f"CIFAR-P file {path} is missing; {_CIFAR_P_HINT}, or leave {p} out")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UsageError(f"{path} is not a readable .npy file ({exc}); download it again") from None
        frames = _PARAMS["cifar"][_VARIANT.sub(r"\1", p)]["frames"]
        if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[1:] != (frames, 32, 32, 3):
            raise UsageError(f"{path} has shape {arr.shape} and dtype {arr.dtype}, expected uint8 "
                             f"(N, {frames}, 32, 32, 3); re-download it")
        if count is None:
            count = arr.shape[0]
        if arr.shape[0] != count:
            raise UsageError(f"{path} holds {arr.shape[0]} sequences but {count} were expected; "
                             "use files from one release (or fix num_sequences)")
        sources[(p, "cifar")] = _cache._Cached(path)
    if labels is not None and len(labels) != count:
        raise UsageError(f"{len(labels)} labels for {count} sequences; pass the clean test labels in order")
    return PerturbedSet(labels, sources, tuple(dict.fromkeys(names)), "cifar", seed=None,
                        source=f"official {root}")
