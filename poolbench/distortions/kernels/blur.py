"""Blur corruptions (torch engine): defocus, glass, motion, zoom and Gaussian blur.

Deterministic parts reproduce the reference's numerics (``ops.py``); the random parts (motion
blur's angle, glass blur's shuffle) come from ``rng.py``. Glass blur is an approximation: the
reference swaps pixels one after another (each swap sees the previous ones, a sequential chain
no batched kernel reproduces); here every pixel of the swept region takes the value of one
random neighbour in the same window, all at once. Its equivalence is in distribution only
(``tests/distortions/test_corrupt_equivalence.py`` states by how much). Inputs/outputs float 0..255.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from imagecorruptions import corruptions as _lib

from ..corruption_params import VARIANTS
from . import ops, rng


def gaussian_blur(x, c, ctx):
    return torch.clamp(ops.gaussian(x / 255., c, "nearest"), 0, 1) * 255


def glass_blur(x, c, ctx):
    sigma, delta, iterations = c
    y = torch.floor(ops.gaussian(x / 255., sigma, "nearest") * 255)  # np.uint8 truncates
    n, ch, h, w = y.shape
    rows = torch.arange(delta + 1, h - delta + 1, device=y.device)
    cols = torch.arange(delta + 1, w - delta + 1, device=y.device)
    if len(rows) and len(cols):
        for it in range(iterations):
            shape = (len(rows), len(cols))
            dy = rng.randint(ctx.keys, shape, 10 + 2 * it, 2 * delta) - delta
            dx = rng.randint(ctx.keys, shape, 11 + 2 * it, 2 * delta) - delta
            src_r = (rows[None, :, None] + dy).clamp(0, h - 1)
            src_c = (cols[None, None, :] + dx).clamp(0, w - 1)
            flat = y.reshape(n, ch, h * w)
            idx = (src_r * w + src_c).reshape(n, 1, -1).expand(n, ch, -1)
            moved = flat.gather(2, idx).reshape(n, ch, *shape)
            y = y.clone()
            y[:, :, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = moved
    return torch.clamp(ops.gaussian(y / 255., sigma, "nearest"), 0, 1) * 255


@lru_cache(maxsize=32)
def _disk(radius: float, alias_blur: float) -> torch.Tensor:
    # the reference's anti-aliased disk, built once by the library's own helper
    return torch.from_numpy(_lib.disk(radius=radius, alias_blur=alias_blur)).to(torch.float64)


def defocus_blur(x, c, ctx):
    kernel = _disk(float(c[0]), float(c[1])).to(x.device)
    return torch.clamp(ops.filter2d(x / 255., kernel), 0, 1) * 255


def draw_motion_blur(ctx, c):
    return {"angle": rng.uniform(ctx.keys, (), 20, -45.0, 45.0, dtype=torch.float64)}


def motion_blur(x, c, ctx):
    angle = ctx.draw("motion_blur", draw_motion_blur, c)["angle"]
    return torch.clamp(ops.motion_blur(x, c[0], c[1], angle), 0, 255)


def zoom_blur(x, c, ctx):
    y = x / 255.
    out = torch.zeros_like(y)
    trim = VARIANTS["zoom_trim"][ctx.params]
    for z in c:
        out += ops.clipped_zoom(y, z, trim)
    return torch.clamp((y + out) / (len(c) + 1), 0, 1) * 255
