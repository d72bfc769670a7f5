"""The reference (numpy) perturbation engine: frame sequences made in this process from the
schedules of ``perturbation_schedules`` (the table there says what frame i is).

This is our own code, not the authors': geometric frames use OpenCV warps about the image
centre with bilinear sampling and zero fill; see ``perturbation_schedules`` for the
differences from the official files. Every image's randomness comes from
``SeedSequence([seed, perturbation, schedule, index])``.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.color import hsv2rgb, rgb2hsv

from ..errors import UsageError
from . import cache as _cache
from .perturbation_ops import (
    affine,
    clipped_zoom,
    drip,
    gray,
    motion_blur,
    spatter_frame,
    tilt_matrix,
    to_uint8,
    warp,
)
from .perturbation_schedules import (
    MIN_SIZE,
    PARAMS,
    SCHEDULE_LEVEL,
    check_perturbation,
    frame_parameters,
    resolve_schedule,
)

# --------------------------------------------------------------------------- generators

def _rngs(seed: int, perturbation: str, schedule: str, start: int, n: int) -> list[np.random.Generator]:
    level = SCHEDULE_LEVEL[schedule]
    return [np.random.default_rng(_cache.item_seed(seed, perturbation, level, start + k))
            for k in range(n)]


def _perturb_chunk(images: np.ndarray, start: int, perturbation: str, schedule: str,
                   seed: int) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n, frames, H, W, 3) uint8; image k has index start + k."""
    q = PARAMS[schedule][perturbation]
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
            out[k, 1:] = to_uint8(z)
    elif p == "brightness":
        hsv = rgb2hsv(images.astype(np.float64) / 255.0)
        for i, c in enumerate(params):
            if c == 0:
                out[:, i] = images
                continue
            z = hsv.copy()
            z[..., 2] = np.clip(z[..., 2] + c, 0.0, 1.0)
            out[:, i] = to_uint8(hsv2rgb(z))
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
            m = (affine(h, w, angle=v) if p == "rotate" else
                 affine(h, w, scale=v) if p == "scale" else affine(h, w, shear=v))
            out[:, i] = warp(images, m)
    elif p == "tilt":
        for i, v in enumerate(params):
            out[:, i] = images if v == 0.0 else warp(images, tilt_matrix(h, w, v), perspective=True)
    elif p == "zoom_blur":
        acc = images.astype(np.float64)
        out[:, 0] = images
        for i in range(1, frames):
            acc += warp(images, affine(h, w, scale=params[i])).astype(np.float64)
            out[:, i] = np.rint(acc / (i + 1)).astype(np.uint8)
    elif p == "motion_blur":
        x = images.astype(np.float64)
        for i, angle in enumerate(params):
            out[:, i] = np.rint(np.clip(motion_blur(x, q["radius"], q["sigma"], angle), 0, 255))
    elif p == "gaussian_blur":
        x = images.astype(np.float64) / 255.0
        for i, s in enumerate(params):
            out[:, i] = to_uint8(gaussian_filter(x, sigma=(0, s, s, 0), mode="nearest",
                                                  truncate=q["truncate"]))
    elif p == "snow":
        rngs = _rngs(seed, p, schedule, start, n)
        layer = np.stack([r.normal(q["loc"], q["scale"], (h, w)) for r in rngs])
        layer = clipped_zoom(layer, q["zoom"])
        layer[layer < q["threshold"]] = 0
        layer = np.rint(np.clip(layer, 0, 1) * 255) / 255.0  # the authors' 8-bit snow layer
        x = images.astype(np.float64) / 255.0
        base = q["mix"] * x + (1 - q["mix"]) * np.maximum(x, gray(x)[..., None] * 1.5 + 0.5)
        for i, angle in enumerate(params):
            moving = np.rint(np.clip(motion_blur(layer, q["radius"], q["sigma"], angle), 0, 1) * 255) / 255.0
            snow = moving + np.rot90(moving, k=2, axes=(1, 2))
            out[:, i] = to_uint8(base + snow[..., None])
    elif p == "spatter":
        x = images.astype(np.float64) / 255.0
        for k, rng in enumerate(_rngs(seed, p, schedule, start, n)):
            layer = gaussian_filter(rng.normal(q["loc"], q["scale"], (h, w)), q["blur"], mode="nearest")
            layer[layer < q["threshold"]] = 0
            for i in range(frames):
                out[k, i] = to_uint8(spatter_frame(x[k], layer, q["strength"]))
                layer = drip(layer, q["drip"])
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
